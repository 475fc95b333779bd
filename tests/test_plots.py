"""Plots draw what they are given: count the artists and check them against known quantiles.

The input is a synthetic results file (numpy RNG; chain=2, draw=50, path=10, with and without a
``scenario`` dimension) written as a netCDF DataTree and read back the way saved results are.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from PIL import Image

from stforecast import plots
from stforecast.data import load_report

CHAIN, DRAW, PATH = 2, 50, 10
YEARS = ["FY21", "FY22", "FY23"]
SCENARIOS = ["base", "risk-weighted", "us-restrictions", "public-sector-squeeze",
             "combined-stress"]
LINES = ("revenue", "revenue_smart_business", "revenue_smart_city", "revenue_smart_life",
         "revenue_smart_auto", "gross_margin", "cash", "trade_receivable_days", "free_cash_flow")
BANDS = {"band-50": (0.25, 0.75), "band-80": (0.10, 0.90), "band-95": (0.025, 0.975)}


def _predictive(rng: np.random.Generator, scenarios: bool) -> xr.Dataset:
    pub = load_report().published
    extra = (len(SCENARIOS),) if scenarios else ()
    shape = (CHAIN, DRAW, PATH) + extra + (len(YEARS),)
    dims = ("chain", "draw", "path") + (("scenario",) if scenarios else ()) + ("year",)
    spread = np.array([0.1, 0.2, 0.3])
    scale = np.linspace(1.0, 0.7, len(SCENARIOS))[:, None] if scenarios else 1.0
    data = {}
    for line in LINES:
        centre = {"gross_margin": 0.7, "trade_receivable_days": 330.0, "cash": 9000.0,
                  "free_cash_flow": -2500.0}.get(line)
        base = pub[line].values if centre is None else np.full(len(YEARS), centre)
        data[line] = (dims, base * scale * np.exp(rng.normal(0.0, 1.0, shape) * spread))
    tp_shape = shape[:-1]
    data["target_price_hkd"] = (dims[:-1], 8.0 * np.exp(rng.normal(0.0, 0.3, tp_shape))
                                * (scale[:, 0] if scenarios else 1.0))
    coords = {"year": YEARS, **({"scenario": SCENARIOS} if scenarios else {})}
    return xr.Dataset(data, coords=coords)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Saved synthetic results read back: {"plain", "scenario", "prior", "posterior"}."""
    rng = np.random.default_rng(42)
    params = ("gross_margin_long_run", "smart_business_customers_long_run",
              "trade_receivable_days_long_run", "gross_margin_persistence")
    prior = xr.Dataset({n: (("chain", "draw"), rng.normal(0, 2, (CHAIN, DRAW))) for n in params})
    posterior = xr.Dataset({n: (("chain", "draw"), rng.normal(1, 0.5, (CHAIN, DRAW)))
                            for n in params})
    prior["segment_growth_long_run"] = (("chain", "draw", "segment"),
                                        rng.normal(0, 1, (CHAIN, DRAW, 2)))
    posterior["segment_growth_long_run"] = (("chain", "draw", "segment"),
                                            rng.normal(0.3, 0.2, (CHAIN, DRAW, 2)))
    posterior = posterior.assign_coords(segment=["smart_city", "smart_life"])
    prior = prior.assign_coords(segment=["smart_city", "smart_life"])
    out = {}
    for key, scen in (("plain", False), ("scenario", True)):
        path = tmp_path_factory.mktemp(key) / "forecast.nc"
        tree = xr.DataTree.from_dict({"posterior_predictive": _predictive(rng, scen),
                                      "prior": prior, "posterior": posterior})
        tree.to_netcdf(path, engine="h5netcdf")
        with xr.open_dataset(path, group="posterior_predictive", engine="h5netcdf") as ds:
            out[key] = ds.load()
        if key == "plain":
            for group in ("prior", "posterior"):
                with xr.open_dataset(path, group=group, engine="h5netcdf") as ds:
                    out[group] = ds.load()
    return out


@pytest.fixture(scope="module")
def report():
    return load_report()


def _by_gid(artists, gid):
    return [a for a in artists if a.get_gid() == gid]


def _bands(ax):
    return [c for c in ax.collections
            if isinstance(c, PolyCollection) and (c.get_gid() or "").startswith("band-")]


def _extent_at(band, x):
    vertices = band.get_paths()[0].vertices
    ys = vertices[np.isclose(vertices[:, 0], x), 1]
    return ys.min(), ys.max()


# --------------------------------------------------------------------------------------------
# fan_chart

def test_fan_chart_artists_and_quantiles(results, report):
    pp = results["plain"]
    fig = plots.fan_chart(pp, report.history, "revenue", published=report.published)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    bands = _bands(ax)
    assert sorted(b.get_gid() for b in bands) == sorted(BANDS)
    assert len(ax.collections) == 3 and len(ax.lines) == 3
    draws = pp["revenue"].transpose("year", ...).values.reshape(3, -1)
    fy20 = float(report.history["revenue"].sel(year="FY20"))
    for band in bands:
        lo_q, hi_q = BANDS[band.get_gid()]
        for i, x in enumerate((3, 4, 5)):  # FY21E..FY23E after FY18A..FY20A
            np.testing.assert_allclose(_extent_at(band, x),
                                       np.quantile(draws[i], [lo_q, hi_q]), rtol=1e-12)
        np.testing.assert_allclose(_extent_at(band, 2), (fy20, fy20))  # opens at FY20A, not before
        assert not np.isclose(band.get_paths()[0].vertices[:, 0], 1).any()
    (median,) = _by_gid(ax.lines, "median")
    np.testing.assert_allclose(median.get_xdata(), [2, 3, 4, 5])
    np.testing.assert_allclose(median.get_ydata(), np.r_[fy20, np.median(draws, axis=1)])
    (actual,) = _by_gid(ax.lines, "actual")
    assert actual.get_marker() == "o" and actual.get_linestyle() == "-"
    np.testing.assert_allclose(actual.get_xdata(), [0, 1, 2])
    np.testing.assert_allclose(actual.get_ydata(), report.history["revenue"].values)
    (published,) = _by_gid(ax.lines, "published")
    assert published.get_linestyle() == "--" and published.get_marker() == "s"
    np.testing.assert_allclose(published.get_xdata(), [3, 4, 5])
    np.testing.assert_allclose(published.get_ydata(), report.published["revenue"].values)
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "FY18A", "FY19A", "FY20A", "FY21E", "FY22E", "FY23E"]
    assert "RMB mn" in ax.get_ylabel()
    assert len(ax.get_legend().get_texts()) == 6


@pytest.mark.parametrize("variable", LINES)
def test_fan_chart_every_reported_variable(results, report, variable):
    fig = plots.fan_chart(results["plain"], report.history, variable, published=report.published)
    (ax,) = fig.axes
    assert len(_bands(ax)) == 3
    assert len(_by_gid(ax.lines, "median")) == 1
    (actual,) = _by_gid(ax.lines, "actual")  # every one of these has FY18A-FY20A actuals
    assert np.isfinite(actual.get_ydata()).all() and len(actual.get_xdata()) == 3
    # the report publishes no receivable days; its ratios (gross margin) are derived
    expect_published = variable != "trade_receivable_days"
    assert len(_by_gid(ax.lines, "published")) == int(expect_published)
    unit = {"gross_margin": "% of revenue", "trade_receivable_days": "days"}.get(variable,
                                                                                  "RMB mn")
    assert unit in ax.get_ylabel()


def test_fan_chart_derived_history_values(results, report):
    ax = plots.fan_chart(results["plain"], report.history, "gross_margin").axes[0]
    (actual,) = _by_gid(ax.lines, "actual")
    h = report.history
    np.testing.assert_allclose(actual.get_ydata(), (h["gross_profit"] / h["revenue"]).values)
    ax = plots.fan_chart(results["plain"], h, "free_cash_flow").axes[0]
    np.testing.assert_allclose(_by_gid(ax.lines, "actual")[0].get_ydata(),
                               (h["operating_cash_flow"] - h["capex"]).values)


@pytest.mark.parametrize("bands", [(0.9,), (0.5, 0.8, 0.95, 0.99)])
def test_fan_chart_band_count(results, report, bands):
    ax = plots.fan_chart(results["plain"], report.history, "cash", bands=bands).axes[0]
    assert len(_bands(ax)) == len(bands)
    assert not _by_gid(ax.lines, "published")


def test_fan_chart_without_history(results):
    ax = plots.fan_chart(results["plain"], None, "revenue").axes[0]
    assert len(_bands(ax)) == 3 and len(ax.lines) == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["FY21E", "FY22E", "FY23E"]
    np.testing.assert_allclose(_by_gid(ax.lines, "median")[0].get_xdata(), [0, 1, 2])


def test_fan_chart_on_given_axes(results, report):
    fig = Figure()
    axes = fig.subplots(1, 2)
    out = plots.fan_chart(results["plain"], report.history, "revenue", ax=axes[1])
    assert out is fig
    assert len(_bands(axes[1])) == 3 and not axes[0].collections


def test_fan_chart_scenarios(results, report):
    pp = results["scenario"]
    for scenario, expected in ((None, "risk-weighted"), ("combined-stress", "combined-stress")):
        ax = plots.fan_chart(pp, report.history, "revenue", scenario=scenario).axes[0]
        assert expected in ax.get_title()
        draws = pp["revenue"].sel(scenario=expected, year="FY23").values.ravel()
        (band,) = _by_gid(ax.collections, "band-80")
        np.testing.assert_allclose(_extent_at(band, 5), np.quantile(draws, [0.1, 0.9]))
    with pytest.raises(KeyError, match="no-such"):
        plots.fan_chart(pp, report.history, "revenue", scenario="no-such")
    other = pp.sel(scenario=["base", "combined-stress"])
    ax = plots.fan_chart(other, report.history, "revenue").axes[0]
    assert "[base]" in ax.get_title()


# --------------------------------------------------------------------------------------------
# target price, scenarios, tornado, prior vs posterior

def test_target_price_distribution(results):
    pp = results["plain"]
    fig = plots.target_price_distribution(pp, p_upside={"value": 0.6234, "mcse": 0.0041},
                                          bins=30)
    (ax,) = fig.axes
    assert len(_by_gid(ax.patches, "histogram")) == 30
    assert len(_by_gid(ax.lines, "kde")) == 1
    for gid, x in (("ref-price", 6.73), ("ref-report", 8.08),
                   ("ref-median", float(np.median(pp["target_price_hkd"].values)))):
        (line,) = _by_gid(ax.lines, gid)
        np.testing.assert_allclose(line.get_xdata(), [x, x])
    assert len(ax.lines) == 4
    (text,) = _by_gid(ax.texts, "p-upside")
    assert text.get_text() == "P(upside) = 0.62 ± 0.004"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Price HK$6.73" in labels and "Report target HK$8.08" in labels


def test_target_price_p_upside_from_draws(results):
    pp = results["scenario"]
    ax = plots.target_price_distribution(pp).axes[0]
    p = float((pp["target_price_hkd"].sel(scenario="risk-weighted") > 6.73).mean())
    assert _by_gid(ax.texts, "p-upside")[0].get_text().startswith(f"P(upside) = {p:.2f} ± ")
    assert "risk-weighted" in ax.get_title()


def test_scenario_comparison(results):
    pp = results["scenario"]
    fig = plots.scenario_comparison(pp, references={"Price": 6.73})
    (ax,) = fig.axes
    for gid in ("interval-50", "interval-90", "median"):
        assert len(_by_gid(ax.lines, gid)) == len(SCENARIOS)
    assert len(_by_gid(ax.lines, "ref-Price")) == 1
    assert [t.get_text() for t in ax.get_yticklabels()] == SCENARIOS[::-1]
    draws = pp["target_price_hkd"].sel(scenario="us-restrictions").values.ravel()
    row = SCENARIOS.index("us-restrictions")
    np.testing.assert_allclose(_by_gid(ax.lines, "interval-50")[row].get_xdata(),
                               np.quantile(draws, [0.25, 0.75]))
    np.testing.assert_allclose(_by_gid(ax.lines, "interval-90")[row].get_xdata(),
                               np.quantile(draws, [0.05, 0.95]))
    np.testing.assert_allclose(_by_gid(ax.lines, "median")[row].get_xdata(), [np.median(draws)])
    assert _by_gid(ax.lines, "median")[row].get_ydata()[0] == len(SCENARIOS) - 1 - row


def test_scenario_comparison_yearly_and_plain(results):
    ax = plots.scenario_comparison(results["scenario"], "revenue").axes[0]
    assert "FY23" in ax.get_title()
    draws = results["scenario"]["revenue"].sel(scenario="base", year="FY23").values.ravel()
    np.testing.assert_allclose(_by_gid(ax.lines, "median")[0].get_xdata(), [np.median(draws)])
    ax = plots.scenario_comparison(results["plain"], "revenue", year="FY21").axes[0]
    assert len(_by_gid(ax.lines, "interval-50")) == 1 and len(ax.lines) == 3


def test_tornado():
    entries = [{"driver": "a", "score": 0.1}, {"driver": "b", "score": -0.7},
               {"driver": "c", "score": 0.4}, {"driver": "d", "score": 0.0}]
    fig = plots.tornado(entries, "Sensitivity: revenue_fy23")
    (ax,) = fig.axes
    bars = _by_gid(ax.patches, "bar")
    assert len(bars) == 4
    top_down = sorted(bars, key=lambda b: -b.get_y())
    np.testing.assert_allclose([b.get_width() for b in top_down], [-0.7, 0.4, 0.1, 0.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "c", "a", "d"]
    assert ax.get_title() == "Sensitivity: revenue_fy23"
    assert not _by_gid(plots.tornado([], "empty").axes[0].patches, "bar")


def test_prior_posterior(results):
    names = ["gross_margin_long_run", "smart_business_customers_long_run",
             "trade_receivable_days_long_run", "gross_margin_persistence"]
    fig = plots.prior_posterior(results["prior"], results["posterior"], names)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 4 and len(fig.axes) == 6  # 2 x 3 grid, 2 blank
    for ax, name in zip(panels, names):
        assert ax.get_title() == name
        assert len(_by_gid(ax.lines, "prior")) == 1 and len(_by_gid(ax.lines, "posterior")) == 1
        post = _by_gid(ax.lines, "posterior")[0]
        x, y = post.get_xdata(), post.get_ydata()
        assert abs(np.sum(y) * (x[1] - x[0]) - 1.0) < 0.1  # a density over the shown range
    fig = plots.prior_posterior(results["prior"], results["posterior"],
                                ["segment_growth_long_run"])
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["segment_growth_long_run[smart_city]", "segment_growth_long_run[smart_life]"]
    with pytest.raises(KeyError, match="nope"):
        plots.prior_posterior(results["prior"], results["posterior"], ["nope"])


def test_save_all_small_pngs(results, report, tmp_path):
    figs = {"fan_revenue": plots.fan_chart(results["plain"], report.history, "revenue",
                                           published=report.published),
            "target_price": plots.target_price_distribution(results["plain"]),
            "scenarios": plots.scenario_comparison(results["scenario"])}
    paths = plots.save_all(figs, tmp_path / "figs")
    assert sorted(paths) == sorted(figs)
    for name, path in paths.items():
        assert path == tmp_path / "figs" / f"{name}.png"
        assert 5_000 < path.stat().st_size < 150_000
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] >= 500
    assert not list((tmp_path / "figs").glob(".*"))


@pytest.mark.parametrize("n", [5_000, 200_000])
def test_kde_is_a_density(n):
    x = np.random.default_rng(3).normal(2.0, 0.5, n)
    grid = np.linspace(0.0, 4.0, 256)
    pdf = np.exp(-0.5 * ((grid - 2.0) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(plots._kde(x, grid), pdf, atol=0.06)


# --------------------------------------------------------------------------------------------
# peer relation and valuation methods

PEER_GROUPS = ["global_ai"] * 5 + ["china_ai"] * 2 + ["global_saas"] * 13


@pytest.fixture(scope="module")
def peer_inputs():
    """A 20-peer table (5 / 2 / 13 by group) and a (chain=2, draw=50) regression posterior."""
    rng = np.random.default_rng(7)
    growth = np.round(rng.uniform(0.15, 0.55, 20), 3)
    margin = np.round(rng.uniform(0.5, 0.9, 20), 3)
    multiple = np.round(15.0 * np.exp(2.0 * (growth - growth.mean())
                                      + rng.normal(0.0, 0.3, 20)), 2)
    peers = xr.Dataset(
        {"ev_sales_fy22e": ("peer", multiple), "sales_cagr_fy20_23e": ("peer", growth),
         "gross_margin_fy20": ("peer", margin)},
        coords={"peer": [f"P{i:02d}" for i in range(20)], "group": ("peer", PEER_GROUPS),
                "company": ("peer", [f"Company {i}" for i in range(20)])},
        attrs={"sensetime_sales_cagr_fy20_23e": 0.37, "sensetime_gross_margin_fy20": 0.706,
               "sensetime_target_ev_sales_fy22e": 34.0})
    dims, shape = ("chain", "draw"), (CHAIN, DRAW)
    posterior = xr.Dataset({
        "intercept_sensetime": (dims, rng.normal(np.log(15.0), 0.1, shape)),
        "beta_growth": (dims, rng.normal(2.0, 0.3, shape)),
        "beta_margin": (dims, rng.normal(-0.5, 0.2, shape)),
        "sigma": (dims, np.abs(rng.normal(0.3, 0.03, shape))),
        "residual_nu": (dims, np.full(shape, 5.0)),
        "growth_centre": (dims, np.full(shape, growth.mean())),
        "margin_centre": (dims, np.full(shape, margin.mean())),
    })
    return peers, posterior


def test_peer_relation_artists(peer_inputs):
    from stforecast.peers import predict_multiple
    peers, post = peer_inputs
    cagr = np.random.default_rng(11).normal(0.3, 0.15, 4_000)
    premium = {"q05": 9.0, "q50": 21.0, "q95": 45.0}
    fig = plots.peer_relation(peers, post, cagr, with_premium=premium, rng=5)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    groups = _by_gid(ax.collections, "peer")
    assert len(groups) == 3 and sum(len(c.get_offsets()) for c in groups) == 20
    points = np.concatenate([c.get_offsets() for c in groups])
    expected = np.c_[peers["sales_cagr_fy20_23e"].values, peers["ev_sales_fy22e"].values]
    np.testing.assert_allclose(points[np.lexsort(points.T)], expected[np.lexsort(expected.T)])
    sizes = sorted(len(c.get_offsets()) for c in groups)
    assert sizes == [2, 5, 13] and len({tuple(c.get_facecolor()[0]) for c in groups}) == 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"Global AI peers (5)", "China AI peers (2)", "Global SaaS peers (13)"} <= set(legend)

    # the fitted line for a China-AI company at the peers' mean gross margin, and its 90% band
    (line,) = _by_gid(ax.lines, "fit-median")
    (band,) = _by_gid(ax.collections, "fit-band")
    x = line.get_xdata()
    m = peers["gross_margin_fy20"].values.mean()
    log_mu = (post["intercept_sensetime"].values.reshape(-1, 1)
              + post["beta_growth"].values.reshape(-1, 1) * (x - peers["sales_cagr_fy20_23e"]
                                                              .values.mean())
              + post["beta_margin"].values.reshape(-1, 1) * (m - m))
    np.testing.assert_allclose(line.get_ydata(), np.exp(np.median(log_mu, axis=0)), rtol=1e-9)
    np.testing.assert_allclose(_extent_at(band, x[10]),
                               np.exp(np.quantile(log_mu[:, 10], [0.05, 0.95])), rtol=1e-9)

    # SenseTime's predicted multiple at its CAGR and margin, from predict_multiple
    draws = predict_multiple(post, 0.37, 0.706, rng=5).values.ravel()
    q05, q50, q95 = np.quantile(draws, [0.05, 0.5, 0.95])
    (bar,) = _by_gid(ax.lines, "sensetime-interval")
    np.testing.assert_allclose(bar.get_xdata(), [0.37, 0.37])
    np.testing.assert_allclose(bar.get_ydata(), [q05, q95])
    (mid,) = _by_gid(ax.lines, "sensetime-median")
    np.testing.assert_allclose(mid.get_ydata(), [q50])
    (pbar,) = _by_gid(ax.lines, "sensetime-premium-interval")
    np.testing.assert_allclose(pbar.get_ydata(), [9.0, 45.0])
    (star,) = _by_gid(ax.lines, "report-multiple")
    assert star.get_marker() == "*"
    np.testing.assert_allclose(np.r_[star.get_xdata(), star.get_ydata()], [0.37, 34.0])

    # the simulated paths' CAGR as a 5-95% strip and its median
    (span,) = _by_gid(ax.patches, "path-cagr-band")
    lo, hi = np.quantile(cagr, [0.05, 0.95])
    np.testing.assert_allclose([span.get_x(), span.get_x() + span.get_width()], [lo, hi])
    (cmed,) = _by_gid(ax.lines, "path-cagr-median")
    np.testing.assert_allclose(cmed.get_xdata(), [np.median(cagr)] * 2)
    assert ax.get_xlim()[0] < lo and ax.get_xlim()[1] > hi
    assert 0 < len(_by_gid(ax.texts, "peer-name")) <= 20


def test_peer_relation_minimal_and_premium(peer_inputs):
    from stforecast.peers import predict_multiple
    peers, post = peer_inputs
    ax = plots.peer_relation(peers, post, premium=0.2, report_multiple=30.0, annotate=False,
                             rng=1).axes[0]
    for gid in ("path-cagr-median", "sensetime-premium-interval"):
        assert not _by_gid(ax.lines, gid)
    assert not _by_gid(ax.patches, "path-cagr-band") and not _by_gid(ax.texts, "peer-name")
    # a log premium of 0.2 lifts the whole interval by exp(0.2)
    draws = predict_multiple(post, 0.37, 0.706, premium=0.2, rng=1).values.ravel()
    np.testing.assert_allclose(_by_gid(ax.lines, "sensetime-interval")[0].get_ydata(),
                               np.quantile(draws, [0.05, 0.95]))
    np.testing.assert_allclose(_by_gid(ax.lines, "report-multiple")[0].get_ydata(), [30.0])
    with pytest.raises(KeyError, match="sigma"):
        plots.peer_relation(peers, post.drop_vars("sigma"))


def _with_methods(pp: xr.Dataset) -> xr.Dataset:
    """Add both methods' target prices: the peer method lower and wider than the report's."""
    tp = pp["target_price_hkd"]
    rng = np.random.default_rng(9)
    return pp.assign(target_price_hkd_report=tp,
                     target_price_hkd_peer=tp * 0.7 * np.exp(rng.normal(0, 0.4, tp.shape)))


def test_valuation_methods(results):
    pp = _with_methods(results["scenario"])
    given = {"report": {"value": 0.6234, "mcse": 0.0041},
             "peer-regression": {"value": 0.3012, "mcse": 0.0052}}
    fig = plots.valuation_methods(pp, p_upside_by_method=given, chosen="peer-regression",
                                  bins=30)
    (ax,) = fig.axes
    assert "risk-weighted" in ax.get_title()
    for method, variable, label in (("report", "target_price_hkd_report", "Report multiple"),
                                    ("peer-regression", "target_price_hkd_peer",
                                     "Peer regression")):
        draws = pp[variable].sel(scenario="risk-weighted").values.ravel()
        (hist,) = _by_gid(ax.patches, f"histogram-{method}")
        density, edges, _ = hist.get_data()
        assert len(density) == 30
        counts, _ = np.histogram(draws, bins=edges)
        np.testing.assert_allclose(density, counts / (draws.size * (edges[1] - edges[0])))
        assert len(_by_gid(ax.lines, f"kde-{method}")) == 1
        (med,) = _by_gid(ax.lines, f"median-{method}")
        np.testing.assert_allclose(med.get_xdata(), [np.median(draws)] * 2)
        (text,) = _by_gid(ax.texts, f"p-upside-{method}")
        v = given[method]
        assert text.get_text() == f"{label}: P(upside) = {v['value']:.2f} ± {v['mcse']:.3f}"
    for gid, x in (("ref-price", 6.73), ("ref-report", 8.08)):
        np.testing.assert_allclose(_by_gid(ax.lines, gid)[0].get_xdata(), [x, x])
    assert len(ax.lines) == 6 and len(ax.texts) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("(headline)" in t for t in legend) == 1
    assert any(t.startswith("Peer regression (headline)") for t in legend)


def test_valuation_methods_one_method_and_computed_p(results):
    pp = _with_methods(results["scenario"]).drop_vars("target_price_hkd_peer")
    ax = plots.valuation_methods(pp, scenario="combined-stress").axes[0]
    assert "combined-stress" in ax.get_title()
    assert not _by_gid(ax.patches, "histogram-peer-regression")
    draws = pp["target_price_hkd_report"].sel(scenario="combined-stress")
    p = float((draws > 6.73).mean())
    (text,) = _by_gid(ax.texts, "p-upside-report")
    assert text.get_text().startswith(f"Report multiple: P(upside) = {p:.2f} ± ")
    with pytest.raises(KeyError):
        plots.valuation_methods(results["plain"])


def test_target_price_axis_cut_on_a_long_tail():
    rng = np.random.default_rng(4)
    tp = np.exp(rng.normal(1.5, 0.9, (CHAIN, DRAW, PATH)))  # a long right tail
    pp = xr.Dataset({"target_price_hkd": (("chain", "draw", "path"), tp)})
    ax = plots.target_price_distribution(pp, bins=20).axes[0]
    hi = ax.get_xlim()[1]
    above = np.mean(tp > hi)
    assert hi < tp.max() and f"{above:.1%} of draws above {hi:.1f}" in ax.get_title()
    bars = _by_gid(ax.patches, "histogram")
    inside = np.mean((tp >= ax.get_xlim()[0]) & (tp <= hi))
    np.testing.assert_allclose(sum(b.get_height() * b.get_width() for b in bars), inside)


def test_scenario_comparison_references_are_distinct(results):
    ax = plots.scenario_comparison(results["scenario"],
                                   references={"Price": 6.73, "Report": 8.08}).axes[0]
    (price,), (report,) = _by_gid(ax.lines, "ref-Price"), _by_gid(ax.lines, "ref-Report")
    assert price.get_linestyle() != report.get_linestyle()
    assert price.get_color() != report.get_color()
