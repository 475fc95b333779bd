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


def write_synthetic_results(out: Path, scenarios: bool = False, ok: bool = True,
                            extras: bool = True) -> Path:
    """forecast.nc (DataTree, h5netcdf) and summary.json in ``out``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pp = synthetic_predictive(scenarios=scenarios)
    prior, post = synthetic_parameters()
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((CHAIN, DRAW), bool))})
    tree = xr.DataTree.from_dict({"posterior": post, "prior": prior, "sample_stats": stats,
                                  "posterior_predictive": pp})
    tree.to_netcdf(out / "forecast.nc", engine="h5netcdf")
    (out / "summary.json").write_text(json.dumps(synthetic_summary(pp, ok, extras), indent=1))
    return out


# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_dirs(tmp_path_factory):
    """Built once: {"plain": ok, no scenario; "stress": scenarios, diagnostics failed}."""
    dirs = {}
    for key, kwargs in (("plain", {}), ("stress", {"scenarios": True, "ok": False})):
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
    out, page_path = report_dirs["stress"]
    url = page_path.resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    n_png = len(list(out.glob("*.png")))
    assert len(re.findall(r"<img ", html)) == n_png
    assert html.count("data:image/png;base64,") == n_png
    assert "Headline" in html and "P(upside)" in html and "Target price (HK$)" in html
    assert "Warning: sampler diagnostics failed" in html
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,4000", url],
                    tmp_path / "profile-shot")
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 50_000
    pixels = _decode(shot.read_bytes())
    assert pixels.shape[:2] == (4000, 1280)
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page
