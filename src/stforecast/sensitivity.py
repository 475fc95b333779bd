"""Sensitivity: which drivers and shocks move an outcome most, from the simulated draws.

Two views of the same draws of one scenario:

* **The tornado** (:func:`swing_sensitivity`, what the report, the plot and ``stforecast
  sensitivity`` show): for each input, the outcome's MEDIAN over the paths where the input is in
  its bottom decile (at or below its 10th percentile) and over the paths where it is in its top
  decile (at or above its 90th percentile), in the outcome's units; inputs sorted by the swing
  (the difference), labelled in words. This is the decile-band conditional of the joint
  simulation, not a re-simulation with the input pinned: it costs nothing beyond the draws the
  run already has, and it answers the analyst's question "on the paths where customers grew
  least, what was revenue?" including the inputs' correlations (drivers that move together
  share credit, as in the rank view). The median is used rather than the mean because outcomes
  such as the target price have heavy right tails that would let a few paths set a band's
  value; it is also the statistic of the headline. Where an input is tied at its 10th or 90th
  percentile (a shock that does not occur on most paths has intensity 0 there), the band is
  every path at that value, or, when that is most paths, the paths beyond it (for a shock: the
  paths where it occurred). Each band holds at least ``MIN_BAND`` of the paths or the input is
  left out.
* **The rank view** (:func:`rank_sensitivity`, ``stforecast sensitivity --rank``): the score is Spearman's rank correlation between a driver and the outcome over all
(chain, draw, path) samples of one scenario (ties get average ranks, which matters for shock
intensities that are zero on most paths). Signs say the direction (+ = a higher driver goes with
a higher outcome); the ranking is by absolute value, as in an @RISK tornado. Rank correlation is
unit-free and robust to the heavy tails of some working-capital days. It measures association in
the joint simulation, not a causal derivative: drivers that move together share credit.

What counts as "the driver" on a path (over the forecast years):

* unit drivers (e.g. customers, revenue per customer): their last-year level;
* ratio drivers (margins, days, D&A): their mean over the forecast years;
* the cost model's per-path drivers (capex overrun, S&M elasticity, cost inflation) as they
  are, and the R&D headcount at its last-year level;
* the EV/sales multiple: its value (ranked for valuation outcomes only; see VALUATION_OUTPUTS);
* shocks (``shock_<name>``): the intensity summed over the forecast years;
* direct segments' growth (``<segment>_revenue``): the segment's revenue CAGR from the last
  history year to the last forecast year (``growth_segments``).

Pure numpy/xarray: works on saved results without PyMC.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .registry import SAMPLE_DIMS, VALUATION_OUTPUTS, VARIABLES

MEAN_DRIVERS = ("gross_margin", "rnd_ratio", "selling_marketing_ratio", "admin_ratio",
                "trade_receivable_days", "other_receivable_days", "inventory_days",
                "trade_payable_days", "other_payable_days", "capex_ratio", "da_ratio")
#: Per-path drivers of the currency cost model (``stforecast.costs``): ranked as they are;
#: the R&D headcount at its last-year level.
PATH_DRIVERS = ("capex_overrun", "selling_marketing_elasticity", "cost_inflation")
LEVEL_DRIVERS = ("rnd_headcount",)
MAX_SAMPLES = 200_000
# VALUATION_OUTPUTS: outcomes the EV/sales multiple feeds. For any other outcome (revenue, cash,
# ...) the multiple is left out: it cannot drive them, and under the peer-regression method it is
# itself computed from the path's growth, so its correlation with revenue would be credit taken.


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-d array, ties sharing their average rank."""
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0))[inverse].astype(float)


def spearman(x: np.ndarray, y: np.ndarray, y_ranks: np.ndarray | None = None) -> float:
    """Spearman's rank correlation (0.0 when either side is constant); ``y_ranks``:
    ``average_ranks(y)`` when the caller has it (one outcome against many inputs)."""
    rx = average_ranks(x)
    ry = average_ranks(y) if y_ranks is None else y_ranks.copy()
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def _flat(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da.transpose(*[d for d in SAMPLE_DIMS if d in da.dims]).values,
                      dtype=float).reshape(-1)


def driver_values(ds: xr.Dataset, level_drivers=(), growth_segments=None
                  ) -> dict[str, np.ndarray]:
    """One value per sample for every driver and shock present in ``ds`` (see module doc);
    ``level_drivers``: the company's unit drivers (``Company.unit_drivers()``);
    ``growth_segments``: ``{driver: (revenue line, last history value, years)}`` of the direct
    segments (:func:`direct_growth`)."""
    out = {}
    sample_size = int(np.prod([ds.sizes[d] for d in SAMPLE_DIMS if d in ds.sizes]))
    for name, (line, start, years) in (growth_segments or {}).items():
        if line in ds and "year" in ds[line].dims and start > 0:
            end = np.maximum(_flat(ds[line].isel(year=-1)), 0.0)
            values = (end / start) ** (1.0 / years) - 1.0
            out[name] = (np.broadcast_to(values, (sample_size,)) if values.size < sample_size
                         else values)
    for name in ds.data_vars:
        da = ds[name]
        if not set(SAMPLE_DIMS) & set(da.dims):
            continue
        if name in level_drivers or name in LEVEL_DRIVERS:
            da = da.isel(year=-1)
        elif name in PATH_DRIVERS:
            pass
        elif name in MEAN_DRIVERS:
            da = da.mean("year")
        elif name.startswith("shock_"):
            da = da.sum("year")
        elif name != "ev_sales_multiple":
            continue
        values = np.broadcast_to(_flat(da), (sample_size,)) if da.size < sample_size else _flat(da)
        out[name] = values
    return out


def rank_sensitivity(ds: xr.Dataset, variable: str, year: str | None = None,
                     max_samples: int = MAX_SAMPLES, seed: int = 0,
                     level_drivers=(), growth_segments=None, drivers=None) -> list[dict]:
    """``[{"driver", "score"}]`` sorted by |score|, for ``variable`` (at ``year``) in ``ds``.

    ``ds``: predictive draws of ONE scenario (no ``scenario`` dimension). With more than
    ``max_samples`` samples a fixed random subset is used (the scores' Monte Carlo error is
    about 1/sqrt(max_samples) = 0.002). ``drivers``: ``driver_values`` of ``ds`` (with these
    ``level_drivers`` and ``growth_segments``) when the caller has them.
    """
    y, pairs = _inputs_and_outcome(ds, variable, year, max_samples, seed, level_drivers,
                                   growth_segments, "ranking sensitivities", drivers)
    finite = np.isfinite(y)
    y_ranks = average_ranks(y[finite])  # the outcome's ranks where an input is finite throughout
    ranked = [{"driver": name, "score": round(spearman(
        x, yy, y_ranks if yy.size == y_ranks.size else None), 4)} for name, x, yy in pairs]
    return sorted(ranked, key=lambda e: -abs(e["score"]))


def _inputs_and_outcome(ds, variable, year, max_samples, seed, level_drivers, growth_segments,
                        what: str, drivers=None):
    """``(outcome samples, [(input, input samples, outcome samples)])`` for one scenario's
    draws: a fixed random subset of ``max_samples`` when there are more; per input, the samples
    where both are finite; the multiple only for valuation outcomes, never the outcome itself.
    ``drivers``: ``driver_values(ds, level_drivers, growth_segments)``, made here when None."""
    if "scenario" in ds.dims:
        raise ValueError(f"select one scenario before {what}")
    outcome = ds[variable] if year is None else ds[variable].sel(year=year)
    y = _flat(outcome)
    if drivers is None:
        drivers = driver_values(ds, level_drivers, growth_segments)
    index = None
    if y.size > max_samples:
        index = np.sort(np.random.default_rng(seed).choice(y.size, max_samples, replace=False))
        y = y[index]
    pairs = []
    for name, x in drivers.items():
        if name == variable or (name == "ev_sales_multiple" and variable not in VALUATION_OUTPUTS):
            continue
        x = x if index is None else x[index]
        ok = np.isfinite(x) & np.isfinite(y)
        pairs.append((name, x[ok], y[ok]))
    return y, pairs


def direct_growth(company) -> dict[str, tuple[str, float, int]]:
    """``{<segment>_revenue: (revenue line, last history revenue, forecast years)}`` of the
    company's direct segments: their growth is an input of the tornado."""
    last = company.last_history_year
    out = {}
    for s in company.segments:
        if s.kind != "units" and s.revenue in company.history:
            start = float(company.history[s.revenue].sel(year=last))
            out[f"{s.name}_revenue"] = (s.revenue, start, len(company.forecast_years))
    return out


def input_labels(company, shock_labels=None) -> dict[str, tuple[str, str]]:
    """``{input: (label in words, what value of it is used)}`` for every tornado input."""
    first, final = company.first_forecast_year, company.last_forecast_year
    span = f"{first}-{final}"
    out = {name: (VARIABLES[name].label, f"mean {span}") for name in MEAN_DRIVERS
           if name in VARIABLES}
    out["ev_sales_multiple"] = (VARIABLES["ev_sales_multiple"].label, "x")
    labels = company.growth_drivers()
    for name in company.unit_drivers():
        out[name] = (labels.get(name, name.replace("_", " ")), final)
    for name, (line, _, _) in direct_growth(company).items():
        segment = labels.get(name, line.replace("_", " ")).split(" (")[0]
        out[name] = (f"{segment} growth", f"CAGR {company.last_history_year}-{final}")
    for shock, label in (shock_labels or {}).items():
        out[f"shock_{shock}"] = (label, f"shock intensity, sum {span}")
    return out


BAND = 0.10  # the tornado's bands: the input's bottom and top decile
MIN_BAND = 0.01  # a band holds at least 1% of the paths


def _bands(x: np.ndarray, band: float = BAND) -> tuple[np.ndarray, np.ndarray] | None:
    """Boolean masks of the input's bottom and top bands (see the module docstring)."""
    lo_q, hi_q = np.quantile(x, [band, 1.0 - band])
    low, high = x <= lo_q, x >= hi_q
    if high.mean() > 0.5:  # tied at the 90th percentile (e.g. a shock that rarely occurs)
        high = x > hi_q
    if low.mean() > 0.5 and (x < lo_q).mean() >= MIN_BAND:
        low = x < lo_q
    if min(low.mean(), high.mean()) < MIN_BAND or not (low & ~high).any():
        return None
    return low, high


def swing_sensitivity(ds: xr.Dataset, variable: str, year: str | None = None,
                      max_samples: int = MAX_SAMPLES, seed: int = 0, level_drivers=(),
                      growth_segments=None, labels=None, band: float = BAND,
                      drivers=None) -> dict:
    """The tornado of ``variable`` (at ``year``) over ``ds``, ONE scenario's draws:
    ``{"statistic": "median", "band", "median" (the outcome's, all paths), "entries": [{
    "driver", "label", "basis", "low", "high", "swing", "input_low", "input_high", "n_low",
    "n_high"}]}`` sorted by ``|swing|``; ``low``/``high``: the outcome's median over the paths
    with the input in its bottom/top band (outcome units), ``input_low``/``input_high``: the
    input's 10th and 90th percentiles (its own units, ``basis``). ``labels``: input ->
    ``(label, basis)`` (:func:`input_labels`). With more than ``max_samples`` samples a fixed
    random subset is used. ``drivers``: as for :func:`rank_sensitivity`."""
    labels = labels or {}
    y, pairs = _inputs_and_outcome(ds, variable, year, max_samples, seed, level_drivers,
                                   growth_segments, "computing a tornado", drivers)
    entries = []
    for name, xs, ys in pairs:
        if xs.size == 0:
            continue
        masks = _bands(xs, band)
        if masks is None:
            continue
        low, high = masks
        lo_y, hi_y = float(np.median(ys[low])), float(np.median(ys[high]))
        label, basis = labels.get(name, (name.replace("_", " "), ""))
        entries.append({"driver": name, "label": label, "basis": basis,
                        "low": _round(lo_y), "high": _round(hi_y), "swing": _round(hi_y - lo_y),
                        "input_low": _round(float(np.quantile(xs, band))),
                        "input_high": _round(float(np.quantile(xs, 1.0 - band))),
                        "n_low": int(low.sum()), "n_high": int(high.sum())})
    entries.sort(key=lambda e: -abs(e["swing"]))
    return {"statistic": "median", "band": band, "median": _round(float(np.median(y))),
            "entries": entries}


def _round(x: float) -> float:
    """Four significant digits (the draws are stored to about that precision)."""
    return float(f"{x:.4g}") if np.isfinite(x) else x


def summary_sensitivity(ds: xr.Dataset, company, shock_labels=None) -> dict[str, dict]:
    """What ``stforecast run`` writes to summary.json for every registry variable marked
    ``sensitivity`` (per-year ones at the last forecast year): the rank view (``ranking``) and
    the tornado in the outcome's units (``tornado``, :func:`swing_sensitivity`).
    ``shock_labels``: shock name -> its label (the scenarios file's)."""
    out = {}
    labels = input_labels(company, shock_labels)
    growth = direct_growth(company)
    units = company.unit_drivers()
    drivers = None  # every outcome's inputs: the same values, made once
    for name, v in VARIABLES.items():
        if v.sensitivity and name in ds:
            if drivers is None:
                drivers = driver_values(ds, units, growth)
            year = company.last_forecast_year if "year" in ds[name].dims else None
            out[name] = {"year": year, "ranking": rank_sensitivity(
                ds, name, year, level_drivers=units, growth_segments=growth, drivers=drivers),
                "tornado": swing_sensitivity(ds, name, year, level_drivers=units,
                                             growth_segments=growth, labels=labels,
                                             drivers=drivers)}
    return out
