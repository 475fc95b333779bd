"""Fits that fresh processes of a test session need (the notebooks' kernels, the README's
interpreter, the command line in subprocesses), made first in the test worker's own process.

A fresh process reads the compiled driver model from the session's store on disk (~4-6 s) and
samples it; a test worker keeps it (``stforecast.compiled``). ``ensure_fit`` fits the
model with a run's settings in this process, through ``run.fit_models`` (the code a run fits
with), into the session's fit cache, so that the fresh process reads that fit instead of
fitting. A lock on the fit's key makes a second worker that needs the same fit wait for the
first and read it (no two fits of one key at the same time).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


@contextlib.contextmanager
def fit_lock(key: str):
    """An exclusive lock, across the session's processes, named by a fit's key."""
    root = Path(os.environ["STFORECAST_CACHE"])
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".lock-{key[:24]}", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def driver_lock(settings, company="sensetime"):
    """``fit_lock`` of the driver fit a run of ``company`` with ``settings`` makes or reads."""
    from stforecast.run import driver_fit_key, prepare
    return fit_lock(driver_fit_key(prepare(company), settings))


def ensure_fit(settings, company="sensetime") -> None:
    """The driver and peer fits of a run of ``company`` with ``settings`` are in the session's
    fit cache (fitted here, or read: the cache's own hit/miss)."""
    from stforecast.run import _quiet_pymc, driver_fit_key, fit_models, prepare
    inputs = prepare(company)
    with fit_lock(driver_fit_key(inputs, settings)), _quiet_pymc():
        fit_models(inputs, settings)


def compiled_store(company="sensetime") -> Path:
    """The session's store of compiled models (``<cache>/compiled``), holding the driver model
    and the peer regression of a run of ``company`` (compiled here, or read: a second worker
    waits for the first, ``stforecast.compiled``'s lock per key)."""
    from stforecast import compiled
    from stforecast.model import build_model
    from stforecast.peers import _compiled_nutpie, build_peer_model, load_peers
    from stforecast.run import _quiet_pymc, driver_model_key, prepare
    inputs = prepare(company)
    with _quiet_pymc():
        compiled.load_or_build(build_model(inputs.spec, inputs.obs, inputs.company),
                               driver_model_key(inputs))
        peers = load_peers(inputs.company.peers_path)
        _compiled_nutpie(build_peer_model(peers), peers, None)
    return Path(os.environ["STFORECAST_CACHE"]) / "compiled"
