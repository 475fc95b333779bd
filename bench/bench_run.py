"""Speed of ``stforecast run`` as a user meets it (issue 13), process wall time of the real
command line, each in a fresh Python process:

* ``cold``: a first run with empty caches: a fresh PyTensor ``base_compiledir`` (which also
  moves PyTensor's numba cache; ``compiledir=`` alone does not) and an empty fit cache;
* ``cache_hit``: the same command again (the results folder is up to date: nothing is fitted,
  simulated or written);
* ``fit_cache_hit``: the same inputs into a new folder (driver and peer fits read from the fit
  cache; simulated, written and drawn again; not in the history file);
* ``prior_change``: one prior's value changed (a copy of the priors file): the driver model is
  fitted again (PyTensor's cache now warm), the peer regression read from the cache;
* ``sim_prior_change``: a prior only the simulation reads changed (the outside view's weight):
  both fits are read from the cache, the forecast simulated, written and drawn again;
* ``scenarios``: ``stforecast scenarios --scenarios FILE`` (re-simulation on the saved posterior);
* ``query``: ``stforecast query`` on the saved results.

Each run prints its breakdown (seconds per stage, from the run's ``Summary.timings_s``, plus
the import time); ``--json`` prints one JSON object; every invocation appends one line to
``bench/history_run.tsv`` so that regressions show, and each figure is printed with its ratio
to that file's last line (``x0.70 of 33.7 s``).

Run: .venv/bin/python bench/bench_run.py [--json] [--paths N] [--no-history]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
HISTORY = HERE / "history_run.tsv"
#: ``peers``: the peer fit's own seconds; beside a driver compile (a second process) they
#: overlap the driver's, and ``peers_wait`` is what the run waited for it afterwards.
STAGES = ("import", "up_to_date", "fit_cache", "peers_cache", "prior", "compile", "sampling",
          "peers", "peers_wait", "predictive", "summaries", "write", "report")

#: The command line in this process, with the run's timings written to $BENCH_TIMINGS.
CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import stforecast.cli as cli
timings = {}
if sys.argv[1] == "run":  # other commands must not pay for importing the run (PyMC)
    cli._without_unused_packages(("dask",))  # as cmd_run does, before this imports the run
    import stforecast.run as run
    original = run.run_forecast
    def run_forecast(*args, **kwargs):
        summary = original(*args, **kwargs)
        timings.update(summary.timings_s)
        return summary
    run.run_forecast = run_forecast
timings["import"] = round(time.perf_counter() - t0, 2)
code = cli.main(sys.argv[1:])
timings["in_process"] = round(time.perf_counter() - t0, 2)
with open(os.environ["BENCH_TIMINGS"], "w") as fh:
    json.dump(timings, fh)
cli.leave(code)  # as the stforecast command ends (cli.entry)
"""


def command(args: list[str], env: dict) -> dict:
    """Run ``stforecast ARGS`` in a fresh process; its wall time and the run's timings."""
    with tempfile.NamedTemporaryFile(suffix=".json") as tf:
        env = dict(env, BENCH_TIMINGS=tf.name)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, *args], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode not in (0, 3):  # 3: results written, the bar missed
            sys.exit(f"stforecast {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        text = Path(tf.name).read_text()
        timings = json.loads(text) if text else {}
    return {"process_wall": round(wall, 2), "timings": timings}


def changed_prior(priors: Path, out: Path) -> str:
    """A copy of ``priors`` with the first ``sigma = x`` scaled by 1.1; returns what changed."""
    text = priors.read_text()
    m = re.search(r"sigma\s*=\s*([0-9.]+)", text)
    new = f"{float(m.group(1)) * 1.1:.6g}"
    out.write_text(text[:m.start(1)] + new + text[m.end(1):])
    line = text.count("\n", 0, m.start()) + 1
    return f"{priors.name} line {line}: sigma {m.group(1)} -> {new}"


def changed_simulation_prior(priors: Path, out: Path) -> str | None:
    """A copy of ``priors`` with the ``[outside_view]`` weight lowered by 0.05 (a prior the driver
    model does not read); None when the file has no such weight."""
    text = priors.read_text()
    section = re.search(r"^\[outside_view\]\s*$", text, re.M)
    m = section and re.compile(r"^weight\s*=\s*([0-9.]+)", re.M).search(text, section.end())
    if not m:
        return None
    new = f"{float(m.group(1)) - 0.05:.6g}"
    out.write_text(text[:m.start(1)] + new + text[m.end(1):])
    line = text.count("\n", 0, m.start()) + 1
    return f"{priors.name} line {line}: outside-view weight {m.group(1)} -> {new}"


def size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6, 1)


#: The history file's column of each figure that has one (the ratio is printed against it).
HISTORY_COLUMNS = {"cold": "cold_s", "cache_hit": "cache_hit_s", "prior_change": "prior_change_s",
                   "sim_prior_change": "sim_prior_change_s", "scenarios": "scenarios_s",
                   "query": "query_s"}


def last_history() -> tuple[str, dict[str, float]]:
    """The commit and the figures of the history file's last line ("", {} without one)."""
    lines = HISTORY.read_text().splitlines() if HISTORY.exists() else []
    if len(lines) < 2:
        return "", {}
    header, last = lines[0].split("\t"), lines[-1].split("\t")
    figures = {}
    for name, value in zip(header, last):
        try:
            figures[name] = float(value)
        except ValueError:
            continue
    return dict(zip(header, last)).get("commit", ""), figures


def line(name: str, r: dict, before: dict[str, float] | None = None) -> str:
    t = r["timings"]
    parts = ", ".join(f"{k} {t[k]:.1f}" for k in STAGES if k in t)
    old = (before or {}).get(HISTORY_COLUMNS.get(name, ""))
    ratio = f"  x{r['process_wall'] / old:.2f} of {old:.1f} s" if old else ""
    return (f"{name:>13}: {r['process_wall']:6.1f} s{ratio}"
            + (f"  ({parts})" if parts else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--company", default=None)
    ap.add_argument("--no-history", action="store_true", help=f"do not append to {HISTORY.name}")
    args = ap.parse_args()

    from stforecast.company import load_company
    company = load_company(args.company)
    work = Path(tempfile.mkdtemp(prefix="bench-run-"))
    try:
        env = dict(os.environ, PYTENSOR_FLAGS=f"base_compiledir={work / 'pytensor'}",
                   STFORECAST_CACHE=str(work / "fit-cache"), MPLBACKEND="Agg")
        base = ["run", "--company", company.key, "--paths", str(args.paths), "--no-progress"]
        res = work / "results"
        out = {"company": company.key, "paths": args.paths}
        out["cold"] = command(base + ["--out", str(res)], env)
        out["cache_hit"] = command(base + ["--out", str(res)], env)
        out["stored_mb"] = size_mb(res)
        out["fit_cache_hit"] = command(base + ["--out", str(work / "res-new")], env)
        priors = work / "priors.toml"
        out["prior_changed"] = changed_prior(company.priors_path, priors)
        out["prior_change"] = command(base + ["--out", str(work / "res2"), "--priors",
                                              str(priors)], env)
        sim_priors = work / "priors-simulation.toml"
        out["sim_prior_changed"] = changed_simulation_prior(company.priors_path, sim_priors)
        if out["sim_prior_changed"]:
            out["sim_prior_change"] = command(base + ["--out", str(work / "res3"), "--priors",
                                                      str(sim_priors)], env)
        out["scenarios"] = command(["scenarios", "--results", str(res), "--scenarios",
                                    str(company.scenarios_path)], env)
        final = company.last_forecast_year
        out["query"] = command(["query", f"P(revenue[{final}] > 0)", "--results", str(res)], env)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(out, indent=1))
    else:
        commit, before = last_history()
        print(f"stforecast run, {company.key}, {args.paths:,} paths; process wall time"
              + (f"; xR = ratio to {HISTORY.name}'s last line ({commit})" if before else ""))
        for name in ("cold", "cache_hit", "fit_cache_hit", "prior_change", "sim_prior_change",
                     "scenarios", "query"):
            if name in out:
                print(line(name, out[name], before))
        print(f"{'':>13}  prior changed: {out['prior_changed']}")
        if out["sim_prior_changed"]:
            print(f"{'':>13}  simulation prior changed: {out['sim_prior_changed']}")
        print(f"{'stored':>13}: {out['stored_mb']} MB (results folder)")
    if not args.no_history:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                                capture_output=True, text=True).stdout.strip()
        cols = ["date", "commit", "cores", "paths", "cold_s", "cache_hit_s", "prior_change_s",
                "scenarios_s", "query_s", "stored_mb", "sim_prior_change_s"]
        sim = out.get("sim_prior_change", {}).get("process_wall", "")
        row = [datetime.date.today().isoformat(), commit, str(os.cpu_count()), str(args.paths),
               *(str(out[k]["process_wall"]) for k in ("cold", "cache_hit", "prior_change",
                                                        "scenarios", "query")),
               str(out["stored_mb"]), str(sim)]
        lines = HISTORY.read_text().splitlines() if HISTORY.exists() else []
        header = "\t".join(cols)
        # a column added later: the header names it, older rows simply lack it
        HISTORY.write_text("\n".join([header, *lines[1:], "\t".join(row)]) + "\n")


if __name__ == "__main__":
    main()
