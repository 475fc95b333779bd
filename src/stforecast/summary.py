"""Summaries of predictive draws: percentiles per line item and year, P(upside) with its MCSE.

Pure numpy/xarray (no PyMC): used by ``run`` and on saved results; returns the dataclasses of the
results contract (``stforecast.results``). Statistics are over all ``(chain, draw, path)``
samples; MCSEs account for chain autocorrelation and for paths sharing a posterior draw
(``stforecast.mcse``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .mcse import probability
from .registry import QUANTILES, REPORTED_LINES, REPORTED_SCALARS, SAMPLE_DIMS
from .results import Probability, Stats


def reported_lines(company) -> tuple[str, ...]:
    """The registry's reported line items with the company's segment revenue lines."""
    return company.reported_lines(REPORTED_LINES)


def _stats(values: np.ndarray, mean: bool = True) -> Stats:
    flat = values.reshape(-1)
    qs = np.quantile(flat, list(QUANTILES.values()))
    out = {"mean": float(flat.mean())} if mean else {}
    out.update({k: float(v) for k, v in zip(QUANTILES, qs)})
    return Stats(**{k: round(v, 4) for k, v in out.items()})


def sample_stats(da: xr.DataArray, mean: bool = True) -> Stats:
    """Mean (optional) and the ``QUANTILES`` of one variable over all its samples."""
    return _stats(_samples(da), mean)


def _samples(da: xr.DataArray) -> np.ndarray:
    return da.transpose(*[d for d in SAMPLE_DIMS if d in da.dims], ...).values


def line_stats(predictive: xr.Dataset, company) -> dict[str, dict[str, Stats]]:
    """``{line: {year: Stats}}`` for the company's reported line items."""
    out = {}
    for name in reported_lines(company):
        if name in predictive:
            da = predictive[name]
            out[name] = {str(y): _stats(_samples(da.sel(year=y))) for y in da["year"].values}
    return out


def scalar_stats(predictive: xr.Dataset, names=REPORTED_SCALARS, mean: bool = True
                 ) -> dict[str, Stats]:
    """``{scalar: Stats}`` for the per-path scalars ``names`` present in ``predictive``."""
    return {n: _stats(_samples(predictive[n]), mean) for n in names if n in predictive}


def p_exceeds(da: xr.DataArray, threshold: float) -> Probability:
    """P(da > threshold) with its Monte Carlo standard error."""
    value, mcse, n = probability(_samples(da) > threshold)
    return Probability(round(float(value), 5), round(float(mcse), 5), int(n))


def percentile_of(da: xr.DataArray, value: float) -> float:
    """Where ``value`` falls in the predictive distribution (fraction of samples below it)."""
    return round(float((_samples(da) < value).mean()), 4)


def probability_of_falling_revenue(predictive: xr.Dataset, revenue_start: float) -> float:
    """P(at least one forecast year with revenue below the year before); ``revenue_start``:
    the last history year's revenue."""
    rev = _samples(predictive["revenue"].transpose(*SAMPLE_DIMS, "year"))
    previous = np.concatenate([np.full(rev.shape[:-1] + (1,), revenue_start), rev[..., :-1]], -1)
    return round(float((rev < previous).any(axis=-1).mean()), 4)
