"""The refit path (issue 13, item 4): compile and sampling seconds of the driver model's samplers.

Each variant runs in a fresh Python process (so nothing compiled in this process helps it), on
the default company's model with the run's fit settings (4 chains x 1,000 draws, the default
tuning), in one of two states:

* ``same``: the priors file as shipped, PyTensor's disk caches warm from an earlier run;
* ``changed``: the first ``sigma`` of the priors file scaled by a random 1.001-1.01 (in a copy
  of the company folder), so that every graph holding the priors as constants is new to the
  caches: what a user meets after editing a prior.

Variants:

* ``nutpie``: nutpie's numba backend with PyTensor's default rewrites (the run before 2026-11-26);
* ``nutpie-no-inplace``: without PyTensor's in-place rewrites;
* ``nutpie-frozen``: data and dimensions frozen into the graph (``freeze_model``);
* ``nutpie-run``: both (what ``stforecast.fit.compile_nutpie`` does);
* ``pymc``: PyMC's own NUTS on PyTensor's C backend (its compiled C is cached on disk across
  processes; ``pm.sample`` compiles inside, so its seconds are one figure);
* ``stforecast``: what a run does now (``stforecast.compiled``): the priors' values are data of
  one compiled model kept on disk, so ``changed`` reads the entry ``same`` left (or an earlier
  run); its ``source`` column says whether the process compiled it ("built") or read it
  ("disk"), and its compile seconds include the check of the entry against the model.

Also the prior draws (1,000, as the run makes them) with PyTensor's default mode and with the
Python linker the run uses. Prints a table; ``--json`` prints one JSON object.

Run: .venv/bin/python bench/bench_compile.py [--json] [--variants nutpie,nutpie-run,...]
      [--states same,changed]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

VARIANTS = ("nutpie", "nutpie-no-inplace", "nutpie-frozen", "nutpie-run", "pymc", "stforecast")
STATES = ("same", "changed")

CHILD = r"""
import json, random, re, shutil, sys, tempfile, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
variant, state = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
import pymc as pm
from stforecast.company import load_company
from stforecast.fit import FitSettings, _numba_mode_without_inplace
from stforecast.model import build_model, observations_from_company
from stforecast.priors import load_priors
company = load_company()
priors_path = company.priors_path
if state == "changed":
    tmp = Path(tempfile.mkdtemp(prefix="bench-compile-"))
    shutil.copytree(company.folder.parent, tmp / "companies")
    priors_path = tmp / "companies" / company.folder.name / company.priors_path.name
    text = priors_path.read_text()
    m = re.search(r"sigma\s*=\s*([0-9.]+)", text)  # the first sigma, moved by a random amount
    if m is None:
        sys.exit(f"{priors_path}: no 'sigma = <number>' to change")
    value = f"{float(m.group(1)) * random.uniform(1.001, 1.01):.6g}"
    priors_path.write_text(text[:m.start(1)] + value + text[m.end(1):])
spec = load_priors(priors_path, company.growth_drivers())
model = build_model(spec, observations_from_company(company), company)
fs = FitSettings()
out = {"import_build_s": round(time.perf_counter() - t0, 2)}
t = time.perf_counter()
with model:
    pm.sample_prior_predictive(draws=fs.prior_draws, random_seed=1)
out["prior_default_s"] = round(time.perf_counter() - t, 2)
t = time.perf_counter()
with model:
    pm.sample_prior_predictive(draws=fs.prior_draws, random_seed=1,
                               compile_kwargs={"mode": "FAST_COMPILE"})
out["prior_python_linker_s"] = round(time.perf_counter() - t, 2)
if variant == "pymc":
    t = time.perf_counter()
    with model:
        pm.sample(draws=fs.draws, tune=fs.tune, chains=fs.chains, cores=2,
                  target_accept=fs.target_accept, random_seed=1, progressbar=False,
                  compute_convergence_checks=False)
    out["compile_and_sampling_s"] = round(time.perf_counter() - t, 2)
elif variant == "stforecast":
    import nutpie
    from stforecast import compiled as C
    from stforecast.preflight import trial_logp
    t = time.perf_counter()
    reference = trial_logp(model)["logp"]
    out["trial_logp_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    entry = C.load_or_build(model, C.driver_key(company, observations_from_company(company), spec),
                             expected=reference)
    compiled = C.nutpie_model(entry, model)
    out["compile_s"] = round(time.perf_counter() - t, 2)
    out["source"] = entry.source
    t = time.perf_counter()
    nutpie.sample(compiled, draws=fs.draws, tune=fs.tune, chains=fs.chains, cores=2,
                  target_accept=fs.target_accept, seed=1, progress_bar=False)
    out["sampling_s"] = round(time.perf_counter() - t, 2)
else:
    import nutpie
    from contextlib import nullcontext
    freeze = variant in ("nutpie-frozen", "nutpie-run")
    mode = (_numba_mode_without_inplace() if variant in ("nutpie-no-inplace", "nutpie-run")
            else nullcontext())
    t = time.perf_counter()
    with mode:
        compiled = nutpie.compile_pymc_model(model, freeze_model=freeze)
    out["compile_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    nutpie.sample(compiled, draws=fs.draws, tune=fs.tune, chains=fs.chains, cores=2,
                  target_accept=fs.target_accept, seed=1, progress_bar=False)
    out["sampling_s"] = round(time.perf_counter() - t, 2)
print("BENCH " + json.dumps(out))
"""


def run_variant(variant: str, state: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, variant, state], capture_output=True,
                          text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": tail}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--states", default=",".join(STATES))
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    states = [s for s in args.states.split(",") if s]
    unknown = [v for v in variants if v not in VARIANTS] + [s for s in states if s not in STATES]
    if unknown:
        ap.error(f"unknown: {', '.join(unknown)} (variants: {', '.join(VARIANTS)}; states: "
                 f"{', '.join(STATES)})")
    results = {f"{v}/{s}": run_variant(v, s) for s in states for v in variants}
    # (``stforecast/changed`` after ``stforecast/same``: the entry is on disk by then)
    if args.json:
        print(json.dumps({"cores": os.cpu_count(), "results": results}, indent=1))
        return 0
    print(f"driver model, {os.cpu_count()} cores; seconds per fresh process")
    print(f"{'variant/state':28s} {'compile':>8s} {'sampling':>9s} {'prior(default)':>15s} "
          f"{'prior(python)':>14s}")
    for key, r in results.items():
        if "error" in r:
            print(f"{key:28s} error: {r['error']}")
            continue
        compile_s = r.get("compile_s", r.get("compile_and_sampling_s"))
        sampling = r.get("sampling_s", "(in compile)")
        print(f"{key:28s} {compile_s:>8} {sampling!s:>9} {r['prior_default_s']:>15} "
              f"{r['prior_python_linker_s']:>14}"
              + (f"  ({r['source']}; trial log-density {r['trial_logp_s']} s)"
                 if "source" in r else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
