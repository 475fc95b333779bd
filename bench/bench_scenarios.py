"""Re-simulating user-defined shock settings on saved results, without a refit.

50 settings (US-restriction probability and severity on a grid, a public-sector squeeze forced or
not, ...) on the posterior of a finished run, 100,000 paths each: driver paths, shock draws, the
shock layer, the valuation multiple (the priors file's method, peer regression by default),
the engine, and P(target price > 6.73) per setting. Prints absolute times; the goal is < 10 s.

Run after `stforecast run`: .venv/bin/python bench/bench_scenarios.py [RESULTS_DIR] [N_SETTINGS]
"""

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr


def main():
    t0 = time.perf_counter()
    from stforecast.data import load_report
    from stforecast.model import observations_from_report
    from stforecast.shocks import Scenario, load_scenarios, parse_setting, default_scenarios_path
    from stforecast.simulate import SAMPLE_DIMS, driver_paths, simulate_scenarios
    from stforecast.shocks import draw_shocks
    from stforecast.summary import p_exceeds
    from stforecast.multiples import Valuation, relation_from_fit
    from stforecast.peers import load_peers
    from stforecast.priors import load_priors
    t_import = time.perf_counter() - t0

    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    n_settings = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    report = load_report()
    obs = observations_from_report(report)
    years = report.forecast_years
    spec = load_scenarios(default_scenarios_path(Path("priors") / "sensetime.toml"), years)
    posterior = xr.open_dataset(results / "forecast.nc", group="posterior",
                                engine="h5netcdf").load()

    settings = {}
    for i in range(n_settings):
        probability = round(i / max(1, n_settings - 1), 3)
        severity = round(0.5 + (i % 5) * 0.25, 2)
        squeeze = "FY22" if i % 2 else "prior"
        entries = {"us_restrictions": {"probability": probability, "severity": severity},
                   "public_sector_squeeze": squeeze}
        settings[f"user-{i:02d}"] = Scenario(f"user-{i:02d}", "bench", {
            name: parse_setting("bench", name, entries.get(name, "prior"), years)
            for name in spec.shocks})
    user = spec.with_scenarios(settings)
    priors = load_priors(Path("priors") / "sensetime.toml")
    peer_post = xr.open_dataset(results / "forecast.nc", group="peer_posterior",
                                engine="h5netcdf").load()
    valuation = Valuation(priors.valuation_method, relation_from_fit(
        peer_post, priors.valuation["peer_premium"], 1, load_peers()))

    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    per_draw = math.ceil(100_000 / n_draws)
    rng = np.random.default_rng(1)
    t = time.perf_counter()
    drivers = driver_paths(posterior, report, obs, per_draw, rng)
    t_drivers = time.perf_counter() - t
    t = time.perf_counter()
    draws = draw_shocks(user, tuple(drivers.sizes[d] for d in SAMPLE_DIMS), len(years), rng)
    t_draws = time.perf_counter() - t
    t = time.perf_counter()
    out = simulate_scenarios(drivers, report, user, draws,
                             keep=["revenue", "cash", "cash_burn_fy21_fy23", "target_price_hkd"],
                             valuation=valuation)
    p = [p_exceeds(out["target_price_hkd"].isel(scenario=i), 6.73)["value"]
         for i in range(out.sizes["scenario"])]
    t_scen = time.perf_counter() - t
    total = t_drivers + t_draws + t_scen
    n_paths = per_draw * n_draws
    print(f"{n_settings} shock settings x {n_paths:,} paths on {os.cpu_count()} cores, "
          f"valuation method {valuation.method}")
    print(f"  import {t_import:.2f} s (not counted), driver paths {t_drivers:.2f} s, "
          f"shock draws {t_draws:.2f} s, scenarios + engine + P(upside) {t_scen:.2f} s "
          f"({t_scen / n_settings * 1000:.0f} ms per setting)")
    print(f"  total {total:.2f} s (goal < 10 s)")
    print(f"  P(TP > 6.73) from {p[0]:.3f} (setting 0) to {p[-1]:.3f} (setting {n_settings - 1})")


if __name__ == "__main__":
    main()
