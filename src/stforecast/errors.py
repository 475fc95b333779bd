"""The one base class of stforecast's user-facing errors, and the helpers that keep them one line.

Every error in a user's input (a company folder, a priors or scenarios file, a query, an
actuals file, a results folder, a command-line option) is a ``StforecastError`` whose message
is ONE line naming the file, the key and what was expected. The command line prints it and
exits with status 2. Whatever text a message echoes (a path, a key, a value), the message is
made one line of readable length when the error is created (``one_line``): whitespace and
control characters cannot break it, and an echoed input of 100 KB is cut. Standard library only.
"""

from __future__ import annotations

from contextlib import contextmanager

from .registry import MAX_ECHO_CHARS, MAX_MESSAGE_CHARS, MAX_PATH_CHARS, MAX_WORD_CHARS


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` as one printable line: whitespace runs collapsed, other control characters
    shown as ``?``, any single word longer than ``MAX_WORD_CHARS`` cut (a path, with a
    ``/``, only beyond ``MAX_PATH_CHARS``: the error names its file whole), and the whole cut to
    ``limit`` characters (its head and its tail, which usually says what was expected)."""
    words = str(text).split()
    line = " ".join(_cut("".join(c if c.isprintable() else "?" for c in w),
                         MAX_PATH_CHARS if "/" in w else MAX_WORD_CHARS) for w in words)
    if len(line) <= limit:
        return line
    tail = limit // 4
    return line[: limit - tail - 5] + " ... " + line[-tail:]


def show(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """An echoed input (``repr``), cut to ``limit`` characters: for ``got ...`` in messages."""
    if isinstance(value, list):
        text = "a list " + _cut(repr(value), limit)
    elif isinstance(value, dict):
        text = "a table " + _cut(repr(value), limit)
    else:
        text = _cut(repr(value), limit)
    return text


def show_path(path: object) -> str:
    """A file name as it may appear in a message: printable, one line, of readable length."""
    text = str(path)
    if not text.isprintable():
        text = repr(text)
    return _cut(text, MAX_ECHO_CHARS * 2)


class StforecastError(ValueError):
    """Bad input, described in one line (file, key, expectation)."""

    def __init__(self, message: object = "", *args):
        super().__init__(one_line(message), *args)


class DataFileError(StforecastError):
    """A company data file (company.toml, peers.toml) is malformed."""


class ResultsError(StforecastError):
    """A results folder is missing, incomplete or of another schema version."""


@contextmanager
def reading_draws(path):
    """Reading the saved draws at ``path``: a damaged chunk (HDF5 raises ``OSError`` or
    ``RuntimeError``) becomes a one-line ``ResultsError`` telling the user to run again."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise ResultsError(f"{path}: cannot read the draws ({' '.join(str(exc).split())}); the "
                           f"results are damaged: run `stforecast run` again") from None


class OptionError(StforecastError):
    """A command-line option is out of its range (or its target is unusable)."""
