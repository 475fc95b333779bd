"""``stforecast sweep SWEEP.toml``: shock and prior settings swept on a saved run.

A sweep file::

    [sweep]
    design = "grid"             # or "latin-hypercube"
    samples = 200               # latin-hypercube only: number of settings
    seed = 1                    # the design's and the simulation's seed (default: the run's)
    paths = 100000              # per setting (default: the run's)
    default = "prior"           # shocks not swept: "prior" (their prior probability) or "off"
    draws_store = "draws.zarr"  # optional: every setting's draws in one zarr store
    draws_variables = ["revenue", "target_price"]   # what the store keeps (this is the default)

    [shocks.us_restrictions]
    probability = [0.0, 0.1, 0.2, 0.3]   # grid: the values; latin-hypercube: [low, high]
    severity = [0.5, 1.0, 1.5]           # intensity of one occurrence (1 = typical)

    [priors."pooling.company_growth_effect"]
    sigma = [0.02, 0.04, 0.08]           # a prior's hyperparameter (see stforecast.sweep_refit)

A **setting** is one value per swept parameter: each swept shock occurs with that fixed annual
probability (``"prior"`` when only its severity is swept) and that fixed severity, and each swept
prior parameter takes that value. Settings without prior parameters are re-simulated on the
run's posterior (no refit). A prior setting needs a refit of the driver model
(``sweep_refit.prior_fit``: the run's fit settings and seed, one compilation per distinct prior
setting): one Dask task per prior setting, whose posterior stays on its worker and feeds the
simulation tasks of every shock setting that shares it. Every setting is simulated with the
SAME seed: common random numbers, so two settings differ only by their shocks and priors, the
response surface carries no extra simulation noise, and a setting's result does not depend on
which task or worker computed it.

``sweep_task`` simulates a chunk of settings on one set of driver paths and reduces each to a
summary on the worker (P(upside) +- MCSE, revenue in the final forecast year and target-price
quantiles, P(any revenue decline); with a refit, its diagnostics); with a draws store it writes
each setting's draws into the store's region for that setting (``stforecast.sweep_draws``).
``run_sweep`` submits the tasks, writes each setting's summary atomically as it arrives
(``settings/NNNNN.json``: a setting is finished when its file exists) and skips settings already
written when a sweep is resumed, then writes ``sweep.csv``, ``sweep.json`` (with ``chart``: how
P(upside) and final-year revenue move with each swept parameter, ``sweep_chart``) and
``sweep.png`` (drawn by ``plots.sweep_response``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .distributed import RETRIES, atomic_write_text, map_tasks
from .errors import StforecastError
from .sweep_refit import PRIOR_PREFIX, check_value, is_prior_key, prior_fit
from .tomlfile import read_toml

DESIGNS = ("grid", "latin-hypercube")
PARAMETERS = ("probability", "severity")
SWEEP_KEYS = ("design", "samples", "seed", "paths", "default", "draws_store", "draws_variables")
#: Summaries kept per setting (the predictive variables they need); also the draws store's
#: default variables.
NEEDED = ("revenue", "target_price")


class SweepError(StforecastError):
    """The sweep file is invalid, or an output folder holds another sweep (one line)."""


def _fail(path, key, expected):
    raise SweepError(f"{path}: key '{key}': expected {expected}")


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file. ``parameters``: ``"shock.probability"`` or
    ``"priors.<prior>.<parameter>"`` -> values (grid) or (low, high) (latin-hypercube).
    ``draws_store``: the zarr store's path as the file gives it (None: no draws kept)."""

    path: str
    sha256: str
    design: str
    samples: int
    seed: int | None
    paths: int | None
    default: str
    parameters: dict[str, tuple[float, ...]]
    draws_store: str | None = None
    draws_variables: tuple[str, ...] = NEEDED

    def settings(self) -> list[dict[str, float]]:
        """Every setting, ``{"shock.parameter": value}``, in a fixed order."""
        names = list(self.parameters)
        if self.design == "grid":
            return [dict(zip(names, values)) for values in
                    itertools.product(*(self.parameters[n] for n in names))]
        from scipy.stats import qmc
        unit = qmc.LatinHypercube(d=len(names), seed=self.seed or 0).random(self.samples)
        lows = np.array([self.parameters[n][0] for n in names])
        highs = np.array([self.parameters[n][1] for n in names])
        points = lows + unit * (highs - lows)
        return [{n: round(float(v), 6) for n, v in zip(names, row)} for row in points]

    @property
    def prior_parameters(self) -> list[str]:
        return [k for k in self.parameters if is_prior_key(k)]


def _flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """``{"growth": {"a": {"long_run": {"mu": [..]}}}}`` -> ``{"growth.a.long_run.mu": [..]}``
    (a priors table may be written nested or with a quoted dotted name)."""
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _values(path, key, values, design, lo=-math.inf, hi=math.inf) -> tuple[float, ...]:
    if not (isinstance(values, list) and values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and lo <= v <= hi for v in values)):
        _fail(path, key, f"a list of numbers in [{lo:g}, {hi:g}], got {values!r}")
    if design == "latin-hypercube" and (len(values) != 2 or values[0] >= values[1]):
        _fail(path, key, f"[low, high] with low < high (latin hypercube), got {values!r}")
    return tuple(float(v) for v in values)


def load_sweep(path: str | Path, shocks, priors=None) -> SweepSpec:
    """Read and validate a sweep file against the scenarios file's ``shocks`` (name -> Shock)
    and, when it sweeps priors, the run's priors (``priors``: a ``PriorSpec``)."""
    path = str(path)
    raw, blob = read_toml(path, SweepError)
    for section in raw:
        if section not in ("sweep", "shocks", "priors"):
            _fail(path, section, "a known section: one of sweep, shocks, priors")
    head = raw.get("sweep", {})
    if not isinstance(head, dict):
        _fail(path, "sweep", "a table")
    for key in head:
        if key not in SWEEP_KEYS:
            _fail(path, f"sweep.{key}", f"one of {', '.join(SWEEP_KEYS)}")
    design = head.get("design", "grid")
    if design not in DESIGNS:
        _fail(path, "sweep.design", f"one of {', '.join(DESIGNS)}, got {design!r}")
    default = head.get("default", "prior")
    if default not in ("prior", "off"):
        _fail(path, "sweep.default", f"\"prior\" or \"off\", got {default!r}")

    def positive_int(key, value):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(path, f"sweep.{key}", f"a positive integer, got {value!r}")
        return value

    samples = positive_int("samples", head.get("samples"))
    if design == "latin-hypercube" and samples is None:
        _fail(path, "sweep.samples", "the number of settings of the latin hypercube")
    seed = head.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        _fail(path, "sweep.seed", f"a non-negative integer, got {seed!r}")
    store = head.get("draws_store")
    if store is not None and not (isinstance(store, str) and store.strip()):
        _fail(path, "sweep.draws_store", f"a path (a string), got {store!r}")
    variables = head.get("draws_variables", list(NEEDED))
    if not (isinstance(variables, list) and variables
            and all(isinstance(v, str) and v for v in variables)):
        _fail(path, "sweep.draws_variables", f"a list of variable names, got {variables!r}")
    table = raw.get("shocks", {})
    prior_table = raw.get("priors", {})
    if not isinstance(table, dict) or not isinstance(prior_table, dict) or not (
            table or prior_table):
        _fail(path, "shocks", "a table of shocks to sweep, e.g. [shocks.<name>] probability = "
                              "[...] (or priors to sweep: [priors.\"<prior>\"] <parameter> = [...])")
    parameters = {}
    for name, entry in table.items():
        if name not in shocks:
            _fail(path, f"shocks.{name}", f"a shock of the scenarios file: one of "
                                          f"{', '.join(shocks)}")
        if not isinstance(entry, dict) or not entry:
            _fail(path, f"shocks.{name}", "a table with probability and/or severity")
        for part, values in entry.items():
            key = f"shocks.{name}.{part}"
            if part not in PARAMETERS:
                _fail(path, key, f"one of {', '.join(PARAMETERS)}")
            hi = 1.0 if part == "probability" else math.inf
            parameters[f"{name}.{part}"] = _values(path, key, values, design, 0.0, hi)
    if prior_table and priors is None:
        _fail(path, "priors", "no [priors] here: this sweep runs without the run's priors")
    for name, values in _flatten(prior_table).items():
        key = f"priors.{name}"
        values = _values(path, key, values, design)
        for v in values:
            problem = check_value(priors, name, v)
            if problem is not None:
                _fail(path, key, problem)
        parameters[PRIOR_PREFIX + name] = values
    return SweepSpec(path, hashlib.sha256(blob).hexdigest(), design, samples or 0, seed,
                     positive_int("paths", head.get("paths")), default, parameters,
                     store.strip() if store else None, tuple(variables))


# --- what every setting shares -------------------------------------------------------------------
@dataclass(frozen=True)
class SweepBase:
    """Everything a setting's simulation needs, picklable (scattered to the workers once):
    the company and its observations, the scenarios file's shocks, the saved posterior
    (float64), the valuation, the ceilings, paths per posterior draw and the seed."""

    company: object
    obs: object
    shocks: object  # ScenarioSpec (its shocks; scenarios are replaced per setting)
    posterior: xr.Dataset
    valuation: object
    ceilings: dict
    per_draw: int
    seed: int
    default: str = "prior"
    #: what a prior setting's refit needs: the run's priors (``PriorSpec``), fit settings
    #: (``FitSettings``) and fit seed (None when the base is not a run's: no prior sweeps); the
    #: priors also carry the cost, funding and discounting priors the simulation reads
    priors: object = None
    fit: object = None
    fit_seed: int | None = None
    growth: object = None  # outside_view.GrowthSettings: the run's growth process and blend

    @property
    def n_paths(self) -> int:
        return self.per_draw * self.posterior.sizes["chain"] * self.posterior.sizes["draw"]


def base_from_results(results, spec: SweepSpec | None = None,
                      scenarios_path: Path | None = None) -> SweepBase:
    """The ``SweepBase`` of a results folder (``stforecast run``'s, read through
    ``results.load_results``): its company, posterior and peer regression and the priors and
    scenarios files it stored; paths and seed from ``spec`` when it sets them, else the run's.
    ``scenarios_path``: another scenarios file whose shocks are swept."""
    from .model import observations_from_company
    from .peers import load_peers
    from .priors import load_priors
    from .results import Results, load_results
    from .fit import FitSettings
    from .outside_view import growth_settings
    from .resimulation import _base_rates_beside, paths_per_draw, saved_valuation
    from .scenarios import load_user_scenarios, run_scenarios

    results = (results if isinstance(results, Results) else load_results(results, ())).require(
        ("posterior",))
    summary = results.summary
    seed = spec.seed if spec is not None and spec.seed is not None else summary.seed
    paths = spec.paths if spec is not None and spec.paths is not None else summary.settings.paths
    company = results.company
    with results.input_files() as stored:
        priors = load_priors(stored["priors"], company.growth_drivers())
        scenarios = (load_user_scenarios(scenarios_path, company) if scenarios_path
                     else run_scenarios(company))
        peers = load_peers(stored["peers"]) if "peer_premium" in priors.valuation else None
        growth = growth_settings(_base_rates_beside(priors, stored))
    posterior = results.draws("posterior").load()
    return SweepBase(company, observations_from_company(company), scenarios,
                     posterior.astype("float64"), saved_valuation(results, priors, peers, seed),
                     priors.ceilings(), paths_per_draw(posterior, paths), seed,
                     spec.default if spec is not None else "prior", priors,
                     FitSettings(**{k: v for k, v in asdict(summary.settings).items()
                                    if k != "paths"}), summary.seed,
                     growth)


def _scenario(name: str, setting: dict[str, float], base: SweepBase):
    """The scenario of one setting: swept shocks fixed, the others at the sweep's default."""
    from .scenarios import Scenario, Setting
    by_shock: dict[str, dict] = {}
    for key, value in setting.items():
        if is_prior_key(key):
            continue
        shock, part = key.split(".")
        by_shock.setdefault(shock, {})[part] = value
    settings = {}
    for shock in base.shocks.shocks:
        given = by_shock.get(shock)
        if given is None:
            settings[shock] = Setting("prior" if base.default == "prior" else 0.0)
        else:
            settings[shock] = Setting(given.get("probability", "prior"),
                                      severity=given.get("severity"))
    return Scenario(name, ", ".join(f"{k} = {v:g}" for k, v in setting.items()
                                    if not is_prior_key(k)), settings)


def setting_summary(predictive: xr.Dataset, company) -> dict:
    """P(upside) +- MCSE, revenue (final forecast year) and target-price quantiles and
    P(any revenue decline) of one setting's predictive draws."""
    from .summary import p_exceeds, probability_of_falling_revenue, sample_stats
    final = company.last_forecast_year
    return {"p_upside": _plain(p_exceeds(predictive["target_price"], company.market.price)),
            "revenue": {"year": final,
                        **_plain(sample_stats(predictive["revenue"].sel(year=final)))},
            "target_price": _plain(sample_stats(predictive["target_price"])),
            "p_any_revenue_decline": probability_of_falling_revenue(
                predictive, company.last_history_revenue())}


def _plain(stats) -> dict:
    """A summary dataclass (``results.Stats``, ``results.Probability``) as a plain dict."""
    from dataclasses import asdict
    return {k: v for k, v in asdict(stats).items() if v is not None}


def prior_values(setting: dict[str, float]) -> tuple[tuple[str, float], ...]:
    """The prior part of a setting (empty without prior parameters): the key of its refit."""
    return tuple((k, v) for k, v in setting.items() if is_prior_key(k))


def sweep_task(item: tuple, base: SweepBase, store=None) -> list[tuple[int, dict, dict]]:
    """``[(index, summary, timings)]`` of one chunk of settings, simulated on one set of driver
    paths and shock random numbers (the sweep's seed).

    ``item`` = ``(chunk, fit)``: ``chunk`` = ``[(index, setting)]``; ``fit`` None (simulate on
    ``base.posterior``), a prior refit's result (``sweep_refit.prior_fit``; on a cluster, the
    future of it, resolved by Dask), or the prior values to refit here (serially). ``store``: a
    ``sweep_draws.DrawsStore`` to write each setting's draws into.
    """
    from .simulate import simulate
    chunk, fit = item
    if isinstance(fit, tuple):
        fit = _serial_fit(fit, base)
    posterior = base.posterior if fit is None else fit["posterior"]
    names = [f"setting-{i}" for i, _ in chunk]
    spec = base.shocks.with_scenarios({n: _scenario(n, s, base) for n, (_, s) in
                                       zip(names, chunk)})
    keep = list(dict.fromkeys(NEEDED + (store.variables if store is not None else ())))
    predictive = simulate(posterior, base.company, base.obs, base.per_draw,
                          np.random.default_rng(base.seed), scenarios=spec, keep=keep,
                          valuation=base.valuation, ceilings=base.ceilings, priors=base.priors,
                          growth_settings=base.growth)
    rows = []
    for n, (i, _) in zip(names, chunk):
        one = predictive.sel(scenario=n, drop=True)
        summary = setting_summary(one, base.company)
        if fit is not None:
            summary["fit"] = fit["diagnostics"]
        if store is not None:
            from .sweep_draws import write_setting
            write_setting(store, i, one)
        rows.append((i, summary, {} if fit is None else fit["seconds"]))
    return rows


_SERIAL: dict = {}


def _serial_fit(values: tuple, base: SweepBase) -> dict:
    """``prior_fit`` for the serial path, kept for the next chunk of the same prior setting
    (one at a time: a posterior per prior setting would pile up)."""
    key = (values, id(base))
    if _SERIAL.get("key") != key:
        _SERIAL.clear()
        _SERIAL["value"] = prior_fit(values, base)
        _SERIAL["key"] = key
    return _SERIAL["value"]


# --- the whole sweep -----------------------------------------------------------------------------
def sweep_plan(base: SweepBase, spec: SweepSpec, store=None) -> dict:
    """What identifies a sweep's outputs (an output folder resumes only the same plan)."""
    plan = {"sweep_file": spec.path, "sweep_sha256": spec.sha256, "seed": base.seed,
            "n_paths": base.n_paths, "n_settings": len(spec.settings()), "design": spec.design,
            "company": base.company.key,
            "posterior_sha256": _dataset_hash(base.posterior)}
    if spec.prior_parameters:
        plan.update(priors_sha256=base.priors.sha256, fit=asdict(base.fit),
                    fit_seed=base.fit_seed)
    if store is not None:
        plan.update(draws_store=store.path, draws_variables=list(store.variables))
    return plan


def run_sweep(base: SweepBase, spec: SweepSpec, out: Path, dask_client=None,
              per_task: int = 4, log=None, on_result=None, draws_store: str | Path | None = None,
              chart: bool = True) -> list[dict]:
    """Every setting of ``spec`` on ``base``; writes ``out/settings/NNNNN.json`` (one per setting,
    atomically, as results arrive), then ``out/sweep.json``, ``out/sweep.csv`` and (``chart``)
    ``out/sweep.png``. Settings already in ``out`` (an interrupted sweep of the same file, run
    and seed) are not redone. ``draws_store``: a zarr store for every setting's draws (default:
    the sweep file's ``draws_store``, relative to ``out``; none when neither gives one).
    Returns one row per setting: ``{index, setting, summary}``.
    """
    from .sweep_draws import DrawsStore, init_store, store_exists

    out = Path(out)
    settings = spec.settings()
    if spec.prior_parameters and (base.priors is None or base.fit is None):
        raise SweepError(f"{spec.path}: key 'priors': expected a sweep on a run's results "
                         f"(a prior setting is refitted with the run's priors and fit settings)")
    store_path = draws_store or (out / spec.draws_store if spec.draws_store else None)
    store = (DrawsStore(str(Path(store_path).resolve()), spec.draws_variables)
             if store_path is not None else None)
    plan = sweep_plan(base, spec, store)
    plan_path = out / "plan.json"
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        changed = next((k for k in plan if k != "sweep_file" and old.get(k) != plan[k]), None)
        if changed is not None:
            raise SweepError(f"{plan_path}: key '{changed}': expected the same sweep to resume "
                             f"({old.get(changed)!r} there, {plan[changed]!r} now); use another "
                             f"output folder")
    done = {}
    for i in range(len(settings)):
        f = out / "settings" / f"{i:05d}.json"
        if f.is_file():
            done[i] = json.loads(f.read_text())
    if store is not None and not store_exists(store):
        if done:
            raise SweepError(f"{store.path}: expected the draws store of the finished settings "
                             f"in {out} (it is missing); use another output folder")
        init_store(store, _probe(base, settings, store), {
            "chain": base.posterior.sizes["chain"], "draw": base.posterior.sizes["draw"],
            "path": base.per_draw}, settings, {k: json.dumps(v) for k, v in plan.items()})
    if not plan_path.is_file():
        atomic_write_text(plan_path, json.dumps(plan, indent=1) + "\n")
    todo = [(i, s) for i, s in enumerate(settings) if i not in done]
    groups: dict[tuple, list] = {}
    for i, s in todo:
        groups.setdefault(prior_values(s), []).append((i, s))
    if log is not None and done:
        log(f"resuming: {len(done)} of {len(settings)} settings already done")
    shared, fits = base, {}
    if dask_client is not None and todo:
        [shared] = dask_client.scatter([base], broadcast=True)
    items = []
    for values, members in groups.items():
        fit = None
        if values and dask_client is not None:
            fit = fits[values] = dask_client.submit(prior_fit, values, shared, pure=False,
                                                    retries=RETRIES)
        elif values:
            fit = values  # refitted inside the task (serially)
        items += [(members[k:k + per_task], fit) for k in range(0, len(members), per_task)]
    if log is not None and any(groups):
        log(f"{sum(1 for v in groups if v)} prior settings to refit (one compilation each)")
    left = {v: len(m) for v, m in groups.items()}
    seconds = {}
    for _, rows in map_tasks(dask_client, sweep_task, items, args=(shared, store),
                             label="sweep tasks", log=log, on_result=on_result):
        for i, summary, timing in rows:
            row = {"index": i, "setting": settings[i], "summary": summary}
            atomic_write_text(out / "settings" / f"{i:05d}.json", json.dumps(row) + "\n")
            done[i] = row
            values = prior_values(settings[i])
            if timing:
                seconds[json.dumps(dict(values))] = timing
            left[values] -= 1
            if not left[values] and values in fits:  # its posterior is no longer needed
                fits.pop(values).release()
    rows = [done[i] for i in range(len(settings))]
    chart_data = sweep_chart(rows, spec, base.company)
    atomic_write_text(out / "sweep.json", json.dumps(
        {**plan, "settings": rows, "chart": chart_data,
         "refit_seconds": seconds}, indent=1) + "\n")
    atomic_write_text(out / "sweep.csv", sweep_csv(rows))
    if chart:
        from .plots import save_all, sweep_response
        save_all({"sweep": sweep_response(chart_data)}, out)
    return rows


def _probe(base: SweepBase, settings: list[dict], store) -> xr.Dataset:
    """One setting's draws at one chain, draw and path: the variables' dims and years."""
    from .simulate import simulate
    name = "probe"
    spec = base.shocks.with_scenarios({name: _scenario(name, settings[0], base)})
    tiny = base.posterior.isel(chain=[0], draw=[0])
    probe = simulate(tiny, base.company, base.obs, 1, np.random.default_rng(0), scenarios=spec,
                     valuation=base.valuation, ceilings=base.ceilings, priors=base.priors,
                     growth_settings=base.growth).sel(scenario=name, drop=True)
    missing = [v for v in store.variables if v not in probe]
    if missing:
        raise SweepError(f"sweep: key 'draws_variables': expected variables of the simulation "
                         f"(one of {', '.join(sorted(probe.data_vars))}), got {missing[0]!r}")
    return probe


def _dataset_hash(ds: xr.Dataset) -> str:
    h = hashlib.sha256()
    for name in sorted(ds.data_vars):
        h.update(name.encode() + np.ascontiguousarray(ds[name].values).tobytes())
    return h.hexdigest()


CSV_COLUMNS = (("p_upside", ("p_upside", "value")), ("p_upside_mcse", ("p_upside", "mcse")),
               ("revenue_q05", ("revenue", "q05")), ("revenue_q50", ("revenue", "q50")),
               ("revenue_q95", ("revenue", "q95")),
               ("target_price_q05", ("target_price", "q05")),
               ("target_price_q50", ("target_price", "q50")),
               ("target_price_q95", ("target_price", "q95")),
               ("p_any_revenue_decline", ("p_any_revenue_decline",)))


#: Columns of a refitted setting (a prior sweep): its driver fit's diagnostics.
FIT_COLUMNS = (("fit_ok", ("fit", "ok")), ("fit_rhat_max", ("fit", "rhat_max")),
               ("fit_ess_bulk_min", ("fit", "ess_bulk_min")),
               ("fit_divergences", ("fit", "divergences")))


def sweep_csv(rows: list[dict]) -> str:
    """One line per setting: the swept values, then the summary columns (and the refit's
    diagnostics when the sweep refits)."""
    params = list(rows[0]["setting"]) if rows else []
    columns = CSV_COLUMNS + (FIT_COLUMNS if rows and "fit" in rows[0]["summary"] else ())
    lines = [",".join(["setting", *params, *(c for c, _ in columns)])]
    for row in rows:
        values = []
        for _, path in columns:
            v = row["summary"]
            for k in path:
                v = v[k]
            values.append(str(v).lower() if isinstance(v, bool) else f"{v:g}")
        lines.append(",".join([str(row["index"]), *(f"{row['setting'][p]:g}" for p in params),
                               *values]))
    return "\n".join(lines) + "\n"


def sweep_table(rows: list[dict], company, limit: int = 12) -> str:
    """A short text table: the settings with the lowest and highest P(upside)."""
    ranked = sorted(rows, key=lambda r: r["summary"]["p_upside"]["value"])
    shown = ranked if len(ranked) <= limit else ranked[:limit // 2] + ranked[-(limit // 2):]
    final = company.last_forecast_year
    lines = [f"{len(rows)} settings; P(target price > {company.market.price:g}) from "
             f"{ranked[0]['summary']['p_upside']['value']:.3f} to "
             f"{ranked[-1]['summary']['p_upside']['value']:.3f}",
             ""]
    texts = [", ".join(f"{k.removeprefix(PRIOR_PREFIX)} {v:g}" for k, v in r["setting"].items())
             for r in shown]
    width = min(90, max(len(t) for t in texts)) + 2
    lines[-1] = f"{'setting':<{width}}{'P(upside)':>16}{'revenue ' + final + ' q50':>20}{'TP q50':>9}"
    for r, text in zip(shown, texts):
        s = r["summary"]
        lines.append(f"{text[:width - 2]:<{width}}{s['p_upside']['value']:>9.3f} ± "
                     f"{s['p_upside']['mcse']:.3f}{s['revenue']['q50']:>20,.0f}"
                     f"{s['target_price']['q50']:>9.2f}")
    fits = [r["summary"]["fit"] for r in rows if "fit" in r["summary"]]
    if fits:
        lines.append(f"refits: {sum(f['ok'] for f in fits)} of {len(fits)} settings' driver fits "
                     f"meet the quality bar (see fit_* in sweep.csv)")
    return "\n".join(lines)


# --- how the outcomes move across the sweep (chart data and its table) ---------------------------
def parameter_label(key: str) -> str:
    """``us_restrictions.probability`` -> ``us_restrictions: probability``; a prior parameter
    ``priors.pooling.company_growth_effect.sigma`` -> ``prior pooling.company_growth_effect:
    sigma``."""
    name, _, part = key.removeprefix(PRIOR_PREFIX).rpartition(".")
    return f"{'prior ' if is_prior_key(key) else ''}{name}: {part}"


def sweep_chart(rows: list[dict], spec: SweepSpec, company) -> dict:
    """How P(upside) and final-year revenue move with each swept parameter: per parameter, every
    setting's value and outcomes (P(upside) +- MCSE, revenue q05/q50/q95), the Spearman rank
    correlation of the parameter with P(upside) and with median revenue, and on a grid the
    main effect (the mean outcome over the other parameters at each value). Plain lists, for
    ``plots.sweep_response`` and ``sweep.json``."""
    from scipy.stats import spearmanr

    def column(*path):
        out = []
        for r in rows:
            v = r["summary"]
            for k in path:
                v = v[k]
            out.append(float(v))
        return np.array(out)

    p, mcse = column("p_upside", "value"), column("p_upside", "mcse")
    rev = {q: column("revenue", q) for q in ("q05", "q50", "q95")}
    panels = []
    for key in spec.parameters:
        x = np.array([r["setting"][key] for r in rows], dtype=float)
        panel = {"name": key, "label": parameter_label(key), "x": x.tolist(),
                 "p_upside": p.tolist(), "p_upside_mcse": mcse.tolist(),
                 **{f"revenue_{q}": v.tolist() for q, v in rev.items()},
                 "rank_correlation": {"p_upside": _spearman(spearmanr, x, p),
                                      "revenue_q50": _spearman(spearmanr, x, rev["q50"])},
                 "effect": None}
        if spec.design == "grid":
            values = sorted(set(x.tolist()))
            panel["effect"] = {
                "x": values,
                "p_upside": [round(float(p[x == v].mean()), 6) for v in values],
                "revenue_q50": [round(float(rev["q50"][x == v].mean()), 3) for v in values]}
        panels.append(panel)
    return {"title": f"{company.name}: {len(rows)} settings ({spec.design})",
            "year": company.last_forecast_year, "currency": company.currency,
            "price": float(company.market.price), "price_currency": company.price_currency,
            "report_revenue": company.published_final("revenue"), "parameters": panels}


def _spearman(spearmanr, x, y) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return round(float(spearmanr(x, y).statistic), 4)


def effects_table(chart: dict) -> str:
    """How P(upside) and median final-year revenue move with each parameter: on a grid the
    mean over the other parameters at each value, and the rank correlations."""
    lines = [f"{'parameter':<48}{'value':>10}{'P(upside)':>11}"
             f"{'revenue ' + chart['year'] + ' q50':>20}"]
    for panel in chart["parameters"]:
        rc = panel["rank_correlation"]
        lines.append(f"{panel['label'][:47]:<48}{'rank corr':>10}"
                     f"{_maybe(rc['p_upside']):>11}{_maybe(rc['revenue_q50']):>20}")
        effect = panel["effect"] or {"x": []}
        for k, v in enumerate(effect["x"]):
            lines.append(f"{'':<48}{v:>10g}{effect['p_upside'][k]:>11.3f}"
                         f"{effect['revenue_q50'][k]:>20,.0f}")
    return "\n".join(lines)


def _maybe(v) -> str:
    return "n/a" if v is None else f"{v:+.2f}"
