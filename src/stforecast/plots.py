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
``prior``, ``posterior`` (prior vs posterior).
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

__all__ = [
    "DEFAULT_SCENARIO", "fan_chart", "target_price_distribution", "scenario_comparison",
    "tornado", "prior_posterior", "save_all", "select_scenario", "label", "units",
]

DEFAULT_SCENARIO = "risk-weighted"
SAMPLE_DIMS = ("chain", "draw", "path")
#: PNG resolution for :func:`save_all`; with the figure sizes below a PNG stays well under 150 KB.
DPI = 96

FAN_COLOUR = "#1f5fa8"
ACTUAL_COLOUR = "#222222"
PUBLISHED_COLOUR = "#c0392b"
PRICE_COLOUR = "#555555"

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
                              scenario: str | None = None, bins: int = 40) -> Figure:
    """Histogram and KDE of ``target_price_hkd`` with the share price and the report's target.

    ``p_upside`` is ``{"value", "mcse"}`` (as in summary.json) or ``(value, mcse)``; when None it
    is computed from the draws as P(target price > ``price_hkd``) with its MCSE.
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
    lo, hi = np.quantile(finite, [0.001, 0.999])
    lo, hi = min(lo, price_hkd, report_tp), max(hi, price_hkd, report_tp)
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    _, _, patches = ax.hist(finite, bins=edges, density=True,
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
    ax.set_title("Target price distribution" + (f" [{name}]" if name else ""))
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
    for text, x in (references or {}).items():
        ref = ax.axvline(x, color=PRICE_COLOUR, linestyle=":", linewidth=1.2,
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
