"""``stforecast.compile_speed``: the two shortcuts of a cold numba compilation answer and compute
exactly as numba and llvmlite do without them."""

from __future__ import annotations

import threading

import numba
import numpy as np

from stforecast import compile_speed


def _engine():
    """The execution engine of numba's CPU target (llvmlite's ``ExecutionEngine``)."""
    from numba.core.registry import cpu_target

    return cpu_target.target_context.codegen()._engine._ee


def test_the_module_index_answers_as_llvmlites_scan():
    """Every module the engine holds is found at its address, as llvmlite's own scan finds it;
    an address it does not hold is not found; modules compiled after the index exists are
    found too."""
    compile_speed.install()

    @numba.njit
    def first(x):
        return x + 1.0

    first(1.0)
    engine = _engine()
    scan = compile_speed._INSTALLED["find"]
    modules = list(engine._modules)
    assert modules
    for module in modules:
        assert engine._find_module_ptr(module._ptr) is module is scan(engine, module._ptr)
    assert engine._find_module_ptr(12345) is None

    @numba.njit
    def later(x):
        return x * 3.0

    later(2.0)
    new = [m for m in engine._modules if m not in set(modules)]
    assert new
    for module in new:
        assert engine._find_module_ptr(module._ptr) is module


def _pair():
    """Two identical numba functions (a callee with real arithmetic and a caller that links it),
    compiled separately: numba keeps one compiled form per function."""
    def make():
        @numba.njit
        def inner(x):
            out = np.empty_like(x)
            for i in range(x.size):
                out[i] = np.log1p(np.exp(-abs(x[i]))) + 0.5 * x[i] * x[i] / (1.0 + x[i] ** 2)
            return out, out.sum()

        @numba.njit
        def outer(x):
            values, total = inner(x)
            return values * 3.0 - total

        return inner, outer
    return make(), make()


def test_entry_points_as_linked_compute_the_same_numbers_and_only_in_their_thread():
    """A caller compiled inside ``entry_points_as_linked`` (its callee compiled and optimised
    first, as ``compiled._import_wrappers`` does) gives bit-identical results to one compiled
    as numba compiles. Inside the context the module pipeline is skipped for libraries that
    link others, in the entering thread only: another thread's compilation runs it."""
    (inner_a, outer_a), (inner_b, outer_b) = _pair()
    x = np.random.default_rng(4).normal(size=1001) * 7.0
    expected = outer_a(x)  # compiled as numba compiles
    inner_b(x)  # the callee compiled and optimised as usual
    with compile_speed.entry_points_as_linked():
        pass  # installs the shortcut
    optimised = []  # (thread, library links others) of each library LLVM's pipeline ran on
    original = compile_speed._ORIGINAL_OPTIMISE[0]

    def counting(self):
        optimised.append((threading.current_thread().name, bool(self._linking_libraries)))
        return original(self)

    compile_speed._ORIGINAL_OPTIMISE[0] = counting
    try:
        with compile_speed.entry_points_as_linked():
            got = outer_b(x)
            assert not any(links for _, links in optimised)  # the caller: not optimised again

            def elsewhere():
                @numba.njit
                def other(y):
                    return inner_b(y)[1] * 2.0

                other(x)

            thread = threading.Thread(target=elsewhere, name="elsewhere")
            thread.start()
            thread.join()
        outside = len(optimised)

        @numba.njit
        def after(y):
            return inner_b(y)[1] - 1.0

        after(x)  # out of the context: optimised as numba does
    finally:
        compile_speed._ORIGINAL_OPTIMISE[0] = original
    assert any(links for _, links in optimised[outside:])
    assert ("elsewhere", True) in optimised
    assert got.tobytes() == expected.tobytes()


def test_a_cached_function_is_read_from_disk_once_per_process(monkeypatch):
    """Two numba functions of one PyTensor cache entry (PyTensor makes one per node of the same
    operation): the second gets what the first saved, from memory, not from disk; it computes
    the same numbers, and each keeps its own compile metadata. Functions cached otherwise
    (nutpie's entry points) are read as numba reads them. A fresh process reads the entry from
    disk and computes the same."""
    import subprocess
    import sys
    import uuid

    from numba.core import caching
    from pytensor.link.numba.cache import compile_numba_function_src

    compile_speed.install()
    key = f"stforecast-test-{uuid.uuid4().hex}"
    source = ("def kernel(x):\n"
              "    return np.log1p(np.exp(-np.abs(x))) * 0.5 + x * x\n")

    def node_function():  # as PyTensor makes a node's function (its globals name a module that
        # numba's cache imports when it reads the entry back)
        return numba.njit(cache=True)(compile_numba_function_src(
            source, "kernel", global_env={"np": np, "__name__": "numpy"}, cache_key=key))

    read = []
    original = caching.IndexDataCacheFile.load
    monkeypatch.setattr(caching.IndexDataCacheFile, "load",
                        lambda self, k: read.append(k) or original(self, k))
    x = np.random.default_rng(1).normal(size=257)
    first = node_function()
    a = first(x)  # compiled and saved (nothing on disk yet: one read that misses)
    reads = len(read)
    second = node_function()
    b = second(x)  # the same entry: handed over, not read again
    assert len(read) == reads
    assert a.tobytes() == b.tobytes()
    (sig,) = second.signatures
    assert second.overloads[sig].metadata is not first.overloads[sig].metadata

    script = ("import sys, numpy as np, numba\n"
              "from pytensor.link.numba.cache import compile_numba_function_src\n"
              f"f = numba.njit(cache=True)(compile_numba_function_src({source!r}, 'kernel', "
              f"global_env={{'np': np, '__name__': 'numpy'}}, cache_key={key!r}))\n"
              "x = np.random.default_rng(1).normal(size=257)\n"
              "print(f(x).tobytes().hex(), sum(f.stats.cache_hits.values()))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [a.tobytes().hex(), "1"]  # read from disk, the same numbers
