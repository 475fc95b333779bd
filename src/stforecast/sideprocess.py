"""A second Python process that does one of stforecast's jobs beside the caller's own work.

Threads do not overlap these jobs. Matplotlib's drawing, h5netcdf's writing and PyTensor's
graph rewriting are mostly Python and hold the GIL, and numba compiles under one lock per
process. Measured on the default run: the draws took 2.6 s and the report 3.4 s, each alone,
but 7.0 s and 7.8 s on two threads.

A ``SideProcess`` is a fresh interpreter (``python -c``, with this stforecast on its path).
Nothing of the caller's script is imported there, so a user's script needs no ``__main__``
guard. It starts when the object is made and runs its job's warm-up (imports, a first use)
while the caller works. Then it waits for its one job: the pickled arguments on stdin. It
answers on stdout with ``(True, value)`` or ``(False, error)``, pickled.

It ends at once when its caller's process is gone (killed mid-run), so that it does not go on
writing in a folder the next run removes. Its jobs are the functions named in ``JOBS``: no
other code can be run in it.
"""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import StforecastError

__all__ = ["SideProcess", "JOBS"]

#: Job name -> (module, warm-up function or None, job function, what the job is, for errors).
JOBS = {
    "report": ("stforecast.report", "_warm_up", "_report_job", "report"),
    "peer_fit": ("stforecast.run", "_peer_fit_warm_up", "_peer_fit_job", "peer regression"),
}


class SideProcess:
    """One job (``JOBS``) in a second process. Use it as a context manager. ``send(*args)``
    sends the job's arguments; ``result()`` waits for its answer, and returns its value or
    raises its error. An error that says the process died names its exit status, in one line.

    On leaving the context, a process that got no job is ended, and so is one whose caller
    leaves on an error. Otherwise the job is waited for."""

    def __init__(self, job: str):
        if job not in JOBS:
            raise StforecastError(f"side process: expected a job among {sorted(JOBS)}, "
                                  f"got {job!r}")
        self.job, self.what = job, JOBS[job][3]
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                            if p)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from stforecast.sideprocess import _serve; _serve()", job],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._thread = None
        self._out = None

    def send(self, *args) -> SideProcess:
        """Send the job's arguments (pickled); returns self."""
        if self._thread is not None:
            raise StforecastError(f"{self.what}: expected one job per process, got a second")
        job = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)

        def talk():
            self._out = self._proc.communicate(job)

        self._thread = threading.Thread(target=talk, name=f"stforecast-{self.job}",
                                        daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Wait until the process has ended (its job done, or failed)."""
        if self._thread is not None:
            self._thread.join()

    def result(self):
        """The job's value once the process is done; its error otherwise."""
        self.wait()
        stdout, stderr = self._out if self._out is not None else (b"", b"")
        try:
            ok, value = pickle.loads(stdout)
        except Exception:  # noqa: BLE001 -- it died before answering: say how
            lines = stderr.decode("utf-8", "replace").strip().splitlines()
            raise StforecastError(
                f"{self.what}: the {self.what}'s process ended with exit status "
                f"{self._proc.returncode}" + (f" ({lines[-1]})" if lines else "")) from None
        if not ok:
            raise value
        return value

    def close(self, kill: bool = False) -> None:
        """End the process if it got no job (it is waiting on stdin or warming up) or if
        ``kill``; otherwise wait for its job."""
        if self._thread is None or kill:
            self._proc.kill()
            if self._thread is None:
                self._proc.communicate()
        self.wait()

    def __enter__(self) -> SideProcess:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(kill=exc_type is not None)


def _serve() -> None:
    """The side process: its job's warm-up, then one pickled argument tuple from stdin, the
    job, and ``(True, value)`` or ``(False, error)`` pickled to stdout."""
    job = sys.argv[1]
    module_name, warm_up, function, what = JOBS[job]
    caller = os.getppid()

    def watch() -> None:
        while os.getppid() == caller:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="stforecast-caller", daemon=True).start()
    module = importlib.import_module(module_name)
    if warm_up is not None:
        getattr(module, warm_up)()
    out = sys.stdout.buffer
    try:
        args = sys.stdin.buffer.read()
        if not args:  # the caller ended without a job
            return
        answer = (True, getattr(module, function)(*pickle.loads(args)))
    except Exception as exc:  # noqa: BLE001 -- every error goes back to the caller
        try:
            pickle.dumps(exc)
            answer = (False, exc)
        except Exception:  # noqa: BLE001 -- an error that does not pickle: its words
            answer = (False, StforecastError(f"{what}: {type(exc).__name__}: {exc}"))
    out.write(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    out.flush()
