"""Dask scale-out: ``calibrate`` on 1 vs 2 workers, and ``sweep`` throughput at 100,000 paths.

* calibrate: N SBC/recovery fits (default 100; 400 draws / 400 tune / 2 chains, as the command's
  defaults) on an embedded LocalCluster of 1 and of 2 workers. Each worker compiles the model
  once (timed apart, with ``client.run`` on every worker), then the N fits are timed: seconds
  per fit and the speed-up ratio 1 -> 2 workers (fits only, and in total with the compile).
* sweep: S settings (default 16) of a grid over the first shock's probability and severity on
  the posterior of a finished run, 100,000 paths each, 4 settings per task, on 1 and 2 workers:
  settings per second.

Prints absolute times and ratios and appends one line to ``bench/history_distributed.tsv``.
The machine's cores may be shared with other work: say so beside the figures.

    PYTHONPATH=src .venv/bin/python bench/bench_distributed.py [RESULTS] [N_FITS] [N_SETTINGS]
"""

import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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


def bench_sweep(results: Path, n_settings: int, workers: int) -> dict:
    from stforecast.distributed import client
    from stforecast.results import load_results
    from stforecast.scenarios import load_scenarios
    from stforecast.sweep import base_from_results, load_sweep, run_sweep
    saved = load_results(results)
    with saved.input_files() as stored:
        shocks = load_scenarios(stored["scenarios"], saved.company).shocks
    first = next(iter(shocks))
    per_side = max(1, int(round(n_settings ** 0.5)))
    probs = [round(0.4 * i / max(per_side - 1, 1), 4) for i in range(per_side)]
    sevs = [round(0.5 + 1.5 * i / max(per_side - 1, 1), 4) for i in range(n_settings // per_side)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.toml"
        path.write_text(f'[sweep]\npaths = 100000\n[shocks.{first}]\nprobability = {probs}\n'
                        f'severity = {sevs}\n')
        spec = load_sweep(path, shocks)
        base = base_from_results(saved, spec)
        with client(n_workers=workers) as c:
            c.wait_for_workers(workers)
            t = time.perf_counter()
            rows = run_sweep(base, spec, Path(tmp) / "out", c, per_task=4, log=lambda m: None)
            wall = time.perf_counter() - t
    return {"settings": len(rows), "paths": base.n_paths, "wall_s": wall,
            "settings_per_s": len(rows) / wall}


def main():
    from stforecast.calibration_runs import CalibrationSettings
    from stforecast.company import load_company
    from stforecast.distributed import ModelInputs

    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    n_fits = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    n_settings = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    inputs = ModelInputs.from_company(load_company())
    settings = CalibrationSettings()
    print(f"cores: {os.cpu_count()} (shared with anything else running); calibrate: {n_fits} "
          f"fits x ({settings.chains} chains x {settings.draws} draws, {settings.tune} tune)")
    cal = {w: bench_calibrate(n_fits, w, inputs, settings) for w in (1, 2)}
    for w, r in cal.items():
        print(f"calibrate, {w} worker(s): compile {r['compile_s']:.1f} s (per worker, in "
              f"parallel), {n_fits} fits {r['fits_s']:.1f} s ({r['per_fit_s']:.2f} s per fit per "
              f"worker), total {r['total_s']:.1f} s")
    fit_ratio = cal[1]["fits_s"] / cal[2]["fits_s"]
    total_ratio = cal[1]["total_s"] / cal[2]["total_s"]
    print(f"calibrate speed-up 1 -> 2 workers: fits {fit_ratio:.2f}x, total {total_ratio:.2f}x")
    sw = {w: bench_sweep(results, n_settings, w) for w in (1, 2)}
    for w, r in sw.items():
        print(f"sweep, {w} worker(s): {r['settings']} settings x {r['paths']:,} paths in "
              f"{r['wall_s']:.1f} s = {r['settings_per_s']:.2f} settings/s")
    sweep_ratio = sw[2]["settings_per_s"] / sw[1]["settings_per_s"]
    print(f"sweep speed-up 1 -> 2 workers: {sweep_ratio:.2f}x")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    history = Path(__file__).parent / "history_distributed.tsv"
    if not history.exists():
        history.write_text("date\tcommit\tcores\tn_fits\tcal_compile_s\tcal_fits_1w_s\t"
                           "cal_fits_2w_s\tcal_speedup_fits\tcal_speedup_total\tsweep_settings\t"
                           "sweep_paths\tsweep_1w_settings_per_s\tsweep_2w_settings_per_s\n")
    with history.open("a") as f:
        f.write("\t".join(str(x) for x in (
            datetime.date.today().isoformat(), commit, os.cpu_count(), n_fits,
            round(cal[2]["compile_s"], 1), round(cal[1]["fits_s"], 1), round(cal[2]["fits_s"], 1),
            round(fit_ratio, 2), round(total_ratio, 2), sw[2]["settings"], sw[2]["paths"],
            round(sw[1]["settings_per_s"], 3), round(sw[2]["settings_per_s"], 3))) + "\n")
    print(f"appended to {history}")


if __name__ == "__main__":
    main()
