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
    methods = summary.get("valuation_methods", {})
    if len(methods) > 2:
        print("  by valuation method: " + ", ".join(
            f"{m} {v['p_upside']['value']:.3f}" + (" (headline)" if m == summary.get(
                "valuation_method") else "") for m, v in methods.items() if "p_upside" in v))
    d = summary["diagnostics"]
    status = "OK" if summary["ok"] else "FAILED: " + "; ".join(summary["reasons"])
    print(f"diagnostics: R-hat max {d['rhat_max']:.3f}, bulk ESS min {d['ess_bulk_min']:.0f}, "
          f"tail ESS min {d['ess_tail_min']:.0f}, divergences {d['divergences']}"
          + (f"; peer regression R-hat {summary['peer_fit']['diagnostics']['rhat_max']:.3f}"
             if "peer_fit" in summary else "") + f" -> {status}")
    print(f"results: {out / 'forecast.nc'}, {out / 'summary.json'}, {out / 'report.html'}")


def cmd_run(args) -> int:
    from .fit import FitSettings
    from .priors import PriorsError
    from .run import RunSettings, run_forecast
    from .shocks import ScenariosError

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    settings = RunSettings(seed=args.seed, paths=args.paths, report=not args.no_report,
                           progress=progress, fit=FitSettings(
        draws=args.draws, tune=args.tune, chains=args.chains, sampler=args.sampler))
    try:
        priors = Path(args.priors) if args.priors else _default_priors()
        summary = run_forecast(Path(args.out), priors, settings,
                               log=lambda m: print(f"[stforecast] {m}", flush=True),
                               scenarios_path=Path(args.scenarios) if args.scenarios else None)
    except (PriorsError, ScenariosError) as exc:
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


# --- scenarios ----------------------------------------------------------------------------------
SCENARIO_COLUMNS = (("revenue", "FY23", "revenue FY23"), ("cash_burn_fy21_fy23", None, "cash burn"),
                    ("cash", "FY23", "cash FY23"), ("target_price_hkd", None, "target price"))


def _load_summary(results: Path) -> dict | None:
    """summary.json, or None after printing one error line."""
    path = results / "summary.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        print(f"error: no results file {path}; run `stforecast run` first", file=sys.stderr)
    except json.JSONDecodeError as exc:
        print(f"error: {path}: not valid JSON ({exc})", file=sys.stderr)
    return None


def scenario_rows(summary: dict) -> list[dict]:
    """One row per scenario: median and 90% interval of the headline quantities, P(upside)."""
    rows = []
    for name, block in summary.get("scenarios", {}).items():
        row = {"scenario": name}
        for var, year, _ in SCENARIO_COLUMNS:
            stats = block[var][year] if year else block[var]
            row[var if year is None else f"{var}_{year.lower()}"] = {
                k: stats[k] for k in ("q05", "q50", "q95")}
        row["p_upside"] = block["p_upside"]
        rows.append(row)
    return rows


def cmd_scenarios(args) -> int:
    summary = _load_summary(Path(args.results))
    if summary is None:
        return EXIT_USAGE
    if args.scenarios:  # what-if: re-simulate a scenarios file on the saved posterior
        from .priors import PriorsError
        from .run import resimulate
        from .shocks import ScenariosError
        try:
            summaries, _ = resimulate(Path(args.results), Path(args.scenarios),
                                      priors_path=Path(args.priors) if args.priors else None,
                                      paths=args.paths)
        except (PriorsError, ScenariosError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:
            print(f"error: {args.results}: cannot read saved results ({exc})", file=sys.stderr)
            return EXIT_USAGE
        summary = {"scenarios": summaries}
    if "scenarios" not in summary:
        print(f"error: {Path(args.results) / 'summary.json'}: no 'scenarios' (results from an "
              f"older version); rerun `stforecast run`", file=sys.stderr)
        return EXIT_USAGE
    rows = scenario_rows(summary)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("median [5% - 95%]; RMB mn, target price HK$; P(upside) = P(target_price_hkd > "
          "6.73) ± MCSE")
    head = f"{'scenario':<24}" + "".join(f"{label:>27}" for *_, label in SCENARIO_COLUMNS)
    print(head + f"{'P(upside)':>17}")
    for row in rows:
        line = f"{row['scenario']:<24}"
        for var, year, _ in SCENARIO_COLUMNS:
            st = row[var if year is None else f"{var}_{year.lower()}"]
            line += f"{_fmt(st['q50']):>9} [{_fmt(st['q05'])} - {_fmt(st['q95'])}]".rjust(27)
        p = row["p_upside"]
        line += f"{p['value']:.3f} ± {p['mcse']:.3f}".rjust(17)
        print(line)
    return 0


# --- sensitivity --------------------------------------------------------------------------------
def cmd_sensitivity(args) -> int:
    from .query import QueryError, Ref, parse, select_scenario, load_predictive
    from .sensitivity import rank_sensitivity
    try:
        ds = select_scenario(load_predictive(Path(args.results)), args.scenario)
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:  # the outcome is written as in a query: revenue[FY23], target_price_hkd
        ref = parse(f"mean({args.outcome})").arg
    except QueryError:
        ref = None
    variable, year = (ref.name, ref.year) if isinstance(ref, Ref) else ("", None)
    if variable not in ds.data_vars or (year is not None and year not in
                                        [str(y) for y in ds["year"].values]):
        names = ", ".join(n for n in ("revenue[FY23]", "target_price_hkd", "cash[FY23]",
                                      "cash_burn_fy21_fy23") if n.split("[")[0] in ds)
        print(f"error: unknown outcome {args.outcome!r}; e.g. {names}", file=sys.stderr)
        return EXIT_USAGE
    if year is None and "year" in ds[variable].dims:
        print(f"error: {variable!r} has a year dimension: write {variable}[FY23]", file=sys.stderr)
        return EXIT_USAGE
    ranked = rank_sensitivity(ds, variable, year)[: args.top]
    if args.json:
        print(json.dumps(ranked, indent=1))
        return 0
    print(f"Spearman rank correlation with {args.outcome} (scenario "
          f"{args.scenario or 'risk-weighted'}):")
    for i, e in enumerate(ranked, 1):
        bar = "#" * int(round(abs(e["score"]) * 40))
        print(f"{i:>3}. {e['driver']:<40}{e['score']:+.3f}  {bar}")
    return 0


# --- score --------------------------------------------------------------------------------------
def cmd_score(args) -> int:
    from .score import run_score
    return run_score(Path(args.actuals), Path(args.results), scenario=args.scenario,
                     as_json=args.json)


# --- query --------------------------------------------------------------------------------------
def cmd_query(args) -> int:
    from .query import QueryError, evaluate_file
    try:
        result = evaluate_file(args.expression, Path(args.results), scenario=args.scenario)
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
    p.add_argument("--scenarios", default=None,
                   help="shocks and scenarios file (default: scenarios.toml beside the priors)")
    p.add_argument("--no-report", action="store_true", help="skip report.html and the PNGs")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="sampler progress bars (default: on in a terminal)")
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

    p = sub.add_parser("scenarios", help="one row per scenario: revenue, cash burn, cash, TP",
                       formatter_class=raw,
                       epilog="examples:\n  stforecast scenarios --results results --json\n"
                              "  stforecast scenarios --scenarios my_scenarios.toml   # what-if")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--json", action="store_true", help="print a list of objects")
    p.add_argument("--scenarios", default=None,
                   help="re-simulate this scenarios file on the saved posterior (no refit; "
                        "results are not modified)")
    p.add_argument("--priors", default=None,
                   help="with --scenarios: priors file for the valuation settings")
    p.add_argument("--paths", type=int, default=None,
                   help="with --scenarios: paths (default: the run's)")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("sensitivity", help="tornado ranking: what moves an outcome most",
                       formatter_class=raw,
                       epilog="examples:\n  stforecast sensitivity \"revenue[FY23]\"\n"
                              "  stforecast sensitivity target_price_hkd --scenario base --json")
    p.add_argument("outcome", nargs="?", default="target_price_hkd",
                   help="variable, with [YEAR] when it has years (default target_price_hkd)")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--scenario", default=None, help="scenario (default risk-weighted)")
    p.add_argument("--top", type=int, default=15, help="rows to show (default 15)")
    p.add_argument("--json", action="store_true", help='print [{"driver", "score"}, ...]')
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("score", help="score the forecast against realised values",
                       formatter_class=raw,
                       epilog="example (actuals.toml holds e.g. [revenue] FY22 = 3809):\n"
                              "  stforecast score actuals.toml --json")
    p.add_argument("actuals", help="TOML file of realised values")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--scenario", default=None, help="scenario (default risk-weighted)")
    p.add_argument("--json", action="store_true",
                   help="print a list of {variable, year, actual, pit, in_50, ..., crps_point}")
    p.set_defaults(func=cmd_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seed", 0) is None:
        from .run import DEFAULT_SEED
        args.seed = DEFAULT_SEED
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
