"""Speed of a query on saved results, as a fresh process (must not import PyMC / PyTensor /
ArviZ, nor xarray), and the modules it loads.

Run after `stforecast run`: .venv/bin/python bench/bench_query.py [RESULTS_DIR]
(default results/<default company>). The queries are built from the results' own company block:
its price, its report's revenue in the last forecast year, its final year. The goal is for the
headline scenario, which forecast.nc keeps; the first query is also timed for another scenario
and for every scenario (``--scenario all``), which are recomputed from the stored posterior
(not part of the goal; printed so that their cost shows).
"""

import subprocess
import sys
import time
from pathlib import Path

CHECK = ("import sys; from stforecast.cli import main; rc = main(['query', {q!r}, '--results', "
         "{r!r}]); heavy = [m for m in ('pymc', 'pytensor', 'arviz', 'xarray', 'scipy') "
         "if m in sys.modules]; print('heavy modules imported:', heavy or 'none')")
GOAL_S = 0.3


def queries(results: Path) -> list[str]:
    from stforecast.results import load_results

    s = load_results(results).summary
    c, final = s.company, s.company.final_year
    report_revenue = s.report_percentiles.revenue.report or s.headline.lines["revenue"][final].q50
    alias = next(iter(c.aliases()))
    return [f"P({alias} > {c.price:g})", f"P(revenue[{final}] > {report_revenue:g})",
            f"P(revenue[{final}] < {0.7 * report_revenue:.0f} and cash[{final}] < 3000)",
            "quantile(target_price, 0.05)"]


def main():
    if len(sys.argv) > 1:
        results = Path(sys.argv[1])
    else:
        from stforecast.company import default_company
        results = Path("results") / default_company()
    cli = [sys.executable, "-m", "stforecast.cli"]
    walls = []
    for q in queries(results):
        best = []
        for _ in range(3):
            t = time.perf_counter()
            out = subprocess.run(cli + ["query", q, "--results", str(results)],
                                 capture_output=True, text=True)
            best.append(time.perf_counter() - t)
        walls.append(min(best))
        print(f"{min(best):.2f} s (best of 3)  {out.stdout.strip() or out.stderr.strip()}")
    out = subprocess.run([sys.executable, "-c", CHECK.format(q=queries(results)[0],
                                                             r=str(results))],
                         capture_output=True, text=True)
    print(out.stdout.strip().splitlines()[-1])
    print(f"worst {max(walls):.2f} s per query process; goal <= {GOAL_S} s")
    from stforecast.registry import HEADLINE_SCENARIO
    from stforecast.results import load_results
    other = next(n for n in load_results(results).summary.scenarios if n != HEADLINE_SCENARIO)
    for scenario in (other, "all"):
        t = time.perf_counter()
        out = subprocess.run(cli + ["query", queries(results)[0], "--results", str(results),
                                    "--scenario", scenario], capture_output=True, text=True)
        answer = (out.stdout.strip() or out.stderr.strip()).splitlines()[-1]
        print(f"{time.perf_counter() - t:.2f} s  --scenario {scenario} (recomputed): {answer}")


if __name__ == "__main__":
    main()
