"""build_report on a synthetic results directory (forecast.nc + summary.json).

The synthetic results mimic the run stage's schema (see ``write_synthetic_results``): a DataTree
netCDF with ``posterior``, ``prior``, ``sample_stats`` and ``posterior_predictive`` groups
(chain=2, draw=50, path=10, optionally a ``scenario`` dimension) and a summary.json computed
from the same draws. A headless-Chromium check renders the page when /usr/bin/chromium exists.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from stforecast import mcse
from stforecast.data import load_report
from stforecast.engine import REPORTED_LINES
from stforecast.report import FAN_VARIABLES, build_report

CHAIN, DRAW, PATH = 2, 50, 10
YEARS = ["FY21", "FY22", "FY23"]
SCENARIOS = ["base", "risk-weighted", "us-restrictions", "public-sector-squeeze",
             "combined-stress"]
SEGMENTS = ("smart_business", "smart_city", "smart_life", "smart_auto")
SHARES_MN, CNY_PER_HKD, OPENING_CASH, DEBT = 33507.4, 0.83, 11424.0, 1300.0
PRICE = 6.73
REVENUE_FY20 = 3446.0


def synthetic_predictive(seed: int = 0, scenarios: bool = False) -> xr.Dataset:
    """Posterior predictive draws shaped like the run stage's (units as in DESIGN.md)."""
    rng = np.random.default_rng(seed)
    pub = load_report().published
    shape = (CHAIN, DRAW, PATH, len(YEARS))
    dims = ("chain", "draw", "path", "year")
    growth_sd = np.array([0.08, 0.16, 0.25])
    common = rng.normal(0.0, 1.0, shape[:3] + (1,)) * growth_sd
    data = {}
    revenue = 0.0
    for seg in SEGMENTS:
        base = pub[f"revenue_{seg}"].values
        noise = 0.7 * common + rng.normal(0.0, 1.0, shape) * growth_sd * 0.7
        seg_rev = base * np.exp(noise - 0.5 * growth_sd**2)
        data[f"revenue_{seg}"] = seg_rev
        revenue = revenue + seg_rev
    gm = np.clip(0.70 + rng.normal(0.0, 1.0, shape) * np.array([0.02, 0.03, 0.04]), 0.3, 0.95)
    ocf = -0.30 * revenue + rng.normal(0.0, 300.0, shape)
    capex = 0.30 * revenue * np.exp(rng.normal(0.0, 0.1, shape))
    fcf = ocf - capex
    cash = OPENING_CASH + np.cumsum(fcf, axis=-1)
    operating = -0.45 * revenue + rng.normal(0.0, 400.0, shape)
    data.update(
        revenue=revenue, gross_margin=gm, gross_profit=revenue * gm,
        operating_income=operating, net_income=operating - 300.0,
        adjusted_net_income=operating + 500.0, operating_cash_flow=ocf, capex=capex,
        free_cash_flow=fcf, cash=cash, net_cash=cash - DEBT,
        trade_receivable_days=330.0 + rng.normal(0.0, 1.0, shape) * np.array([20, 35, 50]),
    )
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()},
                    coords={"chain": np.arange(CHAIN), "draw": np.arange(DRAW),
                            "path": np.arange(PATH), "year": YEARS})
    multiple = 34.0 * np.exp(rng.normal(0.0, 0.25, shape[:3]) - 0.03)
    ev = multiple * ds["revenue"].sel(year="FY22").values
    equity = ev + ds["net_cash"].sel(year="FY22").values
    scalars = {
        "ev_sales_multiple": multiple, "enterprise_value": ev, "equity_value": equity,
        "target_price_hkd": equity / SHARES_MN / CNY_PER_HKD,
        "cash_burn_fy21_fy23": -ds["free_cash_flow"].sum("year").values,
    }
    ds = ds.assign({k: (("chain", "draw", "path"), v) for k, v in scalars.items()})
    if scenarios:
        factor = xr.DataArray([1.0, 0.93, 0.82, 0.88, 0.72], dims="scenario",
                              coords={"scenario": SCENARIOS})
        money = [v for v in ds.data_vars if v not in ("gross_margin", "trade_receivable_days",
                                                      "ev_sales_multiple")]
        ds = ds.assign({v: ds[v] * factor for v in money})
        ds["trade_receivable_days"] = ds["trade_receivable_days"] / factor
        ds["gross_margin"] = ds["gross_margin"] * (0.5 + 0.5 * factor)
        ds["ev_sales_multiple"] = ds["ev_sales_multiple"] * factor
        ds = ds.transpose("chain", "draw", "path", "scenario", ...)
    return ds


def synthetic_parameters(seed: int = 1) -> tuple[xr.Dataset, xr.Dataset]:
    """(prior, posterior) driver-model parameters with dims (chain, draw)."""
    rng = np.random.default_rng(seed)
    shape, dims = (CHAIN, DRAW), ("chain", "draw")
    means = {"gross_margin_long_run": (0.65, 0.08, 0.70, 0.02),
             "smart_business_customers_long_run": (1500, 400, 1800, 150),
             "trade_receivable_days_long_run": (300, 60, 330, 20),
             "gross_margin_persistence": (0.5, 0.2, 0.7, 0.08),
             "revenue_volatility": (0.2, 0.08, 0.15, 0.03)}
    prior = xr.Dataset({k: (dims, rng.normal(m0, s0, shape)) for k, (m0, s0, _, _) in
                        means.items()})
    post = xr.Dataset({k: (dims, rng.normal(m1, s1, shape)) for k, (_, _, m1, s1) in
                       means.items()})
    return prior, post


def _stats(x: np.ndarray) -> dict:
    q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(np.mean(x)), **{k: float(v) for k, v in
                                          zip(("q05", "q25", "q50", "q75", "q95"), q)}}


def synthetic_summary(pp: xr.Dataset, ok: bool = True, extras: bool = True) -> dict:
    """summary.json computed from the draws (the default scenario when there is one)."""
    def pick(ds, scen="risk-weighted"):
        return ds.sel(scenario=scen) if "scenario" in ds.dims else ds
    default = pick(pp)
    summary = {line: {y: _stats(default[line].sel(year=y).values) for y in YEARS}
               for line in REPORTED_LINES}
    for scalar in ("cash_burn_fy21_fy23", "target_price_hkd"):
        summary[scalar] = _stats(default[scalar].values)
    p, err, _ = mcse.probability(default["target_price_hkd"].values > PRICE)
    summary["p_upside"] = {"value": p, "mcse": err}
    summary["diagnostics"] = {
        "rhat_max": 1.004 if ok else 1.083, "ess_bulk_min": 812.0 if ok else 54.0,
        "ess_tail_min": 640.0 if ok else 31.0, "divergences": 0 if ok else 7, "ok": ok,
        "reasons": [] if ok else ["rhat_max 1.083 > 1.01", "7 divergences <after tuning>"]}
    summary.update(seed=20211230, priors_sha256="ab" * 32,
                   versions={"stforecast": "0.1.0", "pymc": "6.x", "numpy": np.__version__})
    if "scenario" in pp.dims:
        summary["scenarios"] = {
            s: {"revenue": {y: _stats(pick(pp, s)["revenue"].sel(year=y).values) for y in YEARS},
                "target_price_hkd": _stats(pick(pp, s)["target_price_hkd"].values),
                "p_upside": {"value": float((pick(pp, s)["target_price_hkd"] > PRICE).mean()),
                             "mcse": 0.01}}
            for s in SCENARIOS}
    if extras:
        summary["sensitivity"] = {
            "revenue_fy23": [{"driver": "smart_city_cities", "score": 0.61},
                             {"driver": "gross_margin", "score": 0.02},
                             {"driver": "smart_business_customers", "score": 0.48},
                             {"driver": "receivable_days", "score": -0.12}],
            "target_price_hkd": [{"driver": "ev_sales_multiple", "score": 0.83},
                                 {"driver": "smart_city_cities", "score": 0.31},
                                 {"driver": "capex_ratio", "score": -0.09}]}
        summary["assumptions"] = [
            {"driver": "gross_margin_long_run", "prior": "Beta(mean 0.70, sd 0.03)",
             "source": "Figure 64: GM 70.6% FY20A <history>"},
            {"driver": "ev_sales_multiple", "prior": "LogNormal(log 34, 0.25)",
             "source": "Valuation section: 34x FY22E EV/sales & peers"}]
    return summary


def with_valuation_methods(pp: xr.Dataset, seed: int = 3) -> xr.Dataset:
    """Both methods' multiples and target prices, the path CAGR, the peer method chosen."""
    rng = np.random.default_rng(seed)
    cagr = (pp["revenue"].sel(year="FY23", drop=True) / REVENUE_FY20) ** (1 / 3) - 1
    peer = 15.0 * np.exp(2.0 * (cagr - 0.3) + rng.normal(0.0, 0.3, cagr.shape))
    report_tp = pp["target_price_hkd"]
    ev = pp["enterprise_value"] * peer / pp["ev_sales_multiple"]
    peer_tp = (ev + pp["net_cash"].sel(year="FY22", drop=True)) / SHARES_MN / CNY_PER_HKD
    return pp.assign(sales_cagr_fy20_fy23=cagr, ev_sales_multiple_report=pp["ev_sales_multiple"],
                     ev_sales_multiple_peer=peer, target_price_hkd_report=report_tp,
                     target_price_hkd_peer=peer_tp, target_price_hkd=peer_tp,
                     ev_sales_multiple=peer)


def synthetic_peer_posterior(seed: int = 4) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    dims, shape = ("chain", "draw"), (CHAIN, DRAW)
    return xr.Dataset({
        "intercept_sensetime": (dims, rng.normal(np.log(15.0), 0.1, shape)),
        "beta_growth": (dims, rng.normal(1.9, 0.4, shape)),
        "beta_margin": (dims, rng.normal(-0.1, 0.5, shape)),
        "sigma": (dims, np.abs(rng.normal(0.35, 0.03, shape))),
        "residual_nu": (dims, np.full(shape, 5.0)),
        "growth_centre": (dims, np.full(shape, 0.31)),
        "margin_centre": (dims, np.full(shape, 0.74)),
    })


def _methods_block(ds: xr.Dataset) -> dict:
    out = {}
    for method, suffix in (("report", "report"), ("peer-regression", "peer")):
        tp = ds[f"target_price_hkd_{suffix}"].transpose("chain", "draw", "path").values
        p, err, n = mcse.probability(tp > PRICE)
        out[method] = {"target_price_hkd": _stats(tp),
                       "p_upside": {"value": p, "mcse": err, "n": n},
                       "ev_sales_multiple": _stats(ds[f"ev_sales_multiple_{suffix}"].values)}
    out["sales_cagr_fy20_fy23"] = _stats(ds["sales_cagr_fy20_fy23"].values)
    return out


#: Scenario descriptions and shock texts carry HTML-special characters to check escaping.
DESCRIPTIONS = {s: f"{s} <b>scenario</b> & shocks" for s in SCENARIOS}
SHOCKS = [
    {"shock": "us_restrictions", "label": "US restrictions <tighten>",
     "annual_probability": "Beta(alpha=3.134, beta=28.08)", "annual_probability_mean": 0.1004,
     "severity": "LogNormal(mu=-0.1438, sigma=0.334)", "persistence": 0.9,
     "channels": {"overseas_revenue": -0.5, "gross_margin": -0.04, "ev_sales_multiple": -0.25},
     "source": "Investment risks: <script>alert(1)</script> & pp.12-13"},
    {"shock": "public_sector_squeeze", "label": "Public-sector squeeze",
     "annual_probability": "Beta(alpha=4.054, beta=25.75)", "annual_probability_mean": 0.136,
     "severity": "LogNormal(mu=-0.1438, sigma=0.334)", "persistence": 0.6,
     "channels": {"smart_city_revenue": -0.3, "trade_receivable_days": 60.0,
                  "impairment_rate": 0.04},
     "source": "Investment risks: public sector (293 receivable days)"},
]
PEER_FIT = {
    "diagnostics": {"rhat_max": 1.0035, "ess_bulk_min": 1131.7, "ess_tail_min": 1241.6,
                    "divergences": 0.0},
    "beta_growth_per_10pp": {"q05": 0.0633, "q50": 0.1925, "q95": 0.3197},
    "beta_margin_per_10pp": {"q05": -0.1564, "q50": -0.0108, "q95": 0.1386},
    "at_report_growth_and_margin": {
        "sales_cagr": 0.37, "gross_margin": 0.706,
        "multiple": {"q05": 9.4378, "q50": 19.1303, "q95": 38.7921},
        "multiple_with_premium": {"q05": 9.4301, "q50": 20.8565, "q95": 44.5837},
        "report_multiple": 34.0}}


def full_summary(pp: xr.Dataset, ok: bool = True) -> dict:
    """summary.json of a current run: headline scenario and method, both valuation methods,
    the peer fit, scenario blocks with descriptions, the shocks table."""
    summary = synthetic_summary(pp, ok)
    summary.update(headline_scenario="risk-weighted", valuation_method="peer-regression",
                   valuation_methods=_methods_block(pp.sel(scenario="risk-weighted")),
                   peer_fit=PEER_FIT, shocks=SHOCKS)
    scenarios = {}
    for s in SCENARIOS:
        one = pp.sel(scenario=s)
        tp = one["target_price_hkd"].transpose("chain", "draw", "path").values
        p, err, n = mcse.probability(tp > PRICE)
        scenarios[s] = {
            "description": DESCRIPTIONS[s],
            "shocks": {"us_restrictions": "off", "public_sector_squeeze": "occurs in FY22"},
            **{line: {y: _stats(one[line].sel(year=y).values) for y in YEARS}
               for line in ("revenue", "cash")},
            "cash_burn_fy21_fy23": _stats(one["cash_burn_fy21_fy23"].values),
            "target_price_hkd": _stats(tp), "p_upside": {"value": p, "mcse": err, "n": n},
            "valuation_methods": _methods_block(one)}
    summary["scenarios"] = scenarios
    return summary


def write_synthetic_results(out: Path, scenarios: bool = False, ok: bool = True,
                            extras: bool = True, full: bool = False) -> Path:
    """forecast.nc (DataTree, h5netcdf) and summary.json in ``out``; returns ``out``.

    ``full``: a current run's results (implies scenarios): both valuation methods in the draws,
    a ``peer_posterior`` group and the summary of :func:`full_summary`.
    """
    out.mkdir(parents=True, exist_ok=True)
    pp = synthetic_predictive(scenarios=scenarios or full)
    groups = {}
    if full:
        pp = with_valuation_methods(pp)
        groups["peer_posterior"] = synthetic_peer_posterior()
    prior, post = synthetic_parameters()
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((CHAIN, DRAW), bool))})
    tree = xr.DataTree.from_dict({"posterior": post, "prior": prior, "sample_stats": stats,
                                  "posterior_predictive": pp, **groups})
    tree.to_netcdf(out / "forecast.nc", engine="h5netcdf")
    summary = full_summary(pp, ok) if full else synthetic_summary(pp, ok, extras)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return out


# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_dirs(tmp_path_factory):
    """Built once: {"plain": ok, no scenario; "stress": scenarios, diagnostics failed (an
    older summary: no valuation methods, peer fit or shocks); "full": a current run's results,
    diagnostics failed}."""
    dirs = {}
    for key, kwargs in (("plain", {}), ("stress", {"scenarios": True, "ok": False}),
                        ("full", {"full": True, "ok": False})):
        out = write_synthetic_results(tmp_path_factory.mktemp(key), **kwargs)
        dirs[key] = (out, build_report(out))
    return dirs


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def _decode(png: bytes) -> np.ndarray:
    from matplotlib.image import imread
    return imread(io.BytesIO(png), format="png")


def test_report_is_one_self_contained_file(report_dirs):
    out, page_path = report_dirs["plain"]
    assert page_path == out / "report.html"
    page = page_path.read_text(encoding="utf-8")
    pngs = sorted(p.name for p in out.glob("*.png"))
    expected = [f"fan_{v}.png" for v in FAN_VARIABLES] + [
        "prior_posterior.png", "target_price.png", "tornado_revenue_fy23.png",
        "tornado_target_price_hkd.png"]
    assert pngs == sorted(expected)
    images = _images(page)
    assert page.count("data:image/png;base64,") == len(images) == len(pngs)
    assert sorted(images) == sorted((out / p).read_bytes() for p in pngs)
    for png in images:
        assert _decode(png).shape[0] > 100
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=['"]?(https?:|file:|//)""", page)
    assert not list(out.glob(".*tmp")), "temporary files left behind"
    for p in pngs:
        assert (out / p).stat().st_size < 150_000, p


def test_headline_numbers(report_dirs):
    out, page_path = report_dirs["plain"]
    page = page_path.read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    rev, tp, pu = summary["revenue"]["FY23"], summary["target_price_hkd"], summary["p_upside"]
    for text in (f"{rev['q50']:,.0f}", f"{rev['q05']:,.0f}", f"{rev['q95']:,.0f}", "8,825",
                 f"{tp['q50']:.2f}", "HK$8.08", "HK$6.73",
                 f"{pu['value']:.2f} ± {pu['mcse']:.3f}"):
        assert text in page, text
    assert "P(beats report)" in page


def test_tables_and_escaping(report_dirs):
    out, page_path = report_dirs["plain"]
    page = page_path.read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    assert "Percentiles by line item and year" in page
    gm = summary["gross_margin"]["FY22"]
    assert f"{gm['q25'] * 100:.1f}%" in page
    assert f"{summary['cash']['FY21']['q95']:,.0f}" in page
    assert "Sensitivity ranking" in page and "smart_city_cities" in page
    assert page.index("smart_city_cities") < page.index("smart_business_customers")
    assert "Figure 64: GM 70.6% FY20A &lt;history&gt;" in page
    assert "&amp; peers" in page and "<history>" not in page
    assert "Warning" not in page and "Status: <span class=ok>OK" in page
    assert "id=scenarios" not in page


def test_failed_diagnostics_and_scenarios(report_dirs):
    out, page_path = report_dirs["stress"]
    page = page_path.read_text(encoding="utf-8")
    assert "Warning: sampler diagnostics failed" in page
    assert "7 divergences &lt;after tuning&gt;" in page
    assert page.index("Warning: sampler diagnostics failed") < page.index("id=headline")
    assert "FAILED" in page
    assert "id=scenarios" in page
    for name in SCENARIOS:
        assert name in page
    assert "risk-weighted" in page.split("id=headline")[0]  # the note on the chosen scenario
    assert (out / "scenarios_target_price.png").exists()
    assert (out / "scenarios_revenue.png").exists()
    assert page.count("data:image/png;base64,") == len(list(out.glob("*.png")))
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['target_price_hkd']['q50']:.2f}" in page


def test_minimal_summary(tmp_path):
    """No scenarios, sensitivity or assumptions: those sections are simply absent."""
    out = write_synthetic_results(tmp_path, extras=False)
    page = build_report(out).read_text(encoding="utf-8")
    assert "Sensitivity ranking" not in page and "Assumptions and sources" not in page
    assert "Fan charts" in page


def test_missing_results_file(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="forecast.nc"):
        build_report(tmp_path)


def test_no_pymc_or_pyplot_import():
    code = ("import sys, stforecast.plots, stforecast.report; "
            "bad = [m for m in ('pymc', 'matplotlib.pyplot') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# Valuation methods, scenarios, risk factors (a current run's summary)

def _section(page: str, sid: str) -> str:
    start = page.index(f"<section id={sid}>")
    return page[start:page.index("</section>", start)]


def _rows(html_text: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", html_text.split("<tbody>", 1)[1])


def _cell_text(stats: dict, fmt: str) -> str:
    return (f"{format(stats['q50'], fmt)} <span class=muted>[{format(stats['q05'], fmt)} – "
            f"{format(stats['q95'], fmt)}]</span>")


def test_full_report_charts(report_dirs):
    out, page_path = report_dirs["full"]
    page = page_path.read_text(encoding="utf-8")
    for name in ("valuation_methods", "peer_relation", "scenarios_target_price"):
        assert (out / f"{name}.png").exists(), name
    pngs = list(out.glob("*.png"))
    assert page.count("data:image/png;base64,") == len(_images(page)) == len(pngs)
    assert sorted(_images(page)) == sorted(p.read_bytes() for p in pngs)
    valuation = _section(page, "valuation")
    assert len(_images(valuation)) == 2
    assert "<script" not in page.lower() and "&lt;script&gt;" in page


def test_headline_names_scenario_and_method(report_dirs):
    out, page_path = report_dirs["full"]
    page = page_path.read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    headline = _section(page, "headline")
    assert "scenario <b>risk-weighted</b>" in headline
    assert "valuation method <b>Peer regression</b>" in headline
    assert "risk-weighted &lt;b&gt;scenario&lt;/b&gt; &amp; shocks" in headline
    other = summary["valuation_methods"]["report"]
    assert f"HK${other['target_price_hkd']['q50']:.2f}" in headline
    pu = other["p_upside"]
    assert f"{pu['value']:.2f} ± {pu['mcse']:.3f}" in headline
    assert f"{summary['target_price_hkd']['q50']:.2f}" in headline
    assert "Valuation method: Peer regression" in headline


def test_valuation_section(report_dirs):
    out, page_path = report_dirs["full"]
    page = page_path.read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    section = _section(page, "valuation")
    assert "Valuation: report multiple vs peer regression" in section
    assert page.index("id=target-price") < page.index("id=valuation") < page.index(
        "id=percentiles")
    rows = _rows(section)
    assert len(rows) == 2
    for row, method, name in zip(rows, ("report", "peer-regression"),
                                 ("Report multiple", "Peer regression")):
        block = summary["valuation_methods"][method]
        assert f"<b>{name}</b>" in row
        assert ("<span class=tag>headline</span>" in row) == (method == "peer-regression")
        assert _cell_text(block["target_price_hkd"], ".2f") in row
        pu = block["p_upside"]
        assert f"{pu['value']:.2f} ± {pu['mcse']:.3f}" in row
        m = block["ev_sales_multiple"]
        assert (f"{m['q50']:.1f}x <span class=muted>[{m['q05']:.1f}x – {m['q95']:.1f}x]"
                in row)
    cagr = summary["valuation_methods"]["sales_cagr_fy20_fy23"]
    assert f"median {cagr['q50'] * 100:.1f}%" in section
    # the peer fit: slopes per 10pp with intervals, the multiple at the report's inputs vs 34x
    assert "+0.193 log multiple per 10pp" in section and "+0.063 – +0.320" in section
    assert "×1.21 per 10pp" in section
    assert "-0.011 log multiple per 10pp" in section
    assert "37% sales CAGR" in section and "(70.6%)" in section
    assert "19.1x <span class=muted>[9.4x – 38.8x]</span>" in section
    assert "20.9x <span class=muted>[9.4x – 44.6x]</span>" in section
    assert "the report uses <b>34.0x</b>" in section
    assert "max R-hat 1.004" in section and "min bulk ESS 1,132" in section


def test_scenario_table_rows(report_dirs):
    out, page_path = report_dirs["full"]
    page = page_path.read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    section = _section(page, "scenarios")
    head = section.split("<tbody>")[0]
    for title in ("Revenue FY23", "Cash burn FY21–FY23", "Cash FY23", "Target price (HK$)",
                  "P(target &gt; HK$6.73) ± MCSE"):
        assert title in head, title
    rows = _rows(section)
    assert len(rows) == len(SCENARIOS)
    for row, name in zip(rows, SCENARIOS):
        sc = summary["scenarios"][name]
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert len(cells) == 6
        assert cells[0].startswith(f"<b>{name}</b>")
        assert ("<span class=tag>headline</span>" in cells[0]) == (name == "risk-weighted")
        assert f"<div class=desc>{name} &lt;b&gt;scenario&lt;/b&gt; &amp; shocks</div>" in cells[0]
        assert cells[1] == _cell_text(sc["revenue"]["FY23"], ",.0f")
        assert cells[2] == _cell_text(sc["cash_burn_fy21_fy23"], ",.0f")
        assert cells[3] == _cell_text(sc["cash"]["FY23"], ",.0f")
        assert cells[4] == _cell_text(sc["target_price_hkd"], ".2f")
        assert cells[5] == f"{sc['p_upside']['value']:.2f} ± {sc['p_upside']['mcse']:.3f}"
    items = re.findall(r"<li>(.*?)</li>", section.split("<ul class=multiples>")[1])
    assert len(items) == len(SCENARIOS)
    for item, name in zip(items, SCENARIOS):
        vm = summary["scenarios"][name]["valuation_methods"]
        assert item.startswith(f"<b>{name}</b>")
        assert f"report multiple {vm['report']['ev_sales_multiple']['q50']:.1f}x" in item
        assert (f"peer regression {vm['peer-regression']['ev_sales_multiple']['q50']:.1f}x"
                in item)
    assert "<b>scenario</b>" not in section


def test_risk_factors_section(report_dirs):
    _, page_path = report_dirs["full"]
    page = page_path.read_text(encoding="utf-8")
    section = _section(page, "risk-factors")
    rows = _rows(section)
    assert len(rows) == len(SHOCKS)
    first, second = (re.findall(r"<td>(.*?)</td>", r) for r in rows)
    assert first[0] == "<b>US restrictions &lt;tighten&gt;</b><br><code>us_restrictions</code>"
    assert first[1] == ("Beta(alpha=3.134, beta=28.08)<br><span class=muted>mean 10.0% a year"
                        "</span>")
    assert first[2] == "LogNormal(mu=-0.1438, sigma=0.334)" and first[3] == "0.90"
    for text in ("overseas revenue −50%", "gross margin −4.0pp", "EV/sales multiple −25%"):
        assert text in first[4], text
    assert first[5] == "Investment risks: &lt;script&gt;alert(1)&lt;/script&gt; &amp; pp.12-13"
    for text in ("smart city revenue −30%", "trade receivable days +60 days",
                 "impairment rate +4.0pp"):
        assert text in second[4], text
    assert "mean 13.6% a year" in second[1] and second[3] == "0.60"
    assert page.index("id=scenarios") < page.index("id=risk-factors") < page.index(
        "id=sensitivity")


def test_new_sections_omitted_for_older_results(report_dirs):
    for key in ("plain", "stress"):
        out, page_path = report_dirs[key]
        page = page_path.read_text(encoding="utf-8")
        for marker in ("id=valuation", "id=risk-factors", "class=basis", "ul class=multiples",
                       "class=tag"):
            assert marker not in page, (key, marker)
        assert not (out / "valuation_methods.png").exists()
        assert not (out / "peer_relation.png").exists()
    # an older scenario block (revenue, target price, P(upside) only): '–' where keys are missing
    out, page_path = report_dirs["stress"]
    summary = json.loads((out / "summary.json").read_text())
    rows = _rows(_section(page_path.read_text(encoding="utf-8"), "scenarios"))
    assert len(rows) == len(SCENARIOS)
    cells = re.findall(r"<td>(.*?)</td>", rows[2])
    sc = summary["scenarios"][SCENARIOS[2]]
    assert cells[0] == f"<b>{SCENARIOS[2]}</b>"
    assert cells[1] == _cell_text(sc["revenue"]["FY23"], ",.0f")
    assert cells[2] == cells[3] == "–"
    assert cells[4] == _cell_text(sc["target_price_hkd"], ".2f")


def test_partial_valuation_keys():
    """Each part of the valuation section appears only with its keys."""
    from stforecast import report
    methods = {"report": {"target_price_hkd": {"q05": 3.0, "q50": 6.4, "q95": 13.6},
                          "p_upside": {"value": 0.45, "mcse": 0.005}}}
    html_text = report._valuation({"valuation_methods": methods, "valuation_method": "report"},
                                  PRICE, {})
    assert "id=valuation" in html_text and len(_rows(html_text)) == 1
    cells = re.findall(r"<td>(.*?)</td>", _rows(html_text)[0])
    assert cells[1:] == ["6.40 <span class=muted>[3.00 – 13.60]</span>", "0.45 ± 0.005", "–"]
    assert "Peer regression (report Figure 69" not in html_text and "<img" not in html_text
    assert "<span class=tag>headline</span>" in html_text
    fit_only = report._valuation({"peer_fit": PEER_FIT}, PRICE, {})
    assert "<table" not in fit_only and "+0.193 log multiple" in fit_only
    assert report._valuation({}, PRICE, {}) == ""
    assert report._risk_factors({}) == "" and report._risk_factors({"shocks": []}) == ""
    assert report._scenario_table({}, PRICE) == ""
    assert report._headline_basis({}) == ""
    # a bare {name: stats} scenarios block (the oldest format) still gives one row each
    old = report._scenario_table({"scenarios": {"a": {"q05": 1.0, "q50": 2.0, "q95": 3.0}}},
                                 PRICE)
    assert len(_rows(old)) == 1 and "2.00 <span class=muted>[1.00 – 3.00]</span>" in old


# --------------------------------------------------------------------------------------------
# Headless browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)


def _chromium(args: list[str], profile: Path, timeout: float = 60.0):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(report_dirs, tmp_path):
    out, page_path = report_dirs["full"]
    url = page_path.resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    n_png = len(list(out.glob("*.png")))
    assert len(re.findall(r"<img ", html)) == n_png
    assert html.count("data:image/png;base64,") == n_png
    assert "Headline" in html and "P(upside)" in html and "Target price (HK$)" in html
    assert "Warning: sampler diagnostics failed" in html
    assert "Valuation: report multiple vs peer regression" in html and "Risk factors" in html
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,4000", url],
                    tmp_path / "profile-shot")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 50_000
    pixels = _decode(shot.read_bytes())
    assert pixels.shape[:2] == (4000, 1280)
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page
