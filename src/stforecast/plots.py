"""Charts for people: fan charts, target-price distribution, scenarios, tornado, prior vs posterior.

Every function takes chart data as computed at run time by :mod:`stforecast.charts` and stored
in ``summary.json`` under ``charts`` (plain dicts and lists), and returns a
``matplotlib.figure.Figure``. Nothing here computes a statistic: quantiles, densities and
probabilities are the summary layer's; a function only places them. Labels and units come with
the data (the registry's and the company's own words). Figures are built with
``matplotlib.figure.Figure`` directly (no pyplot, no global state), so the module is safe under
any backend, including Agg on a headless machine. Nothing here imports PyMC. The only file I/O
is :func:`save_all`.

Years on the x axis carry ``A`` (actual) or ``E`` (estimate). Ratios (fractions) are drawn as
percent on the axis, days as days, money in the company's currency (mn).

Every artist a function adds gets a ``gid`` so that tests (and people) can find it:
``band-50``/``band-80``/``band-95``, ``median``, ``actual``, ``published`` (fan chart);
``histogram``, ``kde``, ``ref-price``, ``ref-report``, ``ref-median``, ``p-upside`` (target
price); ``interval-50``, ``interval-90``, ``median``, ``ref-<name>`` (scenarios); ``bar``
(tornado); ``prior``, ``posterior``, ``prior-interval``, ``posterior-interval`` (prior vs
posterior); ``peer`` (one scatter per peer group), ``peer-name``, ``fit-median``, ``fit-band``,
``target-interval``, ``target-median``, ``target-premium-interval``, ``path-growth-band``,
``path-growth-median``, ``report-multiple`` (peer relation); ``histogram-<method>``,
``kde-<method>``, ``median-<method>``, ``p-upside-<method>``, ``ref-price``, ``ref-report``
(valuation methods); ``settings``, ``effect``, ``interval-90``, ``ref-report`` (sweep response).
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from .registry import axis_label

__all__ = [
    "fan_chart", "target_price_distribution", "scenario_comparison", "tornado", "swing_tornado",
    "prior_posterior", "peer_relation", "valuation_methods", "sweep_response", "figures",
    "chart_builders",
    "save_all",
    "png_bytes", "axis_label", "METHOD_COLOURS",
]

#: PNG resolution; with the figure sizes below a PNG stays well under 150 KB.
DPI = 96

FAN_COLOUR = "#1f5fa8"
ACTUAL_COLOUR = "#222222"
PUBLISHED_COLOUR = "#c0392b"
PRICE_COLOUR = "#555555"
#: Colours and markers assigned in turn to the valuation methods and to the peer groups
#: present in the data.
METHOD_COLOURS = ("#d9822b", FAN_COLOUR, "#55a868", "#8172b2")
GROUP_COLOURS = ("#4c72b0", "#c0392b", "#55a868", "#8172b2", "#d9822b", "#937860")
GROUP_MARKERS = ("o", "D", "s", "^", "v", "P")


# --------------------------------------------------------------------------------------------
# Labels and axes
# --------------------------------------------------------------------------------------------

def _format_axis(ax: Axes, fmt: str, axis: str = "y") -> None:
    target = ax.yaxis if axis == "y" else ax.xaxis
    if fmt == "fraction":
        target.set_major_formatter(PercentFormatter(xmax=1.0))
    elif fmt in ("money", "count", "days"):
        target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    elif fmt == "multiple":
        target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}x"))


def _value(x: float, fmt: str) -> str:
    """A number as the axis and legends write it."""
    if fmt == "fraction":
        return f"{x:.1%}"
    if fmt in ("money", "count", "days"):
        return f"{x:,.0f}"
    if fmt == "multiple":
        return f"{x:.1f}x"
    return f"{x:,.2f}"


def _new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure's .figure is its parent
        fig = fig.figure
    return fig


def _floats(values: Iterable) -> np.ndarray:
    """A list from summary.json (None for a non-finite value) as floats (NaN)."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _scenario_suffix(name) -> str:
    return f" [{name}]" if name else ""


def _p_upside_text(p_upside: Mapping | None) -> str | None:
    if not isinstance(p_upside, Mapping) or p_upside.get("value") is None:
        return None
    text = f"P(upside) = {float(p_upside['value']):.2f}"
    err = p_upside.get("mcse")
    if err is not None and math.isfinite(float(err)):
        text += f" ± {float(err):.3f}"
    return text


# --------------------------------------------------------------------------------------------
# Fan chart
# --------------------------------------------------------------------------------------------

def fan_chart(fan: Mapping, ax: Axes | None = None, scenario: str | None = None) -> Figure:
    """Fan chart of one variable: actuals (history years), forecast bands and median.

    ``fan``: one entry of ``charts["fans"]``: ``label``, ``units``, ``format``, ``history``
    ``{years, values}``, ``forecast`` ``{years, median, bands: [{level, lower, upper}]}``
    (widest band first) and ``published`` ``{years, values}`` (the report's forecast, drawn
    dashed). The bands and the median start from the last actual so the fan opens there.
    """
    hist_years = list(fan["history"]["years"])
    hist_values = _floats(fan["history"]["values"])
    fc = fan["forecast"]
    fc_years = list(fc["years"])
    all_years = hist_years + fc_years
    x_of = {y: i for i, y in enumerate(all_years)}
    fc_x = np.array([x_of[y] for y in fc_years], dtype=float)

    if ax is None:
        fig, ax = _new_figure()
    else:
        fig = _root_figure(ax)

    anchor = None
    if hist_years and math.isfinite(hist_values[-1]) and x_of[hist_years[-1]] == fc_x[0] - 1:
        anchor = (float(x_of[hist_years[-1]]), float(hist_values[-1]))

    def joined(values) -> tuple[np.ndarray, np.ndarray]:
        values = _floats(values)
        if anchor is None:
            return fc_x, values
        return np.r_[anchor[0], fc_x], np.r_[anchor[1], values]

    bands = list(fc["bands"])
    for i, band in enumerate(bands):  # widest first, narrower on top
        xs, lo = joined(band["lower"])
        _, hi = joined(band["upper"])
        alpha = 0.15 + 0.20 * i / max(len(bands) - 1, 1)  # stacked: the centre is darkest
        level = float(band["level"])
        artist = ax.fill_between(xs, lo, hi, color=FAN_COLOUR, alpha=alpha, linewidth=0,
                                 label=f"{level:.0%} interval")
        artist.set_gid(f"band-{round(level * 100):d}")
    xs, med = joined(fc["median"])
    (median_line,) = ax.plot(xs, med, color=FAN_COLOUR, linewidth=2.0, label="Median")
    median_line.set_gid("median")

    if hist_years:
        (actual,) = ax.plot([x_of[y] for y in hist_years], hist_values, color=ACTUAL_COLOUR,
                            linewidth=2.0, marker="o", markersize=5, label="Actual")
        actual.set_gid("actual")
    pub = fan.get("published") or {}
    if pub.get("years"):
        (line,) = ax.plot([x_of[y] for y in pub["years"]], _floats(pub["values"]),
                          color=PUBLISHED_COLOUR, linestyle="--", linewidth=1.5, marker="s",
                          markersize=5, label="Report forecast")
        line.set_gid("published")

    ax.set_xticks(range(len(all_years)))
    ax.set_xticklabels([f"{y}{'A' if y in hist_years else 'E'}" for y in all_years])
    ax.set_xlim(-0.3, len(all_years) - 0.7)
    label = _capital(fan["label"])
    ax.set_ylabel(axis_label(label, fan["units"]))
    _format_axis(ax, fan["format"])
    ax.set_title(label + _scenario_suffix(scenario))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    return fig


# --------------------------------------------------------------------------------------------
# Target price
# --------------------------------------------------------------------------------------------

def _cut_note(above: float | None, below: float | None, lo: float, hi: float,
              prefix: str = "") -> str:
    parts = []
    if above:
        parts.append(f"{prefix}{above:.1%} of draws above {hi:.1f}")
    if below:
        parts.append(f"{prefix}{below:.1%} below {lo:.1f}")
    return f"\n(axis cut: {', '.join(parts)})" if parts else ""


def _reference_lines(ax: Axes, chart: Mapping, price_unit: str) -> None:
    for gid, key, text, style, colour in (
            ("ref-price", "price", "Price", ":", PRICE_COLOUR),
            ("ref-report", "report", "Report target", "--", PUBLISHED_COLOUR)):
        x = chart.get(key)
        if x is None:
            continue
        line = ax.axvline(float(x), color=colour, linestyle=style, linewidth=1.5,
                          label=f"{text} {float(x):.2f} {price_unit}".rstrip())
        line.set_gid(gid)


def _price_unit(units: str) -> str:
    """``"<price currency> per share"`` -> ``"<price currency>"`` (for legends)."""
    return units.split(" per ")[0] if " per " in units else ""


def target_price_distribution(chart: Mapping) -> Figure:
    """Histogram and kernel density of the target price, with the share price, the report's
    target and the median marked and P(upside) in a box.

    ``chart``: ``charts["target_price"]``: ``edges`` and ``histogram`` (density per all draws,
    so the part beyond the axis is missing mass), ``grid`` and ``density``, ``median``,
    ``price``, ``report``, ``p_upside``, ``above``/``below`` (shares cut off the axis),
    ``label``, ``units``, ``scenario``.
    """
    edges, grid = _floats(chart["edges"]), _floats(chart["grid"])
    fig, ax = _new_figure()
    patches = ax.bar(edges[:-1], _floats(chart["histogram"]), width=np.diff(edges),
                     align="edge", color=FAN_COLOUR, alpha=0.35, label="Draws")
    for patch in patches:
        patch.set_gid("histogram")
    (kde,) = ax.plot(grid, _floats(chart["density"]), color=FAN_COLOUR, linewidth=2,
                     label="Kernel density")
    kde.set_gid("kde")
    unit = _price_unit(chart["units"])
    _reference_lines(ax, chart, unit)
    median = float(chart["median"])
    line = ax.axvline(median, color=ACTUAL_COLOUR, linewidth=1.5,
                      label=f"Median {median:.2f} {unit}".rstrip())
    line.set_gid("ref-median")
    text = _p_upside_text(chart.get("p_upside"))
    if text:
        note = ax.text(0.98, 0.95, text, transform=ax.transAxes, ha="right", va="top",
                       fontsize=11, bbox={"facecolor": "white", "edgecolor": "#bbbbbb"})
        note.set_gid("p-upside")
    ax.set_xlabel(axis_label(_capital(chart["label"]), chart["units"]))
    ax.set_ylabel("Density")
    cut = _cut_note(chart.get("above"), chart.get("below"), edges[0], edges[-1])
    ax.set_title(f"Target price distribution{_scenario_suffix(chart.get('scenario'))}{cut}",
                 **({"fontsize": 10} if cut else {}))
    ax.set_xlim(edges[0], edges[-1])
    ax.legend(loc="center right", fontsize=8, framealpha=0.8)
    return fig


def valuation_methods(chart: Mapping, method_names: Mapping[str, str] | None = None
                      ) -> Figure:
    """The target price under each valuation method, overlaid on one axis.

    ``chart``: ``charts["valuation_methods"]``: shared ``edges`` and ``grid``, per method (in
    ``methods``) its ``histogram``, ``density``, ``median``, ``p_upside`` and shares cut off;
    ``price``, ``report``, ``chosen`` (the headline method, flagged in the legend), ``units``.
    ``method_names``: how a method is called (default: its key).
    """
    edges, grid = _floats(chart["edges"]), _floats(chart["grid"])
    names = dict(method_names or {})
    unit = _price_unit(chart["units"])
    fig, ax = _new_figure(7.5, 4.2)
    y_top = 0.95
    above = below = 0.0
    for i, (method, block) in enumerate(chart["methods"].items()):
        colour = METHOD_COLOURS[i % len(METHOD_COLOURS)]
        name = names.get(method, method)
        headline = method == chart.get("chosen")
        flag = " (headline)" if headline else ""
        hist = ax.stairs(_floats(block["histogram"]), edges, fill=False, color=colour,
                         alpha=0.6, linewidth=0.9, label=f"{name}{flag}: histogram and density")
        hist.set_gid(f"histogram-{method}")
        (kde,) = ax.plot(grid, _floats(block["density"]), color=colour,
                         linewidth=2.4 if headline else 1.6)
        kde.set_gid(f"kde-{method}")
        median = float(block["median"])
        med = ax.axvline(median, ymax=0.8, color=colour, linestyle=(0, (4, 2)), linewidth=1.4,
                         label=f"{name} median {median:.2f} {unit}".rstrip())
        med.set_gid(f"median-{method}")
        text = _p_upside_text(block.get("p_upside"))
        if text:
            note = ax.text(0.98, y_top, f"{name}: {text}", transform=ax.transAxes, ha="right",
                           va="top", fontsize=9, color=colour,
                           fontweight="bold" if headline else "normal",
                           bbox={"facecolor": "white", "edgecolor": colour, "alpha": 0.9})
            note.set_gid(f"p-upside-{method}")
            y_top -= 0.11
        above = max(above, float(block.get("above") or 0.0))
        below = max(below, float(block.get("below") or 0.0))
    _reference_lines(ax, chart, unit)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(axis_label("Target price", chart["units"]))
    ax.set_ylabel("Density")
    cut = _cut_note(above, below, edges[0], edges[-1], prefix="up to ")
    ax.set_title(f"Target price by valuation method{_scenario_suffix(chart.get('scenario'))}"
                 f"{cut}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="center right", fontsize=8, framealpha=0.85)
    return fig


# --------------------------------------------------------------------------------------------
# Scenario comparison
# --------------------------------------------------------------------------------------------

def scenario_comparison(block: Mapping) -> Figure:
    """Median, 50% and 90% intervals of one variable per scenario, one row each (first on
    top), with labelled reference lines.

    ``block``: one entry of ``charts["scenarios"]``: ``rows`` ``[{scenario, q05, q25, q50, q75,
    q95}]``, ``label``, ``units``, ``format``, ``year`` (None for a per-path variable) and
    ``references`` ``{name: value}``.
    """
    rows = list(block["rows"])
    names = [str(r["scenario"]) if r["scenario"] is not None else "all paths" for r in rows]
    fmt = block.get("format", "money")
    fig, ax = _new_figure(7.0, 1.2 + 0.55 * len(rows))
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        (l90,) = ax.plot([row["q05"], row["q95"]], [y, y], color=FAN_COLOUR, linewidth=1.5,
                         alpha=0.6, solid_capstyle="butt", label="90% interval" if i == 0 else None)
        l90.set_gid("interval-90")
        (l50,) = ax.plot([row["q25"], row["q75"]], [y, y], color=FAN_COLOUR, linewidth=6,
                         solid_capstyle="butt", label="50% interval" if i == 0 else None)
        l50.set_gid("interval-50")
        (med,) = ax.plot([row["q50"]], [y], marker="o", color="white",
                         markeredgecolor=ACTUAL_COLOUR, markersize=7, linestyle="none",
                         label="Median" if i == 0 else None)
        med.set_gid("median")
    styles = ((":", PRICE_COLOUR), ("--", PUBLISHED_COLOUR), ("-.", ACTUAL_COLOUR))
    for i, (name, x) in enumerate((block.get("references") or {}).items()):
        style, colour = styles[i % len(styles)]
        ref = ax.axvline(float(x), color=colour, linestyle=style, linewidth=1.2,
                         label=f"{name.capitalize()} {_value(float(x), fmt)}")
        ref.set_gid(f"ref-{name}")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(list(reversed(names)))
    ax.set_ylim(-0.6, len(rows) - 0.4)
    label = _capital(block["label"])
    ax.set_xlabel(axis_label(label, block["units"]))
    _format_axis(ax, fmt, axis="x")
    year = block.get("year")
    ax.set_title(f"{label}{f' {year}' if year else ''} by scenario")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------------------------
# Tornado
# --------------------------------------------------------------------------------------------

def _no_data(fig, ax, text: str):
    """``fig`` with ``text`` in the middle of an empty ``ax``."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def tornado(entries: Iterable[Mapping], title: str,
            labels: Mapping[str, str] | None = None) -> Figure:
    """Horizontal bars of ``{"driver", "score"}`` entries (summary.json's sensitivity ranking),
    largest ``|score|`` on top; ``labels``: driver -> its name on the axis."""
    labels = labels or {}
    entries = sorted(((str(e["driver"]), float(e["score"])) for e in entries),
                     key=lambda e: abs(e[1]), reverse=True)
    fig, ax = _new_figure(7.0, 1.2 + 0.35 * max(len(entries), 1))
    ax.set_title(title)
    if not entries:
        return _no_data(fig, ax, "no sensitivity data")
    ys = np.arange(len(entries))[::-1]  # largest at the top
    scores = [s for _, s in entries]
    bars = ax.barh(ys, scores, height=0.7,
                   color=[FAN_COLOUR if s >= 0 else PUBLISHED_COLOUR for s in scores])
    for bar in bars:
        bar.set_gid("bar")
    ax.set_yticks(ys)
    ax.set_yticklabels([labels.get(d, d) for d, _ in entries], fontsize=8)
    ax.axvline(0.0, color=ACTUAL_COLOUR, linewidth=0.8)
    ax.set_xlabel("Rank correlation with the outcome")
    ax.grid(axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Prior vs posterior
# --------------------------------------------------------------------------------------------

def prior_posterior(panels: Sequence[Mapping], ncols: int = 3) -> Figure:
    """Small multiples: the prior and posterior density of each parameter, with their central
    intervals as bars beneath.

    ``panels``: ``charts["prior_posterior"]``: ``[{name, grid, prior, posterior,
    prior_interval, posterior_interval}]`` (intervals ``[low, median, high]``).
    """
    n = max(len(panels), 1)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(2.7 * ncols, 1.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        grid = _floats(panel["grid"])
        pri, post = _floats(panel["prior"]), _floats(panel["posterior"])
        (lp,) = ax.plot(grid, pri, color=PRICE_COLOUR, linestyle="--", label="Prior")
        lp.set_gid("prior")
        (lq,) = ax.plot(grid, post, color=FAN_COLOUR, linewidth=2, label="Posterior")
        lq.set_gid("posterior")
        top = float(np.nanmax(np.r_[pri, post, 0.0])) or 1.0
        for key, y, colour in (("prior_interval", -0.06, PRICE_COLOUR),
                               ("posterior_interval", -0.12, FAN_COLOUR)):
            lo, mid, hi = _floats(panel[key])
            (bar,) = ax.plot([lo, hi], [y * top, y * top], color=colour, linewidth=2.5,
                             solid_capstyle="butt")
            bar.set_gid(key.replace("_", "-"))
            ax.plot([mid], [y * top], marker="|", color=colour, markersize=8)
        ax.set_title(textwrap.fill(str(panel["name"]).replace("_", " "), 34), fontsize=7.5)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if panels:
        axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Prior vs posterior (bars: 90% intervals)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Peer relation
# --------------------------------------------------------------------------------------------

def _interval(stats) -> tuple[float, float, float] | None:
    if not isinstance(stats, Mapping) or stats.get("q50") is None:
        return None
    return float(stats["q05"]), float(stats["q50"]), float(stats["q95"])


def group_styles(groups: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Peer group -> (marker, colour), assigned in turn in the order the groups are given."""
    return {g: (GROUP_MARKERS[i % len(GROUP_MARKERS)], GROUP_COLOURS[i % len(GROUP_COLOURS)])
            for i, g in enumerate(groups)}


def peer_relation(chart: Mapping, annotate: bool = True, ax: Axes | None = None) -> Figure:
    """The peers' EV/sales multiple against their sales growth, the fitted relation and the
    company.

    ``chart``: ``charts["peers"]``: ``points`` ``[{name, group, growth, multiple}]`` (one
    scatter per group, styles assigned in the order of ``groups``), ``fit`` (``growth`` grid,
    ``lower``/``median``/``upper`` multiples for the ``target_group`` at the peers' mean gross
    ``margin``), ``target`` (the company's ``sales_cagr``, ``gross_margin``, predicted
    ``multiple`` and ``multiple_with_premium`` ``{q05, q50, q95}``, ``report_multiple``),
    ``paths`` (the simulated paths' growth ``{q05, q50, q95}``), ``name``,
    ``growth_period``, ``valuation_year``. Multiples on a log axis.
    """
    if ax is None:
        fig, ax = _new_figure(10.0, 4.8)
    else:
        fig = _root_figure(ax)
    fit = chart["fit"]
    grid = _floats(fit["growth"])
    x_lo, x_hi = float(grid[0]), float(grid[-1])
    styles = group_styles(chart["groups"])
    target_group = chart.get("target_group")
    fit_colour = styles.get(target_group, (None, ACTUAL_COLOUR))[1]
    level = float(fit["level"])

    paths = _interval(chart.get("paths"))
    if paths is not None:  # a strip along the bottom of the axes
        band = ax.axvspan(paths[0], paths[2], ymin=0.0, ymax=0.035, color="#777777", alpha=0.45,
                          linewidth=0, label=f"Simulated paths' growth, 5–95% "
                                             f"[{paths[0]:.0%}–{paths[2]:.0%}]")
        band.set_gid("path-growth-band")
        med = ax.axvline(paths[1], ymin=0.0, ymax=0.07, color=ACTUAL_COLOUR, linewidth=2.0,
                         label=f"Paths' median growth {paths[1]:.0%}")
        med.set_gid("path-growth-median")

    group_name = str(target_group).replace("_", " ") if target_group else "the company's group"
    fit_band = ax.fill_between(grid, _floats(fit["lower"]), _floats(fit["upper"]),
                               color=fit_colour, alpha=0.12, linewidth=0,
                               label=f"Fit for {group_name} at the peers' mean GM "
                                     f"{float(fit['margin']):.0%}\n({level:.0%} band)")
    fit_band.set_gid("fit-band")
    (fit_line,) = ax.plot(grid, _floats(fit["median"]), color=fit_colour, linewidth=1.8,
                          label="Fit, posterior median")
    fit_line.set_gid("fit-median")

    points = list(chart["points"])
    for group in chart["groups"]:
        marker, colour = styles[group]
        mine = [p for p in points if p["group"] == group]
        pts = ax.scatter([p["growth"] for p in mine], [p["multiple"] for p in mine],
                         marker=marker, s=34, color=colour, edgecolor="white", linewidth=0.6,
                         zorder=3, label=f"{group.replace('_', ' ')} peers ({len(mine)})")
        pts.set_gid("peer")
    if annotate and points:  # name the peers, skipping a label that would crowd a placed one
        log_y = np.log(_floats([p["multiple"] for p in points]))
        low, span = float(np.nanmin(log_y)), max(float(np.nanmax(log_y) - np.nanmin(log_y)),
                                                  1e-9)
        placed: list[tuple[float, float]] = []
        order = sorted(range(len(points)),
                       key=lambda i: (points[i]["group"] != target_group, -log_y[i]))
        for i in order:
            p = points[i]
            u, v = (p["growth"] - x_lo) / (x_hi - x_lo), (log_y[i] - low) / span
            if any(abs(u - pu) < 0.09 and abs(v - pv) < 0.06 for pu, pv in placed):
                continue
            placed.append((u, v))
            text = ax.annotate(str(p["name"]), (p["growth"], p["multiple"]), xytext=(4, 3),
                               textcoords="offset points", fontsize=6.5, color="#444444",
                               zorder=3)
            text.set_gid("peer-name")

    target = chart.get("target") or {}
    growth, margin = target.get("sales_cagr"), target.get("gross_margin")
    predicted = _interval(target.get("multiple"))
    if growth is not None and predicted is not None:
        x0 = float(growth)
        gm = f", GM {float(margin):.1%}" if margin is not None else ""
        (bar,) = ax.plot([x0, x0], [predicted[0], predicted[2]], color=ACTUAL_COLOUR,
                         linewidth=2.2, solid_capstyle="butt", zorder=4,
                         label=f"{chart.get('name', '')} predicted at growth {x0:.0%}{gm}\n"
                               f"(median, {level:.0%}): {predicted[1]:.1f}x "
                               f"[{predicted[0]:.1f}–{predicted[2]:.1f}]")
        bar.set_gid("target-interval")
        (mid,) = ax.plot([x0], [predicted[1]], marker="o", markersize=7, color="white",
                         markeredgecolor=ACTUAL_COLOUR, markeredgewidth=1.6, linestyle="none",
                         zorder=5)
        mid.set_gid("target-median")
        premium = _interval(target.get("multiple_with_premium"))
        if premium is not None:
            dx = 0.012 * (x_hi - x_lo)
            (pbar,) = ax.plot([x0 + dx, x0 + dx], [premium[0], premium[2]], color=ACTUAL_COLOUR,
                              linewidth=1.2, linestyle="--", zorder=4,
                              label=f"… times the premium prior: {premium[1]:.1f}x "
                                    f"[{premium[0]:.1f}–{premium[2]:.1f}]")
            pbar.set_gid("target-premium-interval")
    report = target.get("report_multiple")
    if report is not None and growth is not None:
        (star,) = ax.plot([float(growth)], [float(report)], marker="*", markersize=15,
                          color=PUBLISHED_COLOUR, markeredgecolor="white", linestyle="none",
                          zorder=6, label=f"Report's multiple {float(report):g}x")
        star.set_gid("report-multiple")

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _pos: f"{v:g}x" if round(v) in (3, 5, 20, 30, 50) else ""))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlim(x_lo, x_hi)
    period = chart.get("growth_period") or ""
    ax.set_xlabel(f"Sales CAGR {period}".strip())
    ax.set_ylabel(f"EV/sales {chart.get('valuation_year') or ''} (x, log scale)".replace(
        "  ", " "))
    ax.set_title(f"Peer multiples vs growth, and {chart.get('name', 'the company')}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    return fig


def swing_tornado(block: Mapping, title: str, units: str = "", top: int = 15) -> Figure:
    """The tornado as analysts read it, from summary.json's ``sensitivity[outcome]["tornado"]``:
    one row per input (its label in words), a bar from the outcome's median with the input in
    its bottom decile to the median with it in its top decile, in the outcome's units, centred
    on the overall median; the largest swing on top. Blue: the input's top decile, red: its
    bottom decile."""
    entries = list(block.get("entries") or [])[:top]
    fig, ax = _new_figure(7.5, 1.4 + 0.38 * max(len(entries), 1))
    ax.set_title(title)
    if not entries:
        return _no_data(fig, ax, "no sensitivity data")
    centre = float(block["median"])
    ys = np.arange(len(entries))[::-1]  # largest swing at the top
    lo, hi = f"{100 * block['band']:.0f}th", f"{100 * (1 - block['band']):.0f}th"
    legend = {PUBLISHED_COLOUR: f"input at or below its {lo} percentile",
              FAN_COLOUR: f"input at or above its {hi} percentile"}
    for y, e in zip(ys, entries):
        for value, colour in ((float(e["low"]), PUBLISHED_COLOUR),
                              (float(e["high"]), FAN_COLOUR)):
            bar = ax.barh(y, value - centre, left=centre, height=0.7, color=colour, alpha=0.85,
                          label=legend.pop(colour, None))
            bar.patches[0].set_gid("bar")
    ax.set_yticks(ys)
    ax.set_yticklabels([_capital(str(e.get("label") or e["driver"])) for e in entries],
                       fontsize=8)
    ax.axvline(centre, color=ACTUAL_COLOUR, linewidth=0.8)
    what = "median" if block.get("statistic", "median") == "median" else block["statistic"]
    ax.set_xlabel(f"{_capital(what)} of the outcome{f' ({units})' if units else ''}; the line: "
                  f"its {what} over all paths", fontsize=8)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# The outside view
# --------------------------------------------------------------------------------------------

OUTSIDE_STYLES = {"reference_class": ("#9e9e9e", "Reference class (base rates)"),
                  "inside_view": ("#e6a23c", "Inside view alone"),
                  "final": (FAN_COLOUR, "This forecast (blended)")}


def outside_view_cagr(chart: Mapping) -> Figure:
    """The reference class's 3-year sales CAGR histogram beside this forecast's (and the inside
    view's), bar groups per bin of the class, as The Base Rate Book draws it.

    ``chart``: ``charts["outside_view"]``: ``cagr`` with ``edges`` and a share per bin for each
    of ``reference_class``, ``inside_view``, ``final``; ``period``, ``weight``.
    """
    block = chart["cagr"]
    edges = _floats(block["edges"])
    present = [k for k in OUTSIDE_STYLES if block.get(k) is not None]
    fig, ax = _new_figure(8.0, 4.2)
    n = len(edges) - 1
    x = np.arange(n)
    width = 0.8 / max(len(present), 1)
    for i, key in enumerate(present):
        colour, label = OUTSIDE_STYLES[key]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), 100 * _floats(block[key]), width=width,
                      color=colour, label=label)
        for bar in bars:
            bar.set_gid(f"cagr-{key}")
    labels = []
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        labels.append(f"<{hi:.0%}" if i == 0 else f">{lo:.0%}" if i == n - 1
                      else f"{lo:.0%}–{hi:.0%}")
    ax.set_xticks(x, labels, rotation=60, fontsize=7)
    ax.set_xlabel(f"3-year sales CAGR{(' ' + chart['period']) if chart.get('period') else ''}")
    ax.set_ylabel("Frequency (%)")
    weight = chart.get("weight")
    ax.set_title("Outside view: base rates beside this forecast"
                 + (f" (weight {weight:g})" if weight is not None else ""))
    ax.legend(fontsize=8)
    return fig


def outside_view_densities(chart: Mapping, labels: Mapping[str, str] | None = None) -> Figure:
    """Final-year revenue and target price: the inside view alone beside the blended forecast
    (kernel densities on one axis each, medians marked)."""
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, name in zip(axes, ("revenue", "target_price")):
        block = chart[name]
        grid = _floats(block["grid"])
        for key in ("inside_view", "final"):
            if block.get(key) is None:
                continue
            colour, label = OUTSIDE_STYLES[key]
            (line,) = ax.plot(grid, _floats(block[key]["density"]), color=colour, linewidth=2,
                              label=f"{label}: median {block[key]['median']:,.4g}")
            line.set_gid(f"{name}-{key}")
            ax.axvline(float(block[key]["median"]), color=colour, linewidth=1, linestyle="--")
        title = (labels or {}).get(name, name.replace("_", " "))
        ax.set_title(_capital(title) + (f" {block['year']}" if block.get("year") else ""),
                     fontsize=10)
        ax.set_yticks([])
        ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------------------------
# Every chart of a results folder, and saving
# --------------------------------------------------------------------------------------------

def chart_builders(charts: Mapping, sensitivity: Mapping | None = None,
                   method_names: Mapping[str, str] | None = None
                   ) -> dict[str, Callable[[], Figure]]:
    """Every chart of a run, by file name (without ``.png``), from ``summary["charts"]`` and
    ``summary["sensitivity"]``: a function that draws it (nothing is drawn here), so that
    processes can share the drawing (``report.ReportProcess``)."""
    builders = {}
    scenario = charts.get("scenario")
    for name, fan in (charts.get("fans") or {}).items():
        builders[f"fan_{name}"] = partial(fan_chart, fan, scenario=scenario)
    if charts.get("target_price"):
        builders["target_price"] = partial(target_price_distribution, charts["target_price"])
    for name, block in (charts.get("scenarios") or {}).items():
        if len(block["rows"]) > 1:
            builders[f"scenarios_{name}"] = partial(scenario_comparison, block)
    if charts.get("valuation_methods"):
        builders["valuation_methods"] = partial(valuation_methods, charts["valuation_methods"],
                                                method_names)
    if charts.get("peers"):
        builders["peer_relation"] = partial(peer_relation, charts["peers"])
    labels = {k: _capital(v["label"]) for k, v in (charts.get("variables") or {}).items()}
    units = {k: v.get("units", "") for k, v in (charts.get("variables") or {}).items()}
    for name, block in (sensitivity or {}).items():
        outcome = labels.get(name, name)
        year = f" {block['year']}" if block.get("year") else ""
        if block.get("tornado"):  # in the outcome's units; the rank view stays in the table
            builders[f"tornado_{name}"] = partial(
                swing_tornado, block["tornado"], f"Tornado: {outcome}{year}",
                units.get(name, ""))
        elif block.get("ranking"):  # summaries written before the tornado in units
            builders[f"tornado_{name}"] = partial(
                tornado, block["ranking"], f"Sensitivity: {outcome}{year}", labels)
    if charts.get("prior_posterior"):
        builders["prior_posterior"] = partial(prior_posterior, charts["prior_posterior"])
    if charts.get("outside_view"):
        builders["outside_view_cagr"] = partial(outside_view_cagr, charts["outside_view"])
        if charts["outside_view"].get("revenue"):
            builders["outside_view_inside_vs_final"] = partial(
                outside_view_densities, charts["outside_view"], labels)
    return builders


def figures(charts: Mapping, sensitivity: Mapping | None = None,
            method_names: Mapping[str, str] | None = None) -> dict[str, Figure]:
    """Every chart of a run, drawn, by file name (``chart_builders``)."""
    return {name: build() for name, build in
            chart_builders(charts, sensitivity, method_names).items()}


# --------------------------------------------------------------------------------------------
# Sweep response
# --------------------------------------------------------------------------------------------

def sweep_response(chart: Mapping, max_parameters: int = 6) -> Figure:
    """How P(upside) (top row) and final-year revenue (bottom row) move with each swept
    parameter (one column each, at most ``max_parameters``).

    ``chart``: ``sweep.sweep_chart``'s data: per parameter every setting's value ``x``, its
    ``p_upside`` with ``p_upside_mcse`` (error bars: +- 1 MCSE), ``revenue_q05/q50/q95`` (the
    median with its 90% interval), the ``effect`` (the mean over the other parameters at each
    value, grids only) and the ``rank_correlation``s; ``report_revenue`` (the report's figure
    for the final year) is drawn as a dashed line.
    """
    panels = list(chart["parameters"])[:max_parameters]
    n = max(len(panels), 1)
    fig = Figure(figsize=(3.4 * n + 0.6, 6.0), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, sharey="row")
    money = f"{chart['currency']} mn"
    for k, panel in enumerate(panels):
        top, bottom = axes[0][k], axes[1][k]
        x = _floats(panel["x"])
        bars = top.errorbar(x, _floats(panel["p_upside"]), yerr=_floats(panel["p_upside_mcse"]),
                            fmt="o", color=FAN_COLOUR, markersize=3.5, alpha=0.7,
                            elinewidth=1, label="settings (± MCSE)")
        bars[0].set_gid("settings")
        lo, mid, hi = (_floats(panel[f"revenue_{q}"]) for q in ("q05", "q50", "q95"))
        bottom.vlines(x, lo, hi, color=FAN_COLOUR, alpha=0.25, linewidth=1,
                      label="90% interval").set_gid("interval-90")
        (dots,) = bottom.plot(x, mid, "o", color=FAN_COLOUR, markersize=3.5, alpha=0.8,
                              label="median")
        dots.set_gid("settings")
        effect = panel.get("effect")
        if effect:
            for ax, key in ((top, "p_upside"), (bottom, "revenue_q50")):
                (line,) = ax.plot(_floats(effect["x"]), _floats(effect[key]), color=ACTUAL_COLOUR,
                                  linewidth=1.8, label="mean over the other parameters")
                line.set_gid("effect")
        if chart.get("report_revenue") is not None:
            ref = bottom.axhline(float(chart["report_revenue"]), color=PUBLISHED_COLOUR,
                                 linestyle="--", linewidth=1.2, label="report")
            ref.set_gid("ref-report")
        rc = panel.get("rank_correlation") or {}
        note = rc.get("p_upside")
        top.set_title(textwrap.fill(panel["label"], 34) + (
            f"\nrank corr. {note:+.2f}" if note is not None else ""), fontsize=9)
        bottom.set_xlabel(textwrap.fill(panel["label"], 34), fontsize=8)
        _format_axis(top, "fraction")
        _format_axis(bottom, "money")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"P(target price > {chart['price']:g} {chart['price_currency']})")
    axes[1][0].set_ylabel(f"Revenue {chart['year']} ({money})")
    axes[0][0].legend(fontsize=7, loc="best", framealpha=0.8)
    axes[1][0].legend(fontsize=7, loc="best", framealpha=0.8)
    hidden = len(chart["parameters"]) - len(panels)
    fig.suptitle(chart["title"] + (f" (first {len(panels)} parameters; {hidden} more in "
                                   f"sweep.json)" if hidden > 0 else ""), fontsize=10)
    return fig


def png_bytes(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_all(figs: Mapping[str, Figure | bytes], out_dir: str | os.PathLike, dpi: int = DPI
             ) -> dict[str, Path]:
    """Write each figure (or PNG bytes) as ``<out_dir>/<name>.png``, atomically; returns
    name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figs.items():
        data = fig if isinstance(fig, bytes) else png_bytes(fig, dpi)
        path = out / f"{name}.png"
        tmp = out / f".{name}.png.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
        paths[name] = path
    return paths
