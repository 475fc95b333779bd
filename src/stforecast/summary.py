"""Summaries of predictive draws: percentiles per line item and year, P(upside) with its MCSE.

Pure numpy/xarray (no PyMC): used by ``run`` and on saved results. Statistics are over all
``(chain, draw, path)`` samples; MCSEs account for chain autocorrelation and for paths sharing a
posterior draw (``stforecast.mcse``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .mcse import probability
from .registry import QUANTILES, REPORTED_LINES, REPORTED_SCALARS, SAMPLE_DIMS


def reported_lines(company) -> tuple[str, ...]:
    """The registry's reported line items with the company's segment revenue lines."""
    return company.reported_lines(REPORTED_LINES)


def _stats(values: np.ndarray, mean: bool = True) -> dict[str, float]:
    flat = values.reshape(-1)
    qs = np.quantile(flat, list(QUANTILES.values()))
    out = {"mean": float(flat.mean())} if mean else {}
    out.update({k: float(v) for k, v in zip(QUANTILES, qs)})
    return {k: round(v, 4) for k, v in out.items()}


def sample_stats(da: xr.DataArray, mean: bool = True) -> dict[str, float]:
    """Mean (optional) and the ``QUANTILES`` of one variable over all its samples."""
    return _stats(_samples(da), mean)


def _samples(da: xr.DataArray) -> np.ndarray:
    return da.transpose(*[d for d in SAMPLE_DIMS if d in da.dims], ...).values


def line_item_stats(predictive: xr.Dataset, company) -> dict:
    """``{line: {year: {mean, q05, q25, q50, q75, q95}, ...}}`` plus the per-path scalars."""
    out = {}
    for name in reported_lines(company):
        if name in predictive:
            da = predictive[name]
            out[name] = {str(y): _stats(_samples(da.sel(year=y))) for y in da["year"].values}
    for name in REPORTED_SCALARS:
        if name in predictive:
            out[name] = _stats(_samples(predictive[name]))
    return out


def p_exceeds(da: xr.DataArray, threshold: float) -> dict[str, float]:
    """P(da > threshold) with its Monte Carlo standard error."""
    value, mcse, n = probability(_samples(da) > threshold)
    return {"value": round(float(value), 5), "mcse": round(float(mcse), 5), "n": int(n)}


def percentile_of(da: xr.DataArray, value: float) -> float:
    """Where ``value`` falls in the predictive distribution (fraction of samples below it)."""
    return round(float((_samples(da) < value).mean()), 4)


def probability_of_falling_revenue(predictive: xr.Dataset, revenue_start: float) -> float:
    """P(at least one forecast year with revenue below the year before); ``revenue_start``:
    the last history year's revenue."""
    rev = _samples(predictive["revenue"].transpose(*SAMPLE_DIMS, "year"))
    previous = np.concatenate([np.full(rev.shape[:-1] + (1,), revenue_start), rev[..., :-1]], -1)
    return round(float((rev < previous).any(axis=-1).mean()), 4)
