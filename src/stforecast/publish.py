"""Results folders replaced as a whole: a lock per folder, a staging folder, one swap.

A results folder ``<parent>/<name>`` is never edited in place. A writer (``stforecast run``,
``Forecast.save``, ``stforecast report``):

1. takes the folder's lock, ``<parent>/.<name>.lock`` (``fcntl.flock``, exclusive, not
   waiting): a second writer into the same folder is refused with one line. The kernel drops
   the lock when its process ends, killed or not, so a lock file left behind never blocks; the
   file itself stays (deleting it would let two processes lock two different files);
2. repairs and cleans (:func:`clean`): a folder missing while a ``.<name>.old-*`` copy of it
   exists (a writer killed between the two renames below) gets that copy back, and every
   ``.<any name>.tmp-PID[-…]`` or ``.<any name>.old-PID-…`` folder of the parent whose process
   is gone (for ``<name>`` itself: of any process but this one, since the lock is held) is
   deleted, if it holds nothing but result files;
3. writes everything into a staging folder ``<parent>/.<name>.tmp-<pid>-<random>`` (same
   file system, so the swap is a rename);
4. swaps it in (:func:`swap_in`): where the system has an atomic exchange of two paths
   (Linux ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np(RENAME_SWAP)``) the new folder and
   the old one trade places in one step, so ``<name>`` is a whole folder at every instant;
   elsewhere the old folder is renamed to ``.<name>.old-<pid>-<random>`` and the new one renamed
   in: between these two renames ``<name>`` does not exist, which readers report in one line
   (:func:`interrupted`) and the next writer repairs (step 2). The old folder is then deleted.

So a kill at any point leaves either the previous folder or the new one, complete, never a mix,
and no stale file of an earlier run survives beside new ones (``--no-report`` results hold no
report). Replacing a whole folder deletes what was in it, so an existing folder is replaced only
when it holds nothing but what a run writes (:func:`check_replaceable`).

Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

from .errors import ResultsError
from .registry import DRAWS_FILE, REPORT_FILE, SUMMARY_FILE

#: ``.<name>.tmp-<pid>-<random>`` and ``.<name>.old-<pid>-<random>`` beside a results folder
#: (and ``.<name>.tmp-<pid>``, the staging folders of earlier versions).
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$|"
                       r"^\.(?P<name0>.+)\.(?P<kind0>tmp)-(?P<pid0>\d+)$")
#: What a run or ``report`` writes into a results folder (and the report's own temporary files).
RESULT_FILES = (SUMMARY_FILE, DRAWS_FILE, REPORT_FILE)
_OS_FILES = (".DS_Store",)


def real(out: Path | str) -> Path:
    """The folder a path names, symbolic links resolved (a link to a results folder is kept and
    the folder it points to is replaced)."""
    return Path(os.path.realpath(out))


def lock_path(out: Path | str) -> Path:
    out = real(out)
    return out.parent / f".{out.name}.lock"


# --------------------------------------------------------------------------- the lock
_held: dict[str, list] = {}  # lock path -> [fd, depth]: re-entrant within one process


@contextlib.contextmanager
def folder_lock(out: Path | str, what: str = "a run"):
    """Hold ``out``'s lock (re-entrant in one process); ``ResultsError`` (one line) when another
    process holds it. Creates ``out``'s parent folder if needed."""
    import fcntl

    out = real(out)
    if not out.name or out.parent == out:
        raise ResultsError(f"{out}: expected a results folder below another folder, not a "
                           f"file system root")
    path = str(lock_path(out))
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ResultsError(f"{out}: cannot create its lock file {path} "
                           f"({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ResultsError(f"{out}: another stforecast process is writing these results "
                               f"(lock {path}); wait for it to finish, or choose another "
                               f"folder") from None
        raise ResultsError(f"{out}: cannot lock {path} ({exc.strerror or exc})") from None
    _held[path] = [fd, 1]
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        yield
    finally:
        del _held[path]
        os.close(fd)  # releases the lock


def is_locked(out: Path | str) -> bool:
    """Whether a process (this one included) holds ``out``'s lock."""
    import fcntl

    path = lock_path(out)
    if str(path) in _held:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- leftovers
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OverflowError:
        return False
    return True


def leftovers(out: Path | str) -> list[tuple[Path, str, str, int]]:
    """Staging and set-aside folders in ``out``'s parent: ``(path, name, kind, pid)``."""
    parent = real(out).parent
    found = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if m and entry.is_dir(follow_symlinks=False) and _only_results(Path(entry.path)):
            g = {k.rstrip("0"): v for k, v in m.groupdict().items() if v is not None}
            found.append((Path(entry.path), g["name"], g["kind"], int(g["pid"])))
    return found


def interrupted(out: Path | str) -> Path | None:
    """The previous results set aside by a writer killed mid-swap, when ``out`` is missing
    (what a reader names in its one-line error), else None."""
    out = real(out)
    if out.exists():
        return None
    old = [p for p, name, kind, _ in leftovers(out) if name == out.name and kind == "old"]
    return max(old, key=lambda p: p.stat().st_mtime) if old else None


def clean(out: Path | str, log=None) -> None:
    """With ``out``'s lock held: restore ``out`` from its set-aside copy if a writer was killed
    mid-swap, then delete the staging and set-aside folders whose process is gone."""
    out = real(out)
    assert str(lock_path(out)) in _held, "clean() needs the folder's lock"
    restore = interrupted(out)
    if restore is not None:
        os.rename(restore, out)
        if log:
            log(f"restored {out} (a run was killed while replacing it)")
    me = os.getpid()
    for path, name, _, pid in leftovers(out):
        if pid != me and (name == out.name or not _alive(pid)):
            shutil.rmtree(path, ignore_errors=True)
            if log and not path.exists():
                log(f"removed {path.name} (left by an interrupted run)")


def _ours(folder: Path, entry: str) -> bool:
    """Whether ``entry`` of ``folder`` is a file that a run or ``report`` writes."""
    return ((entry in RESULT_FILES or entry in _OS_FILES or entry.endswith(".png")
             or (entry.startswith(".") and entry.endswith(".tmp")))
            and not (folder / entry).is_dir())


def _only_results(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but result files (a leftover that may be deleted)."""
    try:
        return all(_ours(folder, e) for e in os.listdir(folder))
    except OSError:
        return False


def check_replaceable(out: Path | str) -> None:
    """``ResultsError`` unless ``out`` is absent, an empty folder or a results folder (only
    what a run writes: summary.json, forecast.nc, report.html, PNGs): a run replaces the whole
    folder, so it must not hold anything else."""
    out = real(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ResultsError(f"{out}: expected a results folder, it is a file")
    for entry in sorted(os.listdir(out)):
        if not _ours(out, entry):
            raise ResultsError(f"{out}: holds {entry!r}, which no run writes; a run replaces "
                               f"the whole folder, so move it away or choose another folder")


# --------------------------------------------------------------------------- staging and swap
def staging(out: Path | str) -> Path:
    """A new, empty staging folder beside ``out`` (same file system)."""
    out = real(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    return tmp


def _exchange_function():
    """``(function, flags)`` exchanging two paths atomically, or None on this system."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:  # pragma: no cover
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                       ctypes.c_uint]
        at_fdcwd, rename_exchange = -100, 2
        return lambda a, b: fn(at_fdcwd, a, at_fdcwd, b, rename_exchange)
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):  # pragma: no cover
        fn = libc.renamex_np
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rename_swap = 2
        return lambda a, b: fn(a, b, rename_swap)
    return None


_EXCHANGE = _exchange_function()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step; False when the system or file system cannot."""
    if _EXCHANGE is None:
        return False
    if _EXCHANGE(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_in(tmp: Path, out: Path | str, between=None) -> None:
    """Make the complete folder ``tmp`` the folder ``out``, replacing any previous one as a
    whole (see the module docstring); ``between()`` is called after the new folder is in place
    (or, without an atomic exchange, after the old one is set aside) and before the old one is
    deleted (a test hook)."""
    out = real(out)
    if not out.exists():
        os.rename(tmp, out)
        if between:
            between()
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    if exchange(tmp, out):
        os.rename(tmp, old)  # tmp now holds the previous results
        if between:
            between()
    else:
        os.rename(out, old)
        if between:
            between()
        os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def replacing(out: Path | str, what: str = "a run", log=None, between=None):
    """Lock ``out``, clean its leftovers, check it may be replaced, and yield a staging folder;
    when the block completes, swap the staging folder in as ``out``; on any error (or
    interruption) delete it and leave ``out`` as it was."""
    with folder_lock(out, what):
        clean(out, log)
        check_replaceable(out)
        tmp = staging(out)
        try:
            yield tmp
            swap_in(tmp, out, between)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
