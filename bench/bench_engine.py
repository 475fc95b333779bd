"""Engine speed: 1,000,000 draws x the forecast years of the report case through every identity.

Prints the wall time (best of 3) and the rate.
Run: .venv/bin/python bench/bench_engine.py [COMPANY]   (default: the default shipped company)
"""

import sys
import time

import numpy as np
import xarray as xr

from stforecast.company import load_company
from stforecast.engine import run_engine

N = 1_000_000


def main():
    company = load_company(sys.argv[1] if len(sys.argv) > 1 else None)
    rng = np.random.default_rng(0)
    case = company.report_case
    n_years = case.sizes["year"]
    # every yearly driver varies per draw (+-10%), so nothing is broadcast for free
    noise = xr.DataArray(1 + 0.1 * rng.standard_normal((N, n_years)), dims=("draw", "year"),
                         coords={"year": case["year"].values})
    drivers = case.copy()
    for name in ("gross_margin", "rnd_ratio", "trade_receivable_days", "capex_ratio"):
        drivers[name] = case[name] * noise
    drivers["segment_revenue"] = case["segment_revenue"] * noise
    drivers["ev_sales_multiple"] = xr.DataArray(30 + 5 * rng.standard_normal(N), dims="draw")
    times = []
    for _ in range(3):
        t = time.perf_counter()
        out = run_engine(drivers, company.opening, company.market)
        out["target_price"].values  # force
        times.append(time.perf_counter() - t)
    best = min(times)
    print(f"engine ({company.key}): {N:,} draws x {n_years} years: best {best:.2f} s of "
          f"{[round(t, 2) for t in times]} ({N * n_years / best / 1e6:.1f} M draw-years/s); "
          f"goal < 2 s")


if __name__ == "__main__":
    main()
