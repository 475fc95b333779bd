"""The ``stforecast`` command line.

Every command has ``--help`` with an example. Commands that need a company take
``--company NAME_OR_DIR`` (a shipped company's name or a company folder; default: the default
shipped company); commands that read results take ``--results DIR`` (default
``results/<company>``) and read them through ``stforecast.results.load_results``. Prices,
currencies and years come from the company or the results, never from here.

Errors in user input (a company folder, a priors or scenarios file, a query, a results folder,
an option out of its range) print ONE line to stderr and exit with status 2, before any fit
(``stforecast.preflight``); ``run`` exits with status 3 when the fit misses the quality bar (its
results are still written). Any other error prints one line, ``internal error: ...``, with the
traceback written to a log file it names (exit status 70); an interrupt exits with status 130; a
closed stdout (``| head -1``) ends a command quietly with status 141. ``--json`` prints JSON
indented by one space in every command. Heavy libraries (PyMC) are imported only by the commands
that fit; ``query`` imports neither PyMC nor xarray.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import threading
from pathlib import Path

from .errors import StforecastError, one_line, reading_draws
from .preflight import check_out, int_option
from .registry import COMPANY_FILE, DEFAULT_TUNE, SAMPLERS, VARIABLES

EXIT_USAGE = 2
EXIT_DIAGNOSTICS = 3
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in stforecast, not in the input
EXIT_INTERRUPTED = 130
RESULTS_ROOT = Path("results")


def dump_json(obj) -> str:
    """The one JSON style of every command's ``--json``: indented by one space."""
    return json.dumps(obj, indent=1)


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
        print(dump_json(rows))
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
        print(dump_json(result))
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
def _file_kind_hint(path, wanted: str) -> None:
    """A one-line error when ``path`` is plainly the other kind of file (a scenarios file given
    to check-priors, or the reverse), pointing at the right command."""
    import tomllib

    try:  # only a plain, small file (pipes, devices and huge files: the loader's one line)
        if not Path(path).is_file() or Path(path).stat().st_size > 1_000_000:
            return
        sections = set(tomllib.loads(Path(path).read_text()))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError):
        return  # the loader reports it, with its own one-line error
    is_scenarios = bool(sections & {"shocks", "scenarios"})
    if wanted == "priors" and is_scenarios:
        raise StforecastError(f"{path}: this is a scenarios file ([shocks] / [scenarios]), not a "
                              f"priors file; check it with `stforecast check-scenarios {path}`")
    if wanted == "scenarios" and sections - {"meta"} and not is_scenarios:
        raise StforecastError(f"{path}: this is not a scenarios file (no [shocks] or "
                              f"[scenarios]); for a priors file use `stforecast check-priors "
                              f"{path}`")


def cmd_check_priors(args) -> int:
    from .priors import load_priors
    company = _company(args)
    if args.path:
        _file_kind_hint(args.path, "priors")
    spec = load_priors(args.path or company.priors_path, company.growth_drivers())
    if not args.no_trial:  # a trial evaluation of the model at the prior's centre (3-4 s)
        from .model import build_model, observations_from_company
        from .preflight import trial_logp
        trial_logp(build_model(spec, observations_from_company(company), company), spec.path)
    print(spec.summary() + ("" if args.no_trial else "; the model evaluates at the prior's "
                                                      "centre"))
    return 0


# --- check-scenarios ----------------------------------------------------------------------------
def cmd_check_scenarios(args) -> int:
    from .scenarios import load_user_scenarios, run_scenarios

    company = _company(args)
    if args.path:
        _file_kind_hint(args.path, "scenarios")
    spec = load_user_scenarios(args.path, company) if args.path else run_scenarios(company)
    own = run_scenarios(company) if args.path else spec
    print(describe_scenarios(spec, own, args.path, company))
    return 0


def describe_scenarios(spec, own, path, company) -> str:
    """What ``check-scenarios`` prints: every shock and scenario, each marked as the company's,
    replaced by the file, or added by it."""
    import tomllib

    base = company.scenarios_path
    overlay = path is not None and Path(path).resolve() != Path(base).resolve()
    written = tomllib.loads(Path(path).read_text()) if overlay else {}

    def mark(name, section: str, theirs: dict) -> str:
        if name not in (written.get(section) or {}):
            return ""
        return " (replaced)" if name in theirs else " (added)"
    lines = [f"{path or base}: valid scenarios file for {company.name}"
             + (f", laid over {base} (same name replaces, new names add)" if overlay else "")]
    lines.append(f"shocks ({len(spec.shocks)}):")
    for name, shock in spec.shocks.items():
        lines.append(f"  {name}{mark(name, 'shocks', own.shocks)}: "
                     f"{shock.label}; annual probability {shock.probability.describe()}")
    lines.append(f"scenarios ({len(spec.scenarios)}):")
    for name, sc in spec.scenarios.items():
        settings = [(k, v.describe()) for k, v in sc.settings.items()]
        common = max({d for _, d in settings}, key=[d for _, d in settings].count)
        named = "; ".join(f"{k} {d}" for k, d in settings if d != common)
        text = f"every shock {common}" if not named else f"{named}; the others {common}"
        lines.append(f"  {name}{mark(name, 'scenarios', own.scenarios)}: "
                     f"{text}")
    return "\n".join(lines)


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
    _without_unused_packages(("dask",))  # one company, in this process (the scale commands
    # use Dask; nutpie keeps its draws with pyarrow)
    company = _company(args)
    out = check_out(args.out if args.out is not None else RESULTS_ROOT / company.key)
    _check_run_inputs(company, args)  # before PyMC is imported, and before any fit

    from .fit import FitSettings
    from .run import DEFAULT_SEED, RunSettings, run_forecast
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    settings = RunSettings(seed=DEFAULT_SEED if args.seed is None else args.seed,
                           paths=args.paths, report=not args.no_report, progress=progress,
                           refit=args.refit,
                           fit=FitSettings(draws=args.draws, tune=args.tune, chains=args.chains,
                                           sampler=args.sampler))
    _say_paths_rounding("run", args.paths, args.chains * args.draws)
    summary = run_forecast(out, company, settings,
                           priors_path=Path(args.priors) if args.priors else None,
                           scenarios_path=Path(args.scenarios) if args.scenarios else None)
    _print_run_summary(summary, out)
    if not summary.ok:
        print(f"stforecast run: WARNING: the fit misses the quality bar "
              f"({'; '.join(summary.reasons)}); results written to {out}", file=sys.stderr)
        return EXIT_DIAGNOSTICS if args.strict else 0
    return 0


def _check_run_inputs(company, args) -> None:
    """Before any fit: the priors and scenarios files, and the memory ``--paths`` needs."""
    import math

    from .preflight import check_memory
    from .priors import load_priors
    from .scenarios import load_scenarios
    from .peers import load_peers
    from .peers import load_priors as load_peer_priors
    # an empty --priors '' is an empty file name, not "the default"
    load_priors(company.priors_path if args.priors is None else args.priors,
                company.growth_drivers())
    scenarios = load_scenarios(company.scenarios_path if args.scenarios is None
                               else args.scenarios, company)
    if company.peers_path is None:
        from .errors import DataFileError
        raise DataFileError(f"{company.folder / COMPANY_FILE}: key 'company.peers': expected the "
                            "name of the company's peers file (a run fits the peer regression)")
    load_peers(company.peers_path)  # read after the driver fit otherwise
    load_peer_priors(company.peers_path)
    from .resimulation import stored_names
    per_draw = math.ceil(args.paths / (args.chains * args.draws))
    check_memory(per_draw * args.chains * args.draws, len(company.forecast_years),
                 len(stored_names(company, scenarios)), len(scenarios.scenarios))
def paths_rounding(paths: int, posterior_draws: int) -> tuple[int, int]:
    """``(paths per posterior draw, total paths)`` for a requested ``--paths``: future paths are
    drawn per posterior draw, so the total is rounded up to a multiple of the posterior draws
    (the same rule as ``stforecast.resimulation.paths_per_draw``)."""
    per_draw = max(1, -(-paths // max(1, posterior_draws)))
    return per_draw, per_draw * posterior_draws


def _say_paths_rounding(command: str, paths: int, posterior_draws: int) -> None:
    per_draw, total = paths_rounding(paths, posterior_draws)
    if total != paths:
        print(f"stforecast {command}: note: --paths {paths:,} gives {total:,} paths ({per_draw:,} "
              f"per posterior draw x {posterior_draws:,} posterior draws; paths are drawn whole "
              f"per posterior draw)", file=sys.stderr)


# --- report -------------------------------------------------------------------------------------
def cmd_report(args) -> int:
    results = _load_results(args)  # a one-line error before the plotting stack is imported
    from .report import rebuild_report
    print(rebuild_report(results.folder))
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


def _check_resimulate(results, args) -> None:
    """Before re-simulating: the scenarios file, and the memory its paths need."""
    import math

    from .preflight import check_memory
    from .resimulation import stored_names
    from .scenarios import load_user_scenarios
    company = results.company
    spec = load_user_scenarios(Path(args.scenarios), company)  # laid over the run's, as resimulate
    s = results.summary.settings
    paths = s.paths if args.paths is None else args.paths
    draws = s.chains * s.draws
    check_memory(math.ceil(paths / draws) * draws, len(company.forecast_years),
                 len(stored_names(company, spec)), len(spec.scenarios))


#: (variable, per year?) of the scenarios table.
SCENARIO_COLUMNS = (("revenue", True), ("cash_burn", False), ("cash", True),
                    ("target_price", False))


#: Optional packages that xarray and pandas import when installed and a re-simulation never
#: uses: dask (xarray imports it, with dask.array, scipy.sparse, jinja2 and yaml, about 0.5 s,
#: only to ask whether each new array is a dask array) and pyarrow (pandas 3 imports it at
#: import, ~0.1 s, to back string indexes, which work without it). A run needs pyarrow (nutpie
#: keeps its draws in Arrow tables), not dask.
UNUSED_OPTIONAL_PACKAGES = ("dask", "pyarrow")


def _without_unused_packages(names: tuple[str, ...] = UNUSED_OPTIONAL_PACKAGES) -> None:
    """Mark the optional packages ``names`` as not installed (``sys.modules[name] = None``,
    Python's way of blocking an import), so that xarray and pandas take their paths without
    them. Only before xarray and pandas are first imported: a process that has imported them
    already (a test, a notebook) is left as it is."""
    if not {"xarray", "pandas"} & set(sys.modules):
        for name in names:
            sys.modules.setdefault(name, None)


def cmd_scenarios(args) -> int:
    if args.scenarios:  # a re-simulation: numpy-backed xarray arrays only
        _without_unused_packages()
    results = _load_results(args)
    c = results.summary.company
    scenarios = results.summary.scenarios
    if args.scenarios:  # what-if: re-simulate a scenarios file on the saved posterior
        from .resimulation import resimulate
        from .summary import UPSIDE_VARIABLE
        _check_resimulate(results, args)
        settings = results.summary.settings
        _say_paths_rounding("scenarios", args.paths or settings.paths,
                            settings.chains * settings.draws)
        scenarios, _ = resimulate(results, Path(args.scenarios),
                                  priors_path=Path(args.priors) if args.priors else None,
                                  paths=args.paths, keep_draws=False,
                                  # the table's columns and P(upside)'s variable, nothing else
                                  variables=[v for v, _ in SCENARIO_COLUMNS] + [UPSIDE_VARIABLE])
    rows = scenario_rows(scenarios, c.final_year)
    if args.json:
        print(dump_json(rows))
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
    from .sensitivity import (direct_growth, input_labels, rank_sensitivity,
                              swing_sensitivity)

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
    company = results.company
    growth = direct_growth(company)
    scenario = args.scenario or HEADLINE_SCENARIO
    labels = input_labels(company, {s.shock: s.label for s in results.summary.shocks})
    if args.rank:
        with reading_draws(results.draws_path):
            ranked = rank_sensitivity(ds, variable, year, level_drivers=company.unit_drivers(),
                                      growth_segments=growth)[: args.top]
        if args.json:
            print(dump_json(ranked))
            return 0
        print(f"Spearman rank correlation with {args.outcome} (scenario {scenario}):")
        for i, e in enumerate(ranked, 1):
            bar = "#" * int(round(abs(e["score"]) * 40))
            label = labels.get(e["driver"], (e["driver"].replace("_", " "), ""))[0]
            print(f"{i:>3}. {label[:1].upper() + label[1:]:<46}{e['score']:+.3f}  {bar}")
        return 0
    with reading_draws(results.draws_path):
        tornado = swing_sensitivity(ds, variable, year, level_drivers=company.unit_drivers(),
                                    growth_segments=growth, labels=labels)
    tornado["entries"] = tornado["entries"][: args.top]
    if args.json:
        print(dump_json({"outcome": variable, "year": year, "scenario": scenario,
                         "units": c.units(variable), **tornado}))
        return 0
    print(format_tornado(tornado, args.outcome, c.units(variable), scenario))
    return 0


def format_tornado(tornado: dict, outcome: str, units: str, scenario: str) -> str:
    """``stforecast sensitivity`` as text: one row per input, sorted by swing."""
    def num(x):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:,.4g}"

    lo, hi = f"{100 * tornado['band']:.0f}th", f"{100 * (1 - tornado['band']):.0f}th"
    lines = [f"Tornado of {outcome} [{units}], scenario {scenario}; median over all paths "
             f"{num(tornado['median'])}.",
             f"low / high: the median of {outcome} over the paths with the input at or below its "
             f"{lo} / at or above its {hi} percentile;",
             f"swing = high - low; in brackets: the input's {lo} .. {hi} percentile.",
             f"{'':>4}{'input':<46}{'low':>10}{'high':>10}{'swing':>10}"]
    for i, e in enumerate(tornado["entries"], 1):
        label = e["label"][:1].upper() + e["label"][1:]
        swing = ("+" if e["swing"] >= 0 else "-") + num(abs(e["swing"]))
        lines.append(f"{i:>3}. {label:<45}{num(e['low']):>10}{num(e['high']):>10}{swing:>10}")
        lines.append(f"{'':>5}[{e['basis']}: {num(e['input_low'])} .. "
                     f"{num(e['input_high'])}]")
    return "\n".join(lines)


# --- score --------------------------------------------------------------------------------------
def cmd_score(args) -> int:
    from .score import run_score
    return run_score(Path(args.actuals), _results_folder(args), scenario=args.scenario,
                     as_json=args.json)


# --- query --------------------------------------------------------------------------------------
def cmd_query(args) -> int:
    from .query import QueryError, catalogue, evaluate_file
    if args.list:
        listing = catalogue(_results_folder(args))
        print(dump_json(listing) if args.json else format_catalogue(listing))
        return 0
    if args.expression is None:
        raise QueryError("query: expected an expression such as \"P(target_price > 7.5)\", "
                         "or --list for the variables, scenarios, functions and grammar")
    result = evaluate_file(args.expression, _results_folder(args), scenario=args.scenario)
    print(dump_json(result.to_dict()) if args.json else str(result))
    return 0


def format_catalogue(listing: dict) -> str:
    """``query --list`` as text: variables (units, forecast and history years), scenarios,
    functions, grammar."""
    def span(years):
        return f"{years[0]}-{years[-1]}" if len(years) > 2 else ", ".join(years)

    lines = [f"results: {listing['results']}", "", "variables (NAME[YEAR] where years are given; "
             "history years are actuals, the same on every path):"]
    width = max((len(v["name"]) for v in listing["variables"]), default=10) + 2
    for v in listing["variables"]:
        years = ""
        if v["years"]:
            years = f"years {span(v['history_years'] + v['years'])}"
            if v["history_years"]:
                years += f" (history {span(v['history_years'])})"
        else:
            years = "one value per path"
        units = f"[{v['units']}]" if v["units"] else ""
        lines.append(f"  {v['name']:<{width}}{v['label']} {units}; {years}")
    for alias, name in listing["aliases"].items():
        lines.append(f"  {alias:<{width}}the same as {name}")
    scenarios = ", ".join(s + (" (default)" if s == listing["headline"] else "")
                          for s in listing["scenarios"])
    lines += ["", f"scenarios (--scenario NAME, or --scenario all): {scenarios or 'none'}",
              "", f"functions: {', '.join(listing['functions'])}", "", "grammar:",
              listing["grammar"]]
    return "\n".join(lines)


# --- the parser ---------------------------------------------------------------------------------
def _company_option(p, what: str = "the company") -> None:
    p.add_argument("--company", default=None, metavar="NAME_OR_DIR",
                   help=f"{what}: a shipped company (see `stforecast companies`) or a company "
                        "folder (default: the default shipped company)")


def _results_options(p) -> None:
    p.add_argument("--results", default=None, metavar="DIR",
                   help="results folder (default: results/<company>)")
    _company_option(p, "whose results to read when --results is not given")


class Parser(argparse.ArgumentParser):
    """argparse with usage errors in ONE line (``error: stforecast run: ...``), exit status 2;
    the sub-command parsers are of this class too."""

    def error(self, message: str):
        print(f"error: {one_line(f'{self.prog}: {message} (see {self.prog} --help)')}",
              file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="stforecast", formatter_class=raw,
        description="Probabilistic forecasts for equity research: a company's history, an "
                    "analyst's report and the outside view, turned into probabilities.",
        epilog="example:\n  stforecast companies\n"
               "  stforecast run --company NAME      # fit, simulate, write results/NAME\n"
               "  stforecast query \"P(target_price > 7.5)\" --company NAME")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"stforecast {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("companies", help="list the shipped companies", formatter_class=raw,
                       epilog="example:\n  stforecast companies --json")
    p.add_argument("--json", action="store_true", help="print a list of objects (default: a table)")
    p.set_defaults(func=cmd_companies)

    p = sub.add_parser("run", help="fit the driver model, simulate, write results/<company>",
                       formatter_class=raw,
                       epilog="example:\n  stforecast run --company NAME --seed 1 --paths 200000")
    _company_option(p)
    p.add_argument("--priors", default=None,
                   help="priors file (TOML; default: the company's priors.toml)")
    p.add_argument("--scenarios", default=None,
                   help="your shocks and scenarios, laid over the company's (same name "
                        "replaces, new names add; default: the company's scenarios.toml)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="results folder (default: results/<company>)")
    p.add_argument("--seed", type=int_option("seed"), default=None, help="random seed (default: stforecast's fixed seed)")
    p.add_argument("--paths", type=int_option("paths"), default=100_000,
                   help="posterior predictive paths (default 100,000); paths are drawn per "
                        "posterior draw, so the count is rounded up to a multiple of chains x "
                        "draws, and the run says so")
    p.add_argument("--draws", type=int_option("draws"), default=1000,
                   help="posterior draws per chain (default 1000)")
    p.add_argument("--tune", type=int_option("tune"), default=DEFAULT_TUNE,
                   help=f"tuning steps per chain (default {DEFAULT_TUNE})")
    p.add_argument("--chains", type=int_option("chains"), default=4, help="sampler chains (default 4)")
    p.add_argument("--sampler", choices=SAMPLERS, default=SAMPLERS[0],
                   help=f"NUTS implementation (default {SAMPLERS[0]})")
    p.add_argument("--no-report", action="store_true",
                   help="skip report.html and the PNGs (default: write them)")
    p.add_argument("--refit", action="store_true",
                   help="fit and write again even when the fit cache has this fit (the cache folder "
                        "is $STFORECAST_CACHE, else ~/.cache/stforecast) or --out already holds "
                        "this run's results (default: use the cache; do nothing when up to date)")
    p.add_argument("--strict", action="store_true",
                   help=f"exit {EXIT_DIAGNOSTICS} when a fit misses the quality bar (R-hat, ESS, "
                        "divergences); without it the miss is a warning on stderr, in "
                        "summary.json and in the report's banner (default: off)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="sampler progress bars (default: on in a terminal)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("replicate", help="the engine on the report's own assumptions",
                       formatter_class=raw,
                       epilog="example:\n  stforecast replicate --company NAME --json")
    _company_option(p)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (default: a table)")
    p.set_defaults(func=cmd_replicate)

    p = sub.add_parser("check-priors", help="validate a priors file against a company",
                       formatter_class=raw,
                       epilog="example:\n  stforecast check-priors my_priors.toml --company NAME")
    p.add_argument("path", nargs="?", default=None,
                   help="priors file (default: the company's priors.toml)")
    _company_option(p)
    p.add_argument("--no-trial", action="store_true",
                   help="skip the trial evaluation of the model's log-density at the prior's "
                        "centre (it builds the model: a few seconds)")
    p.set_defaults(func=cmd_check_priors)

    p = sub.add_parser("check-scenarios", help="validate a scenarios file against a company",
                       formatter_class=raw,
                       epilog="A user's scenarios file is laid over the company's own: a shock "
                              "or scenario of the\nsame name replaces the company's, a new name "
                              "is added ([meta] overlay = false: the\nfile stands alone).\n\n"
                              "example:\n  stforecast check-scenarios my_scenarios.toml "
                              "--company NAME")
    p.add_argument("path", nargs="?", default=None,
                   help="scenarios file (default: the company's scenarios.toml)")
    _company_option(p)
    p.set_defaults(func=cmd_check_scenarios)

    p = sub.add_parser("report", help="rebuild report.html and the PNGs from saved results",
                       formatter_class=raw, epilog="example:\n  stforecast report --results DIR")
    _results_options(p)
    p.set_defaults(func=cmd_report)

    from .query import ALL_SCENARIOS, GRAMMAR
    p = sub.add_parser("query", help="a probability or statistic on saved results",
                       formatter_class=raw,
                       epilog="grammar:\n" + GRAMMAR + "\n\n"
                              "examples (years as in the results, e.g. revenue[<year>]):\n"
                              "  stforecast query --list      # variables, years, scenarios\n"
                              "  stforecast query \"P(target_price > 7.5)\"\n"
                              "  stforecast query \"P(revenue[<year>] > 2 * revenue[<history "
                              "year>])\"\n"
                              "  stforecast query \"P(cash_burn > 10000)\" --json\n"
                              "  stforecast query \"quantile(target_price, 0.05, 0.5, 0.95)\" "
                              "--scenario all --company NAME")
    p.add_argument("expression", nargs="?", default=None,
                   help="the query, e.g. \"P(target_price > 7.5)\" (see the grammar below)")
    p.add_argument("--list", action="store_true",
                   help="list the variables (units, years), scenarios, functions and grammar of "
                        "the results, and exit (default: answer the expression)")
    _results_options(p)
    p.add_argument("--scenario", default=None, metavar="NAME",
                   help=f"scenario to answer for (default: the headline scenario); "
                        f"'{ALL_SCENARIOS}' answers for each")
    p.add_argument("--json", action="store_true",
                   help='print {"expression", "scenario", "value", "mcse", "n"} (a list of '
                        'them for several answers; default: one line per answer)')
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("scenarios", help="one row per scenario: revenue, cash burn, cash, TP",
                       formatter_class=raw,
                       epilog="examples:\n  stforecast scenarios --results DIR --json\n"
                              "  stforecast scenarios --scenarios my_scenarios.toml   # what-if")
    _results_options(p)
    p.add_argument("--json", action="store_true", help="print a list of objects (default: a table)")
    p.add_argument("--scenarios", default=None,
                   help="re-simulate this scenarios file on the saved posterior (no refit; "
                        "results are not modified; laid over the company's scenarios: same "
                        "name replaces, new names add; default: show the saved scenarios)")
    p.add_argument("--priors", default=None,
                   help="with --scenarios: priors file for the valuation settings "
                        "(default: the run's)")
    p.add_argument("--paths", type=int_option("paths"), default=None,
                   help="with --scenarios: paths (default: the run's; rounded up to a multiple "
                        "of the posterior draws, and said)")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("sensitivity", help="tornado: what moves an outcome most, in its units",
                       formatter_class=raw,
                       epilog="For each input (driver, segment growth, shock), the outcome's "
                              "median over the paths\nwith the input in its bottom decile and "
                              "in its top decile, sorted by the swing;\n--rank: Spearman rank "
                              "correlations instead.\n\n"
                              "examples:\n  stforecast sensitivity \"revenue[<year>]\"\n"
                              "  stforecast sensitivity target_price --scenario base --json\n"
                              "  stforecast sensitivity target_price --rank")
    p.add_argument("outcome", nargs="?", default="target_price",
                   help="variable, with [YEAR] when it has years (default target_price)")
    _results_options(p)
    p.add_argument("--scenario", default=None, metavar="NAME",
                   help="scenario (default: the headline scenario)")
    p.add_argument("--top", type=int_option("top"), default=15, help="rows to show (default 15)")
    p.add_argument("--rank", action="store_true",
                   help="the rank view: Spearman rank correlation of each input with the outcome "
                        "(default: the tornado in the outcome's units)")
    p.add_argument("--json", action="store_true",
                   help='print the tornado as one object ({"median", "entries": [{"driver", '
                        '"label", "low", "high", "swing", ...}]}); with --rank, '
                        '[{"driver", "score"}, ...] (default: a table)')
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("score", help="score the forecast against realised values",
                       formatter_class=raw,
                       epilog="example (actuals.toml holds e.g. [revenue] <year> = 3809):\n"
                              "  stforecast score actuals.toml --json")
    p.add_argument("actuals", help="TOML file of realised values")
    _results_options(p)
    p.add_argument("--scenario", default=None, metavar="NAME",
                   help="scenario (default: the headline scenario)")
    p.add_argument("--json", action="store_true",
                   help="print a list of {variable, year, actual, pit, in_50, ..., crps_point} "
                        "(default: a table)")
    p.set_defaults(func=cmd_score)
    from .cli_scale import register  # calibrate, sweep, run-many: Dask tasks
    register(sub)
    return parser


class _PrintHandler(logging.Handler):
    """Log records as ``[stforecast] message  [seconds since start]`` lines on (the current)
    stdout, or stderr when ``to_stderr`` (a command whose stdout is JSON)."""

    def __init__(self, to_stderr: bool = False):
        super().__init__()
        self.to_stderr = to_stderr

    def emit(self, record: logging.LogRecord) -> None:
        print(f"[stforecast] {record.getMessage()}  [{record.relativeCreated / 1000:.1f} s]",
              file=sys.stderr if self.to_stderr else sys.stdout, flush=True)


def configure_logging(level: int = logging.INFO, to_stderr: bool = False) -> None:
    """Print the ``stforecast`` loggers' progress messages (one handler, however often called);
    ``to_stderr``: on stderr, so that a command's ``--json`` output alone is on stdout."""
    log = logging.getLogger("stforecast")
    handler = next((h for h in log.handlers if isinstance(h, _PrintHandler)), None)
    if handler is None:
        log.addHandler(_PrintHandler(to_stderr))
    else:
        handler.to_stderr = to_stderr
    log.setLevel(level)


#: Exit status when the reader of stdout goes away (``stforecast ... | head -1``): 128 + SIGPIPE,
#: what a shell reports for a tool that a closed pipe stops.
EXIT_BROKEN_PIPE = 141


def _quiet_stdout() -> int:
    """After a closed stdout (``| head -1``): the rest of the output goes to /dev/null, so the
    interpreter's final flush is silent; the status a shell reports for it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def state_dir() -> Path:
    """Where stforecast keeps its logs: ``$STFORECAST_STATE``, else ``$XDG_STATE_HOME/stforecast``,
    else ``~/.local/state/stforecast``."""
    if os.environ.get("STFORECAST_STATE"):
        return Path(os.environ["STFORECAST_STATE"])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "stforecast"


def write_error_log(exc: BaseException) -> Path | None:
    """The traceback of ``exc`` in a new file of ``state_dir()/logs`` (else the temp folder)."""
    import tempfile
    import time
    import traceback

    text = (f"stforecast {' '.join(sys.argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
            + "".join(traceback.format_exception(exc)))
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (state_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return None


def guarded(func, *args) -> int:
    """``func(*args)`` with every failure as ONE line on stderr: a user error (exit 2), an
    interrupt (130), anything else an internal error whose traceback goes to a log file (70); a
    closed stdout ends quietly (141)."""
    try:
        status = func(*args)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return status
    except BrokenPipeError:  # a closed stdout ends the command quietly
        return _quiet_stdout()
    except StforecastError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted (results, if any, are as they were before this command)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place every other error is reported
        log = write_error_log(exc)
        where = f"details in {log}" if log else "no log could be written"
        print(f"internal error: {one_line(f'{type(exc).__name__}: {exc}', 300)} "
              f"({where})", file=sys.stderr)
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    def run() -> int:
        args = build_parser().parse_args(argv)
        configure_logging(to_stderr=bool(getattr(args, "json", False)))
        return args.func(args)
    return guarded(run)


def entry() -> None:
    """The ``stforecast`` command: ``main`` on the command line, then ``leave`` with its status."""
    leave(main())


def leave(status: int) -> None:
    """End the process with ``status`` as the interpreter would, less its final teardown.

    After a fit, Python's teardown (a last garbage collection and the freeing of every module's
    objects: PyTensor's graphs, numba's and nutpie's state) took ~2 s of a run's wall time,
    measured. Here the output streams are flushed and the ``atexit`` handlers run (logging's
    flush, temporary folders, multiprocessing's clean-up), then the process ends at once
    (``os._exit``). When a thread other than daemons is still alive, the interpreter's own
    exit runs instead (it waits for such threads)."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(status)
    _flush()
    atexit._run_exitfuncs()
    _flush()
    os._exit(status)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a closed pipe: nothing more can be said
            pass


if __name__ == "__main__":  # pragma: no cover
    entry()
