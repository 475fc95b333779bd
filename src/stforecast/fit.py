"""Fitting: NUTS on the driver model, prior sampling, and diagnostics checked against the bar.

The default sampler is nutpie; ``sampler="pymc"`` selects PyMC's own NUTS. Diagnostics are part
of the result, checked against the quality bar of ``stforecast.registry`` (R-hat, bulk and tail
ESS, divergences; DESIGN.md).
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pymc as pm
import xarray as xr

from .registry import DEFAULT_TUNE, DIVERGENCES_MAX, ESS_MIN, RHAT_MAX, SAMPLERS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitSettings:
    draws: int = 1000
    tune: int = DEFAULT_TUNE
    chains: int = 4
    target_accept: float = 0.99
    sampler: str = "nutpie"
    prior_draws: int = 1000


@dataclass
class Diagnostics:
    """Sampler diagnostics over the model's free parameters and whether they meet the bar."""

    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    reasons: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons

    def measured(self) -> dict:
        """The measured values, unrounded (what the fit cache stores with a fit)."""
        return {"rhat_max": self.rhat_max, "ess_bulk_min": self.ess_bulk_min,
                "ess_tail_min": self.ess_tail_min, "divergences": self.divergences}

    @classmethod
    def checked(cls, measured: dict) -> "Diagnostics":
        """Diagnostics of ``measured`` values (``measured()``), checked against the quality bar
        as it stands now."""
        values = (float(measured["rhat_max"]), float(measured["ess_bulk_min"]),
                  float(measured["ess_tail_min"]), int(measured["divergences"]))
        return cls(*values, bar_reasons(*values))

    def to_dict(self) -> dict:
        return {"rhat_max": round(self.rhat_max, 4), "ess_bulk_min": round(self.ess_bulk_min, 1),
                "ess_tail_min": round(self.ess_tail_min, 1), "divergences": self.divergences,
                "ok": self.ok, "reasons": list(self.reasons)}


def diagnose(posterior: xr.Dataset, sample_stats: xr.Dataset, var_names: list[str]) -> Diagnostics:
    """R-hat, bulk/tail ESS and divergences, checked against the quality bar."""
    import arviz_stats as az  # ArviZ's own functions, without importing its plotting (~0.6 s)

    ds = posterior[var_names]
    rhat = float(az.rhat(ds).to_array().max())
    ess_bulk = float(az.ess(ds, method="bulk").to_array().min())
    ess_tail = float(az.ess(ds, method="tail").to_array().min())
    divergences = int(sample_stats["diverging"].sum())
    return Diagnostics(rhat, ess_bulk, ess_tail, divergences,
                       bar_reasons(rhat, ess_bulk, ess_tail, divergences))


def bar_reasons(rhat: float, ess_bulk: float, ess_tail: float, divergences: int) -> list[str]:
    """Where diagnostics miss the quality bar (R-hat, bulk and tail ESS, divergences)."""
    reasons = []
    if not rhat <= RHAT_MAX:
        reasons.append(f"R-hat {rhat:.3f} > {RHAT_MAX}")
    if not ess_bulk >= ESS_MIN:
        reasons.append(f"bulk ESS {ess_bulk:.0f} < {ESS_MIN}")
    if not ess_tail >= ESS_MIN:
        reasons.append(f"tail ESS {ess_tail:.0f} < {ESS_MIN}")
    if divergences > DIVERGENCES_MAX:
        reasons.append(f"{int(divergences)} divergent transitions")
    return reasons


def free_parameter_names(model: pm.Model) -> list[str]:
    return [rv.name for rv in model.free_RVs]


_COMPILE_LOCK = threading.Lock()


@contextmanager
def _numba_mode_without_inplace():
    """PyTensor's ``NUMBA`` mode without its in-place rewrites, while nutpie compiles.

    nutpie asks PyTensor for the mode by its name, so the name is re-pointed for the duration
    (under a lock: one compile at a time per process). The in-place rewrite is quadratic in the
    size of the graph: on the default driver model it took ~19 of ~23 s of graph rewriting, while
    the sampling it speeds up takes under a second either way (``bench/bench_run.py``).
    """
    from pytensor.compile import mode as modes

    with _COMPILE_LOCK:
        original = modes.predefined_modes["NUMBA"]
        modes.predefined_modes["NUMBA"] = original.excluding("inplace")
        try:
            yield
        finally:
            modes.predefined_modes["NUMBA"] = original


@contextmanager
def numba_compile():
    """The compile settings of every model nutpie samples: PyTensor's ``NUMBA`` mode without
    in-place rewrites (``_numba_mode_without_inplace``) and without fast-math. With fast-math,
    numba's code for the same graph rounded differently when freshly compiled and when loaded
    from PyTensor's cache (a gradient's last bits, hence another chain), so a fit depended on
    the state of the caches; without it the two agree (``tests/test_compiled.py``). Sampling
    takes about a second either way."""
    import pytensor

    from .compile_speed import install

    install()  # numba compiles faster, the same code (``compile_speed``)
    with _numba_mode_without_inplace(), pytensor.config.change_flags(numba__fastmath=False):
        yield


def compile_nutpie(model: pm.Model):
    """The nutpie model of ``model`` (numba backend), compiled anew as ``numba_compile`` says,
    its data and dimensions constants of the compiled graph (a model sampled more than once is
    compiled by ``stforecast.compiled`` instead, once and kept on disk)."""
    import nutpie

    with numba_compile():
        return nutpie.compile_pymc_model(model, freeze_model=True)


@dataclass
class FitResult:
    idata: xr.DataTree
    diagnostics: Diagnostics
    timings: dict[str, float]


def sample_prior(model: pm.Model, draws: int, seed: int) -> xr.Dataset:
    """Prior draws of every parameter (dims chain=1, draw)."""
    with model:
        # PyTensor's Python linker: the draws take ~2 s and nothing is compiled (the C backend
        # compiled this graph anew, ~15 s, whenever a prior's value changed)
        prior = pm.sample_prior_predictive(draws=draws, random_seed=seed,
                                           compile_kwargs={"mode": "FAST_COMPILE"})
    return prior["prior"].to_dataset()


def sample_posterior(model: pm.Model, settings: FitSettings, seed: int,
                     progressbar: bool = False, model_key: str | None = None,
                     reference=None, while_sampling=None) -> FitResult:
    """NUTS with the chosen sampler; returns the DataTree, diagnostics and timings (s).

    ``model_key``: the key of the model's compiled form (for the driver model, whose priors are
    the data vector ``PRIOR_VALUES``, ``stforecast.run.driver_model_key``): nutpie samples on
    ``stforecast.compiled``'s model, compiled once and kept on disk for every process (and,
    for the driver model, every value of the priors), checked against the model's own
    log-density and its gradient at the prior's centre (``reference``:
    ``preflight.trial_logp``'s answer when the caller has it, or a function of no arguments that
    returns it, called once the model is compiled). Without a key, nutpie compiles anew.

    ``while_sampling``: a function of no arguments called while nutpie's sampler runs (its
    threads hold no GIL, so Python work such as the prior draws overlaps them; after sampling
    with PyMC's sampler); an error there cancels the sampler and is raised.
    """
    if settings.sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {settings.sampler!r}")
    timings = {}
    t0 = time.perf_counter()
    if settings.sampler == "nutpie":
        import nutpie

        if model_key is not None:
            from . import compiled as compiled_models

            # (a function's answer is waited for when the compiled model's check needs it)
            entry = compiled_models.load_or_build(model, model_key, reference=reference)
            compiled = compiled_models.nutpie_model(entry, model)
            logger.info(f"compiled model: {entry.source} ({time.perf_counter() - t0:.1f} s)")
        else:
            compiled = compile_nutpie(model)
        timings["compile"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        sampler = nutpie.sample(compiled, draws=settings.draws, tune=settings.tune,
                                chains=settings.chains, cores=min(settings.chains, 2),
                                target_accept=settings.target_accept, seed=seed,
                                progress_bar=progressbar, blocking=False)
        try:
            if while_sampling is not None:
                while_sampling()
            idata = sampler.wait()
        except BaseException:
            sampler.cancel()
            raise
        timings["sampling"] = time.perf_counter() - t1
    else:
        with model:
            # PyMC compiles inside pm.sample; the split is measured by bench/.
            idata = pm.sample(draws=settings.draws, tune=settings.tune, chains=settings.chains,
                              cores=min(settings.chains, 2), target_accept=settings.target_accept,
                              random_seed=seed, progressbar=progressbar, compute_convergence_checks=False)
        timings["compile"] = 0.0
        timings["sampling"] = time.perf_counter() - t0
        if while_sampling is not None:
            while_sampling()
    names = free_parameter_names(model)
    diagnostics = diagnose(idata["posterior"].to_dataset(), idata["sample_stats"].to_dataset(), names)
    return FitResult(idata, diagnostics, timings)


def thin_to(ds: xr.Dataset, draws: int) -> xr.Dataset:
    """Keep at most ``draws`` evenly spaced draws per chain (for cheap prior predictive paths)."""
    n = ds.sizes["draw"]
    if n <= draws:
        return ds
    return ds.isel(draw=np.linspace(0, n - 1, draws).round().astype(int))
