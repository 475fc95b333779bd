"""Re-simulating user-defined shock settings on saved results, without a refit.

50 settings (the first shock's probability and severity on a grid, the second shock forced in the
second forecast year or not, ...) on the posterior of a finished run, 100,000 paths each: driver
paths, shock draws, the shock layer, the valuation multiple (the run's priors: peer regression by
default), the engine, and P(target price > price) per setting. Everything (company, priors,
scenarios, peers) comes from the results folder. Prints absolute times; the goal is < 10 s.

Then the command end to end, as a user runs it: `stforecast scenarios --scenarios FILE` on the
same folder with the company's scenarios file (a fresh process each time: imports, loading the
results, re-simulating every scenario at the run's paths, the table), in a cache folder of its
own: once with the cache empty (the driver paths drawn and stored, as after a run whose cache
was emptied), then CLI_REPEATS times with the paths in the cache (as after `stforecast run`,
which keeps them: ``stored_paths``), best and median process wall time (the goal is <= 2 s for
the default run on 2 cores).

Run after `stforecast run`: .venv/bin/python bench/bench_scenarios.py [RESULTS_DIR] [N_SETTINGS]
(default results/<default company>)
"""

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Fresh processes timed for the command's end-to-end figure.
CLI_REPEATS = 9

import numpy as np


def main():
    t0 = time.perf_counter()
    from stforecast.model import observations_from_company
    from stforecast.multiples import Valuation, relation_from_fit
    from stforecast.peers import load_peers
    from stforecast.priors import load_priors
    from stforecast.registry import SAMPLE_DIMS
    from stforecast.results import load_results
    from stforecast.scenarios import Scenario, load_scenarios, parse_setting
    from stforecast.shocks import draw_shocks
    from stforecast.simulate import driver_paths, simulate_scenarios
    from stforecast.summary import p_exceeds
    t_import = time.perf_counter() - t0

    if len(sys.argv) > 1:
        folder = Path(sys.argv[1])
    else:
        from stforecast.company import default_company
        folder = Path("results") / default_company()
    n_settings = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    results = load_results(folder)
    company = results.company
    obs = observations_from_company(company)
    years = list(company.forecast_years)
    with results.input_files() as stored:
        spec = load_scenarios(stored["scenarios"], company)
        priors = load_priors(stored["priors"], company.growth_drivers())
        peers = load_peers(stored["peers"])
    posterior = results.draws("posterior").load().astype("float64")
    first, second = list(spec.shocks)[:2]

    settings = {}
    for i in range(n_settings):
        probability = round(i / max(1, n_settings - 1), 3)
        severity = round(0.5 + (i % 5) * 0.25, 2)
        forced = years[1] if i % 2 else "prior"
        entries = {first: {"probability": probability, "severity": severity}, second: forced}
        settings[f"user-{i:02d}"] = Scenario(f"user-{i:02d}", "bench", {
            name: parse_setting("bench", name, entries.get(name, "prior"), years)
            for name in spec.shocks})
    user = spec.with_scenarios(settings)
    valuation = Valuation(priors.valuation_method, relation_from_fit(
        results.draws("peer_posterior").load(), priors.valuation["peer_premium"], 1, peers))

    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    per_draw = math.ceil(100_000 / n_draws)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    drivers = driver_paths(posterior, company, obs, per_draw, rng, priors.ceilings())
    t_drivers = time.perf_counter() - t
    t = time.perf_counter()
    draws = draw_shocks(user, tuple(drivers.sizes[d] for d in SAMPLE_DIMS), len(years), rng)
    t_draws = time.perf_counter() - t
    t = time.perf_counter()
    out = simulate_scenarios(drivers, company, user, draws,
                             keep=["revenue", "cash", "cash_burn", "target_price"],
                             valuation=valuation)
    price = company.market.price
    p = [p_exceeds(out["target_price"].isel(scenario=i), price).value
         for i in range(out.sizes["scenario"])]
    t_scen = time.perf_counter() - t
    total = t_drivers + t_draws + t_scen
    n_paths = per_draw * n_draws
    print(f"{company.key}: {n_settings} shock settings x {n_paths:,} paths on {os.cpu_count()} "
          f"cores, valuation method {valuation.method}")
    print(f"  import {t_import:.2f} s (not counted), driver paths {t_drivers:.2f} s, "
          f"shock draws {t_draws:.2f} s, scenarios + engine + P(upside) {t_scen:.2f} s "
          f"({t_scen / n_settings * 1000:.0f} ms per setting)")
    print(f"  total {total:.2f} s (goal < 10 s)")
    print(f"  P(TP > {price:g}) from {p[0]:.3f} (setting 0) to {p[-1]:.3f} "
          f"(setting {n_settings - 1})")
    with tempfile.TemporaryDirectory(prefix="bench-scenarios-cache-") as cache:
        first, *walls = command_times(folder, company.scenarios_path, 1 + CLI_REPEATS, cache)
    print(f"stforecast scenarios --scenarios {company.scenarios_path.name} (every scenario, "
          f"{results.summary.settings.paths:,} paths), process wall time:")
    print(f"  driver paths drawn and stored (empty cache): {first:.2f} s")
    print(f"  driver paths read from the cache: best {min(walls):.2f} s, median "
          f"{statistics.median(walls):.2f} s of {len(walls)} processes (goal <= 2 s)")


def command_times(folder: Path, scenarios: Path, repeats: int, cache: str) -> list[float]:
    """Process wall times of ``stforecast scenarios --scenarios`` on ``folder``, one fresh
    process each, with ``cache`` as the cache folder (output discarded; a failure stops the
    benchmark)."""
    argv = [sys.executable, "-m", "stforecast.cli", "scenarios", "--results", str(folder),
            "--scenarios", str(scenarios)]
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env=dict(os.environ, STFORECAST_CACHE=cache))
        walls.append(time.perf_counter() - t)
    return walls


if __name__ == "__main__":
    main()
