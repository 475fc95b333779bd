"""Re-simulation: every scenario of a scenarios file on the SAVED posterior of a results folder,
no refit (``stforecast scenarios --scenarios FILE``), and what a run keeps of its predictive
draws. No PyMC here: the company, the driver posterior and the peer regression come from the
results folder (a test checks that the command does not load PyMC).
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
from .registry import REPORTED_SCALARS, VARIABLES
from .results import Results, ScenarioSummary, load_results
from .scenarios import ScenarioSpec, load_user_scenarios, run_scenarios
from .simulate import METHOD_TARGET_PRICES, VALUATION_VARIABLES, simulate
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
               variables: list[str] | None = None
               ) -> tuple[dict[str, ScenarioSummary], xr.Dataset | None]:
    """Every scenario of ``scenarios_path`` on the SAVED posterior of ``results`` (no refit).

    The company, the driver model's posterior and the peer regression come from the results
    folder alone (the company, priors, scenarios and peers files as the run read them, stored
    in ``forecast.nc``); ``scenarios_path`` (default: the run's scenarios) is the what-if, and
    ``priors_path`` (default: the run's priors) supplies only the valuation method and the peer
    premium. ``paths`` and ``seed`` default to the run's. Returns ``(scenario summaries,
    predictive draws)`` (the draws None unless ``keep_draws``: without them each scenario is
    summarised as soon as it is simulated, and nothing holds every scenario's draws at once);
    nothing is written.
    """
    results = (results if isinstance(results, Results) else load_results(results, ())).require(
        ("posterior",))
    summary = results.summary
    seed = summary.seed if seed is None else seed
    paths = summary.settings.paths if paths is None else paths
    company = results.company
    with results.input_files() as stored:
        spec = load_priors(priors_path or stored["priors"], company.growth_drivers())
        if spec.sha256 != summary.priors_sha256:
            logger.info(f"note: {spec.path} differs from the priors file of the run in "
                        f"{results.folder} ({summary.priors_file}); its valuation settings are "
                        f"used, the driver posterior is the run's")
        scenarios = (load_user_scenarios(scenarios_path, company) if scenarios_path
                     else run_scenarios(company))
        peers = None
        if "peer_premium" in spec.valuation:
            if "peers" not in stored:
                raise ResultsError(f"{results.draws_path}: key 'peers_text': expected the peers "
                                   f"file the run read (the valuation needs the peer regression)")
            peers = load_peers(stored["peers"])
        growth = growth_settings(_base_rates_beside(spec, stored), logger.info)
    posterior = results.read_group("posterior")
    valuation = saved_valuation(results, spec, peers, seed)
    per_draw = paths_per_draw(posterior, paths)
    obs = observations_from_company(company)
    attrs = {**draws_attrs(company), "liquidity_floor": spec.settings["liquidity_floor"]}

    def summarise(name: str, draws: xr.Dataset) -> ScenarioSummary:
        return scenario_summary_of(name, draws.assign_attrs(attrs), scenarios, company)

    predictive = simulate(posterior.astype("float64"), company, obs, per_draw,
                          np.random.default_rng(seed), scenarios=scenarios,
                          keep=stored_names(company, scenarios) if variables is None
                          else list(variables), log=logger.info,
                          valuation=valuation, ceilings=spec.ceilings(), priors=spec,
                          growth_settings=growth, then=None if keep_draws else summarise)
    if not keep_draws:  # each scenario was summarised as soon as simulated
        return predictive, None
    predictive.attrs.update(attrs)
    return scenario_summaries(predictive, scenarios, company), predictive


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
