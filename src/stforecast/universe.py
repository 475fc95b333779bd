"""``stforecast run-many COMPANY...``: one forecast per company as a task, and a universe table.

Each task runs ``run.run_forecast`` for one company (its inputs shipped as text, see
``distributed.ModelInputs``) into ``<out>/<company key>/``; ``run_forecast`` builds the folder
beside its target and moves it into place only when complete, so a task's output is committed
atomically. A resumed run-many skips every company whose folder already holds a summary of the
same input files, seed and settings. Every company uses the same seed (the run's): a company's
results are the same as those of ``stforecast run`` for it alone, whatever else is in the list.
The output folder must be one the workers can write (a shared file system on a cluster).

``universe_row`` reads one company's ``summary.json``: P(upside) +- MCSE, revenue in its final
forecast year and target-price quantiles, and whether its diagnostics pass the bar (``ok``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .distributed import ModelInputs, atomic_write_text, map_tasks
from .errors import StforecastError
from .registry import SUMMARY_FILE

COLUMNS = ("company", "ticker", "price", "price_currency", "p_upside", "p_upside_mcse",
           "revenue_year", "revenue_q05", "revenue_q50", "revenue_q95", "currency",
           "target_price_q05", "target_price_q50", "target_price_q95", "ok")


def universe_row(summary: dict) -> dict:
    """One company's row of the universe table from its ``summary.json`` (a dict)."""
    c = summary["company"]
    year = summary["periods"]["revenue_final"]
    revenue, tp = summary["revenue"][year], summary["target_price"]
    return {"company": c["key"], "ticker": c["ticker"], "price": c["price"],
            "price_currency": c["price_currency"], "p_upside": summary["p_upside"]["value"],
            "p_upside_mcse": summary["p_upside"]["mcse"], "revenue_year": year,
            "revenue_q05": revenue["q05"], "revenue_q50": revenue["q50"],
            "revenue_q95": revenue["q95"], "currency": c["currency"],
            "target_price_q05": tp["q05"], "target_price_q50": tp["q50"],
            "target_price_q95": tp["q95"], "ok": bool(summary["ok"])}


def _finished(folder: Path, inputs: ModelInputs, settings) -> dict | None:
    """The summary in ``folder`` when it is a run of these inputs and settings, else None."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    same = (summary.get("seed") == settings.seed
            and summary.get("settings") == {"paths": settings.paths, **asdict(settings.fit)}
            and summary.get("company", {}).get("files") == _input_hashes(inputs.company()))
    return summary if same else None


def _input_hashes(company) -> dict[str, str]:
    """What a run of ``company`` records of its input files: the company's files and, when its
    priors have an outside view, the base-rates file they read."""
    import hashlib

    from .priors import load_priors
    hashes = company.file_hashes()
    try:
        ov = load_priors(company.priors_path, company.growth_drivers()).outside_view
    except StforecastError:
        return hashes  # the run will say what is wrong
    if ov is not None and Path(ov.base_rates).is_file():
        hashes["base_rates"] = hashlib.sha256(Path(ov.base_rates).read_bytes()).hexdigest()
    return hashes


def forecast_company(inputs: ModelInputs, out: str, settings) -> dict:
    """Run the forecast of one company into ``<out>/<key>`` (skipped when already there);
    returns its universe row."""
    from .run import run_forecast
    folder = Path(out) / inputs.key
    summary = _finished(folder, inputs, settings)
    if summary is None:
        import dask
        # On a Dask worker xarray would guard every netCDF write (the fit cache's in-memory
        # ones too) with a cluster-wide lock named after the target, which fails for an
        # in-memory file ("Semaphore or Lock ... not known"): the run's writes are this
        # task's own, so a local lock is the right one.
        with dask.config.set(scheduler="synchronous"):
            run_forecast(folder, inputs.company(), settings)
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    return universe_row(summary)


def run_many(companies: list, out: Path, settings, dask_client=None, log=None,
             on_result=None) -> list[dict]:
    """Forecast every company (``Company`` objects) into ``out/<key>``; write
    ``out/universe.csv`` and ``out/universe.json``; return the rows in the given order.
    ``on_result(done, total)`` is called as each task finishes (``distributed.map_tasks``)."""
    out = Path(out)
    inputs = [ModelInputs.from_company(c) for c in companies]
    keys = [i.key for i in inputs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"run-many: company '{dup}' given twice (results go to {out}/{dup})")
    rows: dict[int, dict] = {}
    pending = []
    for i, one in enumerate(inputs):
        summary = _finished(out / one.key, one, settings)
        if summary is not None:
            rows[i] = universe_row(summary)
        else:
            pending.append(i)
    if log is not None and rows:
        log(f"resuming: {len(rows)} of {len(inputs)} companies already done")
    for j, row in map_tasks(dask_client, forecast_company, [inputs[i] for i in pending],
                            args=(str(out.resolve()), settings), label="companies", log=log,
                            on_result=on_result):
        rows[pending[j]] = row
    ordered = [rows[i] for i in range(len(inputs))]
    atomic_write_text(out / "universe.json", json.dumps(ordered, indent=1) + "\n")
    atomic_write_text(out / "universe.csv", "\n".join(
        [",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in ordered]) + "\n")
    return ordered


def universe_table(rows: list[dict]) -> str:
    """One line per company, best odds first."""
    lines = [f"{'company':<14}{'P(upside)':>17}{'revenue q50 (year)':>26}{'TP q05':>10}"
             f"{'TP q50':>10}{'TP q95':>10}{'price':>9}  ok"]
    for r in sorted(rows, key=lambda r: -r["p_upside"]):
        lines.append(f"{r['company']:<14}{r['p_upside']:>10.3f} ± {r['p_upside_mcse']:.3f}"
                     f"{r['revenue_q50']:>14,.0f} {r['currency']} ({r['revenue_year']})"
                     f"{r['target_price_q05']:>10.2f}{r['target_price_q50']:>10.2f}"
                     f"{r['target_price_q95']:>10.2f}{r['price']:>9.2f}  "
                     f"{'yes' if r['ok'] else 'NO'}")
    return "\n".join(lines)
