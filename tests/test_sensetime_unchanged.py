"""SenseTime unchanged by "company as data": the default run's summary equals the one before it.

``fixtures/summary_schema1_sensetime.json`` is the summary.json of the pre-refactor code (commit
843e876, schema 1) for the default run (seed 20220131, 100,000 paths, default fit settings),
produced on the project's machine with a warm PyTensor compile cache. Every number in it is
compared EXACTLY with the number that replaces it in today's summary; only the keys changed
(years and report figures left the names: ``cash_burn_fy21_fy23`` -> ``cash_burn``, ...).

Why the warm-up: PyTensor's first compilation of a graph into an empty compile cache gives a
gradient that differs in the last bits from the cached module used by every later process
(measured on the peer regression: dlogp 1.0749529047985404 vs ...407), and NUTS amplifies last
bits into a different chain. The warm-up compiles both models once with tiny settings so the
comparison measures this package, not the state of the cache.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "summary_schema1_sensetime.json"
#: Old key (a path of the flattened summary) -> new key: the renames of this refactor.
RENAMES = (
    (r"(^|/)target_price_hkd(/|$)", r"\1target_price\2"),
    (r"(^|/)cash_burn_fy21_fy23(/|$)", r"\1cash_burn\2"),
    (r"(^|/)sales_cagr_fy20_fy23(/|$)", r"\1sales_cagr\2"),
    (r"^report_percentiles/revenue_fy23_8825$", "report_percentiles/revenue/percentile"),
    (r"^report_percentiles/target_price_hkd_8\.08$", "report_percentiles/target_price/percentile"),
    (r"p_any_revenue_decline_fy21_fy23", "p_any_revenue_decline"),
    (r"^prior_predictive/revenue_fy23/", "prior_predictive/revenue_final/"),
    (r"^sensitivity/revenue_fy23/(\d+)/", r"sensitivity/revenue/ranking/\1/"),
    (r"^sensitivity/target_price/(\d+)/", r"sensitivity/target_price/ranking/\1/"),
    (r"(^|/)valuation_methods/sales_cagr/", r"\1sales_cagr/"),
)
#: Keys that name files or versions, not numbers of the forecast.
NOT_NUMBERS = ("versions/", "priors_file", "priors_sha256", "scenarios_file")


def new_key(old: str) -> str:
    for pattern, replacement in RENAMES:
        old = re.sub(pattern, replacement, old)
    return old


def flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in flatten(child, f"{prefix}{key}/").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in flatten(child, f"{prefix}{i}/").items()}
    return {prefix[:-1]: node}


def test_key_map_is_a_bijection_on_the_fixture():
    old = [k for k in flatten(json.loads(FIXTURE.read_text())) if not k.startswith(NOT_NUMBERS)]
    assert len({new_key(k) for k in old}) == len(old)
    assert new_key("scenarios/base/cash_burn_fy21_fy23/q50") == "scenarios/base/cash_burn/q50"
    assert new_key("sensitivity/target_price_hkd/3/score") == "sensitivity/target_price/ranking/3/score"


@pytest.mark.slow
def test_default_run_reproduces_every_number_of_the_schema1_summary(tmp_path):
    from stforecast.company import load_company
    from stforecast.fit import FitSettings
    from stforecast.run import RunSettings, run_forecast

    company = load_company()
    tiny = FitSettings(draws=20, tune=20, chains=2, prior_draws=10)
    run_forecast(tmp_path / "warm-up", company, RunSettings(paths=100, report=False, fit=tiny))
    summary = run_forecast(tmp_path / "run", company, RunSettings(report=False))
    new = flatten(summary.to_dict())
    old = flatten(json.loads(FIXTURE.read_text()))
    compared, mismatched = 0, []
    for key, value in old.items():
        if key.startswith(NOT_NUMBERS):
            continue
        compared += 1
        if new.get(new_key(key), "<missing>") != value:
            mismatched.append(f"{key} -> {new_key(key)}: {value!r} != {new.get(new_key(key), '<missing>')!r}")
    assert compared > 2000
    assert not mismatched, f"{len(mismatched)} of {compared} numbers changed:\n" + "\n".join(mismatched[:20])
