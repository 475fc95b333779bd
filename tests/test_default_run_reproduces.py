"""The default run reproduces the committed default-run summary, number for number.

``fixtures/summary_default_sensetime.json`` is the summary.json of the default run (seed
20220131, 100,000 paths, default fit settings), regenerated when the driver model's priors became
data of one compiled model kept on disk and every model nutpie samples was compiled without
fast-math (``stforecast.compiled``, ``stforecast.fit.numba_compile``), which changed the fit's
floating-point path and so its draws. A refactor must keep every number here identical; a change
of the forecast regenerates the fixture in the same commit and says so.

No warm-up: with fast-math, numba's code for a graph freshly compiled into an empty cache
rounded a gradient's last bits differently from the cached code every later process used, and
NUTS amplifies last bits into a different chain, so this test compiled both models once first.
Without fast-math the two agree (``tests/test_compiled.py`` checks a fresh process against the
process that compiled), so the run below gives the fixture's numbers whatever the caches hold.
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
    from stforecast.run import RunSettings, run_forecast

    from shared_fits import driver_lock

    company = load_company()
    # under the default fit's lock: the README's API test (tests/test_api.py) fits the same
    # key into the session's fit cache; whichever comes first fits, the other reads that fit
    with driver_lock(RunSettings()):
        summary = run_forecast(tmp_path / "run", company, RunSettings(report=False))
    compared, mismatched = mismatches(flatten(summary.to_dict()),
                                      flatten(json.loads(FIXTURE.read_text())))
    assert compared > 2000
    assert not mismatched, (f"{len(mismatched)} of {compared} numbers changed:\n"
                            + "\n".join(mismatched[:20]))
