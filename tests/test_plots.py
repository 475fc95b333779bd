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
