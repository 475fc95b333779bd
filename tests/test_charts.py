"""The summary layer of the charts: what plots and report show is computed here, at run time.

Synthetic draws shaped like the run's (dims scenario, chain, draw, path[, year]) for the default
company; the chart data must equal the statistics of those draws and be compact JSON.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from stforecast import charts
from stforecast.company import load_company
from stforecast.peers import load_peers
from stforecast.registry import METHOD_VARIABLES, REPORTED_LINES, VARIABLES

CHAIN, DRAW, PATH = 2, 40, 10
SCENARIOS = ["base", "risk-weighted"]


def synthetic_predictive(company, seed: int = 0) -> xr.Dataset:
    """Every reported line, unit driver and per-path scalar of ``company``, every scenario."""
    rng = np.random.default_rng(seed)
    years = list(company.forecast_years)
    dims = ("scenario", "chain", "draw", "path")
    shape = (len(SCENARIOS), CHAIN, DRAW, PATH)
    data = {}
    for name in list(company.reported_lines(REPORTED_LINES)) + company.unit_drivers():
        base = charts.published_values(company, name)
        level = np.array([base.get(y, np.nan) for y in years])
        if not np.isfinite(level).all():
            hist = charts.history_values(company, name)
            level = np.full(len(years), list(hist.values())[-1] if hist else 100.0)
        data[name] = (dims + ("year",), level * np.exp(rng.normal(0, 0.2, shape + (len(years),))))
    price = company.market.target_price_published
    for name in ("target_price", "target_price_report", "target_price_peer"):
        data[name] = (dims, price * np.exp(rng.normal(0, 0.4, shape)))
    for name in ("cash_burn", "enterprise_value", "equity_value", "ev_sales_multiple"):
        data[name] = (dims, 1000 * np.exp(rng.normal(0, 0.3, shape)))
    data["sales_cagr"] = (dims, rng.normal(0.3, 0.1, shape))
    return xr.Dataset(data, coords={"scenario": SCENARIOS, "year": years})


def synthetic_peer_posterior(seed: int = 4) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    dims, shape = ("chain", "draw"), (CHAIN, DRAW)
    return xr.Dataset({
        "intercept_target": (dims, rng.normal(np.log(15.0), 0.1, shape)),
        "beta_growth": (dims, rng.normal(1.9, 0.4, shape)),
        "beta_margin": (dims, rng.normal(-0.1, 0.5, shape)),
        "sigma": (dims, np.abs(rng.normal(0.35, 0.03, shape))),
        "residual_nu": (dims, np.full(shape, 5.0)),
        "growth_centre": (dims, np.full(shape, 0.31)),
        "margin_centre": (dims, np.full(shape, 0.74)),
    })


def synthetic_parameters(seed: int = 1) -> tuple[xr.Dataset, xr.Dataset]:
    rng = np.random.default_rng(seed)
    names = ("gross_margin_long_run", "gross_margin_persistence", "rnd_ratio_volatility",
             "first_year_growth")
    prior = xr.Dataset({n: (("chain", "draw"), rng.normal(0, 1, (1, 200))) for n in names})
    post = xr.Dataset({n: (("chain", "draw"), rng.normal(0.5, 0.3, (CHAIN, DRAW)))
                       for n in names})
    return prior, post


def summary_stub(company) -> dict:
    return {"headline_scenario": "risk-weighted", "valuation_method": "peer-regression",
            "p_upside": {"value": 0.41, "mcse": 0.01, "n": 800},
            "valuation_methods": {"report": {"p_upside": {"value": 0.5, "mcse": 0.02}},
                                  "peer-regression": {"p_upside": {"value": 0.41, "mcse": 0.01}},
                                  "sales_cagr": {"q05": 0.1, "q50": 0.3, "q95": 0.5}},
            "peer_fit": {"at_report_growth_and_margin": {
                "sales_cagr": 0.37, "gross_margin": 0.7,
                "multiple": {"q05": 9.0, "q50": 19.0, "q95": 38.0},
                "multiple_with_premium": {"q05": 9.5, "q50": 21.0, "q95": 45.0},
                "report_multiple": company.market.ev_sales_multiple}},
            "periods": {"sales_cagr": f"{company.last_history_year}-{company.last_forecast_year}"},
            "shocks": [{"shock": "demand_slump", "label": "Demand slumps"}]}


@pytest.fixture(scope="module")
def built():
    company = load_company()
    pp = synthetic_predictive(company)
    prior, post = synthetic_parameters()
    data = charts.chart_data(pp, company, summary_stub(company), prior=prior, posterior=post,
                             peers=load_peers(company.peers_path),
                             peer_posterior=synthetic_peer_posterior())
    return company, pp, data


def test_fans_are_the_quantiles_of_the_draws(built):
    company, pp, data = built
    assert list(data["fans"])[:1] == ["revenue"]
    expected = charts.fan_variables(company)
    assert list(data["fans"]) == [n for n in expected if n in pp]
    for s in company.segments:
        assert s.revenue in data["fans"]
    fan = data["fans"]["revenue"]
    draws = pp["revenue"].sel(scenario="risk-weighted").transpose("year", ...).values
    draws = draws.reshape(len(company.forecast_years), -1)
    assert fan["forecast"]["years"] == list(company.forecast_years)
    np.testing.assert_allclose(fan["forecast"]["median"], np.median(draws, axis=1), rtol=1e-4)
    levels = [b["level"] for b in fan["forecast"]["bands"]]
    assert levels == sorted(charts.BAND_LEVELS, reverse=True)
    for band in fan["forecast"]["bands"]:
        lo, hi = np.quantile(draws, [(1 - band["level"]) / 2, (1 + band["level"]) / 2], axis=1)
        np.testing.assert_allclose(band["lower"], lo, rtol=1e-4)
        np.testing.assert_allclose(band["upper"], hi, rtol=1e-4)
    assert fan["history"]["years"] == list(company.history_years)
    np.testing.assert_allclose(fan["history"]["values"], company.history["revenue"].values)
    np.testing.assert_allclose(fan["published"]["values"], company.published["revenue"].values)
    assert fan["label"] == VARIABLES["revenue"].label
    assert fan["units"] == VARIABLES["revenue"].unit_text(**company.units)


def test_derived_history_and_units_drivers(built):
    company, _, data = built
    gm = data["fans"]["gross_margin"]
    h = company.history
    np.testing.assert_allclose(gm["history"]["values"], (h["gross_profit"] / h["revenue"]).values,
                               rtol=1e-4)
    assert gm["format"] == "fraction"
    for s in (s for s in company.segments if s.kind == "units"):
        units = data["fans"][s.unit_driver]
        assert units["history"] == {"years": [company.last_history_year],
                                    "values": [s.units_last]}
        assert units["format"] == "count" and s.label in units["label"]
        per_unit = data["fans"][s.per_unit_driver]
        last = float(h[s.revenue].sel(year=company.last_history_year))
        np.testing.assert_allclose(per_unit["history"]["values"], [last / s.units_last],
                                   rtol=1e-4)


def test_densities_histograms_and_scenarios(built):
    company, pp, data = built
    tp = data["target_price"]
    values = pp["target_price"].sel(scenario="risk-weighted").values.ravel()
    edges = np.asarray(tp["edges"])
    assert edges[0] <= company.market.price <= edges[-1]
    assert edges[0] <= company.market.target_price_published <= edges[-1]
    counts, _ = np.histogram(values, bins=edges)
    # the stored edges are rounded (summary.json keeps 5 significant digits): a sample within
    # rounding distance of an edge may sit in the neighbouring bin, so allow one sample per bin
    one = 1.0 / (values.size * (edges[1] - edges[0]))
    np.testing.assert_allclose(tp["histogram"], counts * one, rtol=1e-4, atol=1.01 * one)
    area = np.trapezoid(tp["density"], tp["grid"])
    assert 0.85 < area <= 1.01
    assert tp["median"] == pytest.approx(np.median(values), rel=1e-4)
    assert tp["above"] == pytest.approx(np.mean(values > edges[-1]), abs=1e-4)
    assert tp["p_upside"]["value"] == 0.41
    vm = data["valuation_methods"]
    assert list(vm["methods"]) == ["report", "peer-regression"]
    assert vm["chosen"] == "peer-regression"
    for method, block in vm["methods"].items():
        assert block["label"] == VARIABLES[METHOD_VARIABLES[method][0]].label
    rows = data["scenarios"]["target_price"]["rows"]
    assert [r["scenario"] for r in rows] == SCENARIOS
    base = pp["target_price"].sel(scenario="base").values.ravel()
    assert rows[0]["q25"] == pytest.approx(np.quantile(base, 0.25), rel=1e-4)
    assert data["scenarios"]["revenue"]["year"] == company.last_forecast_year
    events = data["events"]["revenue_beats_report"]
    final = pp["revenue"].sel(scenario="risk-weighted", year=company.last_forecast_year)
    assert events["value"] == pytest.approx(float((final > events["report"]).mean()), abs=1e-5)
    assert events["mcse"] > 0


def test_peers_prior_posterior_and_labels(built):
    company, _, data = built
    peers = data["peers"]
    table = load_peers(company.peers_path)
    assert len(peers["points"]) == table.sizes["peer"]
    assert peers["groups"] == list(dict.fromkeys(str(g) for g in table["group"].values))
    assert peers["target"]["multiple"]["q50"] == 19.0
    fit = peers["fit"]
    assert all(lo <= mid <= hi for lo, mid, hi in zip(fit["lower"], fit["median"], fit["upper"]))
    names = [p["name"] for p in data["prior_posterior"]]
    assert names == ["gross_margin_long_run", "gross_margin_persistence", "rnd_ratio_volatility"]
    panel = data["prior_posterior"][0]
    assert panel["posterior_interval"][0] < panel["posterior_interval"][1]
    assert data["variables"]["shock_demand_slump"]["label"] == "Demand slumps"
    for s in company.segments:
        assert data["variables"][s.revenue]["label"].startswith(s.label)
    assert data["channels"]["gross_margin"]["style"] == "pp"


def test_json_compact_and_finite(built):
    _, _, data = built
    text = json.dumps(data, indent=1, allow_nan=False)
    assert len(text) < 300_000

    def floats(obj):
        if isinstance(obj, dict):
            for v in obj.values():
                yield from floats(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from floats(v)
        elif isinstance(obj, float):
            yield obj
    assert all(math.isfinite(x) for x in floats(data))


@pytest.mark.parametrize("n", [5_000, 200_000])
def test_kde_is_a_density(n):
    x = np.random.default_rng(3).normal(2.0, 0.5, n)
    grid = np.linspace(0.0, 4.0, 256)
    pdf = np.exp(-0.5 * ((grid - 2.0) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(charts.kde(x, grid), pdf, atol=0.06)


def test_charts_do_not_import_pymc_or_matplotlib():
    code = ("import sys, stforecast.charts; "
            "bad = [m for m in ('pymc', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
