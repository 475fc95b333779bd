"""Forward simulation: parameter draws -> driver paths over the forecast years -> the engine.

For every (chain, draw) of the posterior (or the prior) ``n_paths`` future paths are drawn with
the processes' own innovation noise (first-year growth comes from the model, where the
partial-year facts inform it; later growth and every ratio innovation are new per path).
Drivers the model does not cover (non-operating items, tax, share-based compensation,
financing, the small working-capital ratios) follow the report case. Pure numpy/xarray: no
PyMC here (a test checks that importing this module does not load it).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import xarray as xr

from .company import Company
from .costs import (ADD_ON_RATIOS, COST_DRIVERS, cost_drivers, draw_parameters,
                    funding_drivers)
from .engine import CORRECT, accounts, value
from .multiples import Valuation, method_target_prices, set_multiples
from .outside_view import GrowthSettings, draw_prior, first_year_facts, outside_scale
from .processes import RATIO_DRIVERS, ar_step, from_scale, to_scale
from .registry import METHOD_VARIABLES, SAMPLE_DIMS
from .shocks import ScenarioSpec, ShockDraws, apply_shocks, draw_shocks, intensities


def _param(params: xr.Dataset, name: str) -> np.ndarray:
    """(chain, draw) values as an array broadcastable against (chain, draw, path)."""
    return params[name].transpose("chain", "draw").values[..., None]


def _innovations(rng, shape, n, df: np.ndarray | None) -> np.ndarray:
    """``n`` unit-variance innovations per path: standard normal, or Student-t with ``df``
    degrees of freedom per posterior draw (scaled to variance 1; ``df`` floored at 2.5)."""
    if df is None:
        return rng.standard_normal(shape + (n,))
    nu = np.maximum(df, 2.5)[..., None]
    return rng.standard_t(np.broadcast_to(nu, shape + (n,))) * np.sqrt((nu - 2) / nu)


def _growth_paths(params, rng, shape, years, names, valuation_year: str | None = None,
                  growth: GrowthSettings | None = None, stall_drivers=()
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Log growth per driver, shape (chain, draw, path, year); and per driver, shape (chain,
    draw, path), the expected log growth summed over the years after ``valuation_year`` given
    the path's parameters and its growth up to that year.

    The first forecast year comes from the model. Later years: AR(1) around each driver's
    long-run growth; with ``growth`` (``stforecast.outside_view.GrowthSettings``) the innovations
    are Student-t (degrees of freedom per posterior draw from the ``df`` prior), every driver loads
    on one common factor per path and year (``factor_loading``: the correlation of two drivers'
    innovations is the product of their loadings; variance stays 1), and a path that has stalled
    (absorbing, annual probability from the base rates) grows ``stall_drop`` less per year in
    each of ``stall_drivers`` (one revenue driver per segment) from that year on.

    Expected growth: for the AR(1), ``E[g_{v+k} | g_v] = m + phi^k (g_v - m)`` with ``m`` the
    long-run growth less the stall drop in force at the valuation year (a stall is known when
    it has happened; a later stall is not anticipated); 0 when ``valuation_year`` is the last
    year or None.
    """
    pooled = _param(params, "company_growth_effect")
    first = params["first_year_growth"]
    v = years.index(valuation_year) if valuation_year is not None else len(years) - 1
    ahead = len(years) - 1 - v
    n = len(years) - 1
    lam = df = None
    stall = np.zeros(shape + (max(n, 0),))
    if growth is not None:
        draw_shape = shape[:2] + (1,)
        df = draw_prior(growth.df, rng, draw_shape, np.inf) if growth.df is not None else None
        lam = draw_prior(growth.factor_loading, rng, draw_shape, 0.0)[..., None]
        factor = _innovations(rng, shape, n, df)
        drop = draw_prior(growth.stall_drop, rng, draw_shape, 0.0)[..., None]
        hazard = rng.uniform(size=shape + (n,)) < growth.stall_probability
        stall = np.maximum.accumulate(hazard, axis=-1) * drop if n > 0 else stall
    out, expected = {}, {}
    for name in names:
        mu = _param(params, f"{name}_long_run") + pooled
        phi = _param(params, f"{name}_persistence")
        sigma = _param(params, f"{name}_volatility")
        g = np.empty(shape + (len(years),))
        g[..., 0] = np.broadcast_to(
            first.sel(growth_driver=name, drop=True).transpose("chain", "draw").values[..., None],
            shape)
        drop = stall if name in stall_drivers else np.zeros_like(stall)
        if growth is None:
            for t in range(1, len(years)):
                g[..., t] = ar_step(mu, phi, sigma, g[..., t - 1], rng.standard_normal(shape))
        else:
            e = lam * factor + np.sqrt(1 - lam**2) * _innovations(rng, shape, n, df)
            for t in range(1, len(years)):
                g[..., t] = ar_step(mu - drop[..., t - 1], phi, sigma, g[..., t - 1],
                                    e[..., t - 1])
        out[name] = g
        decay = sum(phi ** k for k in range(1, ahead + 1)) if ahead else 0.0
        known = mu - (drop[..., v - 1] if 0 < v <= n else 0.0)
        expected[name] = ahead * known + decay * (g[..., v] - known)
    return out, expected


def _ratio_paths(params, ratios_last: dict[str, float], rng, shape, years,
                 ceilings: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Ratio drivers in natural units, shape (chain, draw, path, year), from the last history
    year's value (``ratios_last``, on the process scale).

    ``ceilings``: per driver, an upper bound (natural units) that the process is held at (the
    state is capped, so the next year evolves from the ceiling).
    """
    ceilings = ceilings or {}
    out = {}
    for name in RATIO_DRIVERS:
        cap = np.inf
        if name in ceilings:
            cap = float(to_scale(name, np.float64(ceilings[name])))
        L = to_scale(name, _param(params, f"{name}_long_run"))
        rho = _param(params, f"{name}_persistence")
        s = _param(params, f"{name}_volatility")
        x = np.empty(shape + (len(years),))
        previous = ratios_last[name]
        for t in range(len(years)):
            previous = np.minimum(ar_step(L, rho, s, previous, rng.standard_normal(shape)), cap)
            x[..., t] = previous
        out[name] = from_scale(name, x)
    return out


def _priors(company: Company, priors):
    if priors is not None:
        return priors
    from .priors import load_priors
    return load_priors(company.priors_path, company.growth_drivers())
def revenue_drivers(company: Company) -> list[str]:
    """One growth driver per segment that moves its revenue (a direct segment's revenue, a units
    segment's revenue per unit): where the stall regime and the outside view act."""
    return [s.per_unit_driver if s.kind == "units" else s.growth_drivers[0]
            for s in company.segments]


def driver_paths(params: xr.Dataset, company: Company, obs, n_paths: int,
                 rng: np.random.Generator,
                 ceilings: dict[str, float] | None = None, priors=None,
                 growth_settings: GrowthSettings | None = None) -> xr.Dataset:
    """Driver paths with dims (chain, draw, path, year[, segment]) ready for ``run_engine``.

    Also returns each units segment's drivers in analyst terms: ``<segment>_<unit>`` (a count)
    and ``<segment>_<per_unit>`` (currency mn per unit), and ``expected_growth`` (dims chain,
    draw, path, segment): each segment's expected log revenue growth from the valuation year
    to the last forecast year, given the path's parameters and growth up to the valuation year
    (the sum of its growth drivers' conditional expectations; what the market can expect at
    the valuation date, used by ``multiples``). ``obs``: ``model.Observations`` (the last
    history year's revenue, unit counts and ratios). Operating costs, capex, funding and
    discounting are drawn per path from the priors file's ``[costs]``, ``[funding]`` and
    ``[discounting]`` (``priors``: a ``PriorSpec``; default the company's own file), see
    ``stforecast.costs``; the ``*_ratio`` cost drivers then carry only shocks (0 here).
    ``growth_settings``: heavy tails, common factor, stall regime, the outside view's blend and
    the margin mix shift (``stforecast.outside_view``); None keeps the plain Gaussian AR(1)
    paths. The expected growth does not see the outside view's blend (a path's outside-view
    scale is applied to its levels after the growth paths are drawn).
    """
    case = company.report_case
    years = list(case["year"].values)
    shape = (params.sizes["chain"], params.sizes["draw"], n_paths)
    movers = revenue_drivers(company)
    growth, expected = _growth_paths(params, rng, shape, years, list(company.growth_drivers()),
                                     company.market.valuation_year, growth_settings, movers)
    level = {name: np.exp(np.cumsum(g, axis=-1)) for name, g in growth.items()}
    outside = None
    if growth_settings is not None:
        inside_total = sum(obs.revenue_last[s.name] * np.prod(
            [level[d] for d in s.growth_drivers], axis=0) for s in company.segments)
        scale, outside = outside_scale(inside_total, sum(obs.revenue_last.values()),
                                       growth_settings, rng, first_year_facts(company, obs))
        for name in movers:
            level[name] = level[name] * scale
    units, revenue = {}, {}
    for s in company.segments:
        if s.kind == "units":
            count = obs.units_last[s.name]
            units[s.unit_driver] = count * level[s.unit_driver]
            units[s.per_unit_driver] = obs.revenue_last[s.name] / count * level[s.per_unit_driver]
            revenue[s.name] = units[s.unit_driver] * units[s.per_unit_driver]
        else:
            revenue[s.name] = obs.revenue_last[s.name] * level[s.growth_drivers[0]]
    segments = company.segment_names
    coords = {"chain": params["chain"].values, "draw": params["draw"].values,
              "path": np.arange(n_paths), "year": years}
    dims = SAMPLE_DIMS + ("year",)
    segment_revenue = xr.DataArray(
        np.stack([revenue[s] for s in segments], axis=-2), dims=SAMPLE_DIMS + ("segment", "year"),
        coords={**coords, "segment": segments})
    expected_growth = xr.DataArray(
        np.stack([sum(expected[d] for d in s.growth_drivers) for s in company.segments], axis=-1),
        dims=SAMPLE_DIMS + ("segment",), coords={**{k: coords[k] for k in SAMPLE_DIMS},
                                                 "segment": segments},
        attrs={"units": "log growth", "from_year": str(company.market.valuation_year),
               "to_year": str(years[-1])})
    ratios_last = {name: obs.ratios[name][-1] for name in RATIO_DRIVERS}
    ratios = _ratio_paths(params, ratios_last, rng, shape, years, ceilings)
    spec = _priors(company, priors)
    if growth_settings is not None:
        ratios["gross_margin"] = mix_shift(ratios["gross_margin"], growth_settings, rng)
    drivers = case.drop_vars(["segment_revenue", "ev_sales_multiple", *ratios, *ADD_ON_RATIOS])
    sample_coords = {k: coords[k] for k in SAMPLE_DIMS}
    cost_params = draw_parameters(spec.costs, shape, rng)
    costs = cost_drivers(company, cost_params, SAMPLE_DIMS, sample_coords, rng)
    funding = funding_drivers(spec, company, draw_parameters(
        {**spec.funding, **spec.discounting}, shape, rng), SAMPLE_DIMS, sample_coords, rng)
    zeros = xr.zeros_like(case["rnd_ratio"])
    drivers = drivers.assign(
        **costs, **funding, **{name: zeros for name in ADD_ON_RATIOS})
    drivers = drivers.assign(
        segment_revenue=segment_revenue,
        expected_growth=expected_growth,
        ev_sales_multiple=xr.DataArray(params["ev_sales_multiple"].transpose("chain", "draw")
                                       .values, dims=("chain", "draw"),
                                       coords={k: coords[k] for k in ("chain", "draw")}),
        **{name: xr.DataArray(v, dims=dims, coords=coords) for name, v in ratios.items()},
        **{name: xr.DataArray(v, dims=dims, coords=coords) for name, v in units.items()},
    )
    if outside is not None:
        drivers["outside_view_path"] = xr.DataArray(
            outside.astype(float), dims=SAMPLE_DIMS,
            coords={k: coords[k] for k in SAMPLE_DIMS})
    return drivers


#: Each valuation method's target price (``multiples.method_target_prices``).
METHOD_TARGET_PRICES = tuple(tp for tp, _ in METHOD_VARIABLES.values())
VALUATION_VARIABLES = ("ev_sales_multiple_report", "ev_sales_multiple_peer", "sales_cagr",
                       "fcf_margin_valuation", "peer_outside_range")
def mix_shift(gross_margin: np.ndarray, growth: GrowthSettings,
              rng: np.random.Generator) -> np.ndarray:
    """Gross margin after a mix shift toward lower-margin revenue (hardware, compute).

    Per path, a share ``s`` of revenue a year (prior ``extra_share_per_year``, drawn per path)
    moves to a business earning ``hardware_margin`` (prior, per posterior draw): after ``k``
    forecast years the margin is ``(1 - min(1, k s)) gm + min(1, k s) hw``. No-op without a
    ``[margin_mix]`` section.
    """
    if growth.mix_share is None:
        return gross_margin
    shape = gross_margin.shape[:-1]
    share = draw_prior(growth.mix_share, rng, shape, 0.0)[..., None]
    hw = draw_prior(growth.hardware_margin, rng, shape[:2] + (1,), 0.0)[..., None]
    k = np.arange(1, gross_margin.shape[-1] + 1)
    moved = np.minimum(1.0, share * k)
    return (1 - moved) * gross_margin + moved * np.minimum(hw, gross_margin)



def statements(drivers: xr.Dataset, company: Company, keep: list[str] | None = None,
               valuation: Valuation = Valuation()) -> xr.Dataset:
    """The engine on driver paths, with the drivers analysts read beside the line items.

    ``valuation``: how the EV/sales multiple is set (``stforecast.multiples``); both methods'
    target prices are added when a peer relation is given (the peer regression reads the
    valuation year's FCF margin: the engine's statements and funding decisions do not depend
    on the multiple, so the multiple is set between them and the valuation). ``keep``: only
    these variables (all line items and drivers when ``None``).
    """
    acc = accounts(drivers, company.opening, company.market, CORRECT)
    drivers = set_multiples(drivers, valuation, company, 
                            acc if valuation.peers is not None else None)
    out = value(acc, drivers["ev_sales_multiple"], keep)
    if keep is None or set(METHOD_TARGET_PRICES) & set(keep):
        out = out.assign(method_target_prices(out, drivers, company))
    unit_drivers = company.unit_drivers()
    extra = [n for n in drivers.data_vars
             if n not in out and (n in unit_drivers or n in RATIO_DRIVERS or n.startswith("shock_")
                                  or n in VALUATION_VARIABLES or n in COST_DRIVERS
                                  or n == "outside_view_path")]
    if keep is not None:
        return xr.merge([out[[k for k in keep if k in out]],
                         drivers[[k for k in extra if k in keep]]])
    return out.merge(drivers[extra])


def simulate_scenarios(drivers: xr.Dataset, company: Company, spec: ScenarioSpec,
                       draws: ShockDraws, keep: list[str] | None = None,
                       log=None, valuation: Valuation = Valuation(), then=None,
                       threads: int | None = None):
    """Every scenario of ``spec`` on the same driver paths; adds a ``scenario`` dimension.

    ``keep``: the variables to retain per scenario (bounds memory when there are many).
    ``then``: a function of (scenario name, its draws) applied to each scenario's draws as
    soon as they are simulated (e.g. its summary); with it, returns ``{scenario: then(...)}``
    and the draws are not kept. ``threads``: how many scenarios are simulated at once (default:
    the machine's cores).

    numpy releases the GIL in the array arithmetic, so scenarios run well on threads; every
    random number is drawn beforehand, so the result does not depend on the thread schedule.
    When the threads do not divide the scenarios (5 on 2), the last ``len % threads`` scenarios
    are simulated in ``threads`` parts each, by chain (the shocks applied to all paths first,
    then the statements of each part), so that no thread idles at the end; a path's statements
    do not depend on the other paths, so the parts put together are the whole (tested).
    """
    years = [str(y) for y in drivers["year"].values]
    names = list(spec.scenarios)
    threads = max(1, min(len(names), threads or os.cpu_count() or 1))
    n_chains = drivers.sizes["chain"]
    split = len(names) % threads if n_chains >= threads else 0
    bounds = np.linspace(0, n_chains, threads + 1).round().astype(int)
    parts = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))

    def shocked(i: int) -> xr.Dataset:
        if log is not None:
            log(f"scenario {i + 1}/{len(names)}: {names[i]}")
        level = intensities(spec, spec.scenarios[names[i]], draws, years)
        return apply_shocks(drivers, spec, level, company, with_intensities=keep is None or any(
            name.startswith("shock_") for name in keep))

    def one(i: int):
        out = statements(shocked(i), company, keep, valuation)
        return out if then is None else then(names[i], out)

    def part(paths: xr.Dataset, start: int, stop: int) -> xr.Dataset:
        return statements(paths.isel(chain=slice(start, stop)), company, keep,
                          valuation.on_chains(start, stop, n_chains))

    def first_part(i: int, pool: ThreadPoolExecutor):
        """Scenario ``i``'s shocks on every path, its later parts handed to the pool, its first
        part's statements (the caller waits for the others: a thread waiting here could hold
        the one that would compute them)."""
        paths = shocked(i)
        later = [pool.submit(part, paths, start, stop) for start, stop in parts[1:]]
        return part(paths, *parts[0]), later

    whole = len(names) - split
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(one, i) for i in range(whole)]
        futures += [pool.submit(first_part, i, pool) for i in range(whole, len(names))]
        out = [f.result() for f in futures[:whole]]
        for i, f in enumerate(futures[whole:], start=whole):
            first, later = f.result()
            draws_i = xr.concat([first, *(g.result() for g in later)], dim="chain",
                                data_vars="minimal", coords="minimal", compat="override",
                                join="exact")
            out.append(draws_i if then is None else then(names[i], draws_i))
    if then is not None:
        return dict(zip(names, out))
    return xr.concat(out, dim="scenario", coords="minimal", compat="override",
                     join="exact").assign_coords(scenario=names)


def simulate(params: xr.Dataset, company: Company, obs, n_paths: int,
             rng: np.random.Generator, scenarios: ScenarioSpec | None = None,
             keep: list[str] | None = None, log=None,
             valuation: Valuation = Valuation(),
             ceilings: dict[str, float] | None = None, priors=None,
             growth_settings: GrowthSettings | None = None, then=None,
             paths=driver_paths) -> xr.Dataset:
    """Posterior (or prior) predictive financial statements, dims (chain, draw, path, year).

    With ``scenarios``, every scenario is simulated on the same driver paths and shock random
    numbers and the result has a ``scenario`` dimension (see ``stforecast.shocks``); ``then``:
    see ``simulate_scenarios``. ``paths``: what draws the driver paths (``driver_paths``'s
    arguments and result; ``stored_paths.StoredPaths`` reads them back when drawn before).
    """
    drivers = paths(params, company, obs, n_paths, rng, ceilings, priors, growth_settings)
    if scenarios is None:
        return statements(drivers, company, keep, valuation)
    shape = tuple(drivers.sizes[d] for d in SAMPLE_DIMS)
    draws = draw_shocks(scenarios, shape, drivers.sizes["year"], rng)
    return simulate_scenarios(drivers, company, scenarios, draws, keep, log, valuation, then)
