"""Sensitivity: which drivers and shocks move an outcome most, from the simulated draws.

The score is Spearman's rank correlation between a driver and the outcome over all
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
* shocks (``shock_<name>``): the intensity summed over the forecast years.

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


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (0.0 when either side is constant)."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else 0.0


def _flat(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da.transpose(*[d for d in SAMPLE_DIMS if d in da.dims]).values,
                      dtype=float).reshape(-1)


def driver_values(ds: xr.Dataset, level_drivers=()) -> dict[str, np.ndarray]:
    """One value per sample for every driver and shock present in ``ds`` (see module doc);
    ``level_drivers``: the company's unit drivers (``Company.unit_drivers()``)."""
    out = {}
    sample_size = int(np.prod([ds.sizes[d] for d in SAMPLE_DIMS if d in ds.sizes]))
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
                     level_drivers=()) -> list[dict]:
    """``[{"driver", "score"}]`` sorted by |score|, for ``variable`` (at ``year``) in ``ds``.

    ``ds``: predictive draws of ONE scenario (no ``scenario`` dimension). With more than
    ``max_samples`` samples a fixed random subset is used (the scores' Monte Carlo error is
    about 1/sqrt(max_samples) = 0.002).
    """
    if "scenario" in ds.dims:
        raise ValueError("select one scenario before ranking sensitivities")
    outcome = ds[variable] if year is None else ds[variable].sel(year=year)
    y = _flat(outcome)
    drivers = driver_values(ds, level_drivers)
    index = None
    if y.size > max_samples:
        index = np.sort(np.random.default_rng(seed).choice(y.size, max_samples, replace=False))
        y = y[index]
    ranked = []
    for name, x in drivers.items():
        if name == variable or (name == "ev_sales_multiple" and variable not in VALUATION_OUTPUTS):
            continue
        x = x if index is None else x[index]
        ok = np.isfinite(x) & np.isfinite(y)
        ranked.append({"driver": name, "score": round(spearman(x[ok], y[ok]), 4)})
    return sorted(ranked, key=lambda e: -abs(e["score"]))


def summary_sensitivity(ds: xr.Dataset, company) -> dict[str, dict]:
    """The rankings ``stforecast run`` writes to summary.json: every registry variable marked
    ``sensitivity``, per-year ones at the last forecast year."""
    out = {}
    for name, v in VARIABLES.items():
        if v.sensitivity and name in ds:
            year = company.last_forecast_year if "year" in ds[name].dims else None
            out[name] = {"year": year, "ranking": rank_sensitivity(
                ds, name, year, level_drivers=company.unit_drivers())}
    return out
