"""Operating costs and capex in currency, and the behavioural rules around cash.

The forecast's costs are amounts, not fractions of revenue (issue: with opex = revenue x ratio
the best revenue paths burned the most cash). Anchored on the last history year's actuals
excluding share-based compensation (``Company.cost_base``), per path and forecast year:

* **R&D** = headcount x cost per head. Headcount grows at a per-path rate (prior
  ``rnd_headcount_growth``) plus a yearly deviation (``cost_growth_noise``); cost per head at
  ``rnd_cost_per_head_growth``. The first forecast year's headcount is the company's staff
  count (``rnd_staff``, e.g. at mid-year), so the cost per head is anchored on last year's
  R&D over that count discounted by one year of headcount growth. R&D does not follow revenue.
* **Selling and marketing** is semi-variable: its log growth = ``cost_inflation`` +
  elasticity x revenue log growth (``selling_marketing_elasticity``).
* **Administrative** costs are mostly fixed: ``cost_inflation`` + a small elasticity
  (``admin_elasticity``).
* **Sticky costs**: when revenue falls, the elasticity is ``(1 - cost_stickiness)`` times the
  elasticity on the way up (Anderson, Banker & Janakiraman 2003: SG&A +0.55% per +1% of sales,
  -0.35% per -1%).
* **Capex** = the company's build-out plan (the report's capex by year) x a per-path overrun
  (``capex_overrun``), but never below ``maintenance_capex_share`` x D&A.
* **Share-based compensation** is the report's amount per year (grants are set in currency), in
  administrative expense; non-cash.
* **Management response** (applied by the engine, year by year): when the cash runway at a
  year end (liquidity / that year's burn) is below ``cut_runway_years``, opex and capex of the
  following years are cut by ``cut_size`` (a level shift; it can happen again).

Shocks on the ``rnd_ratio`` / ``selling_marketing_ratio`` / ``admin_ratio`` / ``capex_ratio``
channels add ``effect x revenue`` on top (these drivers are 0 on unshocked paths).

Pure numpy/xarray; the parameters are drawn here from the priors file's ``[costs]``,
``[funding]`` and ``[discounting]`` sections (``stforecast.priors``).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

#: Per-path cost parameters (priors file ``[costs]``).
COST_PRIORS = ("rnd_headcount_growth", "rnd_cost_per_head_growth", "cost_growth_noise",
               "selling_marketing_elasticity", "admin_elasticity", "cost_inflation",
               "cost_stickiness", "cut_runway_years", "cut_size", "capex_overrun",
               "maintenance_capex_share")
#: Per-path funding parameters (priors file ``[funding]``) and its fixed settings.
FUNDING_PRIORS = ("equity_discount", "debt_share", "debt_interest_rate")
FUNDING_SETTINGS = ("liquidity_floor", "raise_buffer_years")
#: Discounting (priors file ``[discounting]``).
DISCOUNT_PRIORS = ("cost_of_equity",)
DISCOUNT_SETTINGS = ("horizon_years",)
#: What each prior must support: a fraction (Beta/LogitNormal), a positive number, or any.
SUPPORT = {"selling_marketing_elasticity": "unit", "admin_elasticity": "unit",
           "cost_stickiness": "unit", "cut_size": "unit", "maintenance_capex_share": "unit",
           "equity_discount": "unit", "debt_share": "unit", "cost_growth_noise": "positive",
           "cut_runway_years": "positive", "capex_overrun": "positive",
           "debt_interest_rate": "positive", "cost_of_equity": "positive"}
#: Ratio drivers that, in the currency model, only carry shocks (0 on an unshocked path).
ADD_ON_RATIOS = ("rnd_ratio", "selling_marketing_ratio", "admin_ratio", "capex_ratio")
#: Drivers the currency cost model adds to the driver paths (engine inputs).
COST_DRIVERS = ("rnd_cash_cost", "rnd_headcount", "capex_plan", "sbc_amount",
                "selling_marketing_base", "admin_base", "revenue_base",
                "selling_marketing_elasticity", "admin_elasticity", "cost_inflation",
                "cost_stickiness", "cut_runway_years", "cut_size", "capex_overrun",
                "maintenance_capex_share")


def _rvs(prior, shape, rng) -> np.ndarray:
    return np.asarray(prior.draw(shape, rng), dtype=float)


def draw_parameters(priors: dict, shape: tuple[int, ...], rng: np.random.Generator
                    ) -> dict[str, np.ndarray]:
    """One draw per path of every prior in ``priors`` (name -> ``Prior``), shape ``shape``."""
    return {name: _rvs(p, shape, rng) for name, p in priors.items()}


def point_parameters(priors: dict) -> dict[str, float]:
    """The median of every prior (the point case: the report's case under the correct
    conventions)."""
    return {name: float(np.asarray(p.quantile(0.5))) for name, p in priors.items()}


def report_amounts(company) -> dict[str, xr.DataArray]:
    """The report's capex plan and share-based compensation per forecast year, in currency
    (its ratios times its own revenue): ``capex_plan``, ``sbc_amount``."""
    case = company.report_case
    revenue = case["segment_revenue"].sum("segment")
    return {"capex_plan": (case["capex_ratio"] * revenue).drop_attrs(),
            "sbc_amount": (case["sbc_ratio"] * revenue).drop_attrs()}


def cost_drivers(company, params: dict, dims: tuple[str, ...], coords: dict,
                 rng: np.random.Generator | None = None) -> dict[str, xr.DataArray]:
    """The currency cost model's drivers for ``run_engine``.

    ``params``: per-path values (arrays of the sample shape ``dims``, or floats for a point
    case) of ``COST_PRIORS``; ``rng``: draws the yearly deviations of R&D growth (``None``:
    none, the point case).
    """
    base = company.cost_base
    if base is None:
        from .errors import DataFileError
        raise DataFileError(f"{company.folder}/company.toml: section 'cost_base': expected the "
                            "last history year's costs excluding share-based compensation and "
                            "the R&D staff count (it is missing)")
    years = list(company.forecast_years)
    shape = tuple(len(coords[d]) for d in dims)

    def sample(x) -> xr.DataArray:
        x = np.asarray(x, dtype=float)
        return xr.DataArray(np.broadcast_to(x, shape) if x.ndim else x, dims=dims if x.ndim
                            else (), coords={d: coords[d] for d in dims} if x.ndim else None)

    noise_sd = np.asarray(params["cost_growth_noise"], float)[..., None]
    g_head = np.asarray(params["rnd_headcount_growth"], float)[..., None] + np.zeros(len(years))
    g_cost = np.asarray(params["rnd_cost_per_head_growth"], float)[..., None] + np.zeros(len(years))
    if rng is not None:
        g_head = g_head + noise_sd * rng.standard_normal(shape + (len(years),))
        g_cost = g_cost + noise_sd * rng.standard_normal(shape + (len(years),))
    # headcount: the staff count in the first forecast year, then its growth
    head = base["rnd_staff"] * np.exp(np.cumsum(g_head, axis=-1) - g_head[..., :1])
    per_head_first = base["rnd_expense"] / (base["rnd_staff"] * np.exp(-g_head[..., 0]))
    per_head = per_head_first[..., None] * np.exp(np.cumsum(g_cost, axis=-1))
    ydims = (dims + ("year",)) if np.ndim(head) > 1 else ("year",)
    ycoords = {**({d: coords[d] for d in dims} if np.ndim(head) > 1 else {}), "year": years}
    out = {
        "rnd_headcount": xr.DataArray(head, dims=ydims, coords=ycoords),
        "rnd_cash_cost": xr.DataArray(head * per_head, dims=ydims, coords=ycoords),
        "selling_marketing_base": xr.DataArray(base["selling_marketing_expense"]),
        "admin_base": xr.DataArray(base["admin_expense"]),
        "revenue_base": xr.DataArray(company.last_history_revenue()),
        **report_amounts(company),
    }
    for name in ("selling_marketing_elasticity", "admin_elasticity", "cost_inflation",
                 "cost_stickiness", "cut_runway_years", "cut_size", "capex_overrun",
                 "maintenance_capex_share"):
        out[name] = sample(params[name])
    return out


def uses_cost_model(d: xr.Dataset) -> bool:
    return "rnd_cash_cost" in d


def _log_growth(revenue: xr.DataArray, start) -> xr.DataArray:
    return np.log(revenue) - np.log(revenue.shift(year=1).fillna(start))


def semi_variable(base, elasticity, inflation, stickiness, revenue, revenue_base):
    """A cost that grows with inflation and ``elasticity`` x revenue growth, ``(1 - stickiness)``
    x elasticity on the way down: ``base x exp(cumsum(inflation + e x growth))``. (DataArrays,
    or the engine's ``named.Named`` arrays.)"""
    growth = _log_growth(revenue, revenue_base)
    down = (1.0 - stickiness) * elasticity
    step = inflation + (elasticity * growth).where(growth >= 0, down * growth)
    return base * np.exp(step.cumsum("year"))


def cost_plan(d, revenue) -> dict[str, tuple]:
    """Each cost line before management cuts, in currency: ``{line: (amount a cut scales,
    shock add-on)}`` for R&D, selling and marketing and administrative expense (without
    share-based compensation) and capex before depreciation's floor; the add-on is
    ``<line>_ratio`` x revenue. ``d``: the drivers (a Dataset or the engine's named drivers)."""
    sm = semi_variable(d["selling_marketing_base"], d["selling_marketing_elasticity"],
                       d["cost_inflation"], d["cost_stickiness"], revenue, d["revenue_base"])
    admin = semi_variable(d["admin_base"], d["admin_elasticity"], d["cost_inflation"],
                          d["cost_stickiness"], revenue, d["revenue_base"])
    return {
        "rnd_expense": (d["rnd_cash_cost"], revenue * d["rnd_ratio"]),
        "selling_marketing_expense": (sm, revenue * d["selling_marketing_ratio"]),
        "admin_expense": (admin, revenue * d["admin_ratio"]),
        "capex_build": (d["capex_plan"] * d["capex_overrun"], revenue * d["capex_ratio"]),
    }


def operating_costs(plan: dict[str, tuple], sbc_amount, cut=1.0) -> dict:
    """R&D, selling and marketing and administrative expense and capex before depreciation's
    floor, in currency, after management cuts (``cut``: the cost-cut factor, 1 = none) and
    with the shock add-ons (``plan`` from ``cost_plan``). Administrative expense includes
    share-based compensation (``sbc_amount``)."""
    out = {line: amount * cut + add_on for line, (amount, add_on) in plan.items()}
    out["admin_expense"] = out["admin_expense"] + sbc_amount
    return out


def funding_drivers(spec, company, params: dict, dims: tuple[str, ...], coords: dict,
                    rng: np.random.Generator | None = None) -> dict[str, xr.DataArray]:
    """The funding rule's and the discounting's drivers for ``run_engine`` (CORRECT).

    ``params``: per-path values (or floats, the point case) of ``FUNDING_PRIORS`` and
    ``DISCOUNT_PRIORS``; ``spec``: the ``PriorSpec`` (its fixed settings). With ``rng`` each
    path draws whether its raises are debt (probability ``debt_share``); without, a raise is
    split debt / equity in the proportion ``debt_share`` (the point case).
    """
    shape = tuple(len(coords[d]) for d in dims)

    def sample(x) -> xr.DataArray:
        x = np.asarray(x, dtype=float)
        if x.ndim == 0:
            return xr.DataArray(x)
        return xr.DataArray(np.broadcast_to(x, shape), dims=dims,
                            coords={d: coords[d] for d in dims})

    debt_share = np.asarray(params["debt_share"], float)
    with_debt = (rng.random(shape) < debt_share).astype(float) if rng is not None else debt_share
    years = list(company.forecast_years)
    first = company.market.shares_year
    dilutes = [1.0 if first is None or (first in years and years.index(y) > years.index(first))
               or first not in years else 0.0 for y in years]
    return {
        "liquidity_floor": xr.DataArray(spec.settings["liquidity_floor"]),
        "raise_buffer_years": xr.DataArray(spec.settings["raise_buffer_years"]),
        "raise_with_debt": sample(with_debt),
        "equity_discount": sample(params["equity_discount"]),
        "debt_interest_rate": sample(params["debt_interest_rate"]),
        "cost_of_equity": sample(params["cost_of_equity"]),
        "valuation_horizon_years": xr.DataArray(spec.settings["horizon_years"]),
        "sbc_dilutes": xr.DataArray(dilutes, dims="year", coords={"year": years}),
    }


def point_funding(spec, company) -> xr.Dataset:
    """Funding and discounting drivers at the priors' medians, for the report's own case under
    the correct conventions (``engine.report_case(company, CORRECT, point_funding(...))``)."""
    params = point_parameters({**spec.funding, **spec.discounting})
    return xr.Dataset(funding_drivers(spec, company, params, (), {}))
