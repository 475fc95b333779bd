"""Charts for people: fan charts, target-price distribution, scenarios, tornado, prior vs posterior.

Every function takes saved-results objects (xarray Datasets read from ``results/forecast.nc``,
plain dicts and lists from ``results/summary.json``) and returns a ``matplotlib.figure.Figure``.
Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global state), so the
module is safe under any backend, including Agg on a headless machine. Nothing here imports PyMC.
The only file I/O is :func:`save_all`.

Conventions (DESIGN.md): money in RMB mn, ratios as fractions (drawn as percent on the axis),
days as days, years labelled ``FY18`` ... ``FY23`` (``A`` actual / ``E`` estimate on the axis).
Posterior predictive variables carry dims ``(chain, draw, path[, scenario], year)``; when a
``scenario`` dimension is present, the ``"risk-weighted"`` scenario is drawn unless another is
asked for.

Every artist a function adds gets a ``gid`` so that tests (and people) can find it:
``band-50``/``band-80``/``band-95``, ``median``, ``actual``, ``published`` (fan chart);
``histogram``, ``kde``, ``ref-price``, ``ref-report``, ``ref-median``, ``p-upside`` (target
price); ``interval-50``, ``interval-90``, ``median``, ``ref-*`` (scenarios); ``bar`` (tornado);
``prior``, ``posterior`` (prior vs posterior); ``peer`` (one scatter per peer group),
``fit-median``, ``fit-band``, ``sensetime-interval``, ``sensetime-median``,
``sensetime-premium-interval``, ``path-cagr-band``, ``path-cagr-median``, ``report-multiple``
(peer relation); ``histogram-<method>``, ``kde-<method>``, ``median-<method>``,
``p-upside-<method>``, ``ref-price``, ``ref-report`` (valuation methods, ``<method>`` being
``report`` or ``peer-regression``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from . import mcse
from .data import DAYS_PER_YEAR
from .peers import GROUPS as PEER_GROUPS
from .peers import GROWTH, MARGIN, PREDICTION_PARAMS, RESPONSE, predict_multiple

__all__ = [
    "DEFAULT_SCENARIO", "fan_chart", "target_price_distribution", "scenario_comparison",
    "tornado", "prior_posterior", "save_all", "select_scenario", "label", "units",
    "peer_relation", "valuation_methods", "METHOD_VARIABLES", "METHOD_LABELS",
]

DEFAULT_SCENARIO = "risk-weighted"
SAMPLE_DIMS = ("chain", "draw", "path")
#: PNG resolution for :func:`save_all`; with the figure sizes below a PNG stays well under 150 KB.
DPI = 96

FAN_COLOUR = "#1f5fa8"
ACTUAL_COLOUR = "#222222"
PUBLISHED_COLOUR = "#c0392b"
PRICE_COLOUR = "#555555"
REPORT_METHOD_COLOUR = "#d9822b"

#: Valuation method (summary.json ``valuation_method``) -> its target-price variable.
METHOD_VARIABLES = {"report": "target_price_hkd_report", "peer-regression": "target_price_hkd_peer"}
METHOD_LABELS = {"report": "Report multiple", "peer-regression": "Peer regression"}
METHOD_COLOURS = {"report": REPORT_METHOD_COLOUR, "peer-regression": FAN_COLOUR}
#: Peer group -> (label, marker, colour) in the peer-relation chart.
PEER_STYLE = {"global_ai": ("Global AI", "o", "#4c72b0"),
              "china_ai": ("China AI", "D", "#c0392b"),
              "global_saas": ("Global SaaS", "s", "#55a868")}

_LABELS = {
    "revenue": "Revenue",
    "revenue_smart_business": "Smart Business revenue",
    "revenue_smart_city": "Smart City revenue",
    "revenue_smart_life": "Smart Life revenue",
    "revenue_smart_auto": "Smart Auto revenue",
    "gross_profit": "Gross profit",
    "gross_margin": "Gross margin",
    "operating_income": "Operating income",
    "net_income": "Net income",
    "adjusted_net_income": "Adjusted net income",
    "operating_cash_flow": "Operating cash flow",
    "capex": "Capex",
    "free_cash_flow": "Free cash flow",
    "cash": "Cash and cash equivalents",
    "net_cash": "Net cash",
    "trade_receivable_days": "Trade receivable days (year-end)",
    "target_price_hkd": "Target price",
    "cash_burn_fy21_fy23": "Cash burn FY21-FY23",
    "ev_sales_multiple": "EV/sales multiple",
    "enterprise_value": "Enterprise value",
    "equity_value": "Equity value",
}


def label(variable: str) -> str:
    """A readable name for a variable (the variable name itself when unknown)."""
    return _LABELS.get(variable, variable.replace("_", " ").capitalize())


def units(variable: str) -> str:
    """The unit a variable is drawn in: ``"RMB mn"``, ``"%"`` (a fraction), ``"days"`` ..."""
    if variable.endswith("_hkd"):
        return "HK$ per share"
    if variable.endswith("_days") or variable.endswith("days_long_run"):
        return "days"
    if variable.endswith("_margin") or variable.endswith("_ratio") or variable.endswith("_share"):
        return "%"
    if variable.endswith("_multiple"):
        return "x"
    return "RMB mn"


def _axis_label(variable: str) -> str:
    u = units(variable)
    return f"{label(variable)} ({'% of revenue' if u == '%' else u})"


def _format_axis(ax: Axes, variable: str, axis: str = "y") -> None:
    target = ax.yaxis if axis == "y" else ax.xaxis
    if units(variable) == "%":
        target.set_major_formatter(PercentFormatter(xmax=1.0))
    elif units(variable) == "RMB mn":
        target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))


def _new_figure(width: float = 7.0, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    while getattr(fig, "figure", fig) is not fig:  # a SubFigure's .figure is its parent
        fig = fig.figure
    return fig


# --------------------------------------------------------------------------------------------
# Data helpers
# --------------------------------------------------------------------------------------------

def select_scenario(data: xr.Dataset | xr.DataArray, scenario: str | None = None):
    """Pick one scenario from data that has a ``scenario`` dimension; pass other data through.

    ``scenario=None`` means :data:`DEFAULT_SCENARIO` when it is a label, else the first label.
    An explicitly named scenario that is absent raises ``KeyError``.
    """
    if "scenario" not in data.dims:
        return data
    labels = [str(s) for s in data["scenario"].values] if "scenario" in data.coords else []
    if scenario is None:
        if DEFAULT_SCENARIO in labels:
            return data.sel(scenario=DEFAULT_SCENARIO)
        return data.isel(scenario=0)
    if scenario not in labels:
        raise KeyError(f"scenario '{scenario}' not in {labels}")
    return data.sel(scenario=scenario)


def _scenario_name(data, scenario: str | None) -> str | None:
    if "scenario" not in data.dims:
        return None
    if scenario is not None:
        return scenario
    labels = [str(s) for s in data["scenario"].values] if "scenario" in data.coords else []
    if DEFAULT_SCENARIO in labels:
        return DEFAULT_SCENARIO
    return labels[0] if labels else "0"


def _samples(da: xr.DataArray, keep: Sequence[str] = ()) -> np.ndarray:
    """Values with every dimension but ``keep`` flattened into a last axis of samples."""
    sample = [d for d in da.dims if d not in keep]
    stacked = da.transpose(*keep, *sample).values
    return stacked.reshape(*[da.sizes[d] for d in keep], -1).astype(float)


def _derived(ds: xr.Dataset | None, variable: str) -> xr.DataArray | None:
    """``variable`` from ``ds``, or derived from its lines (history and published lack ratios)."""
    if ds is None:
        return None
    if variable in ds:
        return ds[variable]
    have = set(ds.data_vars)
    if variable == "gross_margin" and {"gross_profit", "revenue"} <= have:
        return ds["gross_profit"] / ds["revenue"]
    if variable == "free_cash_flow" and {"operating_cash_flow", "capex"} <= have:
        return ds["operating_cash_flow"] - ds["capex"]  # engine.py: FCF = OCF - capex
    if variable == "net_cash" and {"cash", "total_debt"} <= have:
        return ds["cash"] - ds["total_debt"]
    if variable == "trade_receivable_days" and {"trade_receivables", "revenue"} <= have:
        return ds["trade_receivables"] / ds["revenue"] * DAYS_PER_YEAR  # year-end basis
    return None


def _years(da: xr.DataArray | None) -> list[str]:
    if da is None or "year" not in da.dims:
        return []
    return [str(y) for y in da["year"].values]


def _band_quantiles(level: float) -> tuple[float, float]:
    return (1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0


# --------------------------------------------------------------------------------------------
# Fan chart
# --------------------------------------------------------------------------------------------

def fan_chart(predictive: xr.Dataset, history: xr.Dataset | None, variable: str,
              published: xr.Dataset | None = None, ax: Axes | None = None,
              bands: Sequence[float] = (0.5, 0.8, 0.95), scenario: str | None = None) -> Figure:
    """Fan chart of ``variable``: actuals FY18A-FY20A, forecast bands FY21E-FY23E.

    One shaded band per level in ``bands`` (central intervals of the draws, quantiles over every
    sample dimension: chain, draw, path), the median line, the actuals as a solid line with
    markers and, when ``published`` has the variable, the report's point forecast as a dashed line
    with markers. The bands and the median start from the last actual so the fan opens at FY20A.
    Ratios missing from ``history``/``published`` (gross margin, receivable days, FCF, net cash)
    are derived from their lines.
    """
    da = select_scenario(predictive[variable], scenario)
    fc_years = _years(da)
    actual = _derived(history, variable)
    hist_years = [y for y in _years(actual) if y not in fc_years]
    all_years = hist_years + fc_years
    x_of = {y: i for i, y in enumerate(all_years)}
    fc_x = np.array([x_of[y] for y in fc_years], dtype=float)

    if ax is None:
        fig, ax = _new_figure()
    else:
        fig = _root_figure(ax)

    q = _samples(da, keep=("year",))  # (year, samples)
    anchor_x, anchor_y = None, None
    if hist_years:
        last = float(actual.sel(year=hist_years[-1]))
        if math.isfinite(last):
            anchor_x, anchor_y = float(x_of[hist_years[-1]]), last

    def _joined(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if anchor_x is None:
            return fc_x, values
        return np.r_[anchor_x, fc_x], np.r_[anchor_y, values]

    levels = sorted({float(b) for b in bands}, reverse=True)  # widest first, narrower on top
    for i, level in enumerate(levels):
        lo_q, hi_q = _band_quantiles(level)
        lo = np.quantile(q, lo_q, axis=1)
        hi = np.quantile(q, hi_q, axis=1)
        xs, los = _joined(lo)
        _, his = _joined(hi)
        alpha = 0.15 + 0.20 * i / max(len(levels) - 1, 1)  # stacked: the centre is darkest
        band = ax.fill_between(xs, los, his, color=FAN_COLOUR, alpha=alpha, linewidth=0,
                               label=f"{level:.0%} interval")
        band.set_gid(f"band-{round(level * 100):d}")

    xs, med = _joined(np.quantile(q, 0.5, axis=1))
    (median_line,) = ax.plot(xs, med, color=FAN_COLOUR, linewidth=2.0, label="Median")
    median_line.set_gid("median")

    if hist_years:
        (actual_line,) = ax.plot([x_of[y] for y in hist_years],
                                 actual.sel(year=hist_years).values.astype(float),
                                 color=ACTUAL_COLOUR, linewidth=2.0, marker="o", markersize=5,
                                 label="Actual")
        actual_line.set_gid("actual")

    point = _derived(published, variable)
    pub_years = [y for y in _years(point) if y in fc_years]
    if pub_years:
        (pub_line,) = ax.plot([x_of[y] for y in pub_years],
                              point.sel(year=pub_years).values.astype(float),
                              color=PUBLISHED_COLOUR, linestyle="--", linewidth=1.5, marker="s",
                              markersize=5, label="Report forecast")
        pub_line.set_gid("published")

    ax.set_xticks(range(len(all_years)))
    ax.set_xticklabels([f"{y}{'A' if y in hist_years else 'E'}" for y in all_years])
    ax.set_xlim(-0.3, len(all_years) - 0.7)
    ax.set_ylabel(_axis_label(variable))
    _format_axis(ax, variable)
    name = _scenario_name(predictive[variable], scenario)
    ax.set_title(label(variable) + (f" [{name}]" if name else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    return fig


# --------------------------------------------------------------------------------------------
# Target price distribution
# --------------------------------------------------------------------------------------------

def _kde(values: np.ndarray, grid: np.ndarray, exact_max: int = 20_000) -> np.ndarray:
    """Gaussian kernel density on an evenly spaced ``grid`` (numpy only; no scipy).

    Silverman's bandwidth. Up to ``exact_max`` draws the sum over draws is exact; beyond, the
    draws are first binned on the grid (linear cost in the number of draws, so a million draws
    stay cheap); draws outside the grid then drop out of the estimate.
    """
    x = values[np.isfinite(values)]
    n = x.size
    if n < 2 or grid.size < 2:
        return np.zeros_like(grid, dtype=float)
    sd = float(np.std(x, ddof=1))
    iqr = float(np.subtract(*np.percentile(x, [75, 25])))
    spread = min(sd, iqr / 1.349) if iqr > 0 else sd
    if spread <= 0:
        return np.zeros_like(grid, dtype=float)
    h = 0.9 * spread * n ** (-0.2)
    norm = n * h * math.sqrt(2 * math.pi)
    if n > exact_max:
        step = float(grid[1] - grid[0])
        h = max(h, step)
        norm = n * h * math.sqrt(2 * math.pi)
        counts, _ = np.histogram(x, bins=np.r_[grid - step / 2, grid[-1] + step / 2])
        kernel = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / h) ** 2)
        return kernel @ counts.astype(float) / norm
    out = np.empty_like(grid, dtype=float)
    for start in range(0, grid.size, 64):  # chunks keep memory bounded
        g = grid[start:start + 64, None]
        out[start:start + 64] = np.exp(-0.5 * ((g - x[None, :]) / h) ** 2).sum(axis=1)
    return out / norm


def _p_upside_text(p_upside) -> str:
    if isinstance(p_upside, Mapping):
        value, err = p_upside.get("value"), p_upside.get("mcse")
    else:
        value, err = p_upside
    text = f"P(upside) = {float(value):.2f}"
    if err is not None and math.isfinite(float(err)):
        text += f" ± {float(err):.3f}"
    return text


def target_price_distribution(predictive: xr.Dataset, price_hkd: float = 6.73,
                              report_tp: float = 8.08, p_upside=None,
                              scenario: str | None = None, bins: int = 40,
                              upper_quantile: float = 0.97) -> Figure:
    """Histogram and KDE of ``target_price_hkd`` with the share price and the report's target.

    ``p_upside`` is ``{"value", "mcse"}`` (as in summary.json) or ``(value, mcse)``; when None it
    is computed from the draws as P(target price > ``price_hkd``) with its MCSE. The x axis runs
    from the 0.5% quantile to ``upper_quantile`` of the draws (a long right tail would squash
    the body; the share beyond is said in the title); densities are per all draws.
    """
    da = select_scenario(predictive["target_price_hkd"], scenario)
    values = _samples(da)
    finite = values[np.isfinite(values)]
    if p_upside is None:
        arr = da.transpose(*[d for d in SAMPLE_DIMS if d in da.dims]).values
        p, err, _ = mcse.probability(arr > price_hkd) if arr.ndim in (2, 3) else (
            float(np.mean(finite > price_hkd)), float("nan"), finite.size)
        p_upside = (p, err)

    fig, ax = _new_figure()
    lo, hi = np.quantile(finite, [0.005, upper_quantile])
    lo, hi = min(lo, price_hkd, report_tp), max(hi, price_hkd, report_tp)
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    width = float(edges[1] - edges[0])
    _, _, patches = ax.hist(finite, bins=edges,
                            weights=np.full(finite.size, 1.0 / (finite.size * width)),
                            color=FAN_COLOUR, alpha=0.35, label="Draws")
    for patch in patches:
        patch.set_gid("histogram")
    grid = np.linspace(edges[0], edges[-1], 256)
    (kde_line,) = ax.plot(grid, _kde(finite, grid), color=FAN_COLOUR, linewidth=2, label="KDE")
    kde_line.set_gid("kde")
    median = float(np.median(finite))
    for gid, x, text, style, colour in (
            ("ref-price", price_hkd, f"Price HK${price_hkd:.2f}", ":", PRICE_COLOUR),
            ("ref-report", report_tp, f"Report target HK${report_tp:.2f}", "--", PUBLISHED_COLOUR),
            ("ref-median", median, f"Median HK${median:.2f}", "-", ACTUAL_COLOUR)):
        line = ax.axvline(x, color=colour, linestyle=style, linewidth=1.5, label=text)
        line.set_gid(gid)
    note = ax.text(0.98, 0.95, _p_upside_text(p_upside), transform=ax.transAxes, ha="right",
                   va="top", fontsize=11, bbox={"facecolor": "white", "edgecolor": "#bbbbbb"})
    note.set_gid("p-upside")
    ax.set_xlabel(_axis_label("target_price_hkd"))
    ax.set_ylabel("Density")
    name = _scenario_name(predictive["target_price_hkd"], scenario)
    title = "Target price distribution" + (f" [{name}]" if name else "")
    above, below = float(np.mean(finite > edges[-1])), float(np.mean(finite < edges[0]))
    outside = [f"{above:.1%} of draws above {edges[-1]:.1f}" if above > 0 else "",
               f"{below:.1%} below {edges[0]:.1f}" if below > 0 else ""]
    if above > 0 or below > 0:
        title += f"\n(axis cut: {', '.join(t for t in outside if t)})"
    ax.set_title(title, **({"fontsize": 10} if above > 0 or below > 0 else {}))
    ax.set_xlim(edges[0], edges[-1])
    ax.legend(loc="center right", fontsize=8, framealpha=0.8)
    return fig


# --------------------------------------------------------------------------------------------
# Scenario comparison
# --------------------------------------------------------------------------------------------

def scenario_comparison(predictive_with_scenario: xr.Dataset, variable: str = "target_price_hkd",
                        year: str | None = None,
                        references: Mapping[str, float] | None = None) -> Figure:
    """Median, 50% and 90% intervals of ``variable`` per scenario, one row each.

    For a yearly variable ``year`` defaults to the last forecast year. ``references`` adds
    labelled vertical lines (default for the target price: none; pass e.g.
    ``{"Price": 6.73, "Report": 8.08}``). Data without a ``scenario`` dimension gives one row.
    """
    da = predictive_with_scenario[variable]
    if "year" in da.dims:
        year = year if year is not None else str(da["year"].values[-1])
        da = da.sel(year=year)
    if "scenario" in da.dims:
        names = ([str(s) for s in da["scenario"].values] if "scenario" in da.coords
                 else [str(i) for i in range(da.sizes["scenario"])])
        rows = _samples(da, keep=("scenario",))
    else:
        names, rows = ["all paths"], _samples(da)[None, :]

    fig, ax = _new_figure(7.0, 1.2 + 0.55 * len(names))
    for i, (name, row) in enumerate(zip(names, rows)):
        y = len(names) - 1 - i  # first scenario on top
        q05, q25, q50, q75, q95 = np.quantile(row, [0.05, 0.25, 0.5, 0.75, 0.95])
        (l90,) = ax.plot([q05, q95], [y, y], color=FAN_COLOUR, linewidth=1.5, alpha=0.6,
                         solid_capstyle="butt", label="90% interval" if i == 0 else None)
        l90.set_gid("interval-90")
        (l50,) = ax.plot([q25, q75], [y, y], color=FAN_COLOUR, linewidth=6,
                         solid_capstyle="butt", label="50% interval" if i == 0 else None)
        l50.set_gid("interval-50")
        (med,) = ax.plot([q50], [y], marker="o", color="white", markeredgecolor=ACTUAL_COLOUR,
                         markersize=7, linestyle="none", label="Median" if i == 0 else None)
        med.set_gid("median")
    styles = ((":", PRICE_COLOUR), ("--", PUBLISHED_COLOUR), ("-.", ACTUAL_COLOUR))
    for i, (text, x) in enumerate((references or {}).items()):
        style, colour = styles[i % len(styles)]
        ref = ax.axvline(x, color=colour, linestyle=style, linewidth=1.2,
                         label=f"{text} {x:,.2f}")
        ref.set_gid(f"ref-{text}")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(list(reversed(names)))
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel(_axis_label(variable))
    _format_axis(ax, variable, axis="x")
    ax.set_title(f"{label(variable)}{f' {year}' if year else ''} by scenario")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------------------------
# Tornado
# --------------------------------------------------------------------------------------------

def tornado(sensitivity_list: Iterable[Mapping], title: str) -> Figure:
    """Horizontal bars of ``{"driver", "score"}`` entries, largest ``|score|`` on top."""
    entries = sorted(((str(e["driver"]), float(e["score"])) for e in sensitivity_list),
                     key=lambda e: abs(e[1]), reverse=True)
    fig, ax = _new_figure(7.0, 1.2 + 0.35 * max(len(entries), 1))
    if not entries:
        ax.text(0.5, 0.5, "no sensitivity data", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(title)
        return fig
    ys = np.arange(len(entries))[::-1]  # largest at the top
    scores = [s for _, s in entries]
    bars = ax.barh(ys, scores, color=[FAN_COLOUR if s >= 0 else PUBLISHED_COLOUR for s in scores],
                   height=0.7)
    for bar in bars:
        bar.set_gid("bar")
    ax.set_yticks(ys)
    ax.set_yticklabels([d for d, _ in entries], fontsize=8)
    ax.axvline(0.0, color=ACTUAL_COLOUR, linewidth=0.8)
    ax.set_xlabel("Sensitivity score")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Prior vs posterior
# --------------------------------------------------------------------------------------------

def _panels(prior: xr.Dataset, posterior: xr.Dataset, names: Sequence[str]):
    """(title, prior draws, posterior draws) per parameter element (extra dims unrolled)."""
    for name in names:
        missing = [g for g, ds in (("prior", prior), ("posterior", posterior)) if name not in ds]
        if missing:
            raise KeyError(f"parameter '{name}' not in {' and '.join(missing)}")
        post = posterior[name]
        extra = [d for d in post.dims if d not in ("chain", "draw")]
        if not extra:
            yield name, _samples(prior[name]), _samples(post)
            continue
        stacked_post = post.stack(_element=extra)
        stacked_prior = prior[name].stack(_element=extra)
        for k in range(stacked_post.sizes["_element"]):
            coords = stacked_post["_element"].values[k]
            coords = coords if isinstance(coords, tuple) else (coords,)
            suffix = ", ".join(str(c) for c in coords)
            yield (f"{name}[{suffix}]", _samples(stacked_prior.isel(_element=k)),
                   _samples(stacked_post.isel(_element=k)))


def prior_posterior(prior: xr.Dataset, posterior: xr.Dataset, names: Sequence[str],
                    ncols: int = 3) -> Figure:
    """Small multiples: the prior and posterior density of each named parameter.

    Parameters with dimensions beyond (chain, draw) get one panel per element.
    """
    panels = list(_panels(prior, posterior, names))
    n = max(len(panels), 1)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(3.0 * ncols, 2.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, pri, post) in zip(axes, panels):
        pri, post = pri[np.isfinite(pri)], post[np.isfinite(post)]
        both = np.r_[pri, post]
        lo, hi = np.quantile(both, [0.005, 0.995]) if both.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        grid = np.linspace(lo - pad, hi + pad, 200)
        (lp,) = ax.plot(grid, _kde(pri, grid), color=PRICE_COLOUR, linestyle="--", label="Prior")
        lp.set_gid("prior")
        (lq,) = ax.plot(grid, _kde(post, grid), color=FAN_COLOUR, linewidth=2, label="Posterior")
        lq.set_gid("posterior")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if panels:
        axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Prior vs posterior", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Peer relation (Figure 69 regression)
# --------------------------------------------------------------------------------------------

def _posterior_dataset(posterior) -> xr.Dataset:
    if isinstance(posterior, xr.DataTree):
        return posterior["posterior"].to_dataset()
    return posterior


def _interval_of(stats) -> tuple[float, float, float] | None:
    """(q05, q50, q95) from a ``{q05, q50, q95}`` mapping or a 3-sequence; None when absent."""
    if stats is None:
        return None
    if isinstance(stats, Mapping):
        try:
            return float(stats["q05"]), float(stats["q50"]), float(stats["q95"])
        except (KeyError, TypeError, ValueError):
            return None
    lo, mid, hi = (float(v) for v in stats)
    return lo, mid, hi


def _multiple_formatter() -> FuncFormatter:
    return FuncFormatter(lambda v, _pos: f"{v:g}x")


def peer_relation(peers: xr.Dataset, peer_posterior, sensetime_growth=None, premium=None, *,
                  sensetime_cagr: float | None = None, sensetime_margin: float | None = None,
                  report_multiple: float | None = None, with_premium=None,
                  level: float = 0.9, annotate: bool = True, rng=0,
                  ax: Axes | None = None) -> Figure:
    """The peers' EV/sales FY22E against their sales CAGR FY20-23E, with the fitted relation.

    * the 20 peers (``peers``, as from :func:`stforecast.peers.load_peers`) as one scatter per
      group (gid ``peer``, marker and colour by group), on a log multiple axis;
    * the fitted relation for a China-AI company (``intercept_sensetime``) at the peers' mean
      gross margin: the posterior median line (``fit-median``) and its central ``level`` band
      (``fit-band``; parameter uncertainty, no residual), from ``peer_posterior`` (a Dataset
      with :data:`stforecast.peers.PREDICTION_PARAMS`, dims chain and draw, or the fit's
      DataTree);
    * SenseTime's predicted multiple at ``sensetime_cagr`` / ``sensetime_margin`` (default: the
      report's 37% and 70.6% from ``peers.attrs``) from :func:`predict_multiple` (parameter and
      residual uncertainty, plus ``premium`` when given): a vertical ``level`` interval
      (``sensetime-interval``) and its median (``sensetime-median``). ``with_premium``
      (``{q05, q50, q95}``, e.g. summary.json's ``multiple_with_premium``) adds a second bar
      beside it (``sensetime-premium-interval``);
    * ``sensetime_growth``: the simulated paths' sales CAGR FY20-FY23 (array or DataArray),
      drawn as a shaded 5-95% span (``path-cagr-band``) and its median (``path-cagr-median``);
    * the report's multiple (default ``peers.attrs["sensetime_target_ev_sales_fy22e"]``, 34x) as
      a star at SenseTime's CAGR (``report-multiple``).
    """
    post = _posterior_dataset(peer_posterior)
    missing = [v for v in PREDICTION_PARAMS if v not in post]
    if missing:
        raise KeyError(f"peer posterior lacks {missing}")
    attrs = peers.attrs
    if sensetime_cagr is None:
        sensetime_cagr = attrs.get("sensetime_sales_cagr_fy20_23e")
    if sensetime_margin is None:
        sensetime_margin = attrs.get("sensetime_gross_margin_fy20")
    if report_multiple is None:
        report_multiple = attrs.get("sensetime_target_ev_sales_fy22e")
    lo_q, hi_q = _band_quantiles(level)

    growth = peers[GROWTH].values.astype(float)
    multiple = peers[RESPONSE].values.astype(float)
    groups = [str(g) for g in peers["group"].values]

    path_cagr = None
    if sensetime_growth is not None:
        values = np.asarray(getattr(sensetime_growth, "values", sensetime_growth), float).ravel()
        values = values[np.isfinite(values)]
        if values.size:
            path_cagr = np.quantile(values, [0.05, 0.5, 0.95])

    xs = [growth.min(), growth.max()]
    if sensetime_cagr is not None:
        xs.append(float(sensetime_cagr))
    if path_cagr is not None:
        xs += [path_cagr[0], path_cagr[2]]
    span = max(xs) - min(xs)
    x_lo, x_hi = min(xs) - 0.06 * span, max(xs) + 0.06 * span

    if ax is None:
        fig, ax = _new_figure(10.0, 4.8)
    else:
        fig = _root_figure(ax)

    if path_cagr is not None:  # a strip along the bottom of the axes
        band = ax.axvspan(path_cagr[0], path_cagr[2], ymin=0.0, ymax=0.035, color="#777777",
                          alpha=0.45, linewidth=0,
                          label=f"Simulated paths' CAGR, 5–95% [{path_cagr[0]:.0%}–"
                                f"{path_cagr[2]:.0%}]")
        band.set_gid("path-cagr-band")
        med = ax.axvline(path_cagr[1], ymin=0.0, ymax=0.07, color=ACTUAL_COLOUR, linewidth=2.0,
                         label=f"Paths' median CAGR {path_cagr[1]:.0%}")
        med.set_gid("path-cagr-median")

    # fitted line for a China-AI company at the peers' mean gross margin
    grid = np.linspace(x_lo, x_hi, 60)
    margin_mean = float(np.nanmean(peers[MARGIN].values.astype(float)))

    def flat(name):
        return post[name].values.astype(float).reshape(-1)

    log_mu = (flat("intercept_sensetime")[:, None]
              + flat("beta_growth")[:, None] * (grid[None, :] - flat("growth_centre")[:, None])
              + (flat("beta_margin") * (margin_mean - flat("margin_centre")))[:, None])
    line = np.exp(np.quantile(log_mu, [lo_q, 0.5, hi_q], axis=0))
    fit_band = ax.fill_between(grid, line[0], line[2], color=PEER_STYLE["china_ai"][2],
                               alpha=0.12, linewidth=0,
                               label=f"Fit for China AI at the peers' mean GM "
                                     f"{margin_mean:.0%}\n({level:.0%} band)")
    fit_band.set_gid("fit-band")
    (fit_line,) = ax.plot(grid, line[1], color=PEER_STYLE["china_ai"][2], linewidth=1.8,
                          label="Fit, posterior median")
    fit_line.set_gid("fit-median")

    for group in [g for g in PEER_GROUPS if g in groups] + sorted(set(groups) - set(PEER_GROUPS)):
        name, marker, colour = PEER_STYLE.get(group, (group, "^", PRICE_COLOUR))
        idx = [i for i, g in enumerate(groups) if g == group]
        pts = ax.scatter(growth[idx], multiple[idx], marker=marker, s=34, color=colour,
                         edgecolor="white", linewidth=0.6, zorder=3,
                         label=f"{name} peers ({len(idx)})")
        pts.set_gid("peer")
    if annotate:  # name the peers, skipping a label that would crowd one already placed
        names = (peers["company"].values if "company" in peers.coords
                 else peers["peer"].values)
        log_y = np.log(multiple)
        y_span = max(float(np.ptp(log_y)), 1e-9)
        placed: list[tuple[float, float]] = []
        order = sorted(range(len(names)), key=lambda i: (groups[i] != "china_ai", -log_y[i]))
        for i in order:
            u, v = (growth[i] - x_lo) / (x_hi - x_lo), (log_y[i] - log_y.min()) / y_span
            if any(abs(u - pu) < 0.09 and abs(v - pv) < 0.06 for pu, pv in placed):
                continue
            placed.append((u, v))
            text = ax.annotate(str(names[i]), (growth[i], multiple[i]), xytext=(4, 3),
                               textcoords="offset points", fontsize=6.5, color="#444444",
                               zorder=3)
            text.set_gid("peer-name")

    if sensetime_cagr is not None and sensetime_margin is not None:
        draws = predict_multiple(post, float(sensetime_cagr), float(sensetime_margin),
                                 premium=premium, rng=rng).values.ravel()
        q = np.quantile(draws[np.isfinite(draws)], [lo_q, 0.5, hi_q])
        x0 = float(sensetime_cagr)
        (bar,) = ax.plot([x0, x0], [q[0], q[2]], color=ACTUAL_COLOUR, linewidth=2.2,
                         solid_capstyle="butt", zorder=4,
                         label=f"SenseTime predicted at CAGR {x0:.0%}, GM "
                               f"{float(sensetime_margin):.1%}\n(median, {level:.0%}): "
                               f"{q[1]:.1f}x [{q[0]:.1f}–{q[2]:.1f}]")
        bar.set_gid("sensetime-interval")
        (mid,) = ax.plot([x0], [q[1]], marker="o", markersize=7, color="white",
                         markeredgecolor=ACTUAL_COLOUR, markeredgewidth=1.6, linestyle="none",
                         zorder=5)
        mid.set_gid("sensetime-median")
        wp = _interval_of(with_premium)
        if wp is not None:
            dx = 0.012 * (x_hi - x_lo)
            (pbar,) = ax.plot([x0 + dx, x0 + dx], [wp[0], wp[2]], color=ACTUAL_COLOUR,
                              linewidth=1.2, linestyle="--", zorder=4,
                              label=f"… times the premium prior: {wp[1]:.1f}x "
                                    f"[{wp[0]:.1f}–{wp[2]:.1f}]")
            pbar.set_gid("sensetime-premium-interval")
    if report_multiple is not None and sensetime_cagr is not None:
        (star,) = ax.plot([float(sensetime_cagr)], [float(report_multiple)], marker="*",
                          markersize=15, color=PUBLISHED_COLOUR, markeredgecolor="white",
                          linestyle="none", zorder=6,
                          label=f"Report's multiple {float(report_multiple):g}x")
        star.set_gid("report-multiple")

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_multiple_formatter())
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _pos: f"{v:g}x" if round(v) in (3, 5, 20, 30, 50) else ""))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlim(x_lo, x_hi)
    ax.set_xlabel("Sales CAGR FY20–FY23E")
    ax.set_ylabel("EV/sales FY22E (x, log scale)")
    ax.set_title("Peer multiples vs growth (report Figure 69) and SenseTime")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


# --------------------------------------------------------------------------------------------
# Valuation methods
# --------------------------------------------------------------------------------------------

def valuation_methods(predictive: xr.Dataset, price_hkd: float = 6.73, report_tp: float = 8.08,
                      p_upside_by_method: Mapping | None = None, scenario: str | None = None,
                      chosen: str | None = None, bins: int = 50,
                      upper_quantile: float = 0.97) -> Figure:
    """The target price under each valuation method, overlaid on one axis.

    For each method whose variable (:data:`METHOD_VARIABLES`) is in ``predictive``: an outline
    step histogram (``histogram-<method>``, one StepPatch; density per all draws, so the part
    beyond the shown range is missing mass rather than rescaled), its KDE (``kde-<method>``),
    its median as a short dashed line (``median-<method>``), and its P(upside) in a text box
    (``p-upside-<method>``) from ``p_upside_by_method`` (``{method: {"value", "mcse"}}`` as in
    summary.json's ``valuation_methods``), else computed from the draws with its MCSE. The
    share price (``ref-price``) and the report's target (``ref-report``) are marked. The x axis
    runs from the 0.5% quantile to ``upper_quantile`` of the draws (the share outside is said
    in the title).
    ``chosen`` (summary.json's ``valuation_method``) is flagged as the headline in the legend.
    """
    methods = [m for m, v in METHOD_VARIABLES.items() if v in predictive]
    if not methods:
        raise KeyError(f"predictive has none of {list(METHOD_VARIABLES.values())}")
    p_upside_by_method = p_upside_by_method or {}
    draws, arrays = {}, {}
    for m in methods:
        da = select_scenario(predictive[METHOD_VARIABLES[m]], scenario)
        values = _samples(da)
        draws[m] = values[np.isfinite(values)]
        arrays[m] = da
    lo = min(min(float(np.quantile(v, 0.005)) for v in draws.values()), price_hkd, report_tp)
    hi = max(max(float(np.quantile(v, upper_quantile)) for v in draws.values()), price_hkd,
             report_tp)
    pad = 0.03 * (hi - lo if hi > lo else 1.0)
    edges = np.linspace(lo - pad if lo < 0 else max(lo - pad, 0.0), hi + pad, bins + 1)
    width = float(edges[1] - edges[0])
    grid = np.linspace(edges[0], edges[-1], 256)

    fig, ax = _new_figure(7.5, 4.2)
    y_top = 0.95
    for m in methods:
        colour, name = METHOD_COLOURS[m], METHOD_LABELS[m]
        headline = " (headline)" if m == chosen else ""
        values = draws[m]
        counts, _ = np.histogram(values, bins=edges)
        density = counts / (values.size * width)
        hist = ax.stairs(density, edges, fill=False, color=colour, alpha=0.6, linewidth=0.9,
                         label=f"{name}{headline}: histogram and KDE")
        hist.set_gid(f"histogram-{m}")
        (kde,) = ax.plot(grid, _kde(values, grid), color=colour,
                         linewidth=2.4 if headline else 1.6)
        kde.set_gid(f"kde-{m}")
        median = float(np.median(values))
        med = ax.axvline(median, ymax=0.8, color=colour, linestyle=(0, (4, 2)), linewidth=1.4,
                         label=f"{name} median HK${median:.2f}")
        med.set_gid(f"median-{m}")
        pu = p_upside_by_method.get(m)
        if isinstance(pu, Mapping) and pu.get("value") is None:
            pu = None
        if pu is None:
            da = arrays[m]
            arr = da.transpose(*[d for d in SAMPLE_DIMS if d in da.dims]).values
            if arr.ndim in (2, 3):
                p, err, _ = mcse.probability(arr > price_hkd)
            else:
                p, err = float(np.mean(values > price_hkd)), float("nan")
            pu = (p, err)
        note = ax.text(0.98, y_top, f"{name}: {_p_upside_text(pu)}", transform=ax.transAxes,
                       ha="right", va="top", fontsize=9, color=colour,
                       fontweight="bold" if headline else "normal",
                       bbox={"facecolor": "white", "edgecolor": colour, "alpha": 0.9})
        note.set_gid(f"p-upside-{m}")
        y_top -= 0.11
    for gid, x, text, style, colour in (
            ("ref-price", price_hkd, f"Price HK${price_hkd:.2f}", ":", PRICE_COLOUR),
            ("ref-report", report_tp, f"Report target HK${report_tp:.2f}", "--",
             PUBLISHED_COLOUR)):
        line = ax.axvline(x, color=colour, linestyle=style, linewidth=1.5, label=text)
        line.set_gid(gid)
    above = max(float(np.mean(v > edges[-1])) for v in draws.values())
    below = max(float(np.mean(v < edges[0])) for v in draws.values())
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(_axis_label("target_price_hkd"))
    ax.set_ylabel("Density")
    name = _scenario_name(predictive[METHOD_VARIABLES[methods[0]]], scenario)
    title = "Target price by valuation method" + (f" [{name}]" if name else "")
    outside = [f"up to {above:.1%} of draws above {edges[-1]:.1f}" if above > 0 else "",
               f"up to {below:.1%} below {edges[0]:.1f}" if below > 0 else ""]
    if above > 0 or below > 0:
        title += f"\n(axis cut: {', '.join(t for t in outside if t)})"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="center right", fontsize=8, framealpha=0.85)
    return fig


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------

def save_all(figs: Mapping[str, Figure], out_dir: str | os.PathLike, dpi: int = DPI
             ) -> dict[str, Path]:
    """Write each figure as ``<out_dir>/<name>.png`` (atomically); returns name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in figs.items():
        path = out / f"{name}.png"
        tmp = out / f".{name}.png.tmp"
        fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"optimize": True})
        os.replace(tmp, path)
        paths[name] = path
    return paths
