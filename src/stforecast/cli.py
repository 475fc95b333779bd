"""The ``stforecast`` command line.

Every command has ``--help`` with an example. Commands that need a company take
``--company NAME_OR_DIR`` (a shipped company's name or a company folder; default: the default
shipped company); commands that read results take ``--results DIR`` (default
``results/<company>``) and read them through ``stforecast.results.load_results``. Prices,
currencies and years come from the company or the results, never from here.

Errors in user input (a company folder, a priors or scenarios file, a query, a results folder)
print ONE line to stderr and exit with status 2; ``run`` exits with status 3 when the fit misses
the quality bar (its results are still written). Heavy libraries (PyMC) are imported only by
the commands that fit; ``query`` imports neither PyMC nor xarray.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import StforecastError
from .registry import COMPANY_FILE, SAMPLERS, VARIABLES

EXIT_USAGE = 2
EXIT_DIAGNOSTICS = 3
RESULTS_ROOT = Path("results")


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def _company(args):
    from .company import load_company
    return load_company(args.company)


def _results_folder(args) -> Path:
    """``--results``, or ``results/<company key>`` (``--company``, else the default company)."""
    if args.results:
        return Path(args.results)
    if args.company:
        path = Path(args.company)
        return RESULTS_ROOT / (path.parent.name if path.name == COMPANY_FILE else path.name)
    from .company import default_company
    return RESULTS_ROOT / default_company()


def _load_results(args):
    from .results import load_results
    return load_results(_results_folder(args))


# --- companies ----------------------------------------------------------------------------------
def cmd_companies(args) -> int:
    from .company import list_companies, load_company

    rows = []
    for name in list_companies():
        c = load_company(name)
        rows.append({"name": name, "company": c.name, "ticker": c.ticker,
                     "segments": c.segment_names, "history": list(c.history_years),
                     "forecast": list(c.forecast_years), "currency": c.currency,
                     "folder": str(c.folder)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'name':<16}{'ticker':<12}{'years':<24}segments")
    for r in rows:
        years = f"{r['history'][0]}-{r['history'][-1]} | {r['forecast'][0]}-{r['forecast'][-1]}"
        print(f"{r['name']:<16}{r['ticker']:<12}{years:<24}{', '.join(r['segments'])}")
    return 0


# --- replicate ----------------------------------------------------------------------------------
def replicate(company) -> dict:
    """The engine on the report's own assumptions: ``{line: {year: value}}`` for the money
    lines (the company's currency, mn, rounded to 0.1) and ``target_price`` (price currency)."""
    from .engine import report_case
    from .registry import FORECAST_ONLY_LINES, REPORTED_LINES

    out = report_case(company)
    money = [n for n in company.reported_lines(REPORTED_LINES)
             if (n not in VARIABLES or VARIABLES[n].units == "{currency} mn")
             and n not in FORECAST_ONLY_LINES]
    years = [str(y) for y in out["year"].values]
    result = {n: {y: round(float(out[n].sel(year=y)), 1) for y in years} for n in money}
    result["target_price"] = round(float(out["target_price"]), 3)
    return result


def cmd_replicate(args) -> int:
    company = _company(args)
    result = replicate(company)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    pub = company.published
    years = list(next(iter(result.values())))
    print(f"stforecast replicate: the engine on the report's assumptions vs the report, "
          f"{company.name} ({company.currency} mn)")
    print(f"{'line item':<26}" + "".join(f"{y + ' engine':>14}{'report':>9}" for y in years))
    for name, by_year in result.items():
        if name == "target_price":
            continue
        row = f"{name:<26}"
        for y in years:
            published = float(pub[name].sel(year=y)) if name in pub else float("nan")
            row += f"{_fmt(by_year[y]):>14}{_fmt(published):>9}"
        print(row)
    print(f"{f'target_price ({company.price_currency})':<26}{result['target_price']:>14.3f}"
          f"{company.market.target_price_published:>9.2f}")
    table = conventions_table(company)
    if table is not None:
        print()
        print_conventions(table, company)
    return 0


def conventions_table(company):
    """The report's case under the report's and the correct conventions (``None`` when the
    company's priors file cannot be read: replication does not need it)."""
    from .costs import point_funding
    from .engine import convention_table
    from .priors import load_priors
    try:
        spec = load_priors(company.priors_path, company.growth_drivers())
    except StforecastError:
        return None
    return convention_table(company, point_funding(spec, company))


def print_conventions(table: dict, company) -> None:
    years = list(next(iter(table["lines"].values())))
    print(f"Conventions: the report's case as the report computes it vs the forecast's (correct) "
          f"conventions ({company.currency} mn)")
    print(f"{'line item':<26}" + "".join(f"{y + ' report':>14}{'correct':>10}{'diff':>9}"
                                          for y in years))
    for name, by_year in table["lines"].items():
        print(f"{name:<26}" + "".join(f"{_fmt(by_year[y]['report']):>14}"
                                      f"{_fmt(by_year[y]['correct']):>10}"
                                      f"{_fmt(by_year[y]['difference']):>9}" for y in years))
    vy = table["valuation_year"]
    for name, v in table["values"].items():
        unit = (f"{company.price_currency}/share" if name != "shares_outstanding"
                else f"mn, {vy}")
        print(f"{f'{name} ({unit})':<34}{v['report']:>12,.3f}{v['correct']:>12,.3f}"
              f"{v['difference']:>10,.3f}")
    for note in table["notes"]:
        print(f"  * {note}")


# --- check-priors -------------------------------------------------------------------------------
def cmd_check_priors(args) -> int:
    from .priors import load_priors
    company = _company(args)
    spec = load_priors(args.path or company.priors_path, company.growth_drivers())
    print(spec.summary())
    return 0


# --- run ----------------------------------------------------------------------------------------
def _print_run_summary(summary, out: Path) -> None:
    c = summary.company
    final = c.final_year
    lines = summary.headline.lines
    scalars = summary.headline.scalars
    print()
    print(f"{c.name} ({c.ticker}); money in {c.currency} mn, prices in {c.price_currency}")
    print(f"{'':<28}{'q05':>10}{'median':>10}{'q95':>10}")
    rows = [(f"{n} {final}", lines[n][final]) for n in ("revenue", "free_cash_flow", "cash",
                                                         "liquidity") if n in lines]
    rows += [(f"cash burn {summary.periods.cash_burn}", scalars["cash_burn"]),
             (f"target price ({c.price_currency})", scalars["target_price"])]
    if "value_today" in scalars:
        rows.append((f"value today ({c.price_currency})", scalars["value_today"]))
    for label, s in rows:
        print(f"{label:<28}{_fmt(s.q05):>10}{_fmt(s.q50):>10}{_fmt(s.q95):>10}")
    p = summary.headline.p_upside
    variable = summary.upside.variable if summary.upside is not None else "target_price"
    print(f"P({variable} > {c.price:g}) = {p.value:.3f} ± {p.mcse:.3f}   "
          f"({summary.n_paths:,} paths)")
    funding = summary.headline.funding
    if funding is not None:
        print("P(raise money by) " + ", ".join(f"{y} {q.value:.3f} ± {q.mcse:.3f}"
                                               for y, q in funding.p_raise_by.items())
              + f"; median dilution {funding.dilution.q50:.2%}")
    methods = summary.headline.valuation_methods
    if len(methods) > 1:
        print("  by valuation method: " + ", ".join(
            f"{m} {v.p_upside.value:.3f}" + (" (headline)" if m == summary.valuation_method
                                             else "") for m, v in methods.items()))
    d = summary.diagnostics
    status = "OK" if summary.ok else "FAILED: " + "; ".join(summary.reasons)
    peer = (f"; peer regression R-hat {summary.peer_fit.diagnostics.rhat_max:.3f}"
            if summary.peer_fit is not None else "")
    print(f"diagnostics: R-hat max {d.rhat_max:.3f}, bulk ESS min {d.ess_bulk_min:.0f}, "
          f"tail ESS min {d.ess_tail_min:.0f}, divergences {d.divergences}{peer} -> {status}")
    files = [out / "forecast.nc", out / "summary.json"] + (
        [out / "report.html"] if (out / "report.html").exists() else [])
    print("results: " + ", ".join(map(str, files)))


def cmd_run(args) -> int:
    from .fit import FitSettings
    from .run import DEFAULT_SEED, RunSettings, run_forecast

    company = _company(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    settings = RunSettings(seed=DEFAULT_SEED if args.seed is None else args.seed,
                           paths=args.paths, report=not args.no_report, progress=progress,
                           refit=args.refit,
                           fit=FitSettings(draws=args.draws, tune=args.tune, chains=args.chains,
                                           sampler=args.sampler))
    out = Path(args.out) if args.out else RESULTS_ROOT / company.key
    summary = run_forecast(out, company, settings,
                           priors_path=Path(args.priors) if args.priors else None,
                           scenarios_path=Path(args.scenarios) if args.scenarios else None)
    _print_run_summary(summary, out)
    if not summary.ok:
        print(f"stforecast run: WARNING: the fit misses the quality bar "
              f"({'; '.join(summary.reasons)}); results written to {out}", file=sys.stderr)
        return EXIT_DIAGNOSTICS if args.strict else 0
    return 0


# --- report -------------------------------------------------------------------------------------
def cmd_report(args) -> int:
    results = _load_results(args)  # a one-line error before the plotting stack is imported
    from .report import build_report
    print(build_report(results.folder))
    return 0


# --- scenarios ----------------------------------------------------------------------------------
def scenario_rows(scenarios: dict, final_year: str) -> list[dict]:
    """One row per scenario: median and 90% interval of revenue, cash burn, cash and target
    price (``<line>_<year>`` for a line at the last forecast year), and P(upside)."""
    rows = []
    for name, block in scenarios.items():
        row = {"scenario": name}
        for var, per_year in SCENARIO_COLUMNS:
            stats = block.lines[var][final_year] if per_year else block.scalars[var]
            key = f"{var}_{final_year.lower()}" if per_year else var
            row[key] = {"q05": stats.q05, "q50": stats.q50, "q95": stats.q95}
        row["p_upside"] = {"value": block.p_upside.value, "mcse": block.p_upside.mcse,
                           "n": block.p_upside.n}
        rows.append(row)
    return rows


#: (variable, per year?) of the scenarios table.
SCENARIO_COLUMNS = (("revenue", True), ("cash_burn", False), ("cash", True),
                    ("target_price", False))


def cmd_scenarios(args) -> int:
    results = _load_results(args)
    c = results.summary.company
    scenarios = results.summary.scenarios
    if args.scenarios:  # what-if: re-simulate a scenarios file on the saved posterior
        from .run import resimulate
        scenarios, _ = resimulate(results, Path(args.scenarios),
                                  priors_path=Path(args.priors) if args.priors else None,
                                  paths=args.paths)
    rows = scenario_rows(scenarios, c.final_year)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"median [5% - 95%]; {c.currency} mn, target price {c.price_currency}; "
          f"P(upside) = P(value per diluted share today > {c.price:g}) ± MCSE")
    labels = [f"{v} {c.final_year}" if per_year else v.replace("_", " ")
              for v, per_year in SCENARIO_COLUMNS]
    print(f"{'scenario':<24}" + "".join(f"{label:>27}" for label in labels) + f"{'P(upside)':>17}")
    for row in rows:
        line = f"{row['scenario']:<24}"
        for key in list(row)[1:-1]:
            st = row[key]
            line += f"{_fmt(st['q50']):>9} [{_fmt(st['q05'])} - {_fmt(st['q95'])}]".rjust(27)
        p = row["p_upside"]
        line += f"{p['value']:.3f} ± {p['mcse']:.3f}".rjust(17)
        print(line)
    return 0


# --- sensitivity --------------------------------------------------------------------------------
def cmd_sensitivity(args) -> int:
    from .query import QueryError, Ref, parse
    from .registry import HEADLINE_SCENARIO
    from .sensitivity import rank_sensitivity

    results = _load_results(args)
    c = results.summary.company
    ds = results.draws(scenario=args.scenario or HEADLINE_SCENARIO)
    try:  # the outcome is written as in a query: revenue[<year>], target_price
        ref = parse(f"mean({args.outcome})").arg
    except QueryError:
        ref = None
    variable, year = (ref.name, ref.year) if isinstance(ref, Ref) else ("", None)
    variable = c.aliases().get(variable, variable)
    if variable not in ds.data_vars or (year is not None and year not in
                                        [str(y) for y in ds["year"].values]):
        names = ", ".join(f"{n}[{c.final_year}]" if v.kind == "line" else n
                          for n, v in VARIABLES.items() if v.sensitivity or n in ("cash",
                                                                                    "cash_burn"))
        raise QueryError(f"unknown outcome {args.outcome!r}; e.g. {names}")
    if year is None and "year" in ds[variable].dims:
        raise QueryError(f"{variable!r} has a year dimension: write {variable}[{c.final_year}]")
    ranked = rank_sensitivity(ds, variable, year,
                              level_drivers=results.company.unit_drivers())[: args.top]
    if args.json:
        print(json.dumps(ranked, indent=1))
        return 0
    print(f"Spearman rank correlation with {args.outcome} (scenario "
          f"{args.scenario or HEADLINE_SCENARIO}):")
    for i, e in enumerate(ranked, 1):
        bar = "#" * int(round(abs(e["score"]) * 40))
        print(f"{i:>3}. {e['driver']:<40}{e['score']:+.3f}  {bar}")
    return 0


# --- score --------------------------------------------------------------------------------------
def cmd_score(args) -> int:
    from .score import run_score
    return run_score(Path(args.actuals), _results_folder(args), scenario=args.scenario,
                     as_json=args.json)


# --- query --------------------------------------------------------------------------------------
def cmd_query(args) -> int:
    from .query import evaluate_file
    result = evaluate_file(args.expression, _results_folder(args), scenario=args.scenario)
    print(json.dumps(result.to_dict()) if args.json else str(result))
    return 0


# --- the parser ---------------------------------------------------------------------------------
def _company_option(p, what: str = "the company") -> None:
    p.add_argument("--company", default=None, metavar="NAME_OR_DIR",
                   help=f"{what}: a shipped company (see `stforecast companies`) or a company "
                        "folder (default: the default shipped company)")


def _results_options(p) -> None:
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder (default: results/<company>)")
    _company_option(p, "whose results to read when --results is not given")


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="stforecast", formatter_class=raw,
        description="Probabilistic forecasts for equity research: a company's history, an "
                    "analyst's report and the outside view, turned into probabilities.",
        epilog="example:\n  stforecast companies\n"
               "  stforecast run --company NAME      # fit, simulate, write results/NAME\n"
               "  stforecast query \"P(target_price > 7.5)\" --company NAME")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("companies", help="list the shipped companies", formatter_class=raw,
                       epilog="example:\n  stforecast companies --json")
    p.add_argument("--json", action="store_true", help="print a list of objects")
    p.set_defaults(func=cmd_companies)

    p = sub.add_parser("run", help="fit the driver model, simulate, write results/<company>",
                       formatter_class=raw,
                       epilog="example:\n  stforecast run --company NAME --seed 1 --paths 200000")
    _company_option(p)
    p.add_argument("--priors", default=None,
                   help="priors file (TOML; default: the company's priors.toml)")
    p.add_argument("--scenarios", default=None,
                   help="shocks and scenarios file (default: the company's scenarios.toml)")
    p.add_argument("--out", default=None, help="results folder (default: results/<company>)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: stforecast's fixed seed)")
    p.add_argument("--paths", type=int, default=100_000, help="posterior predictive paths")
    p.add_argument("--draws", type=int, default=1000, help="posterior draws per chain")
    p.add_argument("--tune", type=int, default=1000, help="tuning steps per chain")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0])
    p.add_argument("--no-report", action="store_true", help="skip report.html and the PNGs")
    p.add_argument("--refit", action="store_true",
                   help="fit again even when the fit cache has this fit (the cache folder is "
                        "$STFORECAST_CACHE, else ~/.cache/stforecast)")
    p.add_argument("--strict", action="store_true",
                   help=f"exit {EXIT_DIAGNOSTICS} when a fit misses the quality bar (R-hat, ESS, "
                        "divergences); without it the miss is a warning on stderr, in "
                        "summary.json and in the report's banner")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="sampler progress bars (default: on in a terminal)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replicate", help="the engine on the report's own assumptions",
                       formatter_class=raw,
                       epilog="example:\n  stforecast replicate --company NAME --json")
    _company_option(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_replicate)

    p = sub.add_parser("check-priors", help="validate a priors file against a company",
                       formatter_class=raw,
                       epilog="example:\n  stforecast check-priors my_priors.toml --company NAME")
    p.add_argument("path", nargs="?", default=None,
                   help="priors file (default: the company's priors.toml)")
    _company_option(p)
    p.set_defaults(func=cmd_check_priors)

    p = sub.add_parser("report", help="rebuild report.html and the PNGs from saved results",
                       formatter_class=raw, epilog="example:\n  stforecast report --results DIR")
    _results_options(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("query", help="a probability or statistic on saved results",
                       formatter_class=raw,
                       epilog="examples (years as in the results, e.g. revenue[<year>]):\n"
                              "  stforecast query \"P(target_price > 7.5)\"\n"
                              "  stforecast query \"P(cash_burn > 10000)\" --json\n"
                              "  stforecast query \"quantile(target_price, 0.05)\" "
                              "--company NAME")
    p.add_argument("expression")
    _results_options(p)
    p.add_argument("--scenario", default=None, help="scenario name, when results have several")
    p.add_argument("--json", action="store_true", help='print {"value", "mcse", "n"}')
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("scenarios", help="one row per scenario: revenue, cash burn, cash, TP",
                       formatter_class=raw,
                       epilog="examples:\n  stforecast scenarios --results DIR --json\n"
                              "  stforecast scenarios --scenarios my_scenarios.toml   # what-if")
    _results_options(p)
    p.add_argument("--json", action="store_true", help="print a list of objects")
    p.add_argument("--scenarios", default=None,
                   help="re-simulate this scenarios file on the saved posterior (no refit; "
                        "results are not modified)")
    p.add_argument("--priors", default=None,
                   help="with --scenarios: priors file for the valuation settings "
                        "(default: the run's)")
    p.add_argument("--paths", type=int, default=None,
                   help="with --scenarios: paths (default: the run's)")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("sensitivity", help="tornado ranking: what moves an outcome most",
                       formatter_class=raw,
                       epilog="examples:\n  stforecast sensitivity \"revenue[<year>]\"\n"
                              "  stforecast sensitivity target_price --scenario base --json")
    p.add_argument("outcome", nargs="?", default="target_price",
                   help="variable, with [YEAR] when it has years (default target_price)")
    _results_options(p)
    p.add_argument("--scenario", default=None, help="scenario (default: the headline scenario)")
    p.add_argument("--top", type=int, default=15, help="rows to show (default 15)")
    p.add_argument("--json", action="store_true", help='print [{"driver", "score"}, ...]')
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("score", help="score the forecast against realised values",
                       formatter_class=raw,
                       epilog="example (actuals.toml holds e.g. [revenue] <year> = 3809):\n"
                              "  stforecast score actuals.toml --json")
    p.add_argument("actuals", help="TOML file of realised values")
    _results_options(p)
    p.add_argument("--scenario", default=None, help="scenario (default: the headline scenario)")
    p.add_argument("--json", action="store_true",
                   help="print a list of {variable, year, actual, pit, in_50, ..., crps_point}")
    p.set_defaults(func=cmd_score)
    from .cli_scale import register  # calibrate, sweep, run-many: Dask tasks
    register(sub)
    return parser


class _PrintHandler(logging.Handler):
    """Log records as ``[stforecast] message  [seconds since start]`` lines on (the current)
    stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"[stforecast] {record.getMessage()}  [{record.relativeCreated / 1000:.1f} s]",
              flush=True)


def configure_logging(level: int = logging.INFO) -> None:
    """Print the ``stforecast`` loggers' progress messages (once, however often called)."""
    log = logging.getLogger("stforecast")
    if not any(isinstance(h, _PrintHandler) for h in log.handlers):
        log.addHandler(_PrintHandler())
    log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        return args.func(args)
    except StforecastError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
