"""A second Python process that does one of stforecast's jobs beside the caller's own work.

Threads do not overlap these jobs. Matplotlib's drawing, h5netcdf's writing and PyTensor's
graph rewriting are mostly Python and hold the GIL, and numba compiles under one lock per
process. Measured on the default run: the draws took 2.6 s and the report 3.4 s, each alone,
but 7.0 s and 7.8 s on two threads.

A ``SideProcess`` is a fresh interpreter (``python -c``, with this stforecast on its path).
Nothing of the caller's script is imported there, so a user's script needs no ``__main__``
guard. It starts when the object is made and runs its job's warm-up (imports, a first use)
while the caller works. Then it waits for its one job: the pickled arguments on stdin. It
answers on stdout with pickled messages: ``("done", value)`` or ``("error", error)`` at the
end, and, before them, ``("part", value)`` for each value a job that is a generator yields
(``next_value``), so that the caller can use the first of its answers while it does the rest.

It ends at once when its caller's process is gone (killed mid-run), so that it does not go on
writing in a folder the next run removes. Its jobs are the functions named in ``JOBS``: no
other code can be run in it.
"""

from __future__ import annotations

import importlib
import inspect
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
    "fit_beside": ("stforecast.run", "_fit_beside_warm_up", "_fit_beside_job",
                   "second fitting process"),
}


class SideProcess:
    """One job (``JOBS``) in a second process. Use it as a context manager. ``send(*args)``
    sends the job's arguments; ``result()`` waits for its answer, and returns its value or
    raises its error; ``next_value()`` waits for the next value a job that is a generator
    yields. An error that says the process died names its exit status, in one line.

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
        self._stderr = b""
        self._messages: list[tuple[str, object]] = []  # as they came: ("part"|"done"|"error", x)
        self._taken = 0  # the job's "part" messages ``next_value`` has returned
        self._ended = False
        self._news = threading.Condition()

    def send(self, *args) -> SideProcess:
        """Send the job's arguments (pickled); returns self."""
        if self._thread is not None:
            raise StforecastError(f"{self.what}: expected one job per process, got a second")
        job = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)

        def errors():
            self._stderr = self._proc.stderr.read()

        def talk():
            reader = threading.Thread(target=errors, name=f"stforecast-{self.job}-stderr",
                                      daemon=True)
            reader.start()
            try:
                self._proc.stdin.write(job)
                self._proc.stdin.close()
            except (BrokenPipeError, OSError):  # it died first: said by result()
                pass
            kind = None
            while kind not in ("done", "error"):
                try:
                    kind, value = pickle.load(self._proc.stdout)
                except Exception:  # noqa: BLE001 -- its end, or it died mid-message
                    break
                with self._news:
                    self._messages.append((kind, value))
                    self._news.notify_all()
            self._proc.stdout.close()
            reader.join()
            self._proc.wait()
            with self._news:
                self._ended = True
                self._news.notify_all()

        self._thread = threading.Thread(target=talk, name=f"stforecast-{self.job}",
                                        daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Wait until the process has ended (its job done, or failed)."""
        if self._thread is not None:
            self._thread.join()

    def _died(self) -> StforecastError:
        lines = self._stderr.decode("utf-8", "replace").strip().splitlines()
        return StforecastError(
            f"{self.what}: the {self.what}'s process ended with exit status "
            f"{self._proc.returncode}" + (f" ({lines[-1]})" if lines else ""))

    def next_value(self):
        """The next value the job yields (a job that is a generator), once it is sent; the
        job's error, or one saying the process died or gave no more values, otherwise."""
        with self._news:
            while True:
                parts = [v for k, v in self._messages if k == "part"]
                if len(parts) > self._taken:
                    self._taken += 1
                    return parts[self._taken - 1]
                final = [(k, v) for k, v in self._messages if k != "part"]
                if final and final[0][0] == "error":
                    raise final[0][1]
                if final or self._ended:
                    break
                self._news.wait()
        if not final:
            raise self._died()
        raise StforecastError(f"{self.what}: its job gave no more values")

    def result(self):
        """The job's value once the process is done; its error otherwise."""
        self.wait()
        final = [(k, v) for k, v in self._messages if k != "part"]
        if not final:  # it died before answering: say how
            raise self._died()
        kind, value = final[0]
        if kind == "error":
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
    job, and its messages pickled to stdout: ``("part", value)`` for each value a generator
    job yields, then ``("done", value)`` or ``("error", error)``."""
    job = sys.argv[1]
    module_name, warm_up, function, what = JOBS[job]
    caller = os.getppid()

    def watch() -> None:
        while os.getppid() == caller:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="stforecast-caller", daemon=True).start()
    out = os.fdopen(os.dup(1), "wb")  # the messages' own channel; any print goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(kind: str, value) -> None:
        try:
            message = pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 -- a value or error that does not pickle
            if kind != "error":
                raise  # the job's error, then
            message = pickle.dumps(("error", StforecastError(  # an error's words
                f"{what}: {type(value).__name__}: {value}")), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(message)
        out.flush()

    module = importlib.import_module(module_name)
    if warm_up is not None:
        getattr(module, warm_up)()
    try:
        args = sys.stdin.buffer.read()
        if not args:  # the caller ended without a job
            return
        value = getattr(module, function)(*pickle.loads(args))
        if inspect.isgenerator(value):
            job, value = value, None
            while True:
                try:
                    say("part", next(job))
                except StopIteration as stop:
                    value = stop.value
                    break
        say("done", value)
    except Exception as exc:  # noqa: BLE001 -- every error goes back to the caller
        say("error", exc)
