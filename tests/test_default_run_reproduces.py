"""The default run reproduces the committed default-run summary, number for number.

``fixtures/summary_default_sensetime.json`` is the summary.json of the default run (seed
20220131, 100,000 paths, default fit settings) made by the code that merged the outside view,
the currency cost model, funding and the look-ahead-free valuation (issues 11 and 12), on the
project's machine with a warm PyTensor compile cache. It replaces the schema-1 fixture of the
"company as data" refactor, whose numbers those issues changed on purpose. A refactor must keep
every number here identical; a change of the forecast regenerates the fixture in the same commit
and says so.

Why the warm-up: PyTensor's first compilation of a graph into an empty compile cache gives a
gradient that differs in the last bits from the cached module used by every later process, and
NUTS amplifies last bits into a different chain. The warm-up compiles both models once with tiny
settings so the comparison measures this package, not the state of the cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "summary_default_sensetime.json"
#: Keys that name files or versions, not numbers of the forecast.
NOT_NUMBERS = ("versions/", "priors_file", "priors_sha256", "scenarios_file", "company/folder")


def flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, child in node.items()
                for k, v in flatten(child, f"{prefix}{key}/").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node)
                for k, v in flatten(child, f"{prefix}{i}/").items()}
    return {prefix[:-1]: node}


def mismatches(new: dict, old: dict) -> tuple[int, list[str]]:
    """``(numbers compared, one line per key whose value differs or is missing)``."""
    compared, out = 0, []
    for key, value in old.items():
        if key.startswith(NOT_NUMBERS):
            continue
        compared += 1
        if new.get(key, "<missing>") != value:
            out.append(f"{key}: {value!r} != {new.get(key, '<missing>')!r}")
    out += [f"{key}: new key" for key in new if key not in old and not key.startswith(NOT_NUMBERS)]
    return compared, out


def test_the_comparison_sees_a_changed_number():
    old = flatten(json.loads(FIXTURE.read_text()))
    key = next(k for k, v in old.items() if isinstance(v, float) and not k.startswith(NOT_NUMBERS))
    changed = {**old, key: old[key] + 1e-4}
    assert mismatches(old, old)[1] == []
    assert mismatches(changed, old)[1] == [f"{key}: {old[key]!r} != {changed[key]!r}"]


@pytest.mark.slow
def test_default_run_reproduces_every_number_of_the_committed_summary(tmp_path):
    from stforecast.company import load_company
    from stforecast.fit import FitSettings
    from stforecast.run import RunSettings, run_forecast

    from shared_fits import driver_lock

    company = load_company()
    tiny = FitSettings(draws=20, tune=20, chains=2, prior_draws=10)
    run_forecast(tmp_path / "warm-up", company, RunSettings(paths=100, report=False, fit=tiny))
    # under the default fit's lock: the README's API test (tests/test_api.py) fits the same
    # key into the session's fit cache; whichever comes first fits, the other reads that fit
    with driver_lock(RunSettings()):
        summary = run_forecast(tmp_path / "run", company, RunSettings(report=False))
    compared, mismatched = mismatches(flatten(summary.to_dict()),
                                      flatten(json.loads(FIXTURE.read_text())))
    assert compared > 2000
    assert not mismatched, (f"{len(mismatched)} of {compared} numbers changed:\n"
                            + "\n".join(mismatched[:20]))
