"""The commands that run as Dask tasks: ``calibrate``, ``sweep`` and ``run-many``.

``register(subparsers)`` adds them to ``stforecast``'s parser; ``python -m stforecast.cli_scale``
runs them alone. Each takes ``--scheduler ADDRESS`` (else ``$DASK_SCHEDULER_ADDRESS``, else an
embedded ``LocalCluster``, one single-threaded worker per core) and ``--workers N`` for the
embedded cluster; ``--serial`` runs every task in this process instead (the reference the
cluster's results equal exactly). Errors in user input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from .preflight import check_out, int_option

EXIT_USAGE = 2


def _engine(args):
    """The Dask client to use (a context manager), or a null context for ``--serial``."""
    if args.serial:
        return nullcontext(None)
    from .distributed import client
    return client(args.scheduler, n_workers=args.workers)


def _seed(args) -> int:
    from .run import DEFAULT_SEED
    return DEFAULT_SEED if args.seed is None else args.seed


def _default_results() -> Path:
    from .cli import RESULTS_ROOT
    from .company import default_company
    return RESULTS_ROOT / default_company()


def _log(message: str) -> None:
    print(f"[stforecast] {message}", file=sys.stderr, flush=True)


def _progress_log():
    """None (a progress bar) in a terminal, else plain progress lines."""
    return None if sys.stderr.isatty() else _log


# --- calibrate ----------------------------------------------------------------------------------
def cmd_calibrate(args) -> int:
    from .errors import StforecastError
    from .calibration_runs import (CalibrationSettings, calibration_fit, calibration_report,
                                   calibration_table)
    from .company import load_company
    from .distributed import ModelInputs, atomic_write_text, map_tasks

    from .priors import load_priors
    company = load_company(args.company)
    load_priors(args.priors or company.priors_path, company.growth_drivers())  # before any fit
    inputs = ModelInputs.from_company(company, priors_path=args.priors)
    settings = CalibrationSettings(draws=args.draws, tune=args.tune, chains=args.chains,
                                   thin_to=args.thin_to, seed=_seed(args))
    out = Path(args.out or f"results/calibration-{company.key}.json")
    if out.is_dir():
        raise StforecastError(f"option --out: expected a file name, {out} is a folder")
    check_out(out.parent if str(out.parent) else ".")
    _log(f"calibrate {company.key}: {args.fits} fits ({settings.chains} chains x "
         f"{settings.draws} draws, {settings.tune} tune); the first fit on each worker compiles "
         f"the model")
    with _engine(args) as c:
        fits = [r for _, r in map_tasks(c, calibration_fit, range(args.fits),
                                        args=(inputs, settings), label="fits",
                                        log=_progress_log())]
    report = calibration_report(fits, settings, inputs)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(calibration_table(report))
    print(f"results: {out}")
    return 0


# --- sweep --------------------------------------------------------------------------------------
def cmd_sweep(args) -> int:
    from .priors import load_priors
    from .results import load_results
    from .scenarios import load_user_scenarios, run_scenarios
    from .sweep import base_from_results, effects_table, load_sweep, run_sweep, sweep_table

    results = load_results(args.results or _default_results())
    company = results.company
    scenarios = (load_user_scenarios(args.scenarios, company) if args.scenarios
                 else run_scenarios(company))
    with results.input_files() as stored:
        priors = load_priors(stored["priors"], company.growth_drivers())
    spec = load_sweep(args.sweep, scenarios.shocks, priors)
    if args.paths is not None:
        from dataclasses import replace
        spec = replace(spec, paths=args.paths)
    base = base_from_results(results, spec, args.scenarios)
    out = check_out(args.out if args.out is not None else Path(args.sweep).with_suffix(""))
    refits = len({tuple((k, s[k]) for k in spec.prior_parameters) for s in spec.settings()}
                 ) if spec.prior_parameters else 0
    _log(f"sweep {spec.path}: {len(spec.settings())} settings ({spec.design}) x "
         f"{base.n_paths:,} paths on the posterior of {results.folder}"
         + (f"; {refits} prior settings, each refitted ({base.fit.chains} chains x "
            f"{base.fit.draws} draws, one compilation each)" if refits else ""))
    with _engine(args) as c:
        rows = run_sweep(base, spec, out, c, per_task=args.per_task, log=_progress_log(),
                         draws_store=args.draws_store)
    print(sweep_table(rows, base.company))
    print()
    print(effects_table(json.loads((out / "sweep.json").read_text())["chart"]))
    store = args.draws_store or (out / spec.draws_store if spec.draws_store else None)
    print(f"results: {out / 'sweep.csv'}, {out / 'sweep.json'}, {out / 'sweep.png'}"
          + (f"; draws: {store}" if store else ""))
    return 0


# --- run-many -----------------------------------------------------------------------------------
def _companies(names: list[str], universe: str | None) -> list[str]:
    """Companies from the command line, then one per line of a universe file (# comments)."""
    from .errors import StforecastError
    names = list(names)
    if universe:
        from .tomlfile import read_text
        text = read_text(universe, StforecastError)
        names += [line.split("#")[0].strip() for line in text.splitlines()
                  if line.split("#")[0].strip()]
    if not names:
        raise StforecastError("run-many: expected at least one company (names, folders or "
                              "--universe FILE)")
    return names


def cmd_run_many(args) -> int:
    from .company import load_company
    from .fit import FitSettings
    from .run import RunSettings
    from .universe import run_many, universe_table

    from .priors import load_priors
    from .scenarios import load_scenarios
    companies = [load_company(n) for n in _companies(args.companies, args.universe)]
    for company in companies:  # every company's inputs, before any fit
        load_priors(company.priors_path, company.growth_drivers())
        load_scenarios(company.scenarios_path, company)
    paths = {"paths": args.paths} if args.paths is not None else {}
    settings = RunSettings(seed=_seed(args), **paths, report=not args.no_report,
                           fit=FitSettings(**{
        k: getattr(args, k) for k in ("draws", "tune", "chains") if getattr(args, k) is not None}))
    out = check_out(args.out)
    _log(f"run-many: {len(companies)} companies into {out}/<company>")
    with _engine(args) as c:
        rows = run_many(companies, out, settings, c, log=_progress_log())
    print(universe_table(rows))
    print(f"results: {out / 'universe.csv'}, {out / 'universe.json'}")
    if not all(r["ok"] for r in rows):
        print("WARNING: sampler diagnostics miss the bar for "
              + ", ".join(r["company"] for r in rows if not r["ok"]), file=sys.stderr)
    return 0


# --- registration -------------------------------------------------------------------------------
def _engine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the tasks run")
    g.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="a Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: "
                        "$DASK_SCHEDULER_ADDRESS, else an embedded LocalCluster)")
    g.add_argument("--workers", type=int_option("workers"), default=None,
                   help="workers of the embedded LocalCluster (default: one per core)")
    g.add_argument("--serial", action="store_true",
                   help="run every task in this process, in order (no Dask; default: off)")


def register(sub) -> None:
    """Add ``calibrate``, ``sweep`` and ``run-many`` to ``sub`` (argparse subparsers)."""
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("calibrate", help="SBC and parameter recovery, one Dask task per fit",
                       formatter_class=raw, epilog="example:\n  stforecast calibrate --fits 200 "
                       "--scheduler tcp://10.0.0.5:8786")
    p.add_argument("--company", default=None,
                   help="a shipped company or a company folder (default: the default company)")
    p.add_argument("--priors", default=None,
                   help="another priors file for the company (default: the company's)")
    p.add_argument("--fits", type=int_option("fits"), default=100,
                   help="fits of simulated data, one task each (default 100)")
    p.add_argument("--draws", type=int_option("draws"), default=400,
                   help="posterior draws per chain of each fit (default 400)")
    p.add_argument("--tune", type=int_option("tune"), default=400,
                   help="tuning steps per chain of each fit (default 400)")
    p.add_argument("--chains", type=int_option("chains"), default=2, help="chains of each fit (default 2)")
    p.add_argument("--thin-to", type=int_option("thin_to"), default=99,
                   help="posterior draws a rank is among (default 99)")
    p.add_argument("--seed", type=int_option("seed"), default=None,
                   help="default: the seed of `stforecast run`")
    p.add_argument("--out", default=None,
                   help="the JSON file (default results/calibration-<company>.json)")
    _engine_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("sweep", help="sweep shock probabilities and severities and prior "
                                     "settings on a saved run", formatter_class=raw,
                       epilog="example:\n  stforecast sweep sweeps/us.toml --results "
                              "results/NAME\n\nsee stforecast.sweep for the file format")
    p.add_argument("sweep", help="the SWEEP.toml file")
    p.add_argument("--results", default=None,
                   help="a `stforecast run` results folder (default: results/<default company>)")
    p.add_argument("--scenarios", default=None,
                   help="a scenarios file laid over the company's, whose shocks are swept "
                        "(default: the run's scenarios)")
    p.add_argument("--paths", type=int_option("paths"), default=None, help="paths per setting (default: the "
                                                           "sweep file's, else the run's)")
    p.add_argument("--per-task", type=int_option("per_task"), default=4,
                   help="settings per task (they share one set of driver paths; default 4)")
    p.add_argument("--out", default=None, help="output folder (default: the sweep file's name)")
    p.add_argument("--draws-store", default=None, metavar="PATH",
                   help="write every setting's draws into this zarr store (default: the sweep "
                        "file's draws_store, relative to the output folder; else none)")
    _engine_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("run-many", help="one forecast per company as Dask tasks, and a "
                                        "universe table", formatter_class=raw,
                       epilog="example:\n  stforecast run-many NAME1 NAME2 --out universe")
    p.add_argument("companies", nargs="*", help="shipped companies or company folders")
    p.add_argument("--universe", default=None,
                   help="a file with one company per line (default: none; name them instead)")
    p.add_argument("--out", default="universe",
                   help="results go to OUT/<company> (default: universe)")
    p.add_argument("--seed", type=int_option("seed"), default=None,
                   help="default: the seed of `stforecast run`")
    p.add_argument("--paths", type=int_option("paths"), default=None,
                   help="default: as `stforecast run`")
    for name in ("draws", "tune", "chains"):
        p.add_argument(f"--{name}", type=int_option(name), default=None, help="default: as `stforecast run`")
    p.add_argument("--no-report", action="store_true",
                   help="skip report.html and the charts (default: write them)")
    _engine_options(p)
    p.set_defaults(func=cmd_run_many)


def main(argv: list[str] | None = None) -> int:
    """These commands alone, with the main command line's one-line errors (``cli.guarded``)."""
    from .cli import Parser, guarded

    def run() -> int:
        parser = Parser(prog="stforecast", description=__doc__.splitlines()[0])
        register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return args.func(args)
    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
