"""Dask scale-out: ``calibrate`` on 1 vs 2 workers, ``sweep`` throughput at 100,000 paths, the
draws store, and prior settings' refits.

* calibrate: N SBC/recovery fits (default 100; 400 draws / 400 tune / 2 chains, as the command's
  defaults) on an embedded LocalCluster of 1 and of 2 workers. Each worker compiles the model
  once (timed apart, with ``client.run`` on every worker), then the N fits are timed: seconds
  per fit and the speed-up ratio 1 -> 2 workers (fits only, and in total with the compile).
* sweep: S settings (default 16) of a grid over the first shock's probability and severity on
  the posterior of a finished run, 100,000 paths each, 4 settings per task, on 1 and 2 workers:
  settings per second.
* store: the same kind of sweep (default 4 settings) on 2 workers (1 setting per task) writing every setting's draws of
  every variable a run stores (``run.stored_names``: the "full size" of the issue) into one zarr
  store: settings per second and MB per setting on disk.
* prior settings: K values of the pooled growth effect's prior sd (one shock setting each) on 2
  workers, every one a refit of the driver model with the run's fit settings: the seconds the
  first task of each worker spent compiling, and the sampling seconds per refit.

Prints absolute times and ratios, the load average and the other busy processes (the
machine's cores may be shared), and appends one line to ``bench/history_distributed.tsv``.

    PYTHONPATH=src .venv/bin/python bench/bench_distributed.py RESULTS [--fits N]
        [--settings S] [--store-settings S2] [--prior-settings K] [--skip PART ...]
"""

import argparse
import datetime
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

COLUMNS = ("date", "commit", "cores", "n_fits", "cal_compile_s", "cal_fits_1w_s",
           "cal_fits_2w_s", "cal_speedup_fits", "cal_speedup_total", "sweep_settings",
           "sweep_paths", "sweep_1w_settings_per_s", "sweep_2w_settings_per_s",
           "store_2w_settings_per_s", "store_mb_per_setting", "store_variables",
           "prior_settings", "prior_compile_s", "prior_refit_s", "load_1min")


def _warm(inputs):
    """Compile the model and the prior sampler on this worker (see distributed.refitter)."""
    from stforecast.distributed import prior_sampler, refitter
    _ = refitter(inputs).compiled
    prior_sampler(inputs)
    return True


def bench_calibrate(n_fits: int, workers: int, inputs, settings) -> dict:
    from stforecast.calibration_runs import calibration_fit
    from stforecast.distributed import client, map_tasks
    t0 = time.perf_counter()
    with client(n_workers=workers) as c:
        c.wait_for_workers(workers)
        t = time.perf_counter()
        c.run(_warm, inputs)
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        fits = [r for _, r in map_tasks(c, calibration_fit, range(n_fits),
                                        args=(inputs, settings), log=lambda m: None)]
        fits_s = time.perf_counter() - t
    total_s = time.perf_counter() - t0
    assert len(fits) == n_fits
    return {"compile_s": compile_s, "fits_s": fits_s, "total_s": total_s,
            "per_fit_s": fits_s / n_fits * workers}


def _shocks(saved):
    from stforecast.scenarios import load_scenarios
    with saved.input_files() as stored:
        return load_scenarios(stored["scenarios"], saved.company)


def _grid(shock: str, n_settings: int) -> tuple[list, list]:
    per_side = max(1, int(round(n_settings ** 0.5)))
    probs = [round(0.4 * i / max(per_side - 1, 1), 4) for i in range(per_side)]
    sevs = [round(0.5 + 1.5 * i / max(per_side - 1, 1), 4)
            for i in range(n_settings // per_side)]
    return probs, sevs


def bench_sweep(results: Path, n_settings: int, workers: int, store: bool = False) -> dict:
    from stforecast.distributed import client
    from stforecast.results import load_results
    from stforecast.run import stored_names
    from stforecast.sweep import base_from_results, load_sweep, run_sweep
    saved = load_results(results)
    scenarios = _shocks(saved)
    first = next(iter(scenarios.shocks))
    probs, sevs = _grid(first, n_settings)
    variables = stored_names(saved.company, scenarios) if store else None
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        path = Path(tmp) / "sweep.toml"
        head = f'[sweep]\npaths = 100000\n'
        if store:
            head += f'draws_store = "draws.zarr"\ndraws_variables = {json.dumps(variables)}\n'
        path.write_text(f'{head}[shocks.{first}]\nprobability = {probs}\nseverity = {sevs}\n')
        spec = load_sweep(path, scenarios.shocks)
        base = base_from_results(saved, spec)
        with client(n_workers=workers) as c:
            c.wait_for_workers(workers)
            t = time.perf_counter()
            rows = run_sweep(base, spec, Path(tmp) / "out", c, per_task=1 if store else 4,
                             log=lambda m: None, chart=False)
            wall = time.perf_counter() - t
        size = sum(f.stat().st_size for f in (Path(tmp) / "out" / "draws.zarr").rglob("*")
                   if f.is_file()) if store else 0
    return {"settings": len(rows), "paths": base.n_paths, "wall_s": wall,
            "settings_per_s": len(rows) / wall, "mb_per_setting": size / 1e6 / len(rows),
            "variables": len(variables or ())}


def bench_prior(results: Path, k: int, workers: int) -> dict:
    from stforecast.distributed import client
    from stforecast.results import load_results
    from stforecast.sweep import base_from_results, load_sweep, run_sweep
    saved = load_results(results)
    scenarios = _shocks(saved)
    base = base_from_results(saved)
    sd = base.priors.pooling["company_growth_effect"].params["sigma"]
    values = [round(sd * (0.5 + 1.5 * i / max(k - 1, 1)), 5) for i in range(k)]
    first = next(iter(scenarios.shocks))
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        path = Path(tmp) / "prior.toml"
        path.write_text(f'[sweep]\npaths = 100000\n[shocks.{first}]\nprobability = [0.1]\n'
                        f'[priors."pooling.company_growth_effect"]\nsigma = {values}\n')
        spec = load_sweep(path, scenarios.shocks, base.priors)
        base = base_from_results(saved, spec)
        with client(n_workers=workers) as c:
            c.wait_for_workers(workers)
            t = time.perf_counter()
            run_sweep(base, spec, Path(tmp) / "out", c, per_task=1, log=lambda m: None,
                      chart=False)
            wall = time.perf_counter() - t
        seconds = json.loads((Path(tmp) / "out" / "sweep.json").read_text())["refit_seconds"]
    compile_s = [s["compile"] for s in seconds.values() if s["compile"] > 1]
    return {"settings": k, "wall_s": wall, "fit": base.fit,
            "compile_s": max(compile_s) if compile_s else 0.0, "n_compiles": len(compile_s),
            "refit_s": sum(s["sampling"] for s in seconds.values()) / len(seconds)}


def machine_state() -> tuple[float, str]:
    """The 1-minute load average and the busiest other processes (``ps``)."""
    load = os.getloadavg()[0]
    ps = subprocess.run(["ps", "-eo", "pcpu,etime,args", "--sort=-pcpu"], capture_output=True,
                        text=True).stdout.splitlines()
    busy = [line[:140] for line in ps[1:] if line.split() and float(line.split()[0]) >= 20]
    return load, "\n".join(busy[:8])


def main():
    from stforecast.calibration_runs import CalibrationSettings
    from stforecast.company import load_company
    from stforecast.distributed import ModelInputs

    ap = argparse.ArgumentParser()
    ap.add_argument("results", help="a `stforecast run` results folder (its forecast.nc)")
    ap.add_argument("--fits", type=int, default=100)
    ap.add_argument("--settings", type=int, default=16)
    ap.add_argument("--store-settings", type=int, default=4,
                    help="settings of the draws-store sweep (every stored variable: slow)")
    ap.add_argument("--prior-settings", type=int, default=4)
    ap.add_argument("--skip", nargs="*", default=[], choices=["calibrate", "sweep", "store",
                                                              "prior"])
    args = ap.parse_args()
    results = Path(args.results)
    load, busy = machine_state()
    print(f"cores: {os.cpu_count()}; load average (1 min) at start {load:.2f}; busy processes:"
          f"\n{busy or '(none above 20% CPU)'}")
    row = {c: "" for c in COLUMNS}
    row.update(date=datetime.date.today().isoformat(), cores=os.cpu_count(),
               load_1min=round(load, 2))
    if "calibrate" not in args.skip:
        inputs = ModelInputs.from_company(load_company())
        settings = CalibrationSettings()
        print(f"calibrate: {args.fits} fits x ({settings.chains} chains x {settings.draws} "
              f"draws, {settings.tune} tune) of {inputs.key}")
        cal = {w: bench_calibrate(args.fits, w, inputs, settings) for w in (1, 2)}
        for w, r in cal.items():
            print(f"calibrate, {w} worker(s): compile {r['compile_s']:.1f} s (per worker, in "
                  f"parallel), {args.fits} fits {r['fits_s']:.1f} s ({r['per_fit_s']:.2f} s per "
                  f"fit per worker), total {r['total_s']:.1f} s", flush=True)
        fit_ratio = cal[1]["fits_s"] / cal[2]["fits_s"]
        total_ratio = cal[1]["total_s"] / cal[2]["total_s"]
        print(f"calibrate speed-up 1 -> 2 workers: fits {fit_ratio:.2f}x, total "
              f"{total_ratio:.2f}x", flush=True)
        row.update(n_fits=args.fits, cal_compile_s=round(cal[2]["compile_s"], 1),
                   cal_fits_1w_s=round(cal[1]["fits_s"], 1),
                   cal_fits_2w_s=round(cal[2]["fits_s"], 1),
                   cal_speedup_fits=round(fit_ratio, 2), cal_speedup_total=round(total_ratio, 2))
    if "sweep" not in args.skip:
        sw = {w: bench_sweep(results, args.settings, w) for w in (1, 2)}
        for w, r in sw.items():
            print(f"sweep, {w} worker(s): {r['settings']} settings x {r['paths']:,} paths in "
                  f"{r['wall_s']:.1f} s = {r['settings_per_s']:.3f} settings/s", flush=True)
        print(f"sweep speed-up 1 -> 2 workers: "
              f"{sw[2]['settings_per_s'] / sw[1]['settings_per_s']:.2f}x")
        row.update(sweep_settings=sw[2]["settings"], sweep_paths=sw[2]["paths"],
                   sweep_1w_settings_per_s=round(sw[1]["settings_per_s"], 3),
                   sweep_2w_settings_per_s=round(sw[2]["settings_per_s"], 3))
    if "store" not in args.skip:
        st = bench_sweep(results, args.store_settings, 2, store=True)
        print(f"sweep with a draws store, 2 workers: {st['settings']} settings x "
              f"{st['paths']:,} paths x {st['variables']} variables in {st['wall_s']:.1f} s = "
              f"{st['settings_per_s']:.3f} settings/s; {st['mb_per_setting']:.1f} MB per "
              f"setting on disk", flush=True)
        row.update(store_2w_settings_per_s=round(st["settings_per_s"], 3),
                   store_mb_per_setting=round(st["mb_per_setting"], 1),
                   store_variables=st["variables"])
    if "prior" not in args.skip:
        pr = bench_prior(results, args.prior_settings, 2)
        fs = pr["fit"]
        print(f"prior settings, 2 workers: {pr['settings']} refits ({fs.chains} chains x "
              f"{fs.draws} draws, {fs.tune} tune) + 100,000 paths each in {pr['wall_s']:.1f} s; "
              f"{pr['n_compiles']} compilation(s), the longest {pr['compile_s']:.1f} s; "
              f"sampling {pr['refit_s']:.1f} s per refit", flush=True)
        row.update(prior_settings=pr["settings"], prior_compile_s=round(pr["compile_s"], 1),
                   prior_refit_s=round(pr["refit_s"], 1))
    load, busy = machine_state()
    print(f"load average (1 min) at the end {load:.2f}; busy processes:\n{busy or '(none)'}")
    row["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True, cwd=Path(__file__).parent).stdout.strip()
    history = Path(__file__).parent / "history_distributed.tsv"
    text = history.read_text() if history.exists() else ""
    lines = text.splitlines()
    if not lines:
        lines = ["\t".join(COLUMNS)]
    elif lines[0].split("\t") != list(COLUMNS):  # columns added later: old rows keep theirs
        lines[0] = "\t".join(COLUMNS)
    lines.append("\t".join(str(row[c]) for c in COLUMNS))
    history.write_text("\n".join(lines) + "\n")
    print(f"appended to {history}")


if __name__ == "__main__":
    main()
