"""Engine speed: 1,000,000 draws x 3 years of the report case through every identity.

Prints the wall time (best of 3) and the rate. Run: .venv/bin/python bench/bench_engine.py
"""

import time

import numpy as np
import xarray as xr

from stforecast.data import load_report
from stforecast.engine import run_engine

N = 1_000_000


def main():
    report = load_report()
    rng = np.random.default_rng(0)
    case = report.report_case
    # every yearly driver varies per draw (+-10%), so nothing is broadcast for free
    noise = xr.DataArray(1 + 0.1 * rng.standard_normal((N, 3)), dims=("draw", "year"),
                         coords={"year": case["year"].values})
    drivers = case.copy()
    for name in ("gross_margin", "rnd_ratio", "trade_receivable_days", "capex_ratio"):
        drivers[name] = case[name] * noise
    drivers["segment_revenue"] = case["segment_revenue"] * noise
    drivers["ev_sales_multiple"] = xr.DataArray(30 + 5 * rng.standard_normal(N), dims="draw")
    times = []
    for _ in range(3):
        t = time.perf_counter()
        out = run_engine(drivers, report.opening, report.market)
        out["target_price_hkd"].values  # force
        times.append(time.perf_counter() - t)
    best = min(times)
    print(f"engine: {N:,} draws x 3 years: best {best:.2f} s of {[round(t, 2) for t in times]} "
          f"({N * 3 / best / 1e6:.1f} M draw-years/s); goal < 2 s")


if __name__ == "__main__":
    main()
