"""The ``stforecast`` command line.

Every command has ``--help`` with an example. Errors in user input (a priors file, a query, a
results folder) print ONE line to stderr and exit with status 2; heavy libraries (PyMC) are
imported only by the commands that fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_USAGE = 2
#: The samplers ``stforecast run --sampler`` accepts; the same tuple as ``stforecast.fit.SAMPLERS``
#: (kept here so that building the parser does not import PyMC; tests/test_cli.py checks they agree).
SAMPLERS = ("nutpie", "pymc")


def _default_priors() -> Path:
    # imported here, not at parser construction: priors pulls in scipy, which `query` never needs
    from .priors import default_priors_path
    return default_priors_path()


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


# --- replicate ----------------------------------------------------------------------------------
def cmd_replicate(args) -> int:
    from .data import load_report
    from .engine import REPORTED_LINES, report_case

    report = load_report()
    out = report_case(report)
    lines = [n for n in REPORTED_LINES if n not in ("gross_margin", "trade_receivable_days",
                                                    "net_cash")]
    years = [str(y) for y in out["year"].values]
    result = {n: {y: round(float(out[n].sel(year=y)), 1) for y in years} for n in lines}
    result["net_cash"] = {y: round(float(out["net_cash"].sel(year=y)), 1) for y in years}
    result["target_price_hkd"] = round(float(out["target_price_hkd"]), 3)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    pub = report.published
    print("stforecast replicate: the engine on the report's assumptions vs the report (RMB mn)")
    print(f"{'line item':<26}" + "".join(f"{y + ' engine':>14}{'report':>9}" for y in years))
    for name, by_year in result.items():
        if name == "target_price_hkd":
            continue
        row = f"{name:<26}"
        for y in years:
            published = float(pub[name].sel(year=y)) if name in pub else float("nan")
            row += f"{_fmt(by_year[y]):>14}{_fmt(published):>9}"
        print(row)
    print(f"{'target_price_hkd (HK$)':<26}{result['target_price_hkd']:>14.3f}"
          f"{report.market.target_price_hkd_published:>9.2f}")
    return 0


# --- check-priors -------------------------------------------------------------------------------
def cmd_check_priors(args) -> int:
    from .priors import PriorsError, load_priors
    try:
        spec = load_priors(args.path)
    except PriorsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(spec.summary())
    return 0


# --- run ----------------------------------------------------------------------------------------
def _print_run_summary(summary: dict, out: Path) -> None:
    print()
    print(f"{'':<24}{'q05':>10}{'median':>10}{'q95':>10}")
    for name in ("revenue", "free_cash_flow", "cash"):
        s = summary[name]["FY23"]
        print(f"{name + ' FY23':<24}{_fmt(s['q05']):>10}{_fmt(s['q50']):>10}{_fmt(s['q95']):>10}")
    for name, label in (("cash_burn_fy21_fy23", "cash burn FY21-23"),
                        ("target_price_hkd", "target price HK$")):
        s = summary[name]
        print(f"{label:<24}{_fmt(s['q05']):>10}{_fmt(s['q50']):>10}{_fmt(s['q95']):>10}")
    p = summary["p_upside"]
    print(f"P(target_price_hkd > 6.73) = {p['value']:.3f} ± {p['mcse']:.3f}   "
          f"({summary['n_paths']:,} paths)")
    d = summary["diagnostics"]
    status = "OK" if d["ok"] else "FAILED: " + "; ".join(d["reasons"])
    print(f"diagnostics: R-hat max {d['rhat_max']:.3f}, bulk ESS min {d['ess_bulk_min']:.0f}, "
          f"tail ESS min {d['ess_tail_min']:.0f}, divergences {d['divergences']} -> {status}")
    print(f"results: {out / 'forecast.nc'}, {out / 'summary.json'}, {out / 'report.html'}")


def cmd_run(args) -> int:
    from .fit import FitSettings
    from .priors import PriorsError
    from .run import RunSettings, run_forecast

    settings = RunSettings(seed=args.seed, paths=args.paths, report=not args.no_report,
                           fit=FitSettings(
        draws=args.draws, tune=args.tune, chains=args.chains, sampler=args.sampler))
    try:
        priors = Path(args.priors) if args.priors else _default_priors()
        summary = run_forecast(Path(args.out), priors, settings,
                               log=lambda m: print(f"[stforecast] {m}", flush=True))
    except PriorsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _print_run_summary(summary, Path(args.out))
    if not summary["ok"]:
        print("WARNING: sampler diagnostics miss the bar; see summary.json 'reasons'",
              file=sys.stderr)
    return 0


# --- report -------------------------------------------------------------------------------------
def cmd_report(args) -> int:
    from .report import build_report
    results = Path(args.results)
    if not (results / "summary.json").exists() or not (results / "forecast.nc").exists():
        print(f"error: {results}: expected summary.json and forecast.nc; run `stforecast run` first",
              file=sys.stderr)
        return EXIT_USAGE
    print(build_report(results))
    return 0


# --- query --------------------------------------------------------------------------------------
def cmd_query(args) -> int:
    from .query import QueryError, evaluate, load_predictive
    try:
        ds = load_predictive(Path(args.results))
        result = evaluate(args.expression, ds, scenario=args.scenario)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result.to_dict()) if args.json else str(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stforecast",
        description="Probabilistic forecasts for equity research: SenseTime (0020 HK).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  stforecast run            # fit, simulate, write results/\n"
               "  stforecast query \"P(target_price_hkd > 6.73)\"")
    sub = parser.add_subparsers(dest="command", required=True)
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("run", help="fit the driver model, simulate, write results/",
                       formatter_class=raw,
                       epilog="example:\n  stforecast run --seed 1 --paths 200000 --out results")
    p.add_argument("--priors", default=None,
                   help="priors file (TOML; default: the project's priors/sensetime.toml)")
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 20220131)")
    p.add_argument("--paths", type=int, default=100_000, help="posterior predictive paths")
    p.add_argument("--draws", type=int, default=1000, help="posterior draws per chain")
    p.add_argument("--tune", type=int, default=1000, help="tuning steps per chain")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--sampler", choices=SAMPLERS, default="nutpie")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the PNGs")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replicate", help="the engine on the report's own assumptions",
                       formatter_class=raw, epilog="example:\n  stforecast replicate --json")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_replicate)

    p = sub.add_parser("check-priors", help="validate a priors file", formatter_class=raw,
                       epilog="example:\n  stforecast check-priors priors/sensetime.toml")
    p.add_argument("path")
    p.set_defaults(func=cmd_check_priors)

    p = sub.add_parser("report", help="rebuild report.html and the PNGs from saved results",
                       formatter_class=raw, epilog="example:\n  stforecast report --results results")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("query", help="a probability or statistic on saved results",
                       formatter_class=raw,
                       epilog="examples:\n  stforecast query \"P(target_price_hkd > 6.73)\"\n"
                              "  stforecast query \"P(revenue[FY23] > 8825)\" --json\n"
                              "  stforecast query \"quantile(target_price_hkd, 0.05)\"")
    p.add_argument("expression")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--scenario", default=None, help="scenario name, when results have several")
    p.add_argument("--json", action="store_true", help='print {"value", "mcse", "n"}')
    p.set_defaults(func=cmd_query)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seed", 0) is None:
        from .run import DEFAULT_SEED
        args.seed = DEFAULT_SEED
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
