"""Dask as the engine for independent fits and simulations (calibration, sweeps, many companies).

* ``client(scheduler=None)``: a ``distributed.Client`` as a context manager. It connects to
  ``scheduler`` (an address such as ``tcp://10.0.0.5:8786``), else to ``DASK_SCHEDULER_ADDRESS``
  / dask's ``scheduler-address`` setting, else starts an embedded ``LocalCluster`` with one
  single-threaded worker process per core (PyTensor compilation and PyMC sampling are not
  thread-safe). It closes only what it started. No pool, queue or scheduler of our own: Dask
  schedules, retries tasks of a lost worker and reports progress.
* ``ModelInputs``: what a task needs to rebuild a company's model anywhere: the TEXT of the
  company's input files (company, priors, scenarios, peers), so a worker needs no shared file
  system to read them. It pickles; the compiled model does not.
* ``worker_cached(key, build)``: one object per worker process and key (module-level dict).
  ``refitter(inputs)`` uses it so that each worker compiles a company's driver model once
  (nutpie, ~25 s) and reuses it with new data (``with_data``) for every later task.
* ``map_tasks(client, fn, items, ...)``: submit ``fn(item)`` per item (or run them in this
  process when ``client`` is None: the serial reference), yield ``(index, result)`` as they
  finish, with a progress line. Seeds belong to the items, never to the schedule, so results
  are identical serially and on any cluster.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .registry import COMPANY_FILE, PRIORS_FILE, SCENARIOS_FILE

#: Environment variable (Dask's own) naming the scheduler to connect to.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Times a task is retried after raising (a lost worker is handled by the scheduler itself,
#: which reschedules its tasks on the others).
RETRIES = 2


def scheduler_address(scheduler: str | None = None) -> str | None:
    """The scheduler to connect to: ``scheduler``, else ``$DASK_SCHEDULER_ADDRESS``, else dask's
    ``scheduler-address`` configuration; ``None`` = start an embedded ``LocalCluster``."""
    if scheduler:
        return scheduler
    import dask.config
    return os.environ.get(SCHEDULER_ENV) or dask.config.get("scheduler-address", None) or None


@contextmanager
def client(scheduler: str | None = None, n_workers: int | None = None):
    """A ``distributed.Client`` (see the module docstring); closes what it started.

    ``n_workers``: workers of the embedded cluster (default: one per core); ignored when
    connecting to a scheduler.
    """
    from distributed import Client, LocalCluster

    address = scheduler_address(scheduler)
    if address is not None:
        with Client(address) as c:
            yield c
        return
    n = n_workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


# --- model inputs, picklable ---------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInputs:
    """A company folder as text: ``files`` = ((file name in the folder, text), ...).

    ``folder``: where the files came from (used as-is when a worker sees the same files there,
    so results name the real folder); ``key``: the company's key (the folder's name).
    """

    key: str
    folder: str
    files: tuple[tuple[str, str], ...]

    @classmethod
    def from_company(cls, company, priors_path: str | Path | None = None,
                     scenarios_path: str | Path | None = None) -> "ModelInputs":
        """The inputs of ``company`` (a ``Company``), with the priors / scenarios file replaced
        by ``priors_path`` / ``scenarios_path`` when given."""
        folder = Path(company.folder)
        texts = {}
        for label, (path, text) in company.files.items():
            path = Path(path)
            name = path.name if path.parent.resolve() == folder.resolve() else None
            if name is None:
                raise ValueError(f"{path}: the {label} file must sit in the company folder "
                                 f"{folder} to be shipped to workers")
            texts[name] = text
        for name, override in ((PRIORS_FILE, priors_path), (SCENARIOS_FILE, scenarios_path)):
            if override is not None:
                texts[name] = Path(override).read_text()
        return cls(company.key, str(folder), tuple(sorted(texts.items())))

    @property
    def sha256(self) -> str:
        """Hash of every file's name and text: the identity of the model and its inputs."""
        h = hashlib.sha256()
        for name, text in self.files:
            h.update(name.encode() + b"\0" + text.encode() + b"\0")
        return h.hexdigest()

    def text(self, name: str) -> str:
        return dict(self.files)[name]

    def folder_here(self) -> Path:
        """A folder holding exactly these files in this process: the original folder when it
        has them (same text), else a copy written once under the temporary directory."""
        original = Path(self.folder)
        try:
            if all((original / n).read_text() == t for n, t in self.files):
                return original
        except OSError:
            pass
        target = Path(tempfile.gettempdir()) / "stforecast-inputs" / self.sha256[:16] / self.key
        if not (target / COMPANY_FILE).is_file():
            tmp = target.parent / f".{self.key}.tmp-{os.getpid()}"
            tmp.mkdir(parents=True, exist_ok=True)
            for name, text in self.files:
                (tmp / name).write_text(text)
            try:
                os.replace(tmp, target)
            except OSError:  # another process of this machine got there first
                if not (target / COMPANY_FILE).is_file():
                    raise
        return target

    def company(self):
        """The ``Company`` (parsed once per process)."""
        from .company import load_company
        # keyed by the company's key and folder too: two companies may share identical files
        return worker_cached(("company", self.key, self.folder, self.sha256),
                             lambda: load_company(self.folder_here()))

    def priors(self):
        """The company's ``PriorSpec`` (parsed once per process)."""
        from .priors import load_priors
        company = self.company()
        return worker_cached(("priors", self.key, self.folder, self.sha256), lambda: load_priors(
            company.priors_path, company.growth_drivers()))


# --- per-worker cache ----------------------------------------------------------------------------
_CACHE: dict = {}


def worker_cached(key, build: Callable):
    """``build()`` once per process and ``key`` (e.g. a compiled model keyed by its inputs'
    hash); later calls with the same key return the same object."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def refitter(inputs: ModelInputs):
    """The company's driver model, compiled at most once per worker (see ``Refitter``), with a
    compiled prior sampler beside it (``prior_draw``)."""
    def build():
        from .calibration import Refitter
        from .model import observations_from_company
        company = inputs.company()
        return Refitter(inputs.priors(), observations_from_company(company), company)
    return worker_cached(("refitter", inputs.sha256), build)


def prior_sampler(inputs: ModelInputs) -> Callable[[int], dict]:
    """``draw(seed) -> {free parameter: value}``: one prior draw of the driver model, from a
    function compiled once per worker (``pm.sample_prior_predictive`` would compile per call),
    with PyTensor's ``FAST_COMPILE`` mode, as ``calibration.Refitter.prior_draws`` draws: no C
    compiler (with an empty compile cache the first draw took 13.0 s with C, 1.6 s without;
    200 draws 0.29 s and 0.18 s). The draws are the prior's either way, not the same in the
    last bits, so a calibration's truths are not those of the C-compiled function's."""
    def build():
        from pymc.pytensorf import reseed_rngs
        from pytensor.tensor.random.type import RandomGeneratorType
        model = refitter(inputs).model
        fn = model.compile_fn(model.free_RVs, inputs=[], point_fn=False, mode="FAST_COMPILE")
        rngs = [v for v in fn.get_shared() if isinstance(v.type, RandomGeneratorType)]
        names = [rv.name for rv in model.free_RVs]

        def draw(seed: int) -> dict:
            reseed_rngs(rngs, seed)
            return dict(zip(names, fn()))
        return draw
    return worker_cached(("prior", inputs.sha256), build)


# --- running tasks ------------------------------------------------------------------------------
def map_tasks(dask_client, fn: Callable, items: Iterable, *, args: tuple = (),
              retries: int = RETRIES, label: str = "tasks", log: Callable | None = None,
              on_result: Callable | None = None) -> Iterator[tuple[int, object]]:
    """``fn(item, *args)`` for every item, yielded as ``(index, result)`` when each finishes.

    ``dask_client``: a ``distributed.Client``, or ``None`` to run in this process in order (the
    serial reference). ``args``: shared arguments (e.g. a scattered future). Progress (tasks
    done / total) goes to ``log`` (default: a bar on stderr when it is a terminal, else a line
    at every tenth). ``on_result(done, total)`` is called after each result.
    """
    items = list(items)
    total = len(items)
    progress = _progress(total, label, log)
    if dask_client is None:
        for i, item in enumerate(items):
            result = fn(item, *args)
            progress(i + 1)
            if on_result is not None:
                on_result(i + 1, total)
            yield i, result
        return
    from distributed import as_completed
    futures = dask_client.map(fn, items, *[[a] * total for a in args], retries=retries,
                              pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    done = 0
    for future in as_completed(futures):
        result = future.result()
        done += 1
        progress(done)
        if on_result is not None:
            on_result(done, total)
        yield index[future.key], result
        future.release()


def _progress(total: int, label: str, log: Callable | None) -> Callable[[int], None]:
    """A progress reporter ``(done) -> None``."""
    start = time.perf_counter()
    bar = log is None and sys.stderr.isatty()
    step = max(1, total // 10)

    def report(done: int) -> None:
        elapsed = time.perf_counter() - start
        if bar:
            width = 30
            filled = int(width * done / max(total, 1))
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                             f"{label}  {elapsed:.0f} s")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif done == total or done % step == 0:
            (log or (lambda m: print(m, file=sys.stderr)))(
                f"{done}/{total} {label} done  [{elapsed:.1f} s]")
    return report


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` all at once (a temporary file beside it, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, path)
