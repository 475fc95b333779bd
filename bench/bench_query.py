"""Speed of a query on saved results, as a fresh process (must not import PyMC / PyTensor).

Run after `stforecast run`: .venv/bin/python bench/bench_query.py [RESULTS_DIR]
"""

import subprocess
import sys
import time
from pathlib import Path

QUERIES = ["P(target_price_hkd > 6.73)", "P(revenue[FY23] > 8825)",
           "P(revenue[FY23] < 6000 and cash[FY23] < 3000)", "quantile(target_price_hkd, 0.05)"]
CHECK = ("import sys, runpy; sys.argv = ['stforecast', 'query', {q!r}, '--results', {r!r}];"
         "from stforecast.cli import main; rc = main(sys.argv[1:]);"
         "heavy = [m for m in ('pymc', 'pytensor', 'arviz', 'xarray', 'scipy') if m in sys.modules];"
         "print('heavy modules imported:', heavy or 'none')")


def main():
    results = sys.argv[1] if len(sys.argv) > 1 else "results"
    exe = str(Path(sys.executable).with_name("stforecast"))
    for q in QUERIES:
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            out = subprocess.run([exe, "query", q, "--results", results], capture_output=True,
                                 text=True)
            walls.append(time.perf_counter() - t)
        print(f"{min(walls):.2f} s (best of 3)  {out.stdout.strip() or out.stderr.strip()}")
    out = subprocess.run([sys.executable, "-c", CHECK.format(q=QUERIES[0], r=results)],
                         capture_output=True, text=True)
    print(out.stdout.strip().splitlines()[-1])
    print("goal: < 1 s wall (0.5 s stretch)")


if __name__ == "__main__":
    main()
