"""Models compiled once and kept on disk, for every process (and, for the driver model, every
prior value): the driver model, its refitter on simulated histories and the peer regression.

nutpie samples a model through two C functions, its log-density with gradient and its
"expand" function (the draws' constrained values and deterministics). nutpie's own
``compile_pymc_model`` rewrites the PyTensor graph (~7 s on the default driver model) and
builds those two functions with numba (~3.5 s with PyTensor's numba cache warm, ~17 s cold) in
every process: numba cannot cache nutpie's functions, which close over objects named anew in
each process. This module keeps the work:

* the model's priors enter as one data vector (``model.PRIOR_VALUES``), so the compiled graph
  depends on the model's *structure* (sources, company data, prior families), not on the
  priors' values, and a change of a prior's value reuses it (``driver_key``); a model refitted
  on simulated histories (``calibration.Refitter``) keeps its observations as data too
  (``observations_as_data``), so one entry serves every history of the company's shape;
* the peer regression (no prior-values vector: its values and data are frozen into the graph,
  and its key, ``model_key``, holds them) is kept the same way;
* the two PyTensor functions (rewritten and linked to numba, ``fit.numba_compile``) are
  pickled: unpickling skips the rewriting, and PyTensor's numba cache serves their code;
* the two C entry points are written as a small Python module next to them
  (``WRAPPERS``), whose numba functions read the data (the prior values, then any observations
  kept as data, joined in one float64 vector, ``data_vector``) from nutpie's ``user_data``
  pointer and call the PyTensor functions as module globals: numba caches them on disk, keyed
  by that file's content, which is unique to the entry. A process that finds them in numba's
  cache does not unpickle the PyTensor functions at all (~2.6 s for the driver model);
* processes that need one model at the same time compile it once (a lock per key: the others
  wait, then read the entry).

An entry is ``<cache>/compiled/<key>/``: ``functions.pkl`` (the pickled functions),
``meta.json`` (shapes, names, the pickle's sha256) and ``wrappers.py``. It is written in a
temporary folder and renamed into place (a reader never sees half an entry); a damaged
entry (unreadable, wrong checksum, a log-density that disagrees with the model's own) is
removed and compiled again, never used (``ModelMismatch``). The freshly built model checks
every entry it uses: the log-density at the prior's centre, from the cached functions and from
the model's own graph evaluated without compilation, must agree (``check``).

It calls nutpie 0.16's private compile helpers (``_make_functions``,
``_prepare_dims_and_coords``, ``_rv_dict_to_flat_array_wrapper``, ``CompiledPyMCModel``), hence
``nutpie<0.17`` in ``pyproject.toml``.

Units: log-densities in nats; the vector ``x`` is the model's free parameters on the sampler's
(unconstrained) scale, in nutpie's order.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import cache_dir, cache_folder, fit_key, package_versions, source_hash
from .compile_speed import entry_points_as_linked, index_modules
from .errors import StforecastError
from .model import PRIOR_VALUES, prior_layout

FORMAT = 2
#: Compiled models kept on disk; the least recently used are removed beyond this.
MAX_ENTRIES = 16
#: stforecast's modules whose source decides the compiled driver model.
SOURCES = ("model", "processes", "compiled", "fit")
#: ... and the compiled peer regression (``peers.build_peer_model``).
PEER_SOURCES = ("peers", "compiled", "fit")
#: Relative tolerance between the cached log-density and the model's own at the prior's centre
#: (the compiled graph is rewritten, the reference is not: they differ by rounding only).
RTOL = 1e-8

logger = logging.getLogger(__name__)
_INNER: dict[str, tuple] = {}  # key -> (logp, expand) numba functions, for the wrappers module
_LOCK = threading.Lock()
_PROCESS: dict[str, "Compiled"] = {}  # key -> compiled model, most recently used last
_PROCESS_MAX = 8


class ModelMismatch(StforecastError):
    """A cached compiled model is damaged or does not evaluate as the model it was loaded for
    (one line, naming the entry's file). A run compiles again rather than show it; a fresh
    compilation that fails the check raises it."""


def inner_functions(key: str) -> tuple:
    """The PyTensor functions' numba code of entry ``key`` (called by its ``wrappers.py`` on
    import), or ``(None, None)`` when they are not loaded: numba's cache then serves the
    wrappers or their compilation fails (``_import_wrappers``)."""
    return _INNER.get(key, (None, None))


WRAPPERS = '''"""nutpie's C entry points of stforecast's compiled model {key}.

Written by stforecast.compiled; numba caches the compiled functions next to this file.
"""
import numba
import numpy as np

from stforecast.compiled import inner_functions

_logp, _expand = inner_functions("{key}")
N_DIM = {n_dim}
N_EXPANDED = {n_expanded}
N_VALUES = {n_values}
_double_p = numba.types.CPointer(numba.types.double)
LOGP = numba.types.int64(numba.types.uint64, _double_p, _double_p, _double_p,
                         numba.types.voidptr)
EXPAND = numba.types.int64(numba.types.uint64, numba.types.uint64, _double_p, _double_p,
                           numba.types.voidptr)


@numba.cfunc(LOGP, cache=True)
def logp(dim, x_, grad_, logp_, values_):
    """0, or nutpie's error code: -1 wrong size, 1 failed, 3 gradient or 4 value not finite."""
    if dim != N_DIM:
        return -1
    try:
        x = numba.carray(x_, (N_DIM,))
        values = numba.carray(values_, (N_VALUES,), np.float64)
        value, grad = _logp(x{logp_args})
        out = numba.carray(grad_, (N_DIM,))
        out[...] = grad
        numba.carray(logp_, (1,))[0] = value[()]
        if not np.all(np.isfinite(grad)):
            return 3
        if not np.isfinite(value[()]):
            return 4
    except Exception:  # noqa: BLE001
        return 1
    return 0


@numba.cfunc(EXPAND, cache=True)
def expand(dim, expanded, x_, out_, values_):
    """0, or -1 (wrong sizes), -2 (failed)."""
    if dim != N_DIM or expanded != N_EXPANDED:
        return -1
    try:
        x = numba.carray(x_, (N_DIM,))
        values = numba.carray(values_, (N_VALUES,), np.float64)
        (drawn,) = _expand(x{expand_args})
        numba.carray(out_, (N_EXPANDED,))[...] = drawn
    except Exception:  # noqa: BLE001
        return -2
    return 0
'''


def driver_key(company, obs, spec, observations_as_data: bool = False) -> str:
    """The compiled driver model's key: the sources of the modules that build and compile it,
    the package and Python versions, and what else decides the graph: ``company``'s company
    file, the observations ``obs`` and the layout of the priors ``spec`` (``model.prior_layout``:
    their families, never their values). ``observations_as_data``: the key of the model compiled
    with its observations as data (``model_data``), for refits on other histories."""
    return model_key("driver", SOURCES, company=company.files["company"][1], observations=obs,
                     layout=prior_layout(spec), observations_as_data=observations_as_data)


def model_key(kind: str, sources: tuple[str, ...], **content) -> str:
    """The key of a compiled model of ``kind``: the source of stforecast's modules ``sources``
    (those that build and compile it), this module's format, the package and Python versions,
    the compile settings, and ``content``, what else decides its graph (data and values frozen
    into it; see ``cache.fit_key`` for what a part may be)."""
    return fit_key(f"compiled-{kind}", sources=source_hash(*sources), format=FORMAT,
                   versions=package_versions(), python=sys.version, fastmath=False, **content)


def model_data(model, observations_as_data: bool = False) -> tuple[str, ...]:
    """The names of ``model``'s data that its compiled form reads from nutpie's ``user_data``
    (in that order): the prior values (the driver model's ``PRIOR_VALUES``; a model without
    them, such as the peer regression, has its values in the graph), then, with
    ``observations_as_data``, every other ``pm.Data`` of the model (its observations); the rest
    is frozen into the graph."""
    priors = (PRIOR_VALUES,) if PRIOR_VALUES in model.named_vars else ()
    if not observations_as_data:
        return priors
    return (*priors, *(v.name for v in model.data_vars if v.name != PRIOR_VALUES))


@dataclass
class Compiled:
    """A compiled model: PyTensor functions, their C entry points and nutpie's layout."""

    key: str
    logp_fn: object  # pytensor Function: x -> (log-density, gradient); None until needed
    expand_fn: object  # pytensor Function: x -> (all stored values, joined,); None until needed
    meta: dict
    wrappers: object  # the module with the ``logp`` and ``expand`` numba cfuncs
    source: str = ""  # where the last ``load_or_build`` call found it
    blob: bytes = b""  # the pickled PyTensor functions (``functions.pkl``), until imported


def _frozen(model, data: tuple[str, ...]):
    """``model`` with its dimensions and data as constants, the data ``data`` excepted."""
    from pymc.model.transform.optimization import freeze_dims_and_data
    return freeze_dims_and_data(model, data=[v.name for v in model.data_vars
                                             if v.name not in data])


def data_layout(model, data: tuple[str, ...]) -> list[dict]:
    """Where each of ``data`` (names of ``model``'s ``pm.Data``) lies in ``data_vector``:
    ``{"name", "start", "stop", "shape"}``."""
    layout, start = [], 0
    for name in data:
        shape = [int(n) for n in np.shape(model[name].get_value())]
        stop = start + int(np.prod(shape, dtype=int))
        layout.append({"name": name, "start": start, "stop": stop, "shape": shape})
        start = stop
    return layout


def data_vector(compiled: Compiled, model, values: dict | None = None) -> np.ndarray:
    """The data ``compiled`` reads (its ``meta["data"]``) joined in one C-contiguous float64
    vector, nutpie's ``user_data``: ``model``'s own values, or those of ``values`` (name ->
    array, each of the model's shape; ``ValueError`` naming it otherwise)."""
    values = values or {}
    parts = []
    for entry in compiled.meta["data"]:
        name = entry["name"]
        value = np.asarray(values[name] if name in values else model[name].get_value(),
                           dtype=np.float64)
        if list(value.shape) != entry["shape"]:
            raise ValueError(f"data {name!r}: expected shape {tuple(entry['shape'])}, got "
                             f"{value.shape}")
        parts.append(value.ravel())
    unknown = sorted(set(values) - {e["name"] for e in compiled.meta["data"]})
    if unknown:
        raise ValueError(f"data {unknown[0]!r}: not data of this compiled model (expected one of "
                         f"{[e['name'] for e in compiled.meta['data']]})")
    return np.ascontiguousarray(np.concatenate(parts) if parts else np.zeros(0))


def _build(model, key: str, folder: Path, data: tuple[str, ...]) -> tuple:
    """Compile ``model`` (nutpie's own graph functions, ``fit.numba_compile``'s settings), its
    data ``data`` read at run time (the rest frozen), and write the entry into ``folder``;
    returns the two PyTensor functions (log-density and gradient, expand)."""
    from nutpie.compile_pymc import _make_functions, _prepare_dims_and_coords
    from pymc.initial_point import make_initial_point_fn

    from .fit import numba_compile

    frozen = _frozen(model, data)
    start = make_initial_point_fn(model=frozen, return_transformed=True,
                                  jitter_rvs=set(frozen.free_RVs), default_strategy="support_point")
    with numba_compile():
        n_dim, n_expanded, logp_fn, expand_fn, _, shape_info, reparameterized = _make_functions(
            frozen, mode="NUMBA", compute_grad=True, join_expanded=True,
            pymc_initial_point_fn=start)
    takes = {}
    for name, fn in (("logp", logp_fn), ("expand", expand_fn)):
        shared = [v.name for v in fn.get_shared()]  # the order of the function's inputs
        if not set(shared) <= set(data):
            raise ModelMismatch(f"the {name} function reads data other than {list(data)}: "
                                f"{shared}")
        takes[name] = shared
    names, slices, shapes = shape_info
    dims, coords = _prepare_dims_and_coords(frozen, shape_info, reparameterized)
    layout = data_layout(model, data)
    blob = pickle.dumps((logp_fn, expand_fn), protocol=pickle.HIGHEST_PROTOCOL)
    meta = {"format": FORMAT, "key": key, "n_dim": int(n_dim), "n_expanded": int(n_expanded),
            "n_values": layout[-1]["stop"] if layout else 0, "data": layout,
            "takes_values": takes, "names": list(names),
            "slices": [[int(s.start), int(s.stop)] for s in slices],
            "shapes": [list(map(int, s)) for s in shapes],
            "reparameterized": list(reparameterized),
            "dims": {k: list(v) for k, v in dims.items()},
            "coords": {k: list(v.tolist()) for k, v in coords.items()},
            "sha256": hashlib.sha256(blob).hexdigest()}
    folder.mkdir(parents=True)
    (folder / "functions.pkl").write_bytes(blob)
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    (folder / "wrappers.py").write_text(_wrappers_source(meta))
    return logp_fn, expand_fn


def _wrappers_source(meta: dict) -> str:
    where = {e["name"]: e for e in meta["data"]}

    def args(names: list[str]) -> str:
        """The data arguments after ``x``: slices of ``values``, each in its shape."""
        out = ""
        for name in names:
            e = where[name]
            whole = e["start"] == 0 and e["stop"] == meta["n_values"] and len(e["shape"]) == 1
            out += (", values" if whole else  # the prior values alone: the vector itself
                    f", values[{e['start']}:{e['stop']}].reshape({tuple(e['shape'])!r})")
        return out

    takes = meta["takes_values"]
    return WRAPPERS.format(key=meta["key"], n_dim=meta["n_dim"],
                           n_expanded=meta["n_expanded"], n_values=meta["n_values"],
                           logp_args=args(takes["logp"]), expand_args=args(takes["expand"]))


def _load(folder: Path, key: str, data: tuple[str, ...]) -> Compiled:
    """The entry in ``folder``; ``ModelMismatch`` when it is damaged or not this key's (or does
    not read the data ``data``)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        blob = (folder / "functions.pkl").read_bytes()
        wrappers = (folder / "wrappers.py").read_text()
    except (OSError, ValueError) as exc:
        raise ModelMismatch(f"{folder}: unreadable ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("key") != key:
        raise ModelMismatch(f"{folder}: not an entry of this format and key")
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ModelMismatch(f"{folder}/functions.pkl: checksum mismatch (damaged)")
    stored = [e.get("name") for e in meta.get("data") or [] if isinstance(e, dict)]
    if stored != list(data):
        raise ModelMismatch(f"{folder}/meta.json: reads the data {stored}, not {list(data)}")
    if wrappers != _wrappers_source(meta):
        raise ModelMismatch(f"{folder}/wrappers.py: not what this entry's layout writes")
    return Compiled(key, None, None, meta, None, blob=blob)


def _unpickle(compiled: Compiled, folder: Path) -> None:
    """The entry's PyTensor functions, unpickled (~2.6 s for the default driver model: PyTensor
    links them to numba again, its cache serving their code)."""
    from .fit import numba_compile

    try:
        with numba_compile():  # unpickling links the functions to numba: the same settings
            compiled.logp_fn, compiled.expand_fn = pickle.loads(compiled.blob)
    except Exception as exc:  # noqa: BLE001 (a pickle of other versions fails in many ways)
        raise ModelMismatch(f"{folder}/functions.pkl: does not load ({exc})") from None


def _import_wrappers(compiled: Compiled, folder: Path, cached_first: bool = True):
    """Import the entry's ``wrappers.py``: numba loads its two functions from its cache next to
    the file, and the PyTensor functions they call are not needed (``cached_first``); when its
    cache does not serve them (their first import, or numba's cache gone), they are compiled,
    calling the PyTensor functions, unpickled for it."""
    name = f"stforecast_compiled_{compiled.key[:24]}"

    def execute():
        spec = importlib.util.spec_from_file_location(name, folder / "wrappers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # numba's cache finds the functions' globals by module name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module

    if cached_first and compiled.key not in _INNER:
        try:
            compiled.wrappers = execute()  # without the functions: numba's cache or an error
            compiled.blob = b""  # not needed any more (kept in the process's store)
            return compiled
        except Exception:  # noqa: BLE001 (numba cannot type a call of None: not cached)
            pass
    if compiled.logp_fn is None:
        _unpickle(compiled, folder)
    _compile_inner(compiled)
    _INNER[compiled.key] = (compiled.logp_fn.vm.jit_fn, compiled.expand_fn.vm.jit_fn)
    try:
        with entry_points_as_linked():  # the code they link was optimised just now
            compiled.wrappers = execute()
    except Exception as exc:  # noqa: BLE001 (an entry removed or damaged meanwhile)
        raise ModelMismatch(f"{folder}/wrappers.py: does not load ({exc})") from None
    compiled.blob = b""
    return compiled


def _compile_inner(compiled: Compiled) -> None:
    """numba's code of the entry's PyTensor functions, compiled (and optimised) by a first call
    of each at the origin of the sampler's scale (where a model may not be finite: an error
    there is of no matter, only the compilation is wanted), so that the C entry points which
    call them link their code without optimising it again (``compile_speed``)."""
    index_modules()
    x = np.zeros(compiled.meta["n_dim"])
    for fn in (compiled.logp_fn, compiled.expand_fn):
        with np.errstate(all="ignore"), contextlib.suppress(Exception):
            fn(x)


def load_or_build(model, key: str, root: Path | None = None,
                  expected: float | None = None, point: dict | None = None,
                  where: str = "priors", observations_as_data: bool = False) -> Compiled:
    """The compiled model of ``model`` under ``key`` (``driver_key``, ``model_key``), checked
    against ``model`` (``check``; ``expected`` and ``point``: the model's own log-density at
    its prior's centre, and that centre, when the caller has them, as ``preflight.trial_logp``
    returns them; ``where``: the priors file, named by ``check``'s error): from this process,
    from the disk cache (``<root>/compiled/<key>``, default the user's cache folder) or
    compiled now and stored; its ``source`` says which ("process", "disk" or "built"). An entry
    that fails the check is dropped and compiled again; a fresh compilation that fails it raises
    ``ModelMismatch``. ``observations_as_data``: the observations are read at run time
    (``model_data``; the key must say so too, ``driver_key``)."""
    from .preflight import trial_logp

    if expected is None:
        trial = trial_logp(model)
        expected, point = trial["logp"], trial["point"]
    base = Path(root or cache_dir()) / "compiled"
    data = model_data(model, observations_as_data)
    with _LOCK:
        compiled = _PROCESS.pop(key, None)
        if compiled is not None:
            compiled.source = "process"
            compiled = _checked(compiled, model, expected, point, where)
        if compiled is None:
            with _key_lock(base, key):  # one process compiles a key; the others wait, then read
                compiled = _checked(_from_disk(base, key, data), model, expected, point, where)
                if compiled is None:
                    shutil.rmtree(base / key, ignore_errors=True)
                    compiled = _store(model, key, base, data)
                    check(compiled, model, expected, point, where)
        if len(_PROCESS) >= _PROCESS_MAX:
            _PROCESS.pop(next(iter(_PROCESS)))
        _PROCESS[key] = compiled  # most recently used last
        return compiled


def is_stored(key: str, root: Path | None = None) -> bool:
    """Whether the compiled model ``key`` is in this process or on disk (``load_or_build``'s
    ``root``), so that loading it takes seconds, not the minute compiling may take. An entry
    on disk is not read here: it may still fail its check when loaded."""
    return key in _PROCESS or (Path(root or cache_dir()) / "compiled" / key).is_dir()


def _from_disk(base: Path, key: str, data: tuple[str, ...]) -> Compiled | None:
    """The entry ``base/key`` as stored, or None (none there, or damaged: a warning)."""
    if not (base / key).is_dir():
        return None
    try:
        compiled = _import_wrappers(_load(base / key, key, data), base / key)
    except ModelMismatch as exc:
        logger.warning(f"compiled model cache: {exc}; compiling again")
        return None
    compiled.source = "disk"
    os.utime(base / key)  # least recently used are pruned first
    return compiled


def _checked(compiled: Compiled | None, model, expected, point, where) -> Compiled | None:
    """``compiled`` if it passes ``check`` against ``model``, else None (a warning)."""
    if compiled is None:
        return None
    try:
        check(compiled, model, expected, point, where)
    except ModelMismatch as exc:
        logger.warning(f"compiled model cache: {exc}; compiling again")
        return None
    return compiled


@contextlib.contextmanager
def _key_lock(base: Path, key: str):
    """An exclusive lock on ``base/<key>.lock`` across processes (``fcntl.flock``; waits for
    the holder): processes that need one model at the same time (a cluster's workers, a test
    session's) compile it once."""
    import fcntl

    fd = os.open(cache_folder(base) / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info(f"compiled model {key[:16]}: another process is compiling it; waiting")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.utime(fd)  # in use: not pruned
        yield
    finally:
        os.close(fd)  # releases the lock


def _store(model, key: str, base: Path, data: tuple[str, ...]) -> Compiled:
    """Compile ``model`` into a temporary folder, rename it into ``base/key`` and load it from
    there, as every later process will, with the PyTensor functions just compiled (unpickling
    them would take ~2 s and give the same: both are numba's code of the same source, without
    fast-math; the check compares the entry's log-density with the model's)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=cache_folder(base)))
    try:
        functions = _build(model, key, tmp / "entry", data)
        try:
            os.replace(tmp / "entry", base / key)
        except OSError:  # another process stored the same entry first
            pass
        compiled = _load(base / key, key, data)
        if functions is not None:  # else unpickled from the entry
            compiled.logp_fn, compiled.expand_fn = functions
        compiled = _import_wrappers(compiled, base / key, cached_first=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    compiled.source = "built"
    _prune(base)
    return compiled


def _prune(base: Path, keep: int = MAX_ENTRIES) -> None:
    entries = sorted((p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in base.glob(".*"):  # a temporary folder older than an hour: a crashed writer's
        if time.time() - tmp.stat().st_mtime > 3600:
            shutil.rmtree(tmp, ignore_errors=True)
    for lock in base.glob("*.lock"):  # the lock of an entry gone, unused for an hour
        if not lock.with_suffix("").is_dir() and time.time() - lock.stat().st_mtime > 3600:
            lock.unlink(missing_ok=True)


def check(compiled: Compiled, model, expected: float, point: dict | None = None,
          where: str = "priors") -> float:
    """The model's log-density at its prior's centre (``point``, default
    ``model.initial_point()``) from the compiled C entry point, which must agree with
    ``expected``, the model's own graph evaluated without compilation
    (``preflight.trial_logp``) -- ``ModelMismatch`` otherwise; returns it. Its gradient there
    must be finite (``preflight.ModelCheckError`` naming ``where`` otherwise: the sampler
    could not start)."""
    import ctypes

    point = model.initial_point() if point is None else point
    meta = compiled.meta
    x = np.zeros(meta["n_dim"])
    for name, (a, b), shape in zip(meta["names"], meta["slices"], meta["shapes"]):
        if b <= meta["n_dim"]:
            x[a:b] = np.asarray(point[name], dtype=float).ravel()
    values = data_vector(compiled, model)
    grad, out = np.zeros(meta["n_dim"]), np.zeros(1)
    dp = ctypes.POINTER(ctypes.c_double)
    code = compiled.wrappers.logp.ctypes(meta["n_dim"], x.ctypes.data_as(dp),
                                         grad.ctypes.data_as(dp), out.ctypes.data_as(dp),
                                         values.ctypes.data_as(ctypes.c_void_p))
    got = float(out[0])
    if code != 0 or not np.isclose(got, expected, rtol=RTOL, atol=1e-10):
        raise ModelMismatch(f"compiled model {compiled.key[:16]}: log-density {got!r} (code "
                            f"{code}) at the prior's centre, the model's own is {expected!r}")
    if not np.all(np.isfinite(grad)):
        from .preflight import impossible_history
        raise impossible_history(where, got, [])
    return got


def nutpie_model(compiled: Compiled, model):
    """nutpie's model of ``model`` on ``compiled``: the C entry points, ``model``'s data
    (``data_vector``) as their ``user_data``, and ``model``'s own starting points (PyMC's
    support points, jittered, as nutpie's ``compile_pymc_model`` makes them). ``with_data``
    gives it other data."""
    import pandas as pd
    from nutpie.compile_pymc import CompiledPyMCModel, _rv_dict_to_flat_array_wrapper
    from pymc.initial_point import make_initial_point_fn

    meta = compiled.meta
    free = [(n, tuple(s)) for n, (a, b), s in zip(meta["names"], meta["slices"], meta["shapes"])
            if b <= meta["n_dim"]]
    start = make_initial_point_fn(model=model, return_transformed=True,
                                  jitter_rvs=set(model.free_RVs), default_strategy="support_point")
    lock = threading.Lock()

    def locked(seed=None):
        with lock:
            return start(seed)

    initial = _rv_dict_to_flat_array_wrapper(locked, names=[n for n, _ in free],
                                            shapes=[s for _, s in free])
    values = data_vector(compiled, model)
    values.flags.writeable = False
    shape_info = (meta["names"], [slice(a, b) for a, b in meta["slices"]],
                  [tuple(s) for s in meta["shapes"]])
    return CompiledPyMCModel(
        _n_dim=meta["n_dim"], dims={k: tuple(v) for k, v in meta["dims"].items()},
        _coords={k: pd.Index(v) for k, v in meta["coords"].items()},
        _shapes={n: tuple(s) for n, s in zip(meta["names"], meta["shapes"])},
        compiled_logp_func=compiled.wrappers.logp, compiled_expand_func=compiled.wrappers.expand,
        initial_point_func=initial, shared_data={}, shared_var_keys={}, user_data=values,
        n_expanded=meta["n_expanded"], shape_info=shape_info, logp_func=compiled.logp_fn,
        expand_func=compiled.expand_fn, reparameterized_names=meta["reparameterized"])


def with_data(nutpie_compiled, compiled: Compiled, model, values: dict):
    """``nutpie_compiled`` (``nutpie_model`` of ``compiled`` and ``model``) reading the data
    ``values`` (name -> array: observations kept as data, ``model_data``) instead of
    ``model``'s own; the rest of ``model``'s data as they are."""
    import dataclasses

    vector = data_vector(compiled, model, values)
    vector.flags.writeable = False
    return dataclasses.replace(nutpie_compiled, user_data=vector)
