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
* each C entry point is written as a small Python module next to its function
  (``WRAPPERS``), whose numba function reads the data (the prior values, then any observations
  kept as data, joined in one float64 vector, ``data_vector``) from nutpie's ``user_data``
  pointer and calls the PyTensor function as a module global: numba caches it on disk, keyed
  by that file's content, which is unique to the entry. A process that finds it in numba's
  cache does not unpickle the PyTensor function at all (~2.6 s for the driver model);
* the two entry points are two entries (``PARTS``), each compiled on its own, so that two
  processes can compile them at once: a run whose driver model is not stored has its second
  process build the expand part (``build_part``) while it compiles the log-density
  (``stforecast.run``);
* processes that need one entry at the same time compile it once (a lock per entry: the
  others wait, then read it).

A model's entries are ``<cache>/compiled/<key>-logp/`` and ``<key>-expand/``, each with
``functions.pkl`` (the pickled PyTensor function), ``meta.json`` (shapes, names, the pickle's
sha256; the model's layout, the same in both) and ``wrappers.py``. Each is written in a
temporary folder and renamed into place (a reader never sees half an entry); a damaged entry
(unreadable, wrong checksum, a layout that differs from its sibling's, a log-density that
disagrees with the model's own) is removed and compiled again, never used
(``ModelMismatch``). The freshly built model checks every compiled model it uses: the
log-density at the prior's centre, from the cached functions and from the model's own graph
evaluated without compilation, must agree (``check``).

It calls nutpie 0.16's private compile helpers (``_make_functions``, of which it compiles one
function per part,
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
from .compile_speed import entry_points_as_linked, install as faster_compiles
from .errors import StforecastError
from .model import PRIOR_VALUES, prior_layout

FORMAT = 3
#: nutpie's two C entry points, in the order nutpie's ``_make_functions`` compiles them: each
#: its own entry (``part_key``).
PARTS = ("logp", "expand")
#: Entries kept on disk (two per model); the least recently used are removed beyond this.
MAX_ENTRIES = 32
#: stforecast's modules whose source decides the compiled driver model.
SOURCES = ("model", "processes", "compiled", "fit")
#: ... and the compiled peer regression (``peers.build_peer_model``).
PEER_SOURCES = ("peers", "compiled", "fit")
#: Relative tolerance between the cached log-density and the model's own at the prior's centre
#: (the compiled graph is rewritten, the reference is not: they differ by rounding only).
RTOL = 1e-8

logger = logging.getLogger(__name__)
_INNER: dict[str, object] = {}  # an entry's key -> its PyTensor function's numba code
_LOCK = threading.Lock()
_PROCESS: dict[str, "Compiled"] = {}  # key -> compiled model, most recently used last
_PROCESS_MAX = 8


class ModelMismatch(StforecastError):
    """A cached compiled model is damaged or does not evaluate as the model it was loaded for
    (one line, naming the entry's file). A run compiles again rather than show it; a fresh
    compilation that fails the check raises it."""


def inner_function(key: str):
    """The PyTensor function's numba code of entry ``key`` (called by its ``wrappers.py`` on
    import), or None when it is not loaded: numba's cache then serves the entry point or its
    compilation fails (``_import_wrappers``)."""
    return _INNER.get(key)


def part_key(key: str, part: str) -> str:
    """The entry of the part ``part`` (``PARTS``) of the compiled model ``key``."""
    if part not in PARTS:
        raise ValueError(f"part: expected one of {PARTS}, got {part!r}")
    return f"{key}-{part}"


WRAPPERS = '''"""nutpie's {part} C entry point of stforecast's compiled model (entry {key}).

Written by stforecast.compiled; numba caches the compiled function next to this file.
"""
import numba
import numpy as np

from stforecast.compiled import inner_function

_inner = inner_function("{key}")
N_DIM = {n_dim}
N_EXPANDED = {n_expanded}
N_VALUES = {n_values}
_double_p = numba.types.CPointer(numba.types.double)
'''

LOGP = '''LOGP = numba.types.int64(numba.types.uint64, _double_p, _double_p, _double_p,
                         numba.types.voidptr)


@numba.cfunc(LOGP, cache=True)
def logp(dim, x_, grad_, logp_, values_):
    """0, or nutpie's error code: -1 wrong size, 1 failed, 3 gradient or 4 value not finite."""
    if dim != N_DIM:
        return -1
    try:
        x = numba.carray(x_, (N_DIM,))
        values = numba.carray(values_, (N_VALUES,), np.float64)
        value, grad = _inner(x{args})
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
'''

EXPAND = '''EXPAND = numba.types.int64(numba.types.uint64, numba.types.uint64, _double_p, _double_p,
                           numba.types.voidptr)


@numba.cfunc(EXPAND, cache=True)
def expand(dim, expanded, x_, out_, values_):
    """0, or -1 (wrong sizes), -2 (failed)."""
    if dim != N_DIM or expanded != N_EXPANDED:
        return -1
    try:
        x = numba.carray(x_, (N_DIM,))
        values = numba.carray(values_, (N_VALUES,), np.float64)
        (drawn,) = _inner(x{args})
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
class Part:
    """One of a compiled model's two entries (``PARTS``): its PyTensor function and C entry
    point."""

    key: str  # the entry's key (``part_key``)
    name: str  # "logp" (x -> log-density, gradient) or "expand" (x -> all stored values, joined)
    meta: dict
    fn: object = None  # the pytensor Function; None until needed
    cfunc: object = None  # the numba cfunc nutpie calls
    source: str = ""  # where it was found: "disk" or "built"
    blob: bytes = b""  # the pickled PyTensor function (``functions.pkl``), until imported


@dataclass
class Compiled:
    """A compiled model: its two parts (``Part``) and nutpie's layout (``meta``, the log-density
    part's; the expand part's layout is the same, ``_same_layout``)."""

    key: str
    parts: dict
    source: str = ""  # where the last ``load_or_build`` call found it

    @property
    def meta(self) -> dict:
        return self.parts["logp"].meta

    @property
    def logp_fn(self):
        return self.parts["logp"].fn

    @property
    def expand_fn(self):
        return self.parts["expand"].fn

    @property
    def wrappers(self):
        """The two C entry points: ``.logp`` and ``.expand``."""
        from types import SimpleNamespace
        return SimpleNamespace(**{name: part.cfunc for name, part in self.parts.items()})


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


def _make_part(frozen, part: str) -> tuple:
    """nutpie's ``_make_functions`` on ``frozen``, compiling only the function of ``part``: the
    graphs are nutpie's own, and the other function is not compiled (``None``). It compiles
    the log-density, then the expand function; a nutpie that compiles otherwise is refused.
    Its starting points are not made here (``nutpie_model`` makes them on the model sampled):
    the function it wraps is never called, so none is given."""
    import pymc.pytensorf as pytensorf
    from nutpie.compile_pymc import _make_functions

    from .fit import numba_compile

    compile_, made, thread = pytensorf.compile, [], threading.get_ident()

    def only_this_part(*args, **kwargs):
        if threading.get_ident() != thread:  # another thread's compilation: untouched
            return compile_(*args, **kwargs)
        which = PARTS[len(made)] if len(made) < len(PARTS) else None
        made.append(which)
        return compile_(*args, **kwargs) if which == part else None

    pytensorf.compile = only_this_part
    try:
        with numba_compile():
            out = _make_functions(frozen, mode="NUMBA", compute_grad=part == "logp",
                                  join_expanded=True, pymc_initial_point_fn=None)
    finally:
        pytensorf.compile = compile_
    if made != list(PARTS):
        raise ModelMismatch(f"nutpie compiled {len(made)} functions, expected {list(PARTS)}: "
                            f"this nutpie is not the one stforecast.compiled was written for")
    return out


def _build(model, key: str, folder: Path, data: tuple[str, ...], part: str):
    """Compile ``model``'s ``part`` (nutpie's graph function, ``fit.numba_compile``'s settings),
    its data ``data`` read at run time (the rest frozen), and write the entry ``key`` into
    ``folder``; returns the PyTensor function."""
    from nutpie.compile_pymc import _prepare_dims_and_coords

    frozen = _frozen(model, data)
    n_dim, n_expanded, logp_fn, expand_fn, _, shape_info, reparameterized = _make_part(
        frozen, part)
    fn = logp_fn if part == "logp" else expand_fn
    takes = [v.name for v in fn.get_shared()]  # the order of the function's inputs
    if not set(takes) <= set(data):
        raise ModelMismatch(f"the {part} function reads data other than {list(data)}: {takes}")
    names, slices, shapes = shape_info
    dims, coords = _prepare_dims_and_coords(frozen, shape_info, reparameterized)
    layout = data_layout(model, data)
    blob = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
    meta = {"format": FORMAT, "key": key, "part": part, "n_dim": int(n_dim),
            "n_expanded": int(n_expanded), "n_values": layout[-1]["stop"] if layout else 0,
            "data": layout, "takes_values": takes, "names": list(names),
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
    return fn


#: What a model's two entries must agree on (``_same_layout``).
LAYOUT = ("n_dim", "n_expanded", "n_values", "data", "names", "slices", "shapes",
          "reparameterized", "dims", "coords")


def _wrappers_source(meta: dict) -> str:
    where = {e["name"]: e for e in meta["data"]}
    args = ""
    for name in meta["takes_values"]:  # the data arguments after ``x``: slices of ``values``
        e = where[name]
        whole = e["start"] == 0 and e["stop"] == meta["n_values"] and len(e["shape"]) == 1
        args += (", values" if whole else  # the prior values alone: the vector itself
                 f", values[{e['start']}:{e['stop']}].reshape({tuple(e['shape'])!r})")
    body = LOGP if meta["part"] == "logp" else EXPAND
    return (WRAPPERS.format(part=meta["part"], key=meta["key"], n_dim=meta["n_dim"],
                            n_expanded=meta["n_expanded"], n_values=meta["n_values"])
            + "\n" + body.format(args=args))


def _load(folder: Path, key: str, data: tuple[str, ...], part: str) -> Part:
    """The entry in ``folder``; ``ModelMismatch`` when it is damaged or not this key's and
    part's (or does not read the data ``data``)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        blob = (folder / "functions.pkl").read_bytes()
        wrappers = (folder / "wrappers.py").read_text()
    except (OSError, ValueError) as exc:
        raise ModelMismatch(f"{folder}: unreadable ({exc})") from None
    if meta.get("format") != FORMAT or meta.get("key") != key or meta.get("part") != part:
        raise ModelMismatch(f"{folder}: not an entry of this format, key and part")
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ModelMismatch(f"{folder}/functions.pkl: checksum mismatch (damaged)")
    stored = [e.get("name") for e in meta.get("data") or [] if isinstance(e, dict)]
    if stored != list(data):
        raise ModelMismatch(f"{folder}/meta.json: reads the data {stored}, not {list(data)}")
    if wrappers != _wrappers_source(meta):
        raise ModelMismatch(f"{folder}/wrappers.py: not what this entry's layout writes")
    return Part(key, part, meta, blob=blob)


def _unpickle(part: Part, folder: Path) -> None:
    """The entry's PyTensor function, unpickled (~2.6 s for the default driver model's two:
    PyTensor links them to numba again, its cache serving their code)."""
    from .fit import numba_compile

    try:
        with numba_compile():  # unpickling links the function to numba: the same settings
            part.fn = pickle.loads(part.blob)
    except Exception as exc:  # noqa: BLE001 (a pickle of other versions fails in many ways)
        raise ModelMismatch(f"{folder}/functions.pkl: does not load ({exc})") from None


def _import_wrappers(part: Part, folder: Path, cached_first: bool = True) -> Part:
    """Import the entry's ``wrappers.py``: numba loads its function from its cache next to
    the file, and the PyTensor function it calls is not needed (``cached_first``); when its
    cache does not serve it (its first import, or numba's cache gone), it is compiled, calling
    the PyTensor function, unpickled for it."""
    name = f"stforecast_compiled_{part.key[:24]}_{part.name}"

    def execute():
        spec = importlib.util.spec_from_file_location(name, folder / "wrappers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # numba's cache finds the functions' globals by module name
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return getattr(module, part.name)

    if cached_first and part.key not in _INNER:
        try:
            part.cfunc = execute()  # without the function: numba's cache or an error
            part.blob = b""  # not needed any more (kept in the process's store)
            return part
        except Exception:  # noqa: BLE001 (numba cannot type a call of None: not cached)
            pass
    if part.fn is None:
        _unpickle(part, folder)
    _compile_inner(part)
    _INNER[part.key] = part.fn.vm.jit_fn
    try:
        with entry_points_as_linked():  # the code it links was optimised just now
            part.cfunc = execute()
    except Exception as exc:  # noqa: BLE001 (an entry removed or damaged meanwhile)
        raise ModelMismatch(f"{folder}/wrappers.py: does not load ({exc})") from None
    part.blob = b""
    return part


def _compile_inner(part: Part) -> None:
    """numba's code of the entry's PyTensor function, compiled (and optimised) by a first call
    at the origin of the sampler's scale (where a model may not be finite: an error there is
    of no matter, only the compilation is wanted), so that the C entry point which calls it
    links its code without optimising it again (``compile_speed``)."""
    faster_compiles()
    with np.errstate(all="ignore"), contextlib.suppress(Exception):
        part.fn(np.zeros(part.meta["n_dim"]))


def load_or_build(model, key: str, root: Path | None = None, where: str = "priors",
                  observations_as_data: bool = False, reference=None) -> Compiled:
    """The compiled model of ``model`` under ``key`` (``driver_key``, ``model_key``), checked
    against ``model`` (``check``; ``reference``: the model's own log-density at its prior's
    centre as ``preflight.trial_logp`` returns it, when the caller has it, or a function of no
    arguments that returns it, called when the check needs it, after any compiling; else it is
    evaluated here; ``where``: the priors file, named by ``check``'s error): from this process,
    from the disk cache (``<root>/compiled/<key>-<part>``, default the user's cache folder) or
    compiled now and stored; its ``source`` says which ("process", "disk" or "built": either
    part compiled now). A model that fails the check is dropped and compiled again; a fresh
    compilation that fails it raises ``ModelMismatch``. ``observations_as_data``: the
    observations are read at run time (``model_data``; the key must say so too,
    ``driver_key``)."""
    base = Path(root or cache_dir()) / "compiled"
    data = model_data(model, observations_as_data)

    def centre() -> tuple:
        """The model's own log-density at its prior's centre, the centre, the priors file."""
        nonlocal reference
        if reference is None:
            from .preflight import trial_logp
            reference = trial_logp(model, where)
        elif callable(reference):
            reference = reference()
        return reference["logp"], reference["point"], reference.get("where", where)

    with _LOCK:
        compiled = _PROCESS.pop(key, None)
        if compiled is not None:
            compiled.source = "process"
            compiled = _checked(compiled, model, centre)
        if compiled is None:
            compiled = _checked(_parts(model, key, base, data), model, centre)
        if compiled is None:  # an entry on disk failed the check: both compiled again
            compiled = _parts(model, key, base, data, drop=True)
            check(compiled, model, *centre())
        if len(_PROCESS) >= _PROCESS_MAX:
            _PROCESS.pop(next(iter(_PROCESS)))
        _PROCESS[key] = compiled  # most recently used last
        return compiled


def build_part(model, key: str, part: str, root: Path | None = None,
               observations_as_data: bool = False) -> str:
    """Make sure the part ``part`` of ``model``'s compiled model ``key`` is stored, with its C
    entry point in numba's cache, so that a process that loads the model later reads it
    (another process's share of a first compilation, ``stforecast.run``); returns where it
    was found ("disk" or "built"). Nothing is checked here: ``load_or_build`` checks the
    model it loads."""
    base = Path(root or cache_dir()) / "compiled"
    with _LOCK:
        return _part(model, key, base, model_data(model, observations_as_data), part).source


def _parts(model, key: str, base: Path, data: tuple[str, ...], drop: bool = False) -> Compiled:
    """Both parts of ``key``, from disk or compiled and stored (``drop``: compiled again)."""
    parts = {part: _part(model, key, base, data, part, drop) for part in PARTS}
    try:
        _same_layout(parts)
    except ModelMismatch as exc:
        logger.warning(f"compiled model cache: {exc}; compiling again")
        parts = {part: _part(model, key, base, data, part, drop=True) for part in PARTS}
        _same_layout(parts)
    built = any(p.source == "built" for p in parts.values())
    return Compiled(key, parts, "built" if built else "disk")


def _same_layout(parts: dict) -> None:
    logp, expand = parts["logp"], parts["expand"]
    differ = [k for k in LAYOUT if logp.meta.get(k) != expand.meta.get(k)]
    if differ:
        raise ModelMismatch(f"compiled model {logp.key[:16]}: its two parts differ in "
                            f"{', '.join(differ)}")


def _part(model, key: str, base: Path, data: tuple[str, ...], part: str,
          drop: bool = False) -> Part:
    """The part ``part`` of ``key`` from disk, else compiled and stored (``drop``: compiled
    again, the stored one removed); one process compiles an entry, the others wait for it."""
    entry = part_key(key, part)
    with _key_lock(base, entry):  # one process compiles an entry; the others wait, then read
        found = None if drop else _from_disk(base, entry, data, part)
        if found is None:
            shutil.rmtree(base / entry, ignore_errors=True)
            found = _store(model, entry, base, data, part)
        return found


def is_stored(key: str, root: Path | None = None) -> bool:
    """Whether the compiled model ``key`` is in this process or on disk (``load_or_build``'s
    ``root``), so that loading it takes seconds, not the minute compiling may take. An entry
    on disk is not read here: it may still fail its check when loaded."""
    base = Path(root or cache_dir()) / "compiled"
    return key in _PROCESS or all((base / part_key(key, p)).is_dir() for p in PARTS)


def _from_disk(base: Path, key: str, data: tuple[str, ...], part: str) -> Part | None:
    """The entry ``base/key`` as stored, or None (none there, or damaged: a warning)."""
    if not (base / key).is_dir():
        return None
    try:
        found = _import_wrappers(_load(base / key, key, data, part), base / key)
    except ModelMismatch as exc:
        logger.warning(f"compiled model cache: {exc}; compiling again")
        return None
    found.source = "disk"
    os.utime(base / key)  # least recently used are pruned first
    return found


def _checked(compiled: Compiled | None, model, centre) -> Compiled | None:
    """``compiled`` if it passes ``check`` against ``model`` (``centre()``: the model's own
    log-density at its prior's centre, the centre and the priors file), else None (a
    warning)."""
    if compiled is None:
        return None
    try:
        check(compiled, model, *centre())
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


def _store(model, key: str, base: Path, data: tuple[str, ...], part: str) -> Part:
    """Compile ``model``'s ``part`` into a temporary folder, rename it into ``base/key`` and
    load it from there, as every later process will, with the PyTensor function just compiled
    (unpickling it would take ~1 s and give the same: both are numba's code of the same
    source, without fast-math; the check compares the model's log-density with its own)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=cache_folder(base)))
    try:
        fn = _build(model, key, tmp / "entry", data, part)
        try:
            os.replace(tmp / "entry", base / key)
        except OSError:  # another process stored the same entry first
            pass
        found = _load(base / key, key, data, part)
        found.fn = fn  # None when the entry came from elsewhere: unpickled then
        found = _import_wrappers(found, base / key, cached_first=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found.source = "built"
    _prune(base)
    return found


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
