"""The main job: a company -> fit -> posterior predictive paths -> engine -> results.

``run_forecast`` is what ``stforecast run`` calls. It holds the results folder's lock for the
whole run (a second run into the same folder is refused in one line), builds everything in a
staging folder beside the target and swaps it in as a whole only when complete
(``stforecast.publish``): a failed, interrupted or killed run leaves the earlier results as they
were, and no file of an earlier run survives beside new ones. It writes the results contract of
``stforecast.results``:

* ``forecast.nc``: DataTree with ``posterior``, ``prior``, ``sample_stats``, ``observed_data``,
  ``posterior_predictive`` (dims scenario, chain, draw, path, year: the headline scenario, with
  the shock intensities ``shock_<name>``; ``Results.draws`` recomputes the others exactly from
  the stored posterior, see ``stforecast.resimulation``), ``prior_predictive`` (the driver model
  alone, no shocks) and ``peer_posterior``; gzip-compressed, the posterior and the peer
  posterior at full precision, the rest float32 with rounded mantissas; its root
  attributes carry the schema version, company, seed, settings and every input file's text and
  sha256 (``results.Provenance``);
* ``summary.json``: a ``results.Summary``: percentiles per line item and year and P(upside) +-
  MCSE for the headline scenario, the same per scenario under ``scenarios``, the shocks, the
  sensitivity rankings, diagnostics, seed, the input files' hashes and the package versions.

A run into a folder that already holds the results of the same run (``run_key``: inputs,
settings, seed, stforecast's code and data, package versions; recorded in ``forecast.nc``) does
nothing and returns the stored summary (``up_to_date``); ``RunSettings.refit`` runs in full.

Progress is logged to the ``stforecast.run`` logger (the command line prints it).

Two stages use a second process (``stforecast.sideprocess``): beside the driver model's first
compilation, a second process compiles its expand part, evaluates the model at its prior's
centre, fits the peer regression and draws the prior (``fit_models``, ``_fit_beside``), and the
report is drawn while the draws are written (``write``).

Test hook: with ``STFORECAST_TEST_PAUSE_AT=<stage>:<marker file>`` in the environment, the run
writes its process id into the marker file at that stage and sleeps (so that a test can kill
it there). Stages, in order: ``fit`` (inputs checked, lock held, before fitting),
``simulate`` (before simulating), ``write`` (draws and summary in the staging folder),
``report`` (report built in the staging folder), ``publish`` (staging folder complete, before
the swap), ``swap`` (in the middle of the swap, see ``publish.swap_in``). Read only here.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import xarray as xr

from . import __version__, publish
from .cache import FitCache, fit_key, package_hash, package_versions, source_hash
from .charts import chart_data, outside_view_block
from .company import Company, load_company
from .compiled import build_part, driver_key, is_stored
from .costs import point_funding
from .engine import convention_table
from .fit import Diagnostics as FitDiagnostics
from .fit import (FitSettings, bar_reasons, diagnose, free_parameter_names, sample_posterior,
                  sample_prior)
from .model import (Observations, build_model, label_first_year, model_priors,
                    observations_from_company, observed_data_values)
from .preflight import ModelCheckError, trial_logp
from .outside_view import GrowthSettings, growth_settings, log_table, summary_block
from .priors import PriorSpec, load_priors
from .multiples import Valuation, relation_from_fit
from .peers import (PARETO_K_MAX, PEER_CHECKS, PEER_FIT, build_peer_model, fit_peer_model,
                    load_peers, peer_diagnostics, peer_loo, predict_multiple)
from .resimulation import (compact_groups, draws_attrs, paths_per_draw,  # noqa: F401
                           resimulate, stored_names, stored_predictive)  # (re-exported)
from .registry import HEADLINE_SCENARIO, REPORT_FILE
from .results import (Assumption, CompanyInfo, Diagnostics, Interval, Periods, PeerFit,
                      PeerLoo, PeerPrediction, PriorPredictive, Provenance, Ranked,
                      ReportPercentile, ReportPercentiles, ScenarioSummary, Sensitivity,
                      Settings, Shock, Summary, Swing, Tornado, Upside, UpsideRange, stored_run,
                      write_results)
from .scenarios import ScenarioSpec, load_user_scenarios
from .sensitivity import summary_sensitivity
from .sideprocess import SideProcess
from .simulate import driver_paths, simulate
from .stored_paths import StoredPaths, paths_cache
from .summary import (p_exceeds, percentile_of, probability_of_falling_revenue, sample_stats,
                      scenario_summaries, upside_variable)

logger = logging.getLogger(__name__)

DEFAULT_SEED = 20220131  # the default seed of every run (a date: 31 Jan 2022)


PRIOR_PATHS_PER_DRAW = 10


@dataclass(frozen=True)
class RunSettings:
    seed: int = DEFAULT_SEED
    paths: int = 100_000
    report: bool = True
    fit: FitSettings = field(default_factory=FitSettings)
    progress: bool = False  # the samplers' progress bars (the CLI turns them on in a terminal)
    refit: bool = False  # fit and write again even when the fit cache has the fit (and replace
    #                      the entry) or the results folder is up to date


def _versions() -> dict[str, str]:
    """The versions summary.json records (from the packages' metadata: importing ArviZ and
    nutpie only to read them would cost a run ~1.5 s)."""
    versions = package_versions(("pymc", "pytensor", "arviz", "numpy", "scipy", "xarray",
                                 "nutpie"))
    out = {"stforecast": __version__, **{k: v for k, v in versions.items() if k != "nutpie"}}
    if versions["nutpie"] != "absent":  # pragma: no branch - nutpie is a dependency
        out["nutpie"] = versions["nutpie"]
    return out


PAUSE_ENV = "STFORECAST_TEST_PAUSE_AT"


def _pause_at(stage: str) -> None:
    """The test hook of the module docstring (``STFORECAST_TEST_PAUSE_AT=<stage>:<marker>``)."""
    at, _, marker = os.environ.get(PAUSE_ENV, "").partition(":")
    if at == stage and marker:
        Path(marker).write_text(f"{os.getpid()} {stage}\n")
        time.sleep(600)


def upside_of(company: Company, spec, predictive: xr.Dataset) -> Upside:
    """What the run's ``p_upside`` means."""
    variable = upside_variable(predictive)
    horizon = float(spec.settings.get("horizon_years", 0.0))
    price = f"{company.market.price:g} {company.price_currency}"
    if variable == "value_today":
        words = (f"P(the {company.market.valuation_year} value per diluted share, discounted "
                 f"to today at each path's cost of equity over {horizon:g} year(s), exceeds "
                 f"today's price of {price}); the value is EV/sales ({spec.valuation_method}) x "
                 f"{company.market.valuation_year} revenue + net cash (cash, term deposits and "
                 f"liquid investments less debt) over the shares outstanding after dilution by "
                 f"share-based compensation and any equity raised by then")
    else:
        words = f"P(the undiscounted target price per basic share exceeds {price})"
    return Upside(variable=variable, price=float(company.market.price),
                  price_currency=company.price_currency, horizon_years=horizon,
                  method=spec.valuation_method, definition=words)


def _interval(x) -> Interval:
    v = np.asarray(x).reshape(-1)
    return Interval(round(float(np.quantile(v, 0.05)), 4), round(float(np.median(v)), 4),
                    round(float(np.quantile(v, 0.95)), 4))


def _diagnostics(rhat, ess_bulk, ess_tail, divergences, reasons, digits: int) -> Diagnostics:
    return Diagnostics(round(float(rhat), 4), round(float(ess_bulk), digits),
                       round(float(ess_tail), digits), int(divergences), not reasons,
                       tuple(reasons))


def peer_fit_summary(peer_idata, peers: xr.Dataset, company: Company, premium,
                     predictive: xr.Dataset | None = None) -> PeerFit:
    """Slopes, diagnostics, the leave-one-out check, the multiple predicted at the report's own
    growth and margins, and (with the headline scenario's ``predictive`` draws) the share of
    paths whose predictors lie outside the peers' range."""
    post = peer_idata["posterior"].to_dataset()
    cagr = float(peers.attrs["target_sales_cagr"])
    margin = float(peers.attrs["target_gross_margin"])
    fcf = float(peers.attrs["target_fcf_margin"])
    rng = np.random.default_rng(0)
    plain = predict_multiple(post, cagr, margin, fcf, rng=rng).values
    with_premium = predict_multiple(post, cagr, margin, fcf, rng=rng,
                                    premium=premium.draw(20_000, rng)
                                    ).values
    a = peer_idata.attrs
    loo = (PeerLoo(round(a["loo_elpd"], 3), round(a["loo_se"], 3), round(a["loo_p"], 3),
                   round(a["loo_pareto_k_max"], 3), int(a["loo_n_high_k"]), int(a["loo_n"]),
                   PARETO_K_MAX) if "loo_elpd" in a else None)
    outside = None
    if predictive is not None and "peer_outside_range" in predictive:
        outside = round(float(predictive["peer_outside_range"].mean()), 4)
    return PeerFit(
        diagnostics=_diagnostics(a["rhat_max"], a["ess_bulk_min"], a["ess_tail_min"],
                                 a["divergences"], _peer_reasons(peer_idata), 4),
        beta_growth_per_10pp=_interval(post["beta_growth"].values / 10),
        beta_margin_per_10pp=_interval(post["beta_margin"].values / 10),
        beta_fcf_margin_per_10pp=_interval(post["beta_fcf_margin"].values / 10),
        at_report_growth_and_margin=PeerPrediction(
            sales_cagr=cagr, gross_margin=round(margin, 4), multiple=_interval(plain),
            multiple_with_premium=_interval(with_premium),
            report_multiple=float(company.market.ev_sales_multiple), fcf_margin=round(fcf, 4)),
        loo=loo, share_outside_peer_range=outside)


#: What ``p_upside`` means, in the words the report uses (one definition across the package).
P_UPSIDE_DEFINITION = "P(discounted value per diluted share > today's price)"


def upside_range(per_scenario: dict[str, ScenarioSummary], company: Company) -> UpsideRange:
    """P(upside) per valuation method (rows) and scenario (columns) with their MCSEs."""
    table = {}
    for name, sc in per_scenario.items():
        for method, m in sc.valuation_methods.items():
            table.setdefault(method, {})[name] = m.p_upside
    values = [p.value for row in table.values() for p in row.values()]
    return UpsideRange(
        definition=(f"{P_UPSIDE_DEFINITION}, today's price {company.market.price:g} "
                    f"{company.price_currency}, by valuation method (the multiple) and scenario"),
        price=float(company.market.price), p_upside=table,
        low=min(values) if values else float("nan"), high=max(values) if values else float("nan"))


def _peer_reasons(peer_idata) -> list[str]:
    """The peer regression's sampler diagnostics against the same bar as the driver model."""
    a = peer_idata.attrs
    return [f"peer regression: {r}" for r in
            bar_reasons(a["rhat_max"], a["ess_bulk_min"], a["ess_tail_min"], a["divergences"])]


def _shock_table(scenarios: ScenarioSpec) -> tuple[Shock, ...]:
    return tuple(Shock(shock=s.name, label=s.label,
                       annual_probability=s.probability.describe(),
                       annual_probability_mean=round(s.probability.mean(), 4),
                       severity=s.severity.describe(), persistence=float(s.persistence),
                       channels={k: float(v) for k, v in s.channels.items()}, source=s.source)
                 for s in scenarios.shocks.values())


def _assumptions(spec) -> tuple[Assumption, ...]:
    return tuple(
        Assumption(name, f"long-run {p.long_run.describe()}, persistence "
                   f"{p.persistence.describe()}, volatility {p.volatility.describe()}", p.source)
        for name, p in spec.processes().items()
    ) + tuple(Assumption(name, p.describe(), p.source) for name, p in spec.valuation.items()
              ) + tuple(Assumption(f"{section}.{name}", p.describe(), p.source)
                        for section, table in (("growth_process", spec.growth_process),
                                               ("margin_mix", spec.margin_mix))
                        for name, p in table.items()
              ) + _outside_view_assumptions(spec)


def _outside_view_assumptions(spec) -> tuple[Assumption, ...]:
    ov = spec.outside_view
    if ov is None:
        return ()
    out = [Assumption("outside_view.weight", f"{ov.weight:g}", ov.weight_source)]
    if ov.stall_drop is not None:
        out.append(Assumption("outside_view.stall_drop", ov.stall_drop.describe(),
                              ov.stall_drop.source))
    return tuple(out)


def company_info(company: Company, provenance: Provenance) -> CompanyInfo:
    """The summary's company block (``files``: sha256 of the inputs the run read)."""
    return CompanyInfo(
        key=company.key, name=company.name, ticker=company.ticker, report=company.report_title,
        currency=company.currency, price_currency=company.price_currency,
        price=float(company.market.price),
        target_price_published=float(company.market.target_price_published),
        history_years=tuple(company.history_years), forecast_years=tuple(company.forecast_years),
        valuation_year=company.market.valuation_year,
        segments=tuple(company.segment_names), folder=str(company.folder),
        files={name: f.sha256 for name, f in provenance.inputs.items()})


def _report_percentile(da: xr.DataArray, report: float | None, year: str | None = None):
    return ReportPercentile(report, None if report is None else percentile_of(da, report), year)


def run_forecast(out: Path, company: Company | str | Path | None = None,
                 settings: RunSettings = RunSettings(), priors_path: Path | None = None,
                 scenarios_path: Path | None = None) -> Summary:
    """Fit, simulate every scenario and write results to ``out``; returns the ``Summary``.

    ``company``: a ``Company``, a shipped company's name or a company folder (default: the
    default shipped company). ``priors_path`` / ``scenarios_path``: override the company's
    ``priors.toml`` / ``scenarios.toml``. Headline statistics are those of the headline
    scenario; ``summary.scenarios`` has the same per scenario. Progress goes to the
    ``stforecast.run`` logger; ``summary.timings_s`` has the seconds per step.
    """
    if not isinstance(company, Company):
        company = load_company(company)
    with publish.folder_lock(out), _quiet_pymc():
        publish.clean(out, logger.info)
        publish.check_replaceable(out)
        return _run_forecast(out, company, settings, priors_path, scenarios_path)


@contextmanager
def _quiet_pymc():
    """PyMC's INFO lines ("Sampling: [...]", NUTS start-up) would drown the run's own log."""
    pymc_logger = logging.getLogger("pymc")
    level = pymc_logger.level
    pymc_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        pymc_logger.setLevel(level)


@dataclass(frozen=True)
class Inputs:
    """A run's validated inputs: the company, its priors and scenarios, the observations."""

    company: Company
    spec: PriorSpec
    scenarios: ScenarioSpec
    obs: Observations
    priors_path: Path
    scenarios_path: Path
    growth: GrowthSettings = GrowthSettings()  # the forecast years' growth (outside view etc.)


@dataclass(frozen=True)
class Fitted:
    """The fitted models: the driver model's prior and posterior draws (dims chain, draw), its
    sampler statistics and diagnostics, the peer table and regression, the valuation method."""

    prior: xr.Dataset
    posterior: xr.Dataset
    sample_stats: xr.Dataset
    diagnostics: FitDiagnostics
    peers: xr.Dataset
    peer_idata: xr.DataTree
    valuation: Valuation
    timings: dict[str, float]


@dataclass(frozen=True)
class Draws:
    """The predictive draws: every scenario (dims scenario, chain, draw, path[, year]) and the
    prior predictive of the driver model alone (no shocks)."""

    predictive: xr.Dataset
    prior_predictive: xr.Dataset
    n_paths: int
    #: the headline scenario with the outside view's weight at 0 (same posterior and random
    #: numbers): the inside view alone; None without an outside view
    inside: xr.Dataset | None = None

    @property
    def headline(self) -> xr.Dataset:
        return self.predictive.sel(scenario=HEADLINE_SCENARIO, drop=True)


def prepare(company: Company | str | Path | None = None, priors_path: Path | None = None,
            scenarios_path: Path | None = None) -> Inputs:
    """Load and validate everything a run reads (one-line errors before any fitting)."""
    if not isinstance(company, Company):
        company = load_company(company)
    priors_path = Path(priors_path or company.priors_path)
    scenarios_path = Path(scenarios_path or company.scenarios_path)
    spec = load_priors(priors_path, company.growth_drivers())
    scenarios = load_user_scenarios(scenarios_path, company)  # laid over the company's own
    return Inputs(company, spec, scenarios, observations_from_company(company), priors_path,
                  scenarios_path, growth_settings(spec))


def fit_models(inputs: Inputs, settings: RunSettings, cache: FitCache | bool = True) -> Fitted:
    """Sample the driver model's prior, fit it (NUTS), and fit the peer regression (in a
    second process while the driver model compiles, when it must be compiled:
    ``_fit_beside``).

    ``cache``: a ``FitCache``, True for the user's (``stforecast.cache.cache_dir``) or False
    for none. A fit whose inputs are in the cache is read from it (its diagnostics computed
    again from the stored draws); ``settings.refit`` fits again and replaces the entry.
    """
    spec, fs, timings = inputs.spec, settings.fit, {}
    cache = FitCache() if cache is True else (cache or None)
    peers = load_peers(inputs.company.peers_path)
    with _fit_beside(inputs, peers, settings, cache) as beside:
        driver = _driver_fit(inputs, settings, cache, timings, beside)
        if beside is not None:
            t = time.perf_counter()
            answer = beside.result()
            peer_idata = answer["peers"]
            timings.update(answer["timings"], peers_wait=time.perf_counter() - t)
    logger.info(f"valuation method: {spec.valuation_method}")
    if beside is None:
        peer_idata = _peer_fit(peers, settings, cache, timings)
    premium = spec.valuation.get("peer_premium")
    valuation = Valuation(spec.valuation_method, relation_from_fit(
        peer_idata, premium, settings.seed, peers, spec.valuation.get("sector_rerating"))
        if premium is not None else None)
    posterior = label_first_year(driver["posterior"], inputs.company)
    return Fitted(driver["prior"], posterior, driver["sample_stats"], driver["diagnostics"],
                  peers, peer_idata, valuation, timings)


#: stforecast's modules whose source decides the driver fit and the peer fit.
DRIVER_SOURCES = ("model", "processes", "priors", "fit", "company", "compiled")
PEER_SOURCES = ("peers", "fit", "compiled")


def driver_model_key(inputs: Inputs) -> str:
    """The key of the driver model's compiled form (``compiled.driver_key``): the company
    file, the observations and the layout of the priors the model reads
    (``model.prior_layout``: their families, not their values, which are data of the compiled
    model), for re-using a compilation across processes and prior values
    (``fit.sample_posterior``)."""
    return driver_key(inputs.company, inputs.obs, inputs.spec)


def driver_fit_key(inputs: Inputs, settings: RunSettings) -> str:
    """The fit cache's key of the driver model's fit: the model's sources, its compiled form
    (``driver_model_key``: the company file, the observations and the priors' layout), the
    resolved values of the priors the model reads (``model.model_priors``), the fit settings
    and the seed."""
    return fit_key("driver", sources=source_hash(*DRIVER_SOURCES),
                   model=driver_model_key(inputs), priors=model_priors(inputs.spec),
                   fit=asdict(settings.fit), seed=settings.seed)


def peer_fit_key(peers: xr.Dataset, settings: RunSettings) -> str:
    """The fit cache's key of the peer regression: its source (with its own sampler settings,
    ``peers.PEER_FIT``), the peer table (values and attributes), the priors it reads, and the
    seed."""
    table = {"attrs": {k: str(v) for k, v in peers.attrs.items()},
             "coords": {k: [str(x) for x in v.values] for k, v in peers.coords.items()},
             "values": {k: v.values for k, v in peers.data_vars.items()}}
    return fit_key("peers", sources=source_hash(*PEER_SOURCES), table=table,
                   priors=Path(peers.attrs["path"]).read_text(), fit=PEER_FIT, seed=settings.seed)


def _cached(cache: FitCache | None, kind: str, key, settings: RunSettings, timings: dict,
            timing: str, what: str):
    """A cache entry ``(groups, attrs)`` of ``kind`` for ``key``, or None (no cache, ``refit``,
    or a miss); the seconds spent reading go to ``timings[timing]``."""
    if cache is None or settings.refit:
        return None
    t = time.perf_counter()
    entry = cache.load(kind, key)
    if entry is not None:
        timings[timing] = time.perf_counter() - t
        logger.info(f"{what}: fit read from the cache ({cache.path(kind, key)})")
    return entry


def _driver_fit(inputs: Inputs, settings: RunSettings, cache: FitCache | None,
                timings: dict, beside: SideProcess | None = None) -> dict:
    """Prior draws, posterior, sampler statistics and diagnostics of the driver model.
    ``beside``: the second process of ``_fit_beside``, which compiles the model's expand part
    and evaluates it at its prior's centre while this one compiles its log-density."""
    fs = settings.fit
    key = driver_fit_key(inputs, settings) if cache is not None else None
    entry = _cached(cache, "driver", key, settings, timings, "fit_cache", "driver model")
    if entry is not None:
        groups, attrs = entry
        if "diagnostics" in attrs:  # measured when it was fitted; the bar applies as it is now
            diagnostics = FitDiagnostics.checked(attrs["diagnostics"])
        else:  # an entry stored before the diagnostics were
            diagnostics = diagnose(groups["posterior"], groups["sample_stats"],
                                   list(attrs["free_parameters"]))
        return {**groups, "diagnostics": diagnostics}
    model = build_model(inputs.spec, inputs.obs, inputs.company)

    def evaluated(trial: dict) -> dict:
        timings["trial_logp"] = trial["seconds"]
        logger.info(f"the model evaluates at the prior's centre (log-density "
                    f"{trial['logp']:.1f}, {trial['seconds']:.1f} s)")
        return trial

    if beside is None:
        # the log-density and its gradient at the sampler's starting point, before any sampling
        # (nutpie's gradient there is evaluated by the compiled model's check: compiled.check)
        trial = evaluated(trial_logp(model, str(inputs.priors_path),
                                     gradient=fs.sampler != "nutpie"))
    else:  # evaluated by the second process, taken when the compiled model is checked
        def trial():
            answer = beside.next_value()
            if isinstance(answer, Exception):  # ModelCheckError: the priors' one line
                raise answer
            return evaluated(answer)
    drawn = {}

    def draw_prior():  # while the sampler's threads run (the draws are their own seed's)
        logger.info(f"sampling the prior ({fs.prior_draws} draws) while NUTS samples")
        t = time.perf_counter()
        drawn["prior"] = sample_prior(model, fs.prior_draws, settings.seed)
        timings["prior"] = time.perf_counter() - t

    logger.info(f"fitting: {fs.sampler} NUTS, {fs.chains} chains x {fs.draws} draws "
                f"({fs.tune} tune)")
    fit = sample_posterior(model, fs, settings.seed, progressbar=settings.progress,
                           model_key=driver_model_key(inputs), reference=trial,
                           # with a second process, it draws the prior, after the peer fit
                           while_sampling=draw_prior if beside is None else None)
    timings.update(fit.timings)
    if beside is not None:
        t = time.perf_counter()
        drawn["prior"] = beside.result()["prior"]
        timings["prior_wait"] = time.perf_counter() - t
    groups = {"prior": drawn["prior"], "posterior": fit.idata["posterior"].to_dataset(),
              "sample_stats": fit.idata["sample_stats"].to_dataset()}
    if cache is not None:
        cache.store("driver", key, groups, {"free_parameters": free_parameter_names(model),
                                            "diagnostics": fit.diagnostics.measured()})
    return {**groups, "diagnostics": fit.diagnostics}


def _peer_fit(peers: xr.Dataset, settings: RunSettings, cache: FitCache | None,
              timings: dict) -> xr.DataTree:
    """The peer regression's DataTree (posterior, sample_stats, log_likelihood; diagnostics and
    the leave-one-out check as root attrs)."""
    key = peer_fit_key(peers, settings) if cache is not None else None
    entry = _cached(cache, "peers", key, settings, timings, "peers_cache", "peer regression")
    if entry is not None:
        groups, attrs = entry
        idata = xr.DataTree.from_dict(groups)
        if "checks" in attrs:  # its diagnostics and leave-one-out check, measured when fitted
            idata.attrs.update(attrs["checks"])
        else:  # an entry stored before they were
            idata.attrs.update(peer_diagnostics(idata, list(attrs["free_parameters"])))
            idata.attrs.update(peer_loo(idata))
        return idata
    logger.info(f"fitting the peer regression ({PEER_FIT['nuts_sampler']}: "
                f"{PEER_FIT['chains']} chains x {PEER_FIT['draws']} draws)")
    t = time.perf_counter()
    with warnings.catch_warnings():  # its diagnostics are checked into the summary's reasons
        warnings.simplefilter("ignore", UserWarning)
        idata = fit_peer_model(peers, seed=settings.seed)  # its own settings (PEER_FIT)
    timings["peers"] = time.perf_counter() - t
    if cache is not None:
        cache.store("peers", key, {g: idata[g].to_dataset()
                                   for g in ("posterior", "sample_stats", "log_likelihood")},
                    {"free_parameters": [rv.name for rv in build_peer_model(peers).free_RVs],
                     "checks": {k: idata.attrs[k] for k in PEER_CHECKS if k in idata.attrs}})
    return idata


@contextmanager
def _fit_beside(inputs: Inputs, peers: xr.Dataset, settings: RunSettings,
                cache: FitCache | None):
    """A second process (``sideprocess.SideProcess``) that shares the driver model's first
    compilation, when that pays; else None. While this process compiles the model's
    log-density (15-40 s on one core, the second core idle meanwhile), it compiles the model's
    expand part (``compiled.build_part``: this process then reads it from the disk cache),
    evaluates the model at its prior's centre (``preflight.trial_logp``: the reference this
    process's check of the compiled model needs; a priors file under which the history is
    impossible fails there, in the same one line, once the log-density is compiled), then fits
    the peer regression (``_peer_fit`` as this process would: the same fit cache and settings,
    so its draws are the ones this process would have drawn) and draws the driver model's
    prior (the same draws too, from the run's seed). ``_fit_beside_job``."""
    if not _fit_beside_pays(inputs, peers, settings, cache):
        yield None
        return
    try:
        beside = SideProcess("fit_beside")
    except OSError as exc:  # no process can be started here: the fit is made in this one
        logger.info(f"no second process for the first compilation and the peer regression "
                    f"({exc}); both made here")
        yield None
        return
    logger.info(f"compiling the driver model's expand part, then fitting the peer regression "
                f"({PEER_FIT['nuts_sampler']}: {PEER_FIT['chains']} chains x "
                f"{PEER_FIT['draws']} draws), in a second process while the driver model "
                f"compiles")
    with beside:
        yield beside.send(inputs, peers, settings, cache)


def _fit_beside_pays(inputs: Inputs, peers: xr.Dataset, settings: RunSettings,
                     cache: FitCache | None) -> bool:
    """Whether the driver model is to be fitted (not in ``cache``) and its compiled form is
    not stored (``compiled.is_stored``), with nutpie, on a machine of two cores or more and
    outside a Dask worker (a cluster's cores are busy with tasks of their own): elsewhere a
    second process would only add its imports, measured ~7 s of CPU with the compilations
    both processes make."""
    if settings.fit.sampler != "nutpie" or PEER_FIT["nuts_sampler"] != "nutpie" or \
            _cores() < 2 or _in_dask_worker():
        return False
    if cache is not None and not settings.refit and \
            cache.path("driver", driver_fit_key(inputs, settings)).exists():
        return False
    return not is_stored(driver_model_key(inputs))


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _in_dask_worker() -> bool:
    """Whether this code runs in a task on a Dask worker (``stforecast.distributed``)."""
    if "distributed" not in sys.modules:  # never imported: not a worker
        return False
    from distributed import get_worker
    try:
        get_worker()
    except ValueError:
        return False
    return True


def _fit_beside_warm_up() -> None:
    """The second fitting process's warm-up: the model's and the sampler's imports."""
    import nutpie  # noqa: F401
    import pymc  # noqa: F401


def _fit_beside_job(inputs: Inputs, peers: xr.Dataset, settings: RunSettings,
                    cache: FitCache | None):
    """The second fitting process's job (``_fit_beside``), a generator: it compiles the driver
    model's expand part, then yields the model's evaluation at its prior's centre (the answer of
    ``trial_logp``, or its ``ModelCheckError``), then fits the peer regression and draws the
    driver model's prior (``fit.sample_prior``: the draws the first process would draw, from
    the run's seed), and returns ``{"peers": the peer fit, "prior": the prior draws,
    "timings": seconds}``. A failure to compile the expand part is logged (the first process
    compiles it then)."""
    timings = {}
    with _quiet_pymc():
        model = build_model(inputs.spec, inputs.obs, inputs.company)
        t = time.perf_counter()
        try:
            build_part(model, driver_model_key(inputs), "expand")
        except Exception as exc:  # noqa: BLE001 -- the first process compiles it instead
            logger.warning(f"the second process could not compile the driver model's expand "
                           f"part ({type(exc).__name__}: {exc}); compiled by the run's process")
        timings["expand_beside"] = time.perf_counter() - t
        try:
            yield trial_logp(model, str(inputs.priors_path), gradient=False)
        except ModelCheckError as exc:
            yield exc
            return None  # nothing is sampled from priors under which the history is impossible
        peer_idata = _peer_fit(peers, settings, cache, timings)
        t = time.perf_counter()
        prior = sample_prior(model, settings.fit.prior_draws, settings.seed)
        timings["prior"] = time.perf_counter() - t
        return {"peers": peer_idata, "prior": prior, "timings": timings}


def simulate_draws(inputs: Inputs, fitted: Fitted, paths: int, seed: int,
                   scenarios: ScenarioSpec | None = None, drawn=driver_paths) -> Draws:
    """Posterior predictive paths under every scenario, and the prior predictive (no shocks).

    ``paths``: at least this many in all (a whole number per posterior draw); ``scenarios``:
    default the run's. The random numbers come from ``seed`` alone. ``drawn``: what draws the
    posterior predictive's driver paths (``simulate.simulate``'s ``paths``; the run's keeps them
    for re-simulations, ``stored_paths``).
    """
    scenarios = scenarios or inputs.scenarios
    posterior = fitted.posterior
    per_draw = paths_per_draw(posterior, paths)
    n_paths = per_draw * posterior.sizes["chain"] * posterior.sizes["draw"]
    logger.info(f"simulating {n_paths:,} paths ({per_draw} per posterior draw) x "
                f"{len(scenarios.scenarios)} scenarios")
    inside = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        if inputs.spec.outside_view is not None and inputs.growth.weight > 0:
            # its random numbers are its own seed's (the run's own, drawn afresh), so it runs
            # beside the scenarios: their serial steps leave a core free
            logger.info("simulating the inside view alone (outside-view weight 0, same "
                        "posterior and random numbers, headline scenario), beside the scenarios")
            inside = pool.submit(inside_only, inputs, fitted, per_draw, seed, scenarios)
        predictive, prior_predictive = _predictive(inputs, fitted, scenarios, per_draw, seed,
                                                   drawn)
        inside = inside.result() if inside is not None else None
    return Draws(predictive, prior_predictive, int(n_paths), inside)


def _predictive(inputs: Inputs, fitted: Fitted, scenarios: ScenarioSpec, per_draw: int,
                seed: int, drawn=driver_paths) -> tuple[xr.Dataset, xr.Dataset]:
    """Every scenario's predictive draws, then the prior predictive, on one stream of ``seed``
    (``drawn``: see ``simulate_draws``)."""
    posterior, company, ceilings = fitted.posterior, inputs.company, inputs.spec.ceilings()
    rng = np.random.default_rng(seed)
    predictive = simulate(posterior, company, inputs.obs, per_draw, rng, scenarios=scenarios,
                          keep=stored_names(company, scenarios), log=logger.info,
                          valuation=fitted.valuation, ceilings=ceilings, priors=inputs.spec,
                          growth_settings=inputs.growth, paths=drawn)
    prior_predictive = simulate(fitted.prior, company, inputs.obs, PRIOR_PATHS_PER_DRAW, rng,
                                keep=stored_names(company), valuation=fitted.valuation,
                                ceilings=ceilings, priors=inputs.spec,
                                growth_settings=inputs.growth.for_prior())
    predictive.attrs.update(draws_attrs(company),
                            liquidity_floor=inputs.spec.settings["liquidity_floor"])
    return predictive, prior_predictive


#: What the inside-only simulation keeps (the outside-view comparisons need no more).
INSIDE_KEEP = ["revenue", "target_price", "value_today", "sales_cagr"]


def inside_only(inputs: Inputs, fitted: Fitted, per_draw: int, seed: int,
                scenarios: ScenarioSpec | None = None) -> xr.Dataset:
    """The headline scenario with the outside view's weight set to 0, on the same posterior and
    with the same seed: every random number is the same as the run's (the outside view's own
    draws are made and not used), so the two differ only on the outside paths."""
    return at_weight(inputs, fitted, 0.0, per_draw, seed, scenarios)


def at_weight(inputs: Inputs, fitted: Fitted, weight: float, per_draw: int, seed: int,
              scenarios: ScenarioSpec | None = None) -> xr.Dataset:
    """The headline scenario (``INSIDE_KEEP`` variables) with the outside view's weight set to
    ``weight``, on the fitted posterior (no refit) and the run's random numbers for ``seed``."""
    scenarios = scenarios or inputs.scenarios
    headline = replace(scenarios, scenarios={HEADLINE_SCENARIO:
                                             scenarios.scenarios[HEADLINE_SCENARIO]})
    out = simulate(fitted.posterior, inputs.company, inputs.obs, per_draw,
                   np.random.default_rng(seed), scenarios=headline, keep=INSIDE_KEEP,
                   valuation=fitted.valuation, ceilings=inputs.spec.ceilings(),
                   priors=inputs.spec, growth_settings=inputs.growth.with_weight(weight))
    return out.sel(scenario=HEADLINE_SCENARIO, drop=True)


def summarise(inputs: Inputs, fitted: Fitted, draws: Draws, settings: RunSettings) -> Summary:
    """The run's ``Summary``: statistics of every scenario, diagnostics, provenance, charts."""
    company = inputs.company
    premium = inputs.spec.valuation.get("peer_premium")
    labels = {s.name: s.label for s in inputs.scenarios.shocks.values()}
    # the sensitivities, the outside view and every scenario's statistics are independent, and
    # most of their work (numpy's sorts and partitions) releases the GIL: on two threads
    with ThreadPoolExecutor(max_workers=2) as pool:
        sensitivity = pool.submit(summary_sensitivity, draws.headline, company, labels)
        outside_view = pool.submit(outside_view_summary, inputs, draws)
        per_scenario = scenario_summaries(draws.predictive, inputs.scenarios, company)
        summary = _summary(company, inputs.spec, inputs.scenarios, fitted.diagnostics,
                           fitted.peer_idata, fitted.peers, premium, per_scenario,
                           draws.headline, draws.prior_predictive,
                           provenance_of(inputs, settings), draws.n_paths, sensitivity.result())
        outside = outside_view.result()
    log_table(outside, logger.info)
    charts = chart_data(
        draws.predictive, company, summary.to_dict(), prior=fitted.prior,
        posterior=fitted.posterior, peers=fitted.peers,
        peer_posterior=fitted.peer_idata["posterior"].to_dataset(),
        conventions=convention_table(company, point_funding(inputs.spec, company)))
    if outside is not None and inputs.growth.reference is not None:
        charts["outside_view"] = outside_view_block(outside, draws.headline, draws.inside,
                                                    inputs.growth.reference, company)
    return replace(summary, outside_view=outside, charts=charts)


def outside_view_summary(inputs: Inputs, draws: Draws) -> dict | None:
    """The summary's ``outside_view`` block: the reference class, the weight and the 3-year
    CAGR table (reference class / inside view alone / final), plus the final-year revenue and
    the target price of the inside view beside the final forecast."""
    company = inputs.company
    final = company.last_forecast_year
    extra = {}
    if draws.inside is not None:
        extra["inside_vs_final"] = {
            "revenue": {"year": final,
                        "inside_view": _stats_dict(draws.inside["revenue"].sel(year=final)),
                        "final": _stats_dict(draws.headline["revenue"].sel(year=final))},
            "target_price": {
                "inside_view": _stats_dict(draws.inside["target_price"]),
                "final": _stats_dict(draws.headline["target_price"]),
                # p_upside as the run's headline defines it (``upside``: the discounted value
                # per diluted share when the draws carry it)
                "p_upside_variable": upside_variable(draws.headline),
                "p_upside_inside_view": _prob_dict(p_exceeds(
                    draws.inside[upside_variable(draws.inside)], company.market.price)),
                "p_upside_final": _prob_dict(p_exceeds(
                    draws.headline[upside_variable(draws.headline)], company.market.price))}}
    if "gross_margin" in draws.headline:
        # the forecast's 3-year change in gross margin, to set beside the base rates' dispersion
        # of gross-margin changes (mix shift included)
        from .company import historical_ratios
        from .outside_view import CAGR_YEARS
        gm = draws.headline["gross_margin"]
        start = float(historical_ratios(company.history)["gross_margin"].values[-1])
        change = gm.isel(year=min(CAGR_YEARS, gm.sizes["year"]) - 1, drop=True) - start
        extra["gross_margin_change_3y"] = {"start": round(start, 4), "sd": round(float(
            change.std()), 4), **_stats_dict(change)}
    if "outside_view_path" in draws.headline:
        extra["share_of_outside_paths"] = round(float(draws.headline["outside_view_path"]
                                                      .mean()), 4)
    return summary_block(inputs.spec, inputs.growth, company, draws.headline, draws.inside,
                         extra)


def _stats_dict(da: xr.DataArray) -> dict:
    from .outside_view import QUARTILES
    x = da.values.reshape(-1)
    qs = (0.05,) + QUARTILES + (0.95,)
    return {f"p{int(round(q * 100)):02d}": round(float(v), 4)
            for q, v in zip(qs, np.quantile(x, qs))}


def _prob_dict(p) -> dict:
    return {"p": p.value, "mcse": p.mcse} if hasattr(p, "value") else dict(p)


def provenance_of(inputs: Inputs, settings: RunSettings) -> Provenance:
    run_settings = Settings(paths=settings.paths, **asdict(settings.fit))
    ov = inputs.spec.outside_view
    return Provenance.for_run(inputs.company, settings.seed, run_settings, inputs.priors_path,
                              inputs.scenarios_path, ov.base_rates if ov is not None else None)


#: Packages that make or present a run's results beside those of every fit key
#: (``cache.PACKAGES``): their versions enter the run key.
RUN_PACKAGES = ("arviz", "xarray", "h5netcdf", "h5py", "matplotlib")
#: The groups of forecast.nc a run writes (all are checked before a folder counts as up to date).
RUN_GROUPS = ("posterior", "prior", "sample_stats", "observed_data", "posterior_predictive",
              "prior_predictive", "peer_posterior")


def run_key(inputs: Inputs, settings: RunSettings) -> str:
    """The content key of a run: everything its results depend on -- the text and path of every
    input file, the company folder, the seed and settings (``provenance_of``), every source and
    data file of stforecast (``cache.package_hash``) and the versions of the packages that fit,
    simulate, store and draw. Two runs with one key write the same results."""
    provenance = provenance_of(inputs, settings)
    return fit_key("run", provenance=provenance.to_attrs(), folder=str(inputs.company.folder),
                   package=package_hash(), versions=package_versions(RUN_PACKAGES))


def up_to_date(out: Path, inputs: Inputs, settings: RunSettings, key: str) -> Summary | None:
    """The summary of ``out`` when it already holds this run's results (same run key, files
    unaltered, a report exactly when ``settings.report``); None when the run must be made
    (always with ``settings.refit``)."""
    if settings.refit:
        return None
    if (Path(out) / REPORT_FILE).is_file() != settings.report:
        return None
    return stored_run(Path(out), key, RUN_GROUPS)


def write(out: Path, inputs: Inputs, fitted: Fitted, draws: Draws, summary: Summary,
          settings: RunSettings, report: bool = True, key: str | None = None,
          renderer=None) -> dict[str, float]:
    """Write the results folder ``out`` as a whole: built in a staging folder beside it and
    swapped in when complete, under the folder's lock (``stforecast.publish.replacing``); the
    previous folder, whatever it held, is gone afterwards (so ``report=False`` leaves no report).
    ``key``: the run key (``run_key``) recorded in forecast.nc, so that the same run again finds
    the folder up to date (None: not recorded; the Python API's saves). The report is built in
    a second process (``report.ReportProcess``; ``renderer``: one already started, else one is
    started here) while this one writes the draws.

    Returns the seconds spent writing the draws and building the report (the report's: from
    the start of the write until it is done).
    """
    timings = {}
    observed = xr.Dataset({k: xr.DataArray(np.atleast_1d(v), dims=f"{k}_dim") for k, v in
                           observed_data_values(inputs.obs, inputs.company).items()})
    out = Path(out)
    groups = {"posterior": fitted.posterior, "prior": fitted.prior,
              "sample_stats": fitted.sample_stats, "observed_data": observed,
              "posterior_predictive": stored_predictive(draws.predictive),
              "prior_predictive": draws.prior_predictive,
              "peer_posterior": fitted.peer_idata["posterior"].to_dataset()}

    with publish.replacing(out, log=logger.info, between=lambda: _pause_at("swap")) as tmp, \
            _report_process(report, renderer) as reports:
        # Each writes its own files of the staging folder; the report is built from the summary
        # in memory (sent to the other process), nothing is read back.
        t = time.perf_counter()
        building = None
        if report:
            logger.info("building report.html and the charts (in a second process)")
            building = reports.build(tmp, summary)
        logger.info("writing forecast.nc and summary.json")
        try:
            write_results(tmp, summary, compact_groups(groups), provenance_of(inputs, settings),
                          run_key=key)
            timings["write"] = time.perf_counter() - t
        finally:  # the staging folder is not left (nor removed) while the report writes in it
            if building is not None:
                building.wait()
        if building is not None:
            building.result()  # its error, if any, is the run's
            timings["report"] = time.perf_counter() - t
        _pause_at("write")
        if report:
            _pause_at("report")
        _pause_at("publish")
    logger.info(f"done: {out}")
    return timings


@contextmanager
def _report_process(report: bool, renderer):
    """``renderer`` when given (its owner closes it), else a new ``report.ReportProcess`` when a
    report is wanted (closed on leaving), else None."""
    if renderer is not None or not report:
        yield renderer
        return
    from .report import ReportProcess
    with ReportProcess() as started:
        yield started


def _run_forecast(out, company: Company, settings, priors_path, scenarios_path) -> Summary:
    t_start = time.perf_counter()
    inputs = prepare(company, priors_path, scenarios_path)  # checked before fitting
    key = run_key(inputs, settings)
    done = up_to_date(out, inputs, settings, key)
    if done is not None:
        logger.info(f"{out}: up to date (same inputs, settings, seed, code and package "
                    f"versions: run key {key[:12]}); nothing to do (--refit runs again)")
        seconds = round(time.perf_counter() - t_start, 2)
        return replace(done, timings_s={"up_to_date": seconds, "total": seconds})
    _pause_at("fit")
    fitted = fit_models(inputs, settings)
    _pause_at("simulate")
    t = time.perf_counter()
    # the driver paths are kept for `stforecast scenarios` (read back here too, unless --refit)
    draws = simulate_draws(inputs, fitted, settings.paths, settings.seed,
                           drawn=StoredPaths(paths_cache(), read=not settings.refit))
    timings = {**fitted.timings, "predictive": time.perf_counter() - t}
    # the report's process starts now, so that it is ready (matplotlib loaded) when the
    # summary is: the summaries use one core
    with _report_process(settings.report, None) as renderer:
        t = time.perf_counter()
        summary = summarise(inputs, fitted, draws, settings)
        timings["summaries"] = time.perf_counter() - t
        timings.update(write(out, inputs, fitted, draws, summary, settings, settings.report, key,
                             renderer))
    timings["total"] = time.perf_counter() - t_start
    summary.timings_s.update({k: round(v, 2) for k, v in timings.items()})
    return summary


def _summary(company: Company, spec, scenarios: ScenarioSpec, diag, peer_idata, peers, premium,
             per_scenario: dict[str, ScenarioSummary], predictive: xr.Dataset,
             prior_predictive: xr.Dataset, provenance: Provenance, n_paths: int,
             sensitivity: dict) -> Summary:
    """The ``Summary`` of a run (the headline statistics are ``per_scenario``'s headline;
    ``sensitivity``: ``sensitivity.summary_sensitivity`` of the headline scenario)."""
    final = company.last_forecast_year
    price = company.market.price
    revenue_start = company.last_history_revenue()
    period = f"{company.first_forecast_year}-{final}"
    reasons = tuple(diag.reasons) + tuple(_peer_reasons(peer_idata))
    d = diag.to_dict()
    return Summary(
        company=company_info(company, provenance),
        headline_scenario=HEADLINE_SCENARIO,
        valuation_method=spec.valuation_method,
        upside=upside_of(company, spec, predictive),
        peer_fit=(peer_fit_summary(peer_idata, peers, company, premium, predictive)
                  if premium is not None else None),
        p_upside_range=upside_range(per_scenario, company),
        diagnostics=_diagnostics(d["rhat_max"], d["ess_bulk_min"], d["ess_tail_min"],
                                 d["divergences"], d["reasons"], 1),
        reasons=reasons, ok=not reasons,
        report_percentiles=ReportPercentiles(
            revenue=_report_percentile(predictive["revenue"].sel(year=final),
                                       company.published_final("revenue"), final),
            target_price=_report_percentile(predictive["target_price"],
                                            float(company.market.target_price_published))),
        prior_predictive=PriorPredictive(
            p_any_revenue_decline=probability_of_falling_revenue(prior_predictive, revenue_start),
            p_upside=p_exceeds(prior_predictive[upside_variable(prior_predictive)], price),
            revenue_final=sample_stats(prior_predictive["revenue"].sel(year=final))),
        p_any_revenue_decline=probability_of_falling_revenue(predictive, revenue_start),
        periods=Periods(cash_burn=period, p_any_revenue_decline=period,
                        sales_cagr=f"{company.last_history_year}-{final}", revenue_final=final),
        assumptions=_assumptions(spec),
        scenarios=per_scenario,
        shocks=_shock_table(scenarios),
        sensitivity={name: Sensitivity(block["year"], tuple(
            Ranked(e["driver"], float(e["score"])) for e in block["ranking"]),
            Tornado(**{**block["tornado"], "entries": tuple(
                Swing(**e) for e in block["tornado"]["entries"])}))
            for name, block in sensitivity.items()},
        n_paths=n_paths, seed=provenance.seed,
        priors_file=Path(provenance.inputs["priors"].path).name,
        priors_sha256=spec.sha256,
        scenarios_file=Path(provenance.inputs["scenarios"].path).name,
        scenarios_sha256=scenarios.sha256,
        settings=provenance.settings,
        versions=_versions())
