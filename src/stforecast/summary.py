"""Summaries of predictive draws: percentiles per line item and year, P(upside) with its MCSE.

Pure numpy/xarray (no PyMC): used by ``run`` and on saved results; returns the dataclasses of the
results contract (``stforecast.results``). Statistics are over all ``(chain, draw, path)``
samples; MCSEs account for chain autocorrelation and for paths sharing a posterior draw
(``stforecast.mcse``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr

from .mcse import probability
from .registry import (METHOD_VARIABLES, QUANTILES, REPORTED_LINES, REPORTED_SCALARS,
                       SAMPLE_DIMS)
from .results import Probability, ScenarioSummary, Stats, ValuationMethodSummary


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


#: The variable ``p_upside`` compares with today's price: the discounted value per diluted
#: share when the draws have it (correct conventions), else the target price.
UPSIDE_VARIABLE = "value_today"


def upside_variable(predictive: xr.Dataset) -> str:
    return UPSIDE_VARIABLE if UPSIDE_VARIABLE in predictive else "target_price"


def discounted(predictive: xr.Dataset, name: str) -> xr.DataArray:
    """A per-share value discounted to today with each path's discount factor (when the draws
    carry one)."""
    if "discount_factor" in predictive:
        return predictive[name] * predictive["discount_factor"]
    return predictive[name]


def funding_summary(predictive: xr.Dataset, floor: float | None):
    """The funding rule's outcome (``results.Funding``) or None when the draws have none."""
    from .results import Funding

    if "funding_raised" not in predictive:
        return None
    raised = predictive["funding_raised"].transpose(*SAMPLE_DIMS, "year")
    cut = predictive["management_cut"].transpose(*SAMPLE_DIMS, "year") \
        if "management_cut" in predictive else None
    years = [str(y) for y in raised["year"].values]
    p_raise, p_cut = {}, {}
    values = raised.values
    for i, y in enumerate(years):
        v, m, n = probability((values[..., :i + 1] > 0).any(axis=-1))
        p_raise[y] = Probability(round(float(v), 5), round(float(m), 5), int(n))
        if cut is not None:
            v, m, n = probability((cut.values[..., :i + 1] > 0).any(axis=-1))
            p_cut[y] = Probability(round(float(v), 5), round(float(m), 5), int(n))
    total = values.sum(axis=-1)
    some = total[total > 0]
    return Funding(floor=None if floor is None else float(floor), p_raise_by=p_raise, amount_raised=_stats(total),
                   amount_raised_if_raised=_stats(some) if some.size else None,
                   dilution=_stats(_samples(predictive["dilution"])), p_cost_cut_by=p_cut)


def scenario_summary(predictive: xr.Dataset, company, description: str = "",
                     shocks: dict[str, str] | None = None) -> ScenarioSummary:
    """Line items per year, the per-path scalars, P(upside) and both valuation methods of one
    scenario's draws (dims chain, draw, path[, year])."""
    price = company.market.price
    methods = {}
    for method, (tp, multiple) in METHOD_VARIABLES.items():
        if tp in predictive:
            methods[method] = ValuationMethodSummary(
                target_price=sample_stats(predictive[tp]),
                p_upside=p_exceeds(discounted(predictive, tp), price),
                ev_sales_multiple=sample_stats(predictive[multiple], mean=False))
    scalars = scalar_stats(predictive)
    scalars.update(scalar_stats(predictive, ("sales_cagr",), mean=False))
    return ScenarioSummary(lines=line_stats(predictive, company), scalars=scalars,
                           p_upside=p_exceeds(predictive[upside_variable(predictive)], price),
                           valuation_methods=methods, description=description,
                           shocks=dict(shocks or {}),
                           funding=funding_summary(
                               predictive, predictive.attrs.get("liquidity_floor")))


def scenario_summary_of(name: str, draws: xr.Dataset, scenarios, company) -> ScenarioSummary:
    """``scenario_summary`` of scenario ``name`` of ``scenarios`` (a ``ScenarioSpec``) from its
    draws (dims chain, draw, path[, year])."""
    sc = scenarios.scenarios[name]
    return scenario_summary(draws, company, sc.description,
                            {k: v.describe() for k, v in sc.settings.items()})


def scenario_summaries(all_scenarios: xr.Dataset, scenarios, company
                       ) -> dict[str, ScenarioSummary]:
    """``{scenario: ScenarioSummary}`` for every scenario of the scenarios file (one thread per
    scenario: the percentiles' partitions release the GIL)."""
    names = list(scenarios.scenarios)

    def one(name: str) -> ScenarioSummary:
        return scenario_summary_of(name, all_scenarios.sel(scenario=name, drop=True), scenarios,
                                   company)

    with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1))) as pool:
        return dict(zip(names, pool.map(one, names)))
