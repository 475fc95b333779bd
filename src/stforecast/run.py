"""The main job: a company -> fit -> posterior predictive paths -> engine -> results.

``run_forecast`` is what ``stforecast run`` calls. It writes, atomically (everything is built in
a temporary folder beside the target and moved into place only when complete, so a failed or
interrupted run leaves earlier results intact):

* ``forecast.nc``: DataTree with ``posterior``, ``prior``, ``sample_stats``, ``observed_data``,
  ``posterior_predictive`` (dims scenario, chain, draw, path, year: every scenario of the
  scenarios file, with the shock intensities ``shock_<name>``) and ``prior_predictive`` (the
  driver model alone, no shocks); float32 and gzip-compressed;
* ``summary.json``: percentiles per line item and year and P(upside) +- MCSE for the headline
  ``risk-weighted`` scenario, the same per scenario under ``scenarios``, the shocks, the
  sensitivity rankings, diagnostics, seed, the input files' hashes and the package versions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from . import __version__
from .charts import chart_data
from .company import Company, load_company
from .fit import FitSettings, bar_reasons, sample_posterior, sample_prior
from .model import build_model, observations_from_company, observed_data_values
from .priors import load_priors
from .multiples import Valuation, relation_from_fit
from .peers import fit_peer_model, load_peers, predict_multiple
from .registry import HEADLINE_SCENARIO, METHOD_VARIABLES, REPORTED_SCALARS, VARIABLES
from .scenarios import ScenarioSpec, load_scenarios
from .sensitivity import summary_sensitivity
from .simulate import VALUATION_VARIABLES, simulate
from .summary import (line_item_stats, p_exceeds, percentile_of, sample_stats,
                      probability_of_falling_revenue, reported_lines)

DEFAULT_SEED = 20220131  # the default seed of every run (a date: 31 Jan 2022)
METHOD_TARGET_PRICES = tuple(v[0] for v in METHOD_VARIABLES.values())


def stored_names(company: Company, scenarios: ScenarioSpec | None = None) -> list[str]:
    """The predictive variables worth keeping on disk (reported lines, scalars, the company's
    unit drivers, the registry's stored drivers, and the intensity of each shock)."""
    shocks = [f"shock_{n}" for n in scenarios.shocks] if scenarios is not None else []
    drivers = [n for n, v in VARIABLES.items() if v.kind == "driver" and v.stored]
    drivers += ["ev_sales_multiple"]
    return (list(reported_lines(company) + REPORTED_SCALARS) + company.unit_drivers() + drivers
            + list(VALUATION_VARIABLES + METHOD_TARGET_PRICES) + shocks)


PRIOR_PATHS_PER_DRAW = 10


@dataclass(frozen=True)
class RunSettings:
    seed: int = DEFAULT_SEED
    paths: int = 100_000
    report: bool = True
    fit: FitSettings = field(default_factory=FitSettings)
    progress: bool = False  # the samplers' progress bars (the CLI turns them on in a terminal)


def _versions() -> dict[str, str]:
    import arviz
    import pymc
    import pytensor
    import scipy

    out = {"stforecast": __version__, "pymc": pymc.__version__, "pytensor": pytensor.__version__,
           "arviz": arviz.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
           "xarray": xr.__version__}
    try:
        import nutpie
        out["nutpie"] = nutpie.__version__
    except ImportError:  # pragma: no cover - nutpie is a dependency
        pass
    return out


#: Mantissa bits kept when storing draws: relative precision 2**-13 = 1.2e-4 (RMB 1mn on 8,000),
#: far below the Monte Carlo error of any statistic, and it lets gzip compress the draws.
MANTISSA_BITS = 13


def _round_mantissa(values: np.ndarray) -> np.ndarray:
    """float32 with the low mantissa bits zeroed (round to nearest; NaN/inf untouched)."""
    x = np.ascontiguousarray(values, dtype=np.float32)
    drop = 23 - MANTISSA_BITS
    bits = x.view(np.uint32)
    rounded = ((bits + np.uint32(1 << (drop - 1))) & np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF))
    return np.where(np.isfinite(x), rounded.view(np.float32), x)


def _compact(ds: xr.Dataset) -> xr.Dataset:
    """float64 -> float32 with rounded mantissas (see ``MANTISSA_BITS``); per variable byte-shuffle
    + gzip level 1 (measured: as small as level 4, 40% faster to write)."""
    ds = ds.copy()
    for name, var in ds.data_vars.items():
        if var.dtype == np.float64:
            ds[name] = var.copy(data=_round_mantissa(var.values))
        if var.dtype.kind in "fiub":
            ds[name].encoding = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
        else:
            ds[name].encoding = {}
    return ds


def write_forecast_nc(path: Path, groups: dict[str, xr.Dataset]) -> None:
    mode = "w"
    for name, ds in groups.items():
        ds = _compact(ds.drop_vars([v for v in ds.data_vars if ds[v].dtype == object]))
        ds.to_netcdf(path, group=name, mode=mode, engine="h5netcdf")
        mode = "a"


def _atomic_publish(tmp: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():
        os.replace(item, out / item.name)


def _stats_block(predictive: xr.Dataset, company: Company) -> dict:
    out = line_item_stats(predictive, company)
    out["p_upside"] = p_exceeds(predictive["target_price"], company.market.price)
    return out


def _valuation_block(predictive: xr.Dataset, price: float) -> dict:
    """Both valuation methods side by side: target price, P(upside), the multiple."""
    out = {}
    for method, (tp, multiple) in METHOD_VARIABLES.items():
        if tp in predictive:
            out[method] = {"target_price": sample_stats(predictive[tp]),
                           "p_upside": p_exceeds(predictive[tp], price),
                           "ev_sales_multiple": sample_stats(predictive[multiple], mean=False)}
    if "sales_cagr" in predictive:
        out["sales_cagr"] = sample_stats(predictive["sales_cagr"], mean=False)
    return out


def peer_fit_summary(peer_idata, peers: xr.Dataset, company: Company, premium) -> dict:
    """Slopes, diagnostics and the multiple predicted at the report's own growth and margin."""
    post = peer_idata["posterior"].to_dataset()

    def interval(x):
        v = np.asarray(x).reshape(-1)
        return {"q05": round(float(np.quantile(v, 0.05)), 4),
                "q50": round(float(np.median(v)), 4), "q95": round(float(np.quantile(v, 0.95)), 4)}

    cagr = float(peers.attrs["target_sales_cagr"])
    margin = float(peers.attrs["target_gross_margin"])
    rng = np.random.default_rng(0)
    plain = predict_multiple(post, cagr, margin, rng=rng).values
    with_premium = predict_multiple(post, cagr, margin, rng=rng, premium=premium.frozen().rvs(
        size=20_000, random_state=rng)).values
    return {
        "diagnostics": {k: round(float(peer_idata.attrs[k]), 4) for k in
                        ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences")},
        "beta_growth_per_10pp": interval(post["beta_growth"].values / 10),
        "beta_margin_per_10pp": interval(post["beta_margin"].values / 10),
        "at_report_growth_and_margin": {"sales_cagr": cagr, "gross_margin": round(margin, 4),
                                        "multiple": interval(plain),
                                        "multiple_with_premium": interval(with_premium),
                                        "report_multiple": company.market.ev_sales_multiple},
    }


#: Keys of a scenario's summary block that the headline does not repeat at the top level.
SCENARIO_ONLY_KEYS = ("description", "shocks", "valuation_methods")


def scenario_summaries(all_scenarios: xr.Dataset, scenarios: ScenarioSpec,
                       company: Company) -> dict:
    """``{scenario: {description, shocks, <line item stats>, p_upside, valuation_methods}}``."""
    out = {}
    for name, sc in scenarios.scenarios.items():
        one = all_scenarios.sel(scenario=name, drop=True)
        out[name] = {"description": sc.description,
                     "shocks": {k: v.describe() for k, v in sc.settings.items()},
                     **_stats_block(one, company),
                     "valuation_methods": _valuation_block(one, company.market.price)}
    return out


def resimulate(results: Path, scenarios_path: Path | None = None, priors_path: Path | None = None,
               paths: int | None = None, seed: int | None = None, log=None,
               company: Company | str | Path | None = None) -> tuple[dict, xr.Dataset]:
    """Every scenario of ``scenarios_path`` on the SAVED posterior of ``results`` (no refit).

    The driver model's posterior and the peer regression come from ``results/forecast.nc``;
    the priors file supplies only the valuation method and the peer premium. ``paths`` and
    ``seed`` default to the run's. Returns ``(scenario summaries, predictive draws)``; nothing
    is written. ``company``: default the run's (by its folder).
    """
    results = Path(results)
    summary = json.loads((results / "summary.json").read_text())
    seed = summary["seed"] if seed is None else seed
    paths = summary["settings"]["paths"] if paths is None else paths
    if not isinstance(company, Company):
        company = load_company(company if company is not None else summary["company"]["folder"])
    spec = load_priors(priors_path or company.priors_path, company.growth_drivers())
    if log is not None and spec.sha256 != summary.get("priors_sha256"):
        log(f"note: {spec.path} differs from the priors file of the run in {results} "
            f"({summary.get('priors_file')}); its valuation settings are used, the driver "
            f"posterior is the run's")
    scenarios = load_scenarios(scenarios_path or company.scenarios_path, company)
    nc = results / "forecast.nc"
    posterior = xr.open_dataset(nc, group="posterior", engine="h5netcdf").load()
    relation = None
    if "peer_premium" in spec.valuation:
        peer_post = xr.open_dataset(nc, group="peer_posterior", engine="h5netcdf").load()
        relation = relation_from_fit(peer_post, spec.valuation["peer_premium"], seed,
                                     load_peers(company.peers_path))
    valuation = Valuation(spec.valuation_method, relation)
    per_draw = paths_per_draw(posterior, paths)
    obs = observations_from_company(company)
    predictive = simulate(posterior.astype("float64"), company, obs, per_draw,
                          np.random.default_rng(seed), scenarios=scenarios,
                          keep=stored_names(company, scenarios), log=log, valuation=valuation,
                          ceilings=spec.ceilings())
    return scenario_summaries(predictive, scenarios, company), predictive


def paths_per_draw(posterior: xr.Dataset, paths: int) -> int:
    """Future paths per posterior draw so that there are at least ``paths`` in all."""
    return max(1, math.ceil(paths / (posterior.sizes["chain"] * posterior.sizes["draw"])))


def _peer_reasons(peer_idata) -> list[str]:
    """The peer regression's sampler diagnostics against the same bar as the driver model."""
    a = peer_idata.attrs
    return [f"peer regression: {r}" for r in
            bar_reasons(a["rhat_max"], a["ess_bulk_min"], a["ess_tail_min"], a["divergences"])]


def _shock_table(scenarios: ScenarioSpec) -> list[dict]:
    return [{"shock": s.name, "label": s.label,
             "annual_probability": s.probability.describe(),
             "annual_probability_mean": round(float(s.probability.frozen().mean()), 4),
             "severity": s.severity.describe(), "persistence": s.persistence,
             "channels": s.channels, "source": s.source} for s in scenarios.shocks.values()]


def run_forecast(out: Path, company: Company | str | Path | None = None,
                 settings: RunSettings = RunSettings(), log=print,
                 priors_path: Path | None = None, scenarios_path: Path | None = None) -> dict:
    """Fit, simulate every scenario and write results to ``out``; returns the summary dict.

    ``company``: a ``Company``, a shipped company's name or a company folder (default: the
    default shipped company). ``priors_path`` / ``scenarios_path``: override the company's
    ``priors.toml`` / ``scenarios.toml``. Headline statistics are those of the headline
    scenario; ``summary["scenarios"]`` has the same per scenario.
    """
    if not isinstance(company, Company):
        company = load_company(company)
    with _quiet_pymc():
        return _run_forecast(out, company, settings, log, priors_path, scenarios_path)


@contextmanager
def _quiet_pymc():
    """PyMC's INFO lines ("Sampling: [...]", NUTS start-up) would drown the run's own log."""
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_forecast(out, company: Company, settings, log, priors_path, scenarios_path) -> dict:
    t_start = time.perf_counter()
    user_log = log

    def log(message: str) -> None:  # every step with the time since the start
        user_log(f"{message}  [{time.perf_counter() - t_start:.1f} s]")

    priors_path = Path(priors_path or company.priors_path)
    spec = load_priors(priors_path, company.growth_drivers())
    scenarios_path = Path(scenarios_path or company.scenarios_path)
    scenarios = load_scenarios(scenarios_path, company)  # checked before fitting
    obs = observations_from_company(company)
    model = build_model(spec, obs, company)
    timings = {}

    log(f"sampling the prior ({settings.fit.prior_draws} draws)")
    t = time.perf_counter()
    prior = sample_prior(model, settings.fit.prior_draws, settings.seed)
    timings["prior"] = time.perf_counter() - t

    fs = settings.fit
    log(f"fitting: {fs.sampler} NUTS, {fs.chains} chains x {fs.draws} draws ({fs.tune} tune)")
    fit = sample_posterior(model, fs, settings.seed, progressbar=settings.progress)
    timings.update(fit.timings)
    posterior = fit.idata["posterior"].to_dataset()
    diag = fit.diagnostics

    log(f"fitting the peer regression (Figure 69, {fs.chains} chains x {fs.draws} draws); "
        f"valuation method: {spec.valuation_method}")
    t = time.perf_counter()
    peers = load_peers(company.peers_path)
    with warnings.catch_warnings():  # its diagnostics are checked below, into "reasons"
        warnings.simplefilter("ignore", UserWarning)
        peer_idata = fit_peer_model(peers, draws=fs.draws, tune=fs.tune, chains=fs.chains,
                                    seed=settings.seed)
    timings["peers"] = time.perf_counter() - t
    premium = spec.valuation.get("peer_premium")
    valuation = Valuation(spec.valuation_method, relation_from_fit(
        peer_idata, premium, settings.seed, peers) if premium is not None else None)

    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    per_draw = paths_per_draw(posterior, settings.paths)
    log(f"simulating {per_draw * n_draws:,} paths ({per_draw} per posterior draw) x "
        f"{len(scenarios.scenarios)} scenarios")
    t = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    all_scenarios = simulate(posterior, company, obs, per_draw, rng, scenarios=scenarios,
                             keep=stored_names(company, scenarios), log=log, valuation=valuation,
                             ceilings=spec.ceilings())
    # The prior predictive checks the driver model itself: no shocks.
    prior_predictive = simulate(prior, company, obs, PRIOR_PATHS_PER_DRAW, rng,
                                keep=stored_names(company), valuation=valuation,
                                ceilings=spec.ceilings())
    timings["predictive"] = time.perf_counter() - t
    predictive = all_scenarios.sel(scenario=HEADLINE_SCENARIO, drop=True)

    price = company.market.price
    t = time.perf_counter()
    per_scenario = scenario_summaries(all_scenarios, scenarios, company)
    headline = per_scenario[HEADLINE_SCENARIO]  # the top-level statistics are its own
    summary = {k: v for k, v in headline.items() if k not in SCENARIO_ONLY_KEYS}
    summary["headline_scenario"] = HEADLINE_SCENARIO
    summary["valuation_method"] = spec.valuation_method
    summary["valuation_methods"] = headline["valuation_methods"]
    if premium is not None:
        summary["peer_fit"] = peer_fit_summary(peer_idata, peers, company, premium)
    summary["diagnostics"] = diag.to_dict()
    summary["reasons"] = list(diag.reasons) + _peer_reasons(peer_idata)
    summary["ok"] = not summary["reasons"]
    final = company.last_forecast_year
    report_revenue = company.published_final("revenue")
    summary["report_percentiles"] = {
        "revenue": {"year": final, "report": report_revenue,
                    "percentile": percentile_of(predictive["revenue"].sel(year=final),
                                                report_revenue)},
        "target_price": {"report": company.market.target_price_published,
                         "percentile": percentile_of(predictive["target_price"],
                                                     company.market.target_price_published)},
    }
    revenue_start = company.last_history_revenue()
    period = f"{company.first_forecast_year}-{final}"
    summary["prior_predictive"] = {
        "p_any_revenue_decline": probability_of_falling_revenue(prior_predictive, revenue_start),
        "p_upside": p_exceeds(prior_predictive["target_price"], price),
        "revenue_final": line_item_stats(prior_predictive, company)["revenue"][final],
    }
    summary["p_any_revenue_decline"] = probability_of_falling_revenue(predictive, revenue_start)
    summary["periods"] = {"cash_burn": period, "p_any_revenue_decline": period,
                          "sales_cagr": f"{company.last_history_year}-{final}",
                          "revenue_final": final}
    summary["assumptions"] = [
        {"driver": name, "prior": f"long-run {p.long_run.describe()}, persistence "
         f"{p.persistence.describe()}, volatility {p.volatility.describe()}", "source": p.source}
        for name, p in spec.processes().items()
    ] + [{"driver": name, "prior": p.describe(), "source": p.source}
         for name, p in spec.valuation.items()]
    summary["scenarios"] = per_scenario
    summary["shocks"] = _shock_table(scenarios)
    summary["sensitivity"] = summary_sensitivity(predictive, company)
    summary["charts"] = chart_data(all_scenarios, company, summary, prior=prior,
                                   posterior=posterior, peers=peers,
                                   peer_posterior=peer_idata["posterior"].to_dataset())
    timings["summaries"] = time.perf_counter() - t
    summary["company"] = {"key": company.key, "name": company.name, "ticker": company.ticker,
                          "currency": company.currency, "price_currency": company.price_currency,
                          "price": company.market.price, "folder": str(company.folder),
                          "report": company.report_title, "files": company.file_hashes()}
    summary["n_paths"] = int(per_draw * n_draws)
    summary["seed"] = settings.seed
    summary["priors_file"] = Path(priors_path).name
    summary["priors_sha256"] = spec.sha256
    summary["scenarios_file"] = scenarios_path.name
    summary["scenarios_sha256"] = scenarios.sha256
    summary["settings"] = {"paths": settings.paths, **asdict(settings.fit)}
    summary["versions"] = _versions()

    observed = xr.Dataset({k: xr.DataArray(np.atleast_1d(v), dims=f"{k}_dim") for k, v in
                           observed_data_values(obs, company).items()})
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        log("writing forecast.nc and summary.json")
        t = time.perf_counter()
        write_forecast_nc(tmp / "forecast.nc", {
            "posterior": posterior, "prior": prior,
            "sample_stats": fit.idata["sample_stats"].to_dataset(),
            "observed_data": observed, "posterior_predictive": all_scenarios,
            "prior_predictive": prior_predictive,
            "peer_posterior": peer_idata["posterior"].to_dataset()})
        timings["write"] = time.perf_counter() - t
        # Timings vary run to run; keep them out of summary.json so a seed reproduces it exactly.
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        if settings.report:
            from .report import build_report
            log("building report.html and the charts")
            t = time.perf_counter()
            build_report(tmp)
            timings["report"] = time.perf_counter() - t
        _atomic_publish(tmp, out)
        log(f"done: {out}")
        timings["total"] = time.perf_counter() - t_start
        summary["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary
