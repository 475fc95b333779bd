"""The main job: priors -> fit -> posterior predictive paths -> engine -> results/.

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
from .data import load_report
from .fit import FitSettings, bar_reasons, sample_posterior, sample_prior
from .model import build_model, observations_from_report, observed_data_values
from .priors import load_priors
from .multiples import Valuation, relation_from_fit
from .peers import fit_peer_model, load_peers, predict_multiple
from .sensitivity import summary_sensitivity
from .simulate import VALUATION_VARIABLES
from .shocks import HEADLINE_SCENARIO, ScenarioSpec, default_scenarios_path, load_scenarios
from .simulate import simulate
from .engine import REPORTED_LINES, REPORTED_SCALARS
from .summary import (line_item_stats, p_exceeds, percentile_of, sample_stats,
                      probability_of_falling_revenue)

DEFAULT_SEED = 20220131  # the report's pricing date, 31 Jan 2022
#: Unit drivers kept in forecast.nc beside the reported line items (analyst terms, for charts).
STORED_DRIVERS = ("smart_business_customers", "smart_business_revenue_per_customer",
                  "smart_city_cities", "smart_city_revenue_per_city", "selling_marketing_ratio",
                  "admin_ratio", "rnd_ratio", "other_receivable_days", "inventory_days",
                  "trade_payable_days", "other_payable_days", "capex_ratio", "da_ratio",
                  "change_in_working_capital", "ev_sales_multiple")


def stored_names(scenarios: ScenarioSpec | None = None) -> list[str]:
    """The predictive variables worth keeping on disk (reported lines, scalars, drivers, and the
    intensity of each shock)."""
    shocks = [f"shock_{n}" for n in scenarios.shocks] if scenarios is not None else []
    return (list(REPORTED_LINES + REPORTED_SCALARS + STORED_DRIVERS + VALUATION_VARIABLES
                 + METHOD_TARGET_PRICES) + shocks)


PRIOR_PATHS_PER_DRAW = 10
#: Target price under each valuation method (``stforecast.multiples``), name -> variables.
METHOD_VARIABLES = {"report": ("target_price_hkd_report", "ev_sales_multiple_report"),
                    "peer-regression": ("target_price_hkd_peer", "ev_sales_multiple_peer")}
METHOD_TARGET_PRICES = tuple(v[0] for v in METHOD_VARIABLES.values())


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


def _stats_block(predictive: xr.Dataset, price: float) -> dict:
    out = line_item_stats(predictive)
    out["p_upside"] = p_exceeds(predictive["target_price_hkd"], price)
    return out


def _valuation_block(predictive: xr.Dataset, price: float) -> dict:
    """Both valuation methods side by side: target price, P(upside), the multiple."""
    out = {}
    for method, (tp, multiple) in METHOD_VARIABLES.items():
        if tp in predictive:
            out[method] = {"target_price_hkd": sample_stats(predictive[tp]),
                           "p_upside": p_exceeds(predictive[tp], price),
                           "ev_sales_multiple": sample_stats(predictive[multiple], mean=False)}
    if "sales_cagr_fy20_fy23" in predictive:
        out["sales_cagr_fy20_fy23"] = sample_stats(predictive["sales_cagr_fy20_fy23"], mean=False)
    return out


def peer_fit_summary(peer_idata, peers: xr.Dataset, report, premium) -> dict:
    """Slopes, diagnostics and the multiple predicted at the report's own growth and margin."""
    post = peer_idata["posterior"].to_dataset()

    def interval(x):
        v = np.asarray(x).reshape(-1)
        return {"q05": round(float(np.quantile(v, 0.05)), 4),
                "q50": round(float(np.median(v)), 4), "q95": round(float(np.quantile(v, 0.95)), 4)}

    cagr = float(peers.attrs["sensetime_sales_cagr_fy20_23e"])
    margin = float(peers.attrs["sensetime_gross_margin_fy20"])
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
                                        "report_multiple": report.market.ev_sales_multiple},
    }


#: Keys of a scenario's summary block that the headline does not repeat at the top level.
SCENARIO_ONLY_KEYS = ("description", "shocks", "valuation_methods")


def scenario_summaries(all_scenarios: xr.Dataset, scenarios: ScenarioSpec, price: float) -> dict:
    """``{scenario: {description, shocks, <line item stats>, p_upside, valuation_methods}}``."""
    out = {}
    for name, sc in scenarios.scenarios.items():
        one = all_scenarios.sel(scenario=name, drop=True)
        out[name] = {"description": sc.description,
                     "shocks": {k: v.describe() for k, v in sc.settings.items()},
                     **_stats_block(one, price), "valuation_methods": _valuation_block(one, price)}
    return out


def resimulate(results: Path, scenarios_path: Path, priors_path: Path | None = None,
               paths: int | None = None, seed: int | None = None, log=None) -> tuple[dict, xr.Dataset]:
    """Every scenario of ``scenarios_path`` on the SAVED posterior of ``results`` (no refit).

    The driver model's posterior and the peer regression come from ``results/forecast.nc``;
    the priors file supplies only the valuation method and the peer premium. ``paths`` and
    ``seed`` default to the run's. Returns ``(scenario summaries, predictive draws)``; nothing
    is written.
    """
    from .priors import default_priors_path

    results = Path(results)
    summary = json.loads((results / "summary.json").read_text())
    seed = summary["seed"] if seed is None else seed
    paths = summary["settings"]["paths"] if paths is None else paths
    spec = load_priors(priors_path or default_priors_path())
    if log is not None and spec.sha256 != summary.get("priors_sha256"):
        log(f"note: {spec.path} differs from the priors file of the run in {results} "
            f"({summary.get('priors_file')}); its valuation settings are used, the driver "
            f"posterior is the run's")
    report = load_report()
    scenarios = load_scenarios(scenarios_path, report.forecast_years)
    nc = results / "forecast.nc"
    posterior = xr.open_dataset(nc, group="posterior", engine="h5netcdf").load()
    relation = None
    if "peer_premium" in spec.valuation:
        peer_post = xr.open_dataset(nc, group="peer_posterior", engine="h5netcdf").load()
        relation = relation_from_fit(peer_post, spec.valuation["peer_premium"], seed,
                                     load_peers())
    valuation = Valuation(spec.valuation_method, relation)
    per_draw = paths_per_draw(posterior, paths)
    obs = observations_from_report(report)
    predictive = simulate(posterior.astype("float64"), report, obs, per_draw,
                          np.random.default_rng(seed), scenarios=scenarios,
                          keep=stored_names(scenarios), log=log, valuation=valuation,
                          ceilings=spec.ceilings())
    return scenario_summaries(predictive, scenarios, report.market.price_hkd), predictive


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


def run_forecast(out: Path, priors_path: Path, settings: RunSettings = RunSettings(),
                 log=print, scenarios_path: Path | None = None) -> dict:
    """Fit, simulate every scenario and write results to ``out``; returns the summary dict.

    ``scenarios_path``: the shocks and scenarios file (default: ``scenarios.toml`` beside the
    priors file, else the project's ``priors/scenarios.toml``). Headline statistics are those of
    the ``risk-weighted`` scenario; ``summary["scenarios"]`` has the same per scenario.
    """
    with _quiet_pymc():
        return _run_forecast(out, priors_path, settings, log, scenarios_path)


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


def _run_forecast(out, priors_path, settings, log, scenarios_path) -> dict:
    t_start = time.perf_counter()
    user_log = log

    def log(message: str) -> None:  # every step with the time since the start
        user_log(f"{message}  [{time.perf_counter() - t_start:.1f} s]")

    spec = load_priors(priors_path)
    report = load_report()
    scenarios_path = Path(scenarios_path or default_scenarios_path(priors_path))
    scenarios = load_scenarios(scenarios_path, report.forecast_years)  # checked before fitting
    obs = observations_from_report(report)
    model = build_model(spec, obs)
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
    peers = load_peers()
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
    all_scenarios = simulate(posterior, report, obs, per_draw, rng, scenarios=scenarios,
                             keep=stored_names(scenarios), log=log, valuation=valuation,
                             ceilings=spec.ceilings())
    # The prior predictive checks the driver model itself: no shocks.
    prior_predictive = simulate(prior, report, obs, PRIOR_PATHS_PER_DRAW, rng,
                                keep=stored_names(), valuation=valuation,
                                ceilings=spec.ceilings())
    timings["predictive"] = time.perf_counter() - t
    predictive = all_scenarios.sel(scenario=HEADLINE_SCENARIO, drop=True)

    price = report.market.price_hkd
    t = time.perf_counter()
    per_scenario = scenario_summaries(all_scenarios, scenarios, price)
    headline = per_scenario[HEADLINE_SCENARIO]  # the top-level statistics are its own
    summary = {k: v for k, v in headline.items() if k not in SCENARIO_ONLY_KEYS}
    summary["headline_scenario"] = HEADLINE_SCENARIO
    summary["valuation_method"] = spec.valuation_method
    summary["valuation_methods"] = headline["valuation_methods"]
    if premium is not None:
        summary["peer_fit"] = peer_fit_summary(peer_idata, peers, report, premium)
    summary["diagnostics"] = diag.to_dict()
    summary["reasons"] = list(diag.reasons) + _peer_reasons(peer_idata)
    summary["ok"] = not summary["reasons"]
    summary["report_percentiles"] = {
        "revenue_fy23_8825": percentile_of(predictive["revenue"].sel(year="FY23"),
                                           float(report.published["revenue"].sel(year="FY23"))),
        "target_price_hkd_8.08": percentile_of(predictive["target_price_hkd"],
                                               report.market.target_price_hkd_published),
    }
    revenue_fy20 = float(report.history["revenue"].sel(year="FY20"))
    summary["prior_predictive"] = {
        "p_any_revenue_decline_fy21_fy23": probability_of_falling_revenue(prior_predictive,
                                                                          revenue_fy20),
        "p_upside": p_exceeds(prior_predictive["target_price_hkd"], price),
        "revenue_fy23": line_item_stats(prior_predictive)["revenue"]["FY23"],
    }
    summary["p_any_revenue_decline_fy21_fy23"] = probability_of_falling_revenue(predictive,
                                                                               revenue_fy20)
    summary["assumptions"] = [
        {"driver": name, "prior": f"long-run {p.long_run.describe()}, persistence "
         f"{p.persistence.describe()}, volatility {p.volatility.describe()}", "source": p.source}
        for name, p in spec.processes().items()
    ] + [{"driver": name, "prior": p.describe(), "source": p.source}
         for name, p in spec.valuation.items()]
    summary["scenarios"] = per_scenario
    summary["shocks"] = _shock_table(scenarios)
    summary["sensitivity"] = summary_sensitivity(predictive)
    timings["summaries"] = time.perf_counter() - t
    summary["n_paths"] = int(per_draw * n_draws)
    summary["seed"] = settings.seed
    summary["priors_file"] = Path(priors_path).name
    summary["priors_sha256"] = spec.sha256
    summary["scenarios_file"] = scenarios_path.name
    summary["scenarios_sha256"] = scenarios.sha256
    summary["settings"] = {"paths": settings.paths, **asdict(settings.fit)}
    summary["versions"] = _versions()

    observed = xr.Dataset({k: xr.DataArray(np.atleast_1d(v), dims=f"{k}_dim") for k, v in
                           observed_data_values(obs).items()})
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
