"""Re-simulation: every scenario of a scenarios file on the SAVED posterior of a results folder,
no refit (``stforecast scenarios --scenarios FILE``), and what a run keeps of its draws in
``forecast.nc``: the posterior and the peer posterior at full precision, the headline scenario's
predictive draws (float32, rounded mantissas), and no other scenario's: ``recompute`` simulates
those again from the stored posterior, identical to the run's own. No PyMC here: the company,
the driver posterior and the peer regression come from the results folder (a test checks that
the command does not load PyMC).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from .company import Company
from .errors import ResultsError
from .multiples import Valuation, relation_from_fit
from .observations import observations_from_company
from .outside_view import growth_settings
from .peers import load_peers
from .priors import PriorSpec, load_priors
from .registry import HEADLINE_SCENARIO, REPORTED_SCALARS, VARIABLES
from .results import Results, ScenarioSummary, load_results
from .scenarios import ScenarioSpec, load_user_scenarios, run_scenarios
from .simulate import METHOD_TARGET_PRICES, VALUATION_VARIABLES, driver_paths, simulate
from .stored_paths import StoredPaths, paths_cache
from .summary import reported_lines, scenario_summaries, scenario_summary_of

logger = logging.getLogger(__name__)

def stored_names(company: Company, scenarios: ScenarioSpec | None = None) -> list[str]:
    """The predictive variables worth keeping on disk (reported lines, scalars, the company's
    unit drivers, the registry's stored drivers, and the intensity of each shock)."""
    shocks = [f"shock_{n}" for n in scenarios.shocks] if scenarios is not None else []
    drivers = [n for n, v in VARIABLES.items() if v.kind == "driver" and v.stored]
    drivers += ["ev_sales_multiple"]
    return (list(reported_lines(company) + REPORTED_SCALARS) + company.unit_drivers() + drivers
            + list(VALUATION_VARIABLES + METHOD_TARGET_PRICES) + shocks + ["outside_view_path"])


def draws_attrs(company: Company) -> dict[str, str]:
    """What predictive draws say of themselves: the company and its currencies (queries accept
    ``target_price_<price currency>`` as ``target_price`` from these)."""
    return {"company": company.key, "currency": company.currency,
            "price_currency": company.price_currency}


def resimulate(results: Path | Results, scenarios_path: Path | None = None,
               priors_path: Path | None = None, paths: int | None = None,
               seed: int | None = None, keep_draws: bool = True,
               variables: list[str] | None = None, cache: bool = True
               ) -> tuple[dict[str, ScenarioSummary], xr.Dataset | None]:
    """Every scenario of ``scenarios_path`` on the SAVED posterior of ``results`` (no refit).

    The company, the driver model's posterior and the peer regression come from the results
    folder alone (the company, priors, scenarios and peers files as the run read them, stored
    in ``forecast.nc``); ``scenarios_path`` (default: the run's scenarios) is the what-if, and
    ``priors_path`` (default: the run's priors) supplies only the valuation method and the peer
    premium. ``paths`` and ``seed`` default to the run's. Returns ``(scenario summaries,
    predictive draws)`` (the draws None unless ``keep_draws``: without them each scenario is
    summarised as soon as it is simulated, and nothing holds every scenario's draws at once);
    nothing is written. With the run's own files, paths and seed, the draws are the run's own
    (the posterior is stored at full precision), and so are the summaries. ``variables``: the
    variables simulated and kept (default: those forecast.nc stores, ``stored_names``).
    ``cache``: the driver paths are read from the cache when drawn before, and stored there
    when not (``stored_paths``; the same numbers either way); False draws them.
    """
    saved = _Saved(results, scenarios_path, priors_path, paths, seed, cache)

    def summarise(name: str, draws: xr.Dataset) -> ScenarioSummary:
        return scenario_summary_of(name, draws.assign_attrs(saved.attrs), saved.scenarios,
                                   saved.company)

    predictive = saved.simulate(saved.scenarios, None if keep_draws else summarise, variables)
    if not keep_draws:  # each scenario was summarised as soon as simulated
        return predictive, None
    return scenario_summaries(predictive, saved.scenarios, saved.company), predictive


def recompute(results: Results, names: list[str]) -> xr.Dataset:
    """The run's predictive draws of the scenarios ``names`` (dims scenario, chain, draw, path
    [, year]) as ``forecast.nc`` would hold them had it stored them: simulated again from the
    stored posterior with the run's files, paths and seed (the same random numbers: shocks are
    drawn for every scenario of the file whichever are simulated), then rounded as stored
    (``compact_groups``). What ``Results.draws`` gives for a scenario the file does not keep."""
    saved = _Saved(results)
    unknown = [n for n in names if n not in saved.scenarios.scenarios]
    if unknown:
        raise ResultsError(f"{results.draws_path}: key 'scenario': expected one of "
                           f"{list(saved.scenarios.scenarios)}, got {unknown[0]!r}")
    some = replace(saved.scenarios, scenarios={n: saved.scenarios.scenarios[n] for n in names})
    logger.info(f"recomputing scenario(s) {', '.join(names)} from the stored posterior "
                f"(forecast.nc keeps the {HEADLINE_SCENARIO} scenario)")
    return stored_values(saved.simulate(some))


class _Saved:
    """What a re-simulation on a saved run needs (see ``resimulate``), read once."""

    def __init__(self, results: Path | Results, scenarios_path: Path | None = None,
                 priors_path: Path | None = None, paths: int | None = None,
                 seed: int | None = None, cache: bool = True):
        results = (results if isinstance(results, Results) else load_results(results, ())
                   ).require(("posterior",))
        self.paths = StoredPaths(paths_cache()) if cache else driver_paths
        summary = results.summary
        self.seed = summary.seed if seed is None else seed
        self.company = company = results.company
        with results.input_files() as stored:
            self.spec = spec = load_priors(priors_path or stored["priors"],
                                           company.growth_drivers())
            if spec.sha256 != summary.priors_sha256:
                logger.info(f"note: {spec.path} differs from the priors file of the run in "
                            f"{results.folder} ({summary.priors_file}); its valuation settings "
                            f"are used, the driver posterior is the run's")
            self.scenarios = (load_user_scenarios(scenarios_path, company) if scenarios_path
                              else run_scenarios(company))
            peers = None
            if "peer_premium" in spec.valuation:
                if "peers" not in stored:
                    raise ResultsError(f"{results.draws_path}: key 'peers_text': expected the "
                                       f"peers file the run read (the valuation needs the peer "
                                       f"regression)")
                peers = load_peers(stored["peers"])
            self.growth = growth_settings(_base_rates_beside(spec, stored), logger.info)
        self.posterior = results.read_group("posterior")
        self.valuation = saved_valuation(results, spec, peers, self.seed)
        self.per_draw = paths_per_draw(self.posterior,
                                       summary.settings.paths if paths is None else paths)
        self.attrs = {**draws_attrs(company),
                      "liquidity_floor": spec.settings["liquidity_floor"]}

    def simulate(self, scenarios: ScenarioSpec, then=None, variables: list[str] | None = None):
        """Predictive draws of ``scenarios`` on the saved posterior (``then``: see
        ``simulate.simulate``; ``variables``: those kept, default ``stored_names``)."""
        out = simulate(self.posterior.astype("float64"), self.company,
                       observations_from_company(self.company), self.per_draw,
                       np.random.default_rng(self.seed), scenarios=scenarios,
                       keep=stored_names(self.company, scenarios) if variables is None
                       else list(variables), log=logger.info,
                       valuation=self.valuation, ceilings=self.spec.ceilings(), priors=self.spec,
                       growth_settings=self.growth, then=then, paths=self.paths)
        return out if then is not None else out.assign_attrs(self.attrs)


def saved_valuation(results: Results, spec: PriorSpec, peers: xr.Dataset | None,
                    seed: int) -> Valuation:
    """The valuation method of ``spec`` on a saved run: with ``peers`` (the peer table the run
    read), the peer regression's relation from the run's saved peer posterior."""
    relation = None
    if peers is not None:
        relation = relation_from_fit(results.read_group("peer_posterior"),
                                     spec.valuation["peer_premium"], seed, peers,
                                     spec.valuation.get("sector_rerating"))
    return Valuation(spec.valuation_method, relation)


def _base_rates_beside(spec: PriorSpec, stored: dict[str, Path]) -> PriorSpec:
    """A stored priors file with the base-rates file the run stored beside it (``stored``, from
    ``Results.input_files``); without one, the priors' own resolution stands (relative to the
    priors file, else the shipped file: ``priors._base_rates_path``)."""
    ov = spec.outside_view
    if ov is None or "base_rates" not in stored:
        return spec
    return replace(spec, outside_view=replace(ov, base_rates=str(stored["base_rates"])))


def paths_per_draw(posterior: xr.Dataset, paths: int) -> int:
    """Future paths per posterior draw so that there are at least ``paths`` in all."""
    return max(1, math.ceil(paths / (posterior.sizes["chain"] * posterior.sizes["draw"])))


# --------------------------------------------------------------------------- what forecast.nc keeps
#: Groups stored at full precision: every scenario the file does not keep is recomputed from
#: them (``recompute``), which gives the run's own draws only on the exact posterior.
EXACT_GROUPS = ("posterior", "peer_posterior")
#: Mantissa bits kept of every other group's draws: relative precision 2**-13 = 1.2e-4 (1mn on
#: 8,000), far below the Monte Carlo error of any statistic, and it lets gzip compress them.
MANTISSA_BITS = 13


def stored_predictive(predictive: xr.Dataset) -> xr.Dataset:
    """What ``forecast.nc`` keeps of the posterior predictive: the headline scenario (with its
    ``scenario`` dimension). Measured on the default run (100,000 paths, 5 scenarios): every
    scenario 106 MB, the headline alone 22 MB; ``recompute`` gives any other one exactly."""
    return predictive.sel(scenario=[HEADLINE_SCENARIO])


def round_mantissa(values: np.ndarray) -> np.ndarray:
    """float32 with the low mantissa bits zeroed (round to nearest; NaN/inf untouched)."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    drop = 23 - MANTISSA_BITS
    bits = x.view(np.uint32)
    rounded = ((bits + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF))
    return np.where(np.isfinite(x), rounded.view(np.float32), x)


def stored_values(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its float64 variables as stored outside ``EXACT_GROUPS``: float32 with rounded
    mantissas (``MANTISSA_BITS``)."""
    return ds.assign({name: var.copy(data=round_mantissa(var.values))
                      for name, var in ds.data_vars.items() if var.dtype == np.float64})


def _chunks(var: xr.DataArray) -> tuple[int, ...] | None:
    """One chunk per scenario (the whole variable without a scenario dimension): measured on
    the default run's draws, 12% smaller than the netCDF library's default chunks (a few
    thousand values each) at the same writing time, and a query reads one scenario at once."""
    if var.ndim == 0 or 0 in var.shape:
        return None
    return tuple(1 if dim == "scenario" else n for dim, n in zip(var.dims, var.shape))


def _compact(ds: xr.Dataset, exact: bool) -> xr.Dataset:
    """``stored_values`` unless ``exact``; per variable byte-shuffle + gzip level 1 (measured: as
    small as level 4, 40% faster to write) in chunks of one scenario (``_chunks``)."""
    ds = ds.copy() if exact else stored_values(ds)
    for name, var in ds.data_vars.items():
        if var.dtype.kind in "fiub":
            chunks = _chunks(var)
            ds[name].encoding = {"compression": "gzip", "compression_opts": 1, "shuffle": True,
                                 **({"chunksizes": chunks} if chunks else {})}
        else:
            ds[name].encoding = {}
    return ds


def compact_groups(groups: dict[str, xr.Dataset]) -> dict[str, xr.Dataset]:
    """The groups as stored: object variables dropped, compressed, and floats rounded outside
    ``EXACT_GROUPS``."""
    return {name: _compact(ds.drop_vars([v for v in ds.data_vars if ds[v].dtype == object]),
                           name in EXACT_GROUPS)
            for name, ds in groups.items()}
