"""What the charts and the report show, computed once at run time (the summary layer).

``chart_data(predictive, company, summary, ...)`` turns the simulated draws (every scenario),
the company definition, the driver model's prior and posterior and the peer regression into
plain JSON-able data (lists of floats, labels) that ``run`` stores as ``summary["charts"]``:

* ``variables``: label, units and number format of every variable the report names;
* ``published``: the report's point forecasts (per line and year, and its target price);
* ``fans``: per fan variable, the actuals (history years), the report's forecast and the median
  and central bands of the draws per forecast year;
* ``target_price`` and ``valuation_methods``: histogram and kernel density of the target price
  (per valuation method) on a grid, the share price and the report's target, P(upside);
* ``scenarios``: the target price and final-year revenue per scenario (median, 50%, 90%);
* ``peers``: the peer scatter, the fitted relation with its band, the company's predicted
  multiple and the simulated paths' growth;
* ``prior_posterior``: prior and posterior density and 90% interval of the driver model's
  long-run, persistence and volatility parameters;
* ``events``: P(final-year revenue beats the report) and P(cash below the company's floor).

So that ``plots`` and ``report`` draw and render from the results folder alone and compute no
statistic. Pure numpy/xarray: no matplotlib, no PyMC. Money is in the company's currency (mn),
ratios are fractions, prices per share in the price currency, as in the registry's units.
"""

from __future__ import annotations

from dataclasses import asdict

import math
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from .company import Company, historical_ratios
from .mcse import probability
from .registry import (HEADLINE_SCENARIO, METHOD_VARIABLES, QUANTILES, REPORTED_LINES,
                       REPORTED_SCALARS, SAMPLE_DIMS, VALUATION_METHODS, VARIABLES)
from .scenarios import company_channels
from .summary import p_exceeds

#: Central intervals drawn around the median of a fan chart.
BAND_LEVELS = (0.5, 0.8, 0.95)
#: Points of a density grid, bins of a histogram, significant digits kept in summary.json.
DENSITY_POINTS = 160
HISTOGRAM_BINS = 40
SIGNIFICANT = 5
#: The target-price axis: from this lower quantile to the upper one (a long tail would squash
#: the body; the share cut off is reported).
AXIS_QUANTILES = (0.005, 0.97)
#: Parameters compared in the prior-vs-posterior panel (name endings) and how many.
PARAMETER_SUFFIXES = ("_long_run", "_persistence", "_volatility")
MAX_PARAMETERS = 12
#: Central interval shown for the peer fit, the company's predicted multiple and parameters.
INTERVAL = 0.9
#: A company fact read as the cash floor of the desk question "does cash fall below X?"
#: (money, the company's currency mn).
CASH_FLOOR_FACT = "cash_floor"

FORMATS = ("money", "fraction", "price", "multiple", "days", "count", "decimal")


# --- numbers --------------------------------------------------------------------------------------
def _round(x: float) -> float | None:
    """``x`` to ``SIGNIFICANT`` significant digits (None for NaN/inf: JSON has no NaN)."""
    x = float(x)
    if not math.isfinite(x):
        return None
    if x == 0.0:
        return 0.0
    return round(x, SIGNIFICANT - 1 - int(math.floor(math.log10(abs(x)))))


def _list(values) -> list[float | None]:
    return [_round(v) for v in np.asarray(values, dtype=float).ravel()]


def _flat(da: xr.DataArray) -> np.ndarray:
    """All samples of ``da`` (every dimension flattened), finite ones only."""
    values = np.asarray(da.values, dtype=float).ravel()
    return values[np.isfinite(values)]


def _headline(da: xr.DataArray, scenario: str) -> xr.DataArray:
    return da.sel(scenario=scenario, drop=True) if "scenario" in da.dims else da


def kde(values: np.ndarray, grid: np.ndarray, exact_max: int = 20_000) -> np.ndarray:
    """Gaussian kernel density of ``values`` on an evenly spaced ``grid`` (1 / unit of values).

    Silverman's bandwidth. Up to ``exact_max`` values the sum over values is exact; beyond, the
    values are first binned on the grid (linear cost, so a million draws stay cheap), and values
    outside the grid drop out of the estimate.
    """
    x = values[np.isfinite(values)]
    n = x.size
    if n < 2 or grid.size < 2:
        return np.zeros_like(grid, dtype=float)
    sd = float(np.std(x, ddof=1))
    iqr = float(np.subtract(*np.quantile(x, [0.75, 0.25])))
    spread = min(sd, iqr / 1.349) if iqr > 0 else sd
    if spread <= 0:
        return np.zeros_like(grid, dtype=float)
    h = 0.9 * spread * n ** (-0.2)
    if n > exact_max:
        step = float(grid[1] - grid[0])
        h = max(h, step)
        counts, _ = np.histogram(x, bins=np.r_[grid - step / 2, grid[-1] + step / 2])
        kernel = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / h) ** 2)
        return kernel @ counts.astype(float) / (n * h * math.sqrt(2 * math.pi))
    out = np.empty_like(grid, dtype=float)
    for start in range(0, grid.size, 64):  # chunks keep memory bounded
        g = grid[start:start + 64, None]
        out[start:start + 64] = np.exp(-0.5 * ((g - x[None, :]) / h) ** 2).sum(axis=1)
    return out / (n * h * math.sqrt(2 * math.pi))


# --- labels and units -----------------------------------------------------------------------------
def number_format(units: str) -> str:
    """How a value in ``units`` (a registry template or filled units) is written: one of
    ``FORMATS``."""
    if units.startswith("fraction"):
        return "fraction"
    if units.startswith("days"):
        return "days"
    if units.startswith("x"):
        return "multiple"
    if units.startswith("{price}") or "per share" in units:
        return "price"
    if units == "count":
        return "count"
    return "money"


def _entry(label: str, units: str, fmt: str, kind: str) -> dict:
    return {"label": label, "units": units, "format": fmt, "kind": kind}


def _without_unit(text: str) -> str:
    """A company label without a trailing ``(units)`` (the units are kept apart)."""
    text = text.strip()
    if text.endswith(")") and " (" in text:
        return text[:text.rindex(" (")]
    return text


def variables_block(company: Company, shocks: Sequence[Mapping] = ()) -> dict:
    """Label, units, number format and kind of each variable the report names: the registry's,
    the company's segment revenue lines and unit drivers, and the shock intensities."""
    units = company.units
    out = {}
    for name in company.reported_lines(REPORTED_LINES):
        v = VARIABLES.get(name)
        if v is not None:
            text = v.unit_text(**units)
            out[name] = _entry(v.label, text, number_format(v.units), "line")
    for s in company.segments:
        out[s.revenue] = _entry(f"{s.label} revenue", f"{company.currency} mn", "money", "line")
    for name, v in VARIABLES.items():
        if name not in out:
            out[name] = _entry(v.label, v.unit_text(**units), number_format(v.units), v.kind)
    for s in (s for s in company.segments if s.kind == "units"):
        out[s.unit_driver] = _entry(_without_unit(s.unit_label) if s.unit_label else
                                    f"{s.label} {s.unit.replace('_', ' ')}", "count", "count",
                                    "driver")
        out[s.per_unit_driver] = _entry(
            _without_unit(s.per_unit_label) if s.per_unit_label else
            f"{s.label} {s.per_unit.replace('_', ' ')}", f"{company.currency} mn", "decimal",
            "driver")
    for shock in shocks:
        name = str(shock.get("shock", ""))
        if name:
            out[f"shock_{name}"] = _entry(str(shock.get("label") or name), "intensity",
                                          "decimal", "shock")
    # the order of the report's percentile table: lines (with segments after revenue), scalars
    first = list(company.reported_lines(REPORTED_LINES)) + list(REPORTED_SCALARS)
    return {n: out[n] for n in first} | {n: e for n, e in out.items() if n not in first}


def channels_block(company: Company) -> dict:
    """Each shock channel's label and how its effect is written: ``relative`` (% of the
    driver), ``pp`` (percentage points of a fraction) or ``days``."""
    out = {}
    segments = {f"{s.name}_revenue": s.label for s in company.segments}
    for name, (kind, _desc) in company_channels(company).items():
        if name in VARIABLES:
            label = VARIABLES[name].label
        elif name in segments:
            label = f"{segments[name]} revenue"
        else:
            label = name.replace("_", " ")
        if kind == "relative":
            style = "relative"
        else:
            style = "days" if name.endswith("_days") else "pp"
        out[name] = {"label": label, "style": style}
    return out


# --- the company's actuals and the report's forecast ----------------------------------------------
def _derived(ds: xr.Dataset, name: str) -> xr.DataArray | None:
    """``name`` from ``ds`` or from its lines (reports publish lines, not every ratio)."""
    if name in ds:
        return ds[name]
    have = set(ds.data_vars)
    if name == "gross_margin" and {"gross_profit", "revenue"} <= have:
        return ds["gross_profit"] / ds["revenue"]
    if name == "free_cash_flow" and {"operating_cash_flow", "capex"} <= have:
        return ds["operating_cash_flow"] - ds["capex"]  # engine: FCF = OCF - capex
    if name == "net_cash" and {"cash", "total_debt"} <= have:
        return ds["cash"] - ds["total_debt"]
    return None


def history_values(company: Company, name: str) -> dict[str, float]:
    """The company's actual ``name`` per history year (ratios on the model's year-end basis;
    a units segment's drivers in the last history year only)."""
    ratios = historical_ratios(company.history)
    da = ratios[name] if name in ratios else _derived(company.history, name)
    if da is not None and "year" in da.dims:
        return {str(y): float(v) for y, v in zip(da["year"].values, da.values)
                if math.isfinite(float(v))}
    for s in company.segments:
        if s.kind == "units" and s.units_last and name in s.growth_drivers:
            last = company.last_history_year
            units = float(s.units_last)
            if name == s.unit_driver:
                return {last: units}
            return {last: float(company.history[s.revenue].sel(year=last)) / units}
    return {}


def published_values(company: Company, name: str) -> dict[str, float]:
    """The report's forecast of ``name`` per forecast year (a units segment's drivers in the
    last forecast year only, when the company gives them)."""
    da = _derived(company.published, name)
    if da is not None and "year" in da.dims:
        return {str(y): float(v) for y, v in zip(da["year"].values, da.values)
                if math.isfinite(float(v))}
    for s in company.segments:
        if s.kind == "units" and name in s.growth_drivers:
            value = (s.report_units_final if name == s.unit_driver else s.report_per_unit_final)
            return {company.last_forecast_year: float(value)} if value else {}
    return {}


def published_block(company: Company) -> dict:
    """The report's point forecasts: ``{"lines": {line: {year: value}}, "target_price",
    "price"}``."""
    lines = {}
    for name in company.reported_lines(REPORTED_LINES):
        values = published_values(company, name)
        if values:
            lines[name] = {y: _round(v) for y, v in values.items()}
    return {"lines": lines, "target_price": company.market.target_price_published,
            "price": company.market.price}


# --- fans -----------------------------------------------------------------------------------------
def fan_variables(company: Company) -> list[str]:
    """The registry's fan variables, with the segment revenue lines after revenue and the units
    segments' drivers at the end."""
    names = []
    for name in (n for n, v in VARIABLES.items() if v.fan):
        names.append(name)
        if name == "revenue":
            names.extend(s.revenue for s in company.segments)
    return names + company.unit_drivers()


def fan(draws: xr.DataArray, history: Mapping[str, float], published: Mapping[str, float],
        levels: Sequence[float] = BAND_LEVELS) -> dict:
    """Median and central ``levels`` intervals per forecast year of ``draws`` (dims year and
    the sample dims), beside the actuals and the report's forecast."""
    years = [str(y) for y in draws["year"].values]
    samples = draws.transpose("year", ...).values.reshape(len(years), -1).astype(float)
    bands = []
    for level in sorted(levels, reverse=True):  # widest first
        lo, hi = np.nanquantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
        bands.append({"level": level, "lower": _list(lo), "upper": _list(hi)})
    hist_years = [y for y in history if y not in years]
    return {
        "history": {"years": hist_years, "values": [_round(history[y]) for y in hist_years]},
        "forecast": {"years": years, "median": _list(np.nanmedian(samples, axis=1)),
                     "bands": bands},
        "published": {"years": [y for y in published if y in years],
                      "values": [_round(published[y]) for y in published if y in years]},
    }


def fans_block(predictive: xr.Dataset, company: Company, variables: Mapping) -> dict:
    out = {}
    for name in fan_variables(company):
        if name in predictive and "year" in predictive[name].dims:
            out[name] = {**{k: variables[name][k] for k in ("label", "units", "format")},
                         **fan(predictive[name], history_values(company, name),
                               published_values(company, name))}
    return out


# --- densities ------------------------------------------------------------------------------------
def _axis(samples: Sequence[np.ndarray], marks: Sequence[float], bins: int) -> np.ndarray:
    """Histogram edges from the lower to the upper ``AXIS_QUANTILES`` of every sample set,
    widened to show ``marks``."""
    lo = min([float(np.quantile(s, AXIS_QUANTILES[0])) for s in samples] + list(marks))
    hi = max([float(np.quantile(s, AXIS_QUANTILES[1])) for s in samples] + list(marks))
    pad = 0.04 * (hi - lo if hi > lo else 1.0)
    start = lo - pad if lo < 0 else max(lo - pad, 0.0)
    return np.linspace(start, hi + pad, bins + 1)


def density(values: np.ndarray, edges: np.ndarray, points: int = DENSITY_POINTS) -> dict:
    """Histogram (density per all values: mass outside the edges is missing, not rescaled) and
    kernel density on the span of ``edges``, the median and the shares cut off either side."""
    counts, _ = np.histogram(values, bins=edges)
    width = float(edges[1] - edges[0])
    grid = np.linspace(edges[0], edges[-1], points)
    return {"histogram": _list(counts / (values.size * width)),
            "density": _list(kde(values, grid)),
            "median": _round(np.median(values)),
            "above": _round(np.mean(values > edges[-1])),
            "below": _round(np.mean(values < edges[0]))}


def _grid(edges: np.ndarray, points: int = DENSITY_POINTS) -> dict:
    return {"edges": _list(edges), "grid": _list(np.linspace(edges[0], edges[-1], points))}


def target_price_block(predictive: xr.Dataset, company: Company, p_upside: Mapping | None,
                       variables: Mapping, scenario: str) -> dict | None:
    if "target_price" not in predictive:
        return None
    values = _flat(predictive["target_price"])
    price, report = company.market.price, company.market.target_price_published
    edges = _axis([values], [price, report], HISTOGRAM_BINS)
    v = variables["target_price"]
    return {"label": v["label"], "units": v["units"], "scenario": scenario, "price": price,
            "report": report, "p_upside": dict(p_upside) if p_upside else None,
            **_grid(edges), **density(values, edges)}


def valuation_block(predictive: xr.Dataset, company: Company, methods: Mapping,
                    chosen: str | None, variables: Mapping, scenario: str) -> dict | None:
    """The target price under each valuation method on one shared axis."""
    present = [m for m in VALUATION_METHODS if METHOD_VARIABLES[m][0] in predictive]
    if not present:
        return None
    values = {m: _flat(predictive[METHOD_VARIABLES[m][0]]) for m in present}
    price, report = company.market.price, company.market.target_price_published
    edges = _axis(list(values.values()), [price, report], 50)
    out = {}
    for m in present:
        block = methods.get(m) if isinstance(methods, Mapping) else None
        out[m] = {"label": variables[METHOD_VARIABLES[m][0]]["label"],
                  "p_upside": (block or {}).get("p_upside"), **density(values[m], edges)}
    return {"units": variables["target_price"]["units"], "scenario": scenario, "price": price,
            "report": report, "chosen": chosen, **_grid(edges), "methods": out}


def scenario_rows(da: xr.DataArray) -> list[dict]:
    """Median, 50% and 90% intervals of ``da`` per scenario (one row each, file order)."""
    names = [str(s) for s in da["scenario"].values] if "scenario" in da.dims else [None]
    rows = []
    for name in names:
        values = _flat(da.sel(scenario=name) if name is not None else da)
        q = np.quantile(values, list(QUANTILES.values()))
        rows.append({"scenario": name, **{k: _round(x) for k, x in zip(QUANTILES, q)}})
    return rows


def scenarios_block(predictive_all: xr.Dataset, company: Company, variables: Mapping) -> dict:
    out = {}
    final = company.last_forecast_year
    for name in ("target_price", "revenue"):
        if name not in predictive_all:
            continue
        da = predictive_all[name]
        year = final if "year" in da.dims else None
        if year is not None:
            da = da.sel(year=year)
        v = variables[name]
        refs = ({"price": company.market.price,
                 "report": company.market.target_price_published} if name == "target_price"
                else {"report": company.published_final(name)})
        out[name] = {"label": v["label"], "units": v["units"], "format": v["format"],
                     "year": year, "references": {k: x for k, x in refs.items() if x is not None},
                     "rows": scenario_rows(da)}
    return out


# --- events ---------------------------------------------------------------------------------------
def events_block(predictive: xr.Dataset, company: Company) -> dict:
    """P(final-year revenue beats the report's) and, when the company's facts name a cash
    floor, P(cash below it at some forecast year-end); each ``{value, mcse, n}``."""
    out = {}
    final = company.last_forecast_year
    report = company.published_final("revenue")
    if report is not None and "revenue" in predictive:
        out["revenue_beats_report"] = {"year": final, "report": report,
                                       **asdict(p_exceeds(predictive["revenue"].sel(year=final),
                                                          report))}
    floor = company.facts.get(CASH_FLOOR_FACT)
    if floor is not None and "cash" in predictive:
        below = (predictive["cash"] < floor).any("year")
        value, mcse, n = probability(below.transpose(*SAMPLE_DIMS).values)
        out["cash_below_floor"] = {"floor": floor, "value": round(value, 5),
                                   "mcse": round(mcse, 5), "n": n}
    return out


# --- peers ----------------------------------------------------------------------------------------
def peers_block(peers: xr.Dataset, peer_posterior: xr.Dataset, company: Company,
                summary: Mapping, growth: str, margin: str, response: str) -> dict:
    """The peer scatter (``growth`` vs ``response`` columns of ``peers``), the fitted relation for
    the company's group at the peers' mean ``margin`` and mean FCF margin (posterior median and
    central band, no residual), and the company's own points from the summary."""
    x = peers[growth].values.astype(float)
    y = peers[response].values.astype(float)
    names = peers["company"].values if "company" in peers.coords else peers["peer"].values
    groups = [str(g) for g in peers["group"].values]
    at = ((summary.get("peer_fit") or {}).get("at_report_growth_and_margin") or {})
    paths = summary.get("sales_cagr")  # the headline paths' expected CAGR (a top-level scalar)
    xs = [float(np.nanmin(x)), float(np.nanmax(x))]
    if at.get("sales_cagr") is not None:
        xs.append(float(at["sales_cagr"]))
    if isinstance(paths, Mapping):
        xs += [float(paths["q05"]), float(paths["q95"])]
    span = max(xs) - min(xs)
    grid = np.linspace(min(xs) - 0.06 * span, max(xs) + 0.06 * span, 60)
    margin_mean = float(np.nanmean(peers[margin].values.astype(float)))

    def flat(name):
        return peer_posterior[name].values.astype(float).reshape(-1)

    log_mu = (flat("intercept_target")[:, None]
              + flat("beta_growth")[:, None] * (grid[None, :] - flat("growth_centre")[:, None])
              + (flat("beta_margin") * (margin_mean - flat("margin_centre")))[:, None])
    lo_q, hi_q = (1 - INTERVAL) / 2, (1 + INTERVAL) / 2
    line = np.exp(np.quantile(log_mu, [lo_q, 0.5, hi_q], axis=0))
    order = list(dict.fromkeys(groups))
    return {
        "name": company.name, "source": str(peers.attrs.get("source", "")),
        "growth_period": str((summary.get("periods") or {}).get("sales_cagr", "")),
        "valuation_year": company.market.valuation_year,
        "groups": order, "target_group": str(peers.attrs.get("target_group", "")),
        "points": [{"name": str(n), "group": g, "growth": _round(a), "multiple": _round(b)}
                   for n, g, a, b in zip(names, groups, x, y)],
        "fit": {"level": INTERVAL, "margin": _round(margin_mean), "growth": _list(grid),
                "lower": _list(line[0]), "median": _list(line[1]), "upper": _list(line[2])},
        "target": {k: at.get(k) for k in ("sales_cagr", "gross_margin", "multiple",
                                          "multiple_with_premium", "report_multiple")},
        "paths": dict(paths) if isinstance(paths, Mapping) else None,
    }


# --- parameters -----------------------------------------------------------------------------------
def parameter_names(prior: xr.Dataset, posterior: xr.Dataset) -> list[str]:
    names = [str(n) for n in posterior.data_vars
             if n in prior and str(n).endswith(PARAMETER_SUFFIXES)
             and set(posterior[n].dims) == {"chain", "draw"}]
    return names[:MAX_PARAMETERS]


def prior_posterior_block(prior: xr.Dataset, posterior: xr.Dataset) -> list[dict]:
    """Per parameter: a shared grid (0.5%-99.5% of prior and posterior draws together), both
    densities on it and both central ``INTERVAL`` intervals."""
    out = []
    lo_q, hi_q = (1 - INTERVAL) / 2, (1 + INTERVAL) / 2
    for name in parameter_names(prior, posterior):
        pri, post = _flat(prior[name]), _flat(posterior[name])
        both = np.r_[pri, post]
        lo, hi = np.quantile(both, [0.005, 0.995]) if both.size else (0.0, 1.0)
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        grid = np.linspace(lo - pad, hi + pad, 100)
        out.append({"name": name, "grid": _list(grid),
                    "prior": _list(kde(pri, grid)), "posterior": _list(kde(post, grid)),
                    "prior_interval": _list(np.quantile(pri, [lo_q, 0.5, hi_q])),
                    "posterior_interval": _list(np.quantile(post, [lo_q, 0.5, hi_q]))})
    return out


# --- everything -----------------------------------------------------------------------------------
def chart_data(predictive_all: xr.Dataset, company: Company, summary: Mapping, *,
               prior: xr.Dataset | None = None, posterior: xr.Dataset | None = None,
               peers: xr.Dataset | None = None, peer_posterior: xr.Dataset | None = None,
               conventions: Mapping | None = None) -> dict:
    """Everything the charts and the report show, as JSON-able data (see the module docstring).

    ``predictive_all``: the posterior predictive draws of every scenario (dims scenario, chain,
    draw, path[, year]); ``summary``: the run's summary so far (headline scenario, valuation
    methods, peer fit, periods, shocks, sensitivity); ``prior``/``posterior``: the driver
    model's parameters; ``peers``/``peer_posterior``: the peer table and the regression's
    posterior (dims chain, draw); ``conventions``: the report's case under the report's and the
    correct conventions (``engine.convention_table``).
    """
    from .peers import regression  # the columns the peer table declares

    scenario = str(summary.get("headline_scenario") or HEADLINE_SCENARIO)
    headline = xr.Dataset({n: _headline(predictive_all[n], scenario)
                           for n in predictive_all.data_vars})
    variables = variables_block(company, summary.get("shocks") or ())
    out = {
        "scenario": scenario,
        "years": {"history": list(company.history_years),
                  "forecast": list(company.forecast_years),
                  "valuation": company.market.valuation_year},
        "variables": variables,
        "channels": channels_block(company),
        "published": published_block(company),
        "fans": fans_block(headline, company, variables),
        "target_price": target_price_block(headline, company, summary.get("p_upside"),
                                           variables, scenario),
        "valuation_methods": valuation_block(headline, company,
                                             summary.get("valuation_methods") or {},
                                             summary.get("valuation_method"), variables,
                                             scenario),
        "scenarios": scenarios_block(predictive_all, company, variables),
        "events": events_block(headline, company),
        "peers": None, "prior_posterior": [],
        "conventions": dict(conventions) if conventions is not None else None,
    }
    if peers is not None and peer_posterior is not None:
        reg = regression(peers)
        out["peers"] = peers_block(peers, peer_posterior, company, summary, reg.growth,
                                   reg.margin, reg.response)
    if prior is not None and posterior is not None:
        out["prior_posterior"] = prior_posterior_block(prior, posterior)
    return out


# --- the outside view -----------------------------------------------------------------------------
def _shares(values: np.ndarray, edges: Sequence[float]) -> list[float | None]:
    """Share of ``values`` per bin of ``edges``; the outer bins take everything beyond them (as
    the base rates' open-ended bins do)."""
    e = np.asarray(edges, float)
    clipped = np.clip(values, e[0], np.nextafter(e[-1], -np.inf))
    counts, _ = np.histogram(clipped, bins=e)
    return _list(counts / max(values.size, 1))


def outside_view_block(block: Mapping, headline: xr.Dataset, inside: xr.Dataset | None,
                       reference, company: Company) -> dict:
    """Chart data of the report's outside-view section: the reference class's 3-year CAGR
    histogram beside the forecast's (final and inside view alone) on the class's own bins, and
    the final-year revenue and the target price, inside view alone and blended, on one axis each.

    ``block``: the summary's ``outside_view`` block; ``reference``: the
    ``outside_view.ReferenceClass`` (None when the base rates were missing).
    """
    from .outside_view import cagr_3y

    start = company.last_history_revenue()
    sets = {"final": headline}
    if inside is not None:
        sets["inside_view"] = inside
    cagr = {k: _flat(cagr_3y(ds["revenue"], start)) for k, ds in sets.items()}
    out: dict = {"period": block.get("period"), "weight": block.get("weight"),
                 "reference_name": (block.get("reference_class") or {}).get("name")}
    if reference is not None:
        hist = reference.histogram()
        out["cagr"] = {"edges": hist["edges"], "reference_class": hist["frequency"],
                       **{k: _shares(v, hist["edges"]) for k, v in cagr.items()}}
    else:
        edges = _axis(list(cagr.values()), [0.0], HISTOGRAM_BINS)
        out["cagr"] = {"edges": _list(edges), **{k: _shares(v, edges) for k, v in cagr.items()}}
    final_year = company.last_forecast_year
    for name, select in (("revenue", lambda ds: ds["revenue"].sel(year=final_year)),
                         ("target_price", lambda ds: ds["target_price"])):
        values = {k: _flat(select(ds)) for k, ds in sets.items()}
        edges = _axis(list(values.values()), [], HISTOGRAM_BINS)
        out[name] = {"year": final_year if name == "revenue" else None, **_grid(edges),
                     **{k: density(v, edges) for k, v in values.items()}}
    return out
