"""Plots draw the chart data they are given: count the artists and check them against the data.

The chart data are written by hand in the shape ``stforecast.charts`` stores in summary.json
(plain dicts and lists); a chart must place exactly those numbers, with the labels and units
that come with them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from stforecast import plots

FAN = {
    "label": "revenue", "units": "EUR mn", "format": "money",
    "history": {"years": ["Y1", "Y2", "Y3"], "values": [100.0, 120.0, 150.0]},
    "forecast": {"years": ["Y4", "Y5"], "median": [170.0, 200.0],
                 "bands": [{"level": 0.95, "lower": [120.0, 110.0], "upper": [240.0, 330.0]},
                           {"level": 0.8, "lower": [135.0, 140.0], "upper": [210.0, 280.0]},
                           {"level": 0.5, "lower": [150.0, 170.0], "upper": [190.0, 240.0]}]},
    "published": {"years": ["Y4", "Y5"], "values": [175.0, 215.0]},
}
EDGES = list(np.linspace(0.0, 20.0, 11))
TARGET = {"label": "target price", "units": "EUR per share", "scenario": "risk-weighted",
          "price": 6.5, "report": 9.0, "p_upside": {"value": 0.6234, "mcse": 0.0041, "n": 800},
          "edges": EDGES, "histogram": [0.01, 0.05, 0.1, 0.12, 0.08, 0.06, 0.04, 0.02, 0.01, 0.01],
          "grid": list(np.linspace(0.0, 20.0, 50)), "density": list(np.linspace(0, 0.1, 50)),
          "median": 7.25, "above": 0.021, "below": 0.0}
SCENARIO_ROWS = {"label": "target price", "units": "EUR per share", "format": "price",
                 "year": None, "references": {"price": 6.5, "report": 9.0},
                 "rows": [{"scenario": s, "q05": 2.0 + i, "q25": 4.0 + i, "q50": 6.0 + i,
                           "q75": 8.0 + i, "q95": 12.0 + i, "mean": 6.5 + i}
                          for i, s in enumerate(("base", "risk-weighted", "stress"))]}


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
# fan chart

def test_fan_chart_places_the_data():
    fig = plots.fan_chart(FAN, scenario="risk-weighted")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    bands = _bands(ax)
    assert sorted(b.get_gid() for b in bands) == ["band-50", "band-80", "band-95"]
    for band, data in zip(sorted(bands, key=lambda b: b.get_gid()),
                          sorted(FAN["forecast"]["bands"], key=lambda b: b["level"])):
        for i, x in enumerate((3, 4)):
            np.testing.assert_allclose(_extent_at(band, x), (data["lower"][i], data["upper"][i]))
        np.testing.assert_allclose(_extent_at(band, 2), (150.0, 150.0))  # opens at the last actual
    (median,) = _by_gid(ax.lines, "median")
    np.testing.assert_allclose(median.get_xdata(), [2, 3, 4])
    np.testing.assert_allclose(median.get_ydata(), [150.0, 170.0, 200.0])
    (actual,) = _by_gid(ax.lines, "actual")
    np.testing.assert_allclose(actual.get_ydata(), [100.0, 120.0, 150.0])
    (published,) = _by_gid(ax.lines, "published")
    assert published.get_linestyle() == "--"
    np.testing.assert_allclose(published.get_ydata(), [175.0, 215.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Y1A", "Y2A", "Y3A", "Y4E", "Y5E"]
    assert ax.get_ylabel() == "Revenue (EUR mn)"
    assert ax.get_title() == "Revenue [risk-weighted]"
    assert len(ax.get_legend().get_texts()) == 6


def test_fan_chart_fraction_no_history_no_published():
    fan = {**FAN, "label": "gross margin", "units": "fraction of revenue", "format": "fraction",
           "history": {"years": [], "values": []}, "published": {"years": [], "values": []}}
    ax = plots.fan_chart(fan).axes[0]
    assert ax.get_ylabel() == "Gross margin (% of revenue)"
    assert not _by_gid(ax.lines, "actual") and not _by_gid(ax.lines, "published")
    np.testing.assert_allclose(_by_gid(ax.lines, "median")[0].get_xdata(), [0, 1])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Y4E", "Y5E"]


def test_fan_chart_on_given_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plots.fan_chart(FAN, ax=axes[1]) is fig
    assert len(_bands(axes[1])) == 3 and not axes[0].collections


# --------------------------------------------------------------------------------------------
# target price, valuation methods, scenarios

def test_target_price_distribution():
    ax = plots.target_price_distribution(TARGET).axes[0]
    bars = _by_gid(ax.patches, "histogram")
    assert len(bars) == 10
    np.testing.assert_allclose([b.get_height() for b in bars], TARGET["histogram"])
    (kde,) = _by_gid(ax.lines, "kde")
    np.testing.assert_allclose(kde.get_ydata(), TARGET["density"])
    for gid, x in (("ref-price", 6.5), ("ref-report", 9.0), ("ref-median", 7.25)):
        np.testing.assert_allclose(_by_gid(ax.lines, gid)[0].get_xdata(), [x, x])
    assert _by_gid(ax.texts, "p-upside")[0].get_text() == "P(upside) = 0.62 ± 0.004"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Price 6.50 EUR" in labels and "Report target 9.00 EUR" in labels
    assert "2.1% of draws above 20.0" in ax.get_title() and "risk-weighted" in ax.get_title()
    assert ax.get_xlabel() == "Target price (EUR per share)"
    no_p = plots.target_price_distribution({**TARGET, "p_upside": None}).axes[0]
    assert not _by_gid(no_p.texts, "p-upside")


def test_valuation_methods():
    chart = {"units": "EUR per share", "scenario": "risk-weighted", "price": 6.5, "report": 9.0,
             "chosen": "peer-regression", "edges": EDGES, "grid": TARGET["grid"],
             "methods": {m: {"label": m, "histogram": TARGET["histogram"],
                             "density": TARGET["density"], "median": med,
                             "p_upside": {"value": p, "mcse": 0.005}, "above": a, "below": 0.0}
                         for m, med, p, a in (("report", 7.0, 0.55, 0.01),
                                              ("peer-regression", 4.5, 0.3, 0.04))}}
    names = {"report": "Report multiple", "peer-regression": "Peer regression"}
    ax = plots.valuation_methods(chart, names).axes[0]
    for method, median, p in (("report", 7.0, 0.55), ("peer-regression", 4.5, 0.3)):
        (hist,) = _by_gid(ax.patches, f"histogram-{method}")
        np.testing.assert_allclose(hist.get_data()[0], TARGET["histogram"])
        assert len(_by_gid(ax.lines, f"kde-{method}")) == 1
        np.testing.assert_allclose(_by_gid(ax.lines, f"median-{method}")[0].get_xdata(),
                                   [median] * 2)
        (text,) = _by_gid(ax.texts, f"p-upside-{method}")
        assert text.get_text() == f"{names[method]}: P(upside) = {p:.2f} ± 0.005"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum("(headline)" in t for t in legend) == 1
    assert any(t.startswith("Peer regression (headline)") for t in legend)
    assert "up to 4.0% of draws above 20.0" in ax.get_title()


def test_scenario_comparison():
    ax = plots.scenario_comparison(SCENARIO_ROWS).axes[0]
    for gid in ("interval-50", "interval-90", "median"):
        assert len(_by_gid(ax.lines, gid)) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["stress", "risk-weighted", "base"]
    np.testing.assert_allclose(_by_gid(ax.lines, "interval-50")[1].get_xdata(), [5.0, 9.0])
    np.testing.assert_allclose(_by_gid(ax.lines, "interval-90")[1].get_xdata(), [3.0, 13.0])
    np.testing.assert_allclose(_by_gid(ax.lines, "median")[1].get_xdata(), [7.0])
    price, report = _by_gid(ax.lines, "ref-price"), _by_gid(ax.lines, "ref-report")
    assert price[0].get_linestyle() != report[0].get_linestyle()
    assert ax.get_title() == "Target price by scenario"
    revenue = {**SCENARIO_ROWS, "label": "revenue", "units": "EUR mn", "format": "money",
               "year": "Y5", "references": {}}
    assert plots.scenario_comparison(revenue).axes[0].get_title() == "Revenue Y5 by scenario"


# --------------------------------------------------------------------------------------------
# tornado, prior vs posterior

def test_tornado_with_labels():
    entries = [{"driver": "a", "score": 0.1}, {"driver": "b", "score": -0.7},
               {"driver": "c", "score": 0.4}, {"driver": "d", "score": 0.0}]
    ax = plots.tornado(entries, "Sensitivity: revenue", {"b": "B driver"}).axes[0]
    bars = sorted(_by_gid(ax.patches, "bar"), key=lambda b: -b.get_y())
    np.testing.assert_allclose([b.get_width() for b in bars], [-0.7, 0.4, 0.1, 0.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B driver", "c", "a", "d"]
    assert not _by_gid(plots.tornado([], "empty").axes[0].patches, "bar")


def test_prior_posterior_panels():
    grid = list(np.linspace(0, 1, 20))
    panels = [{"name": f"p_{i}_long_run", "grid": grid, "prior": list(np.ones(20)),
               "posterior": list(np.linspace(0, 2, 20)), "prior_interval": [0.05, 0.5, 0.95],
               "posterior_interval": [0.4, 0.7, 0.9]} for i in range(4)]
    fig = plots.prior_posterior(panels)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 4 and len(fig.axes) == 6
    for ax in shown:
        np.testing.assert_allclose(_by_gid(ax.lines, "posterior")[0].get_ydata(),
                                   panels[0]["posterior"])
        np.testing.assert_allclose(_by_gid(ax.lines, "posterior-interval")[0].get_xdata(),
                                   [0.4, 0.9])
        assert len(_by_gid(ax.lines, "prior")) == 1
    assert shown[0].get_title() == "p 0 long run"


# --------------------------------------------------------------------------------------------
# peer relation

def _peers(groups):
    rng = np.random.default_rng(7)
    points = [{"name": f"Peer {i}", "group": g, "growth": float(rng.uniform(0.1, 0.5)),
               "multiple": float(rng.uniform(5, 40))} for i, g in enumerate(groups)]
    grid = list(np.linspace(0.05, 0.6, 30))
    return {"name": "Acme Corp", "source": "a table", "growth_period": "Y1-Y4",
            "valuation_year": "Y5", "groups": list(dict.fromkeys(groups)),
            "target_group": groups[-1], "points": points,
            "fit": {"level": 0.9, "margin": 0.7, "growth": grid,
                    "lower": list(np.full(30, 8.0)), "median": list(np.full(30, 15.0)),
                    "upper": list(np.full(30, 25.0))},
            "target": {"sales_cagr": 0.37, "gross_margin": 0.7,
                       "multiple": {"q05": 9.0, "q50": 19.0, "q95": 38.0},
                       "multiple_with_premium": {"q05": 9.5, "q50": 21.0, "q95": 45.0},
                       "report_multiple": 34.0},
            "paths": {"q05": 0.1, "q50": 0.3, "q95": 0.55}}


def test_peer_relation_places_the_data():
    groups = ["alpha"] * 5 + ["beta"] * 2 + ["gamma"] * 13
    chart = _peers(groups)
    ax = plots.peer_relation(chart).axes[0]
    assert ax.get_yscale() == "log"
    scatters = _by_gid(ax.collections, "peer")
    assert sorted(len(c.get_offsets()) for c in scatters) == [2, 5, 13]
    assert len({tuple(c.get_facecolor()[0]) for c in scatters}) == 3
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"alpha peers (5)", "beta peers (2)", "gamma peers (13)"} <= set(legend)
    np.testing.assert_allclose(_by_gid(ax.lines, "fit-median")[0].get_ydata(), 15.0)
    (bar,) = _by_gid(ax.lines, "target-interval")
    np.testing.assert_allclose(bar.get_xdata(), [0.37, 0.37])
    np.testing.assert_allclose(bar.get_ydata(), [9.0, 38.0])
    np.testing.assert_allclose(_by_gid(ax.lines, "target-median")[0].get_ydata(), [19.0])
    np.testing.assert_allclose(_by_gid(ax.lines, "target-premium-interval")[0].get_ydata(),
                               [9.5, 45.0])
    np.testing.assert_allclose(_by_gid(ax.lines, "report-multiple")[0].get_ydata(), [34.0])
    (span,) = _by_gid(ax.patches, "path-growth-band")
    np.testing.assert_allclose([span.get_x(), span.get_x() + span.get_width()], [0.1, 0.55])
    assert 0 < len(_by_gid(ax.texts, "peer-name")) <= 20
    assert any(t.startswith("Acme Corp predicted at growth 37%") for t in legend)
    assert ax.get_xlabel() == "Sales CAGR Y1-Y4" and "Y5" in ax.get_ylabel()
    # the fit line takes the target group's colour
    gamma = [c for c in scatters if len(c.get_offsets()) == 13][0]
    np.testing.assert_allclose(gamma.get_facecolor()[0][:3], to_rgb(
        _by_gid(ax.lines, "fit-median")[0].get_color()))


def test_peer_group_styles_follow_the_data():
    groups = ["one", "two", "three", "four", "five"] * 2
    chart = _peers(groups)
    chart.update(target={}, paths=None)
    ax = plots.peer_relation(chart, annotate=False).axes[0]
    scatters = _by_gid(ax.collections, "peer")
    assert len(scatters) == 5 and len({tuple(c.get_facecolor()[0]) for c in scatters}) == 5
    for gid in ("target-interval", "report-multiple", "path-growth-median"):
        assert not _by_gid(ax.lines, gid)
    assert not _by_gid(ax.texts, "peer-name")


# --------------------------------------------------------------------------------------------
# all figures, saving, and no statistics

def test_figures_and_save_all(tmp_path):
    charts = {"scenario": "risk-weighted", "fans": {"revenue": FAN}, "target_price": TARGET,
              "scenarios": {"target_price": SCENARIO_ROWS},
              "variables": {"revenue": {"label": "revenue"}, "b": {"label": "b driver"}}}
    sensitivity = {"revenue": {"year": "Y5", "ranking": [{"driver": "b", "score": 0.3}]}}
    figs = plots.figures(charts, sensitivity)
    assert sorted(figs) == ["fan_revenue", "scenarios_target_price", "target_price",
                            "tornado_revenue"]
    assert figs["tornado_revenue"].axes[0].get_title() == "Sensitivity: Revenue Y5"
    paths = plots.save_all(figs, tmp_path / "figs")
    for name, path in paths.items():
        assert path == tmp_path / "figs" / f"{name}.png"
        assert 5_000 < path.stat().st_size < 150_000
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] >= 500
    assert not list((tmp_path / "figs").glob(".*"))


def test_plots_compute_no_statistics():
    source = Path(plots.__file__).read_text()
    tree = ast.parse(source)
    banned = {"quantile", "nanquantile", "percentile", "median", "nanmedian", "mean", "std",
              "histogram", "gaussian_kde", "average"}
    calls = {node.func.attr for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert not calls & banned, calls & banned
    assert "import xarray" not in source and "scipy" not in source
