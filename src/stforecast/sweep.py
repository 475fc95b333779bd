"""``stforecast sweep SWEEP.toml``: shock probabilities and severities swept on a saved posterior.

A sweep file::

    [sweep]
    design = "grid"             # or "latin-hypercube"
    samples = 200               # latin-hypercube only: number of settings
    seed = 1                    # the design's and the simulation's seed (default: the run's)
    paths = 100000              # per setting (default: the run's)
    default = "prior"           # shocks not swept: "prior" (their prior probability) or "off"

    [shocks.us_restrictions]
    probability = [0.0, 0.1, 0.2, 0.3]   # grid: the values; latin-hypercube: [low, high]
    severity = [0.5, 1.0, 1.5]           # intensity of one occurrence (1 = typical)

A **setting** is one value per swept parameter: each swept shock occurs with that fixed annual
probability (``"prior"`` when only its severity is swept) and that fixed severity. Every setting
is re-simulated on the run's posterior (no refit) with the SAME seed: common random numbers, so
two settings differ only by their shocks and the response surface carries no extra simulation
noise (and a setting's result does not depend on which task or worker computed it).

``sweep_task`` simulates a chunk of settings on one set of driver paths and reduces each to a
summary on the worker (P(upside) +- MCSE, revenue in the final forecast year and target-price
quantiles, P(any revenue decline)); ``run_sweep`` submits the chunks, writes each setting's
summary atomically as it arrives (``settings/NNNNN.json``) and skips settings already written
when a sweep is resumed, then writes ``sweep.csv`` and ``sweep.json``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .distributed import atomic_write_text, map_tasks
from .errors import StforecastError
from .tomlfile import read_toml

DESIGNS = ("grid", "latin-hypercube")
PARAMETERS = ("probability", "severity")
SWEEP_KEYS = ("design", "samples", "seed", "paths", "default")
#: Summaries kept per setting (the predictive variables they need).
NEEDED = ("revenue", "target_price")


class SweepError(StforecastError):
    """The sweep file is invalid, or an output folder holds another sweep (one line)."""


def _fail(path, key, expected):
    raise SweepError(f"{path}: key '{key}': expected {expected}")


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file. ``parameters``: ``"shock.probability"`` -> values (grid) or
    (low, high) (latin-hypercube)."""

    path: str
    sha256: str
    design: str
    samples: int
    seed: int | None
    paths: int | None
    default: str
    parameters: dict[str, tuple[float, ...]]

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


def load_sweep(path: str | Path, shocks) -> SweepSpec:
    """Read and validate a sweep file against the scenarios file's ``shocks`` (name -> Shock)."""
    path = str(path)
    raw, blob = read_toml(path, SweepError)
    for section in raw:
        if section not in ("sweep", "shocks"):
            _fail(path, section, "a known section: one of sweep, shocks")
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
    table = raw.get("shocks")
    if not isinstance(table, dict) or not table:
        _fail(path, "shocks", "a table of shocks to sweep, e.g. [shocks.<name>] probability = [...]")
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
            if not (isinstance(values, list) and values and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and 0 <= v <= hi for v in values)):
                _fail(path, key, f"a list of numbers in [0, {hi:g}], got {values!r}")
            if design == "latin-hypercube" and (len(values) != 2 or values[0] >= values[1]):
                _fail(path, key, f"[low, high] with low < high (latin hypercube), got {values!r}")
            parameters[f"{name}.{part}"] = tuple(float(v) for v in values)
    return SweepSpec(path, hashlib.sha256(blob).hexdigest(), design, samples or 0, seed,
                     positive_int("paths", head.get("paths")), default, parameters)


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
    from .multiples import Valuation, relation_from_fit
    from .peers import load_peers
    from .priors import load_priors
    from .results import Results, load_results
    from .outside_view import growth_settings
    from .run import _base_rates_beside, paths_per_draw
    from .scenarios import load_scenarios

    results = results if isinstance(results, Results) else load_results(results)
    summary = results.summary
    seed = spec.seed if spec is not None and spec.seed is not None else summary.seed
    paths = spec.paths if spec is not None and spec.paths is not None else summary.settings.paths
    company = results.company
    with results.input_files() as stored:
        priors = load_priors(stored["priors"], company.growth_drivers())
        scenarios = load_scenarios(scenarios_path or stored["scenarios"], company)
        peers = load_peers(stored["peers"]) if "peer_premium" in priors.valuation else None
    posterior = results.draws("posterior").load()
    relation = None
    if peers is not None:
        relation = relation_from_fit(results.draws("peer_posterior").load(),
                                     priors.valuation["peer_premium"], seed, peers)
    return SweepBase(company, observations_from_company(company), scenarios,
                     posterior.astype("float64"), Valuation(priors.valuation_method, relation),
                     priors.ceilings(), paths_per_draw(posterior, paths), seed,
                     spec.default if spec is not None else "prior",
                     growth_settings(_base_rates_beside(priors, company)))


def _scenario(name: str, setting: dict[str, float], base: SweepBase):
    """The scenario of one setting: swept shocks fixed, the others at the sweep's default."""
    from .scenarios import Scenario, Setting
    by_shock: dict[str, dict] = {}
    for key, value in setting.items():
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
    return Scenario(name, ", ".join(f"{k} = {v:g}" for k, v in setting.items()), settings)


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


def sweep_task(chunk: list[tuple[int, dict]], base: SweepBase) -> list[tuple[int, dict]]:
    """``[(index, summary)]`` of the settings of ``chunk`` (``[(index, setting)]``), simulated on
    one set of driver paths and shock random numbers (the sweep's seed)."""
    from .simulate import simulate
    names = [f"setting-{i}" for i, _ in chunk]
    spec = base.shocks.with_scenarios({n: _scenario(n, s, base) for n, (_, s) in
                                       zip(names, chunk)})
    predictive = simulate(base.posterior, base.company, base.obs, base.per_draw,
                          np.random.default_rng(base.seed), scenarios=spec, keep=list(NEEDED),
                          valuation=base.valuation, ceilings=base.ceilings,
                          growth_settings=base.growth)
    return [(i, setting_summary(predictive.sel(scenario=n, drop=True), base.company))
            for n, (i, _) in zip(names, chunk)]


# --- the whole sweep -----------------------------------------------------------------------------
def run_sweep(base: SweepBase, spec: SweepSpec, out: Path, dask_client=None,
              per_task: int = 4, log=None, on_result=None) -> list[dict]:
    """Every setting of ``spec`` on ``base``; writes ``out/settings/NNNNN.json`` (one per setting,
    atomically, as results arrive), then ``out/sweep.json`` and ``out/sweep.csv``. Settings
    already in ``out`` (an interrupted sweep of the same file, run and seed) are not redone.
    Returns one row per setting: ``{index, setting, summary}``.
    """
    out = Path(out)
    settings = spec.settings()
    plan = {"sweep_file": spec.path, "sweep_sha256": spec.sha256, "seed": base.seed,
            "n_paths": base.n_paths, "n_settings": len(settings), "design": spec.design,
            "company": base.company.key,
            "posterior_sha256": _dataset_hash(base.posterior)}
    plan_path = out / "plan.json"
    if plan_path.is_file():
        old = json.loads(plan_path.read_text())
        changed = next((k for k in plan if k != "sweep_file" and old.get(k) != plan[k]), None)
        if changed is not None:
            raise SweepError(f"{plan_path}: key '{changed}': expected the same sweep to resume "
                             f"({old.get(changed)!r} there, {plan[changed]!r} now); use another "
                             f"output folder")
    else:
        atomic_write_text(plan_path, json.dumps(plan, indent=1) + "\n")
    done = {}
    for i in range(len(settings)):
        f = out / "settings" / f"{i:05d}.json"
        if f.is_file():
            done[i] = json.loads(f.read_text())
    todo = [(i, s) for i, s in enumerate(settings) if i not in done]
    chunks = [todo[k:k + per_task] for k in range(0, len(todo), per_task)]
    if log is not None and done:
        log(f"resuming: {len(done)} of {len(settings)} settings already done")
    shared = base
    if dask_client is not None and chunks:
        [shared] = dask_client.scatter([base], broadcast=True)
    for _, rows in map_tasks(dask_client, sweep_task, chunks, args=(shared,),
                             label="sweep tasks", log=log, on_result=on_result):
        for i, summary in rows:
            row = {"index": i, "setting": settings[i], "summary": summary}
            atomic_write_text(out / "settings" / f"{i:05d}.json", json.dumps(row) + "\n")
            done[i] = row
    rows = [done[i] for i in range(len(settings))]
    atomic_write_text(out / "sweep.json", json.dumps({**plan, "settings": rows}, indent=1) + "\n")
    atomic_write_text(out / "sweep.csv", sweep_csv(rows))
    return rows


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


def sweep_csv(rows: list[dict]) -> str:
    """One line per setting: the swept values, then the summary columns."""
    params = list(rows[0]["setting"]) if rows else []
    lines = [",".join(["setting", *params, *(c for c, _ in CSV_COLUMNS)])]
    for row in rows:
        values = []
        for _, path in CSV_COLUMNS:
            v = row["summary"]
            for k in path:
                v = v[k]
            values.append(f"{v:g}")
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
             f"{'setting':<60}{'P(upside)':>16}{'revenue ' + final + ' q50':>20}{'TP q50':>9}"]
    for r in shown:
        s = r["summary"]
        text = ", ".join(f"{k} {v:g}" for k, v in r["setting"].items())
        lines.append(f"{text[:59]:<60}{s['p_upside']['value']:>9.3f} ± {s['p_upside']['mcse']:.3f}"
                     f"{s['revenue']['q50']:>20,.0f}{s['target_price']['q50']:>9.2f}")
    return "\n".join(lines)
