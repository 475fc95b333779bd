"""Three costs of a first (cold) numba compilation that give nothing back, removed.

A compiled model's first build makes numba compile ~2,000 small LLVM modules (PyTensor's
functions, one per node and helper, then nutpie's two C entry points). Measured on the default
driver model (2 cores, empty caches), three costs in it are waste (``install`` removes the first
two for the process):

* **llvmlite finds a module by scanning every module of its execution engine**
  (``_find_module_ptr``, called twice per compiled module by the object cache): quadratic in
  the modules compiled, ~1.3 s of the driver model's ~17 s of numba. The engine gets an index
  by address, kept with ``add_module`` and ``remove_module``; every answer is checked against
  the module's own address, and a miss falls back to llvmlite's own scan, so it answers
  exactly as llvmlite does (``tests/test_compile_speed.py``).
* **The same cached function is read from disk again for every node that uses it.** PyTensor
  gives each node of a graph its own numba function, cached on disk under a key of the node's
  operation: the graph's ~300 nodes share ~60 keys, so numba compiles ~60 functions, saves
  them, then reads them back ~1,700 times (each a file read, an unpickling and a new copy of the
  code to link): ~2 s. Within a process, a PyTensor function numba saved or loaded is handed to
  the next user of the same cache entry (the same index file and index key: the same source,
  closure, signature and target) as numba would have read it, with its own metadata. Other
  cached functions (nutpie's entry points, ``stforecast.compiled``) are left to numba.
* **An entry point optimises again what it links** (``entry_points_as_linked``). A numba
  function that calls others links their already optimised code into its own module and runs
  LLVM's whole module pipeline over all of it (~0.9 s for the driver model's two entry points,
  which link the entire log-density). Inside this context, in this thread, a library that
  links others is not optimised again. It is used for nutpie's C entry points only, after the
  PyTensor functions they call were compiled (and optimised) by a first call
  (``compiled._import_wrappers``). Without fast-math, LLVM's optimisations keep IEEE results,
  so the code computes the same numbers (tested bit for bit on a small caller; the default run
  still reproduces its fixture, made before these shortcuts).

None changes a number; they only matter when numba compiles (a cache hit loads object code).
They replace private methods of llvmlite 0.50 and numba 0.68 (``tests/test_compile_speed.py``
checks each against them); a version without those methods is left as it is (slower, the same
numbers).
"""

from __future__ import annotations

import contextlib
import threading
from ctypes import c_void_p, cast

_STATE = threading.local()
_INSTALLED: dict[str, object] = {}


def _address(module_ptr) -> int | None:
    return cast(module_ptr, c_void_p).value


def install() -> None:
    """The first two shortcuts of the module's docstring, for this process (once)."""
    if _INSTALLED:
        return
    _index_modules()
    _share_cached_functions()


def _index_modules() -> None:
    from llvmlite.binding import executionengine as ee

    engine = ee.ExecutionEngine
    if not all(hasattr(engine, n) for n in ("_find_module_ptr", "add_module", "remove_module")):
        return  # another llvmlite: its own lookup
    scan, add, remove = engine._find_module_ptr, engine.add_module, engine.remove_module

    def index(self) -> dict:
        found = self.__dict__.get("_stforecast_index")
        if found is None:
            found = self.__dict__["_stforecast_index"] = {
                _address(m._ptr): m for m in self._modules}
        return found

    def find(self, module_ptr):
        module = index(self).get(_address(module_ptr))
        if module is not None and module in self._modules and \
                _address(module._ptr) == _address(module_ptr):
            return module
        return scan(self, module_ptr)  # not indexed (added some other way): llvmlite's scan

    def add_module(self, module):
        add(self, module)
        index(self)[_address(module._ptr)] = module

    def remove_module(self, module):
        remove(self, module)
        index(self).pop(_address(module._ptr), None)

    engine._find_module_ptr, engine.add_module, engine.remove_module = find, add_module, \
        remove_module
    _INSTALLED.update(find=scan, add_module=add, remove_module=remove)


#: (index file, index key) -> a compiled function numba saved or loaded in this process.
_FUNCTIONS: dict = {}


def _share_cached_functions() -> None:
    from numba.core import caching

    cache = caching.Cache
    if not all(hasattr(cache, n) for n in ("_load_overload", "_save_overload", "_index_key")):
        return  # another numba: its own reads
    load, save = cache._load_overload, cache._save_overload

    def key(self, sig, codegen):
        return (self._cache_file._index_path, self._index_key(sig, codegen))

    def pytensors(self) -> bool:  # a node's function, cached by PyTensor's own locator
        return self._enabled and isinstance(self, caching.FunctionCache) and \
            type(self._impl.locator).__name__ == "NumbaPyTensorCacheLocator"

    def shared_load(self, sig, target_context):
        if not pytensors(self):  # others (nutpie's entry points) as numba does
            return load(self, sig, target_context)
        k = key(self, sig, target_context.codegen())
        known = _FUNCTIONS.get(k)
        if known is None or not hasattr(known, "_replace"):
            known = load(self, sig, target_context)
            if known is not None:
                _FUNCTIONS[k] = known
            return known
        # as read from disk, with metadata of its own (numba adds each user's timings to it)
        return known._replace(metadata={n: v for n, v in (known.metadata or {}).items()
                                        if n != "timers"})

    def shared_save(self, sig, data):
        save(self, sig, data)
        if pytensors(self):
            _FUNCTIONS.setdefault(key(self, sig, data.codegen), data)

    cache._load_overload, cache._save_overload = shared_load, shared_save
    _INSTALLED.update(load=load, save=save)


_ORIGINAL_OPTIMISE: list = []


@contextlib.contextmanager
def entry_points_as_linked():
    """In this thread, numba libraries that link others skip LLVM's module pipeline over the
    linked code (see the module's docstring); others are optimised as usual."""
    from numba.core import codegen

    library = codegen.CPUCodeLibrary
    if not _ORIGINAL_OPTIMISE and hasattr(library, "_optimize_final_module"):
        _ORIGINAL_OPTIMISE.append(library._optimize_final_module)

        def optimise(self):
            if getattr(_STATE, "as_linked", False) and getattr(self, "_linking_libraries", None):
                return None  # the linked code is optimised already; this one's functions too
            return _ORIGINAL_OPTIMISE[0](self)

        library._optimize_final_module = optimise
    before = getattr(_STATE, "as_linked", False)
    _STATE.as_linked = True
    try:
        yield
    finally:
        _STATE.as_linked = before
