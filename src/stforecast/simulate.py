"""Forward simulation: parameter draws -> driver paths FY21-FY23 -> the financial engine.

For every (chain, draw) of the posterior (or the prior) ``n_paths`` future paths are drawn with
the processes' own innovation noise (FY21 growth comes from the model, where the 1H21 facts
inform it; FY22-FY23 growth and all FY21-FY23 ratio innovations are new per path). Drivers the
model does not cover (non-operating items, tax, share-based compensation, financing, the small
working-capital ratios) follow the report case. Pure numpy/xarray: no PyMC here.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr

from .data import SEGMENTS, Report
from .engine import run_engine
from .model import COMPOSITE, DIRECT, Observations, inverse_transform, transform
from .priors import GROWTH_DRIVERS, RATIO_DRIVERS
from .multiples import Valuation, method_target_prices, set_multiples
from .shocks import ScenarioSpec, ShockDraws, apply_shocks, draw_shocks, intensities

SAMPLE_DIMS = ("chain", "draw", "path")


def _param(params: xr.Dataset, name: str) -> np.ndarray:
    """(chain, draw) values as an array broadcastable against (chain, draw, path)."""
    return params[name].transpose("chain", "draw").values[..., None]


def _growth_paths(params, rng, shape, years) -> dict[str, np.ndarray]:
    """Log growth per driver, shape (chain, draw, path, year)."""
    company = _param(params, "company_growth_effect")
    out = {}
    for name in GROWTH_DRIVERS:
        mu = _param(params, f"{name}_long_run") + company
        phi = _param(params, f"{name}_persistence")
        sigma = _param(params, f"{name}_volatility")
        g = np.empty(shape + (len(years),))
        g[..., 0] = np.broadcast_to(_param(params, f"{name}_growth_fy21"), shape)
        for t in range(1, len(years)):
            g[..., t] = mu + phi * (g[..., t - 1] - mu) + sigma * rng.standard_normal(shape)
        out[name] = g
    return out


def _ratio_paths(params, obs: Observations, rng, shape, years,
                 ceilings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Ratio drivers in natural units, shape (chain, draw, path, year), from their FY20 value.

    ``ceilings``: per driver, an upper bound (natural units) that the process is held at (the
    state is capped, so the next year evolves from the ceiling).
    """
    ceilings = ceilings or {}
    out = {}
    for name in RATIO_DRIVERS:
        cap = np.inf
        if name in ceilings:
            cap = float(transform(name, np.float64(ceilings[name])))
        level = _param(params, f"{name}_long_run")
        L = np.log(level / (1 - level)) if RATIO_DRIVERS[name][0] == "logit" else np.log(level)
        rho = _param(params, f"{name}_persistence")
        s = _param(params, f"{name}_volatility")
        x = np.empty(shape + (len(years),))
        previous = obs.ratios[name][-1]
        for t in range(len(years)):
            previous = np.minimum(L + rho * (previous - L) + s * rng.standard_normal(shape), cap)
            x[..., t] = previous
        out[name] = inverse_transform(name, x)
    return out


def driver_paths(params: xr.Dataset, report: Report, obs: Observations, n_paths: int,
                 rng: np.random.Generator,
                 ceilings: dict[str, float] | None = None) -> xr.Dataset:
    """Driver paths with dims (chain, draw, path, year[, segment]) ready for ``run_engine``.

    Also returns the unit drivers in analyst terms: ``smart_business_customers`` (count),
    ``smart_business_revenue_per_customer`` (RMB mn), ``smart_city_cities`` (count),
    ``smart_city_revenue_per_city`` (RMB mn).
    """
    case = report.report_case
    years = list(case["year"].values)
    shape = (params.sizes["chain"], params.sizes["draw"], n_paths)
    growth = _growth_paths(params, rng, shape, years)
    level = {name: np.exp(np.cumsum(g, axis=-1)) for name, g in growth.items()}
    units = {
        "smart_business_customers": obs.customers_fy20 * level["smart_business_customers"],
        "smart_business_revenue_per_customer": obs.revenue_fy20["smart_business"]
        / obs.customers_fy20 * level["smart_business_revenue_per_customer"],
        "smart_city_cities": obs.cities_fy20 * level["smart_city_cities"],
        "smart_city_revenue_per_city": obs.revenue_fy20["smart_city"] / obs.cities_fy20
        * level["smart_city_revenue_per_city"],
    }
    revenue = {
        "smart_business": units["smart_business_customers"]
        * units["smart_business_revenue_per_customer"],
        "smart_city": units["smart_city_cities"] * units["smart_city_revenue_per_city"],
    }
    for segment, name in DIRECT.items():
        revenue[segment] = obs.revenue_fy20[segment] * level[name]
    assert set(revenue) == set(SEGMENTS) and set(COMPOSITE) <= set(revenue)
    coords = {"chain": params["chain"].values, "draw": params["draw"].values,
              "path": np.arange(n_paths), "year": years}
    dims = SAMPLE_DIMS + ("year",)
    segment_revenue = xr.DataArray(
        np.stack([revenue[s] for s in SEGMENTS], axis=-2), dims=SAMPLE_DIMS + ("segment", "year"),
        coords={**coords, "segment": list(SEGMENTS)})
    ratios = _ratio_paths(params, obs, rng, shape, years, ceilings)
    drivers = case.drop_vars(["segment_revenue", "ev_sales_multiple", *ratios])
    drivers = drivers.assign(
        segment_revenue=segment_revenue,
        ev_sales_multiple=xr.DataArray(params["ev_sales_multiple"].transpose("chain", "draw")
                                       .values, dims=("chain", "draw"),
                                       coords={k: coords[k] for k in ("chain", "draw")}),
        **{name: xr.DataArray(v, dims=dims, coords=coords) for name, v in ratios.items()},
        **{name: xr.DataArray(v, dims=dims, coords=coords) for name, v in units.items()},
    )
    return drivers


VALUATION_VARIABLES = ("ev_sales_multiple_report", "ev_sales_multiple_peer",
                       "sales_cagr_fy20_fy23")
UNIT_DRIVERS = ("smart_business_customers", "smart_business_revenue_per_customer",
                "smart_city_cities", "smart_city_revenue_per_city")


def statements(drivers: xr.Dataset, report: Report, keep: list[str] | None = None,
               valuation: Valuation = Valuation()) -> xr.Dataset:
    """The engine on driver paths, with the drivers analysts read beside the line items.

    ``valuation``: how the EV/sales multiple is set (``stforecast.multiples``); both methods'
    target prices are added when a peer relation is given. ``keep``: only these variables (all
    line items and drivers when ``None``).
    """
    drivers = set_multiples(drivers, valuation, report)
    out = run_engine(drivers, report.opening, report.market)
    out = out.assign(method_target_prices(out, drivers, report))
    extra = [n for n in drivers.data_vars
             if n not in out and (n in UNIT_DRIVERS or n in RATIO_DRIVERS or n.startswith("shock_")
                                  or n in VALUATION_VARIABLES)]
    if keep is not None:
        return xr.merge([out[[k for k in keep if k in out]],
                         drivers[[k for k in extra if k in keep]]])
    return out.merge(drivers[extra])


def simulate_scenarios(drivers: xr.Dataset, report: Report, spec: ScenarioSpec,
                       draws: ShockDraws, keep: list[str] | None = None,
                       log=None, valuation: Valuation = Valuation()) -> xr.Dataset:
    """Every scenario of ``spec`` on the same driver paths; adds a ``scenario`` dimension.

    ``keep``: the variables to retain per scenario (bounds memory when there are many).
    """
    years = [str(y) for y in drivers["year"].values]
    names = list(spec.scenarios)

    def one(i: int) -> xr.Dataset:
        if log is not None:
            log(f"scenario {i + 1}/{len(names)}: {names[i]}")
        level = intensities(spec, spec.scenarios[names[i]], draws, years)
        return statements(apply_shocks(drivers, spec, level, report), report, keep, valuation)

    # numpy releases the GIL in the array arithmetic, so scenarios run well on threads; every
    # random number is drawn beforehand, so the result does not depend on the thread schedule.
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1)) as pool:
        out = list(pool.map(one, range(len(names))))
    return xr.concat(out, dim="scenario", coords="minimal", compat="override",
                     join="exact").assign_coords(scenario=names)


def simulate(params: xr.Dataset, report: Report, obs: Observations, n_paths: int,
             rng: np.random.Generator, scenarios: ScenarioSpec | None = None,
             keep: list[str] | None = None, log=None,
             valuation: Valuation = Valuation(),
             ceilings: dict[str, float] | None = None) -> xr.Dataset:
    """Posterior (or prior) predictive financial statements, dims (chain, draw, path, year).

    With ``scenarios``, every scenario is simulated on the same driver paths and shock random
    numbers and the result has a ``scenario`` dimension (see ``stforecast.shocks``).
    """
    drivers = driver_paths(params, report, obs, n_paths, rng, ceilings)
    if scenarios is None:
        return statements(drivers, report, keep, valuation)
    shape = tuple(drivers.sizes[d] for d in SAMPLE_DIMS)
    draws = draw_shocks(scenarios, shape, drivers.sizes["year"], rng)
    return simulate_scenarios(drivers, report, scenarios, draws, keep, log, valuation)
