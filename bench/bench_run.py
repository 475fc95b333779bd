"""Speed of ``stforecast run``, cold (fresh PyTensor compile cache) and warm (second run),
split into import, prior, compile, sampling, peer regression, predictive (all scenarios),
summaries, write and report time; and the two NUTS samplers compared on the default model
(nutpie vs PyMC).

Run: .venv/bin/python bench/bench_run.py [--samplers]   (the default shipped company)
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from stforecast.run import RunSettings, run_forecast
from stforecast.fit import FitSettings
t_import = time.perf_counter() - t0
s = run_forecast(sys.argv[1], None, RunSettings(fit=FitSettings(sampler=sys.argv[2])))
t = dict(s.timings_s); t["import"] = round(t_import, 2)
t["wall"] = round(time.perf_counter() - t0, 2)
print(json.dumps({"timings": t, "ess_bulk_min": s.diagnostics.ess_bulk_min,
                  "divergences": s.diagnostics.divergences}))
"""


def one_run(compiledir: str, sampler: str) -> dict:
    env = dict(os.environ, PYTENSOR_FLAGS=f"compiledir={compiledir}")
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, out, sampler], env=env,
                              capture_output=True, text=True, check=True)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["process_wall"] = round(time.perf_counter() - t, 2)
        return result


def main():
    samplers = ["nutpie", "pymc"] if "--samplers" in sys.argv else ["nutpie"]
    for sampler in samplers:
        with tempfile.TemporaryDirectory() as cache:
            cold = one_run(cache, sampler)
            warm = one_run(cache, sampler)
        for label, r in (("cold", cold), ("warm", warm)):
            t = r["timings"]
            parts = ", ".join(f"{k} {t[k]:.1f}" for k in
                              ("import", "prior", "compile", "sampling", "peers", "predictive",
                               "summaries", "write", "report") if k in t)
            print(f"{sampler:>6} {label}: process {r['process_wall']:.1f} s ({parts}); "
                  f"ESS bulk min {r['ess_bulk_min']:.0f}, divergences {r['divergences']}; "
                  f"ESS/s of sampling {r['ess_bulk_min'] / t['sampling']:.0f}")
        print(f"{sampler:>6} warm/cold ratio: {warm['process_wall'] / cold['process_wall']:.2f}")


if __name__ == "__main__":
    main()
