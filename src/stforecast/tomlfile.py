"""Reading a user's input file with one-line errors (company, priors, scenarios, peers, actuals).

Before a byte is read the file is checked to be a regular file (not a folder, a named pipe
that would block, or a device such as ``/dev/zero`` that never ends) of at most
``registry.MAX_INPUT_BYTES``; after parsing, every integer is checked to have at most
``MAX_INT_DIGITS`` digits and the nesting to be at most ``MAX_NESTING`` deep, so that no loader
meets a number it cannot convert to float. Standard library only, so every command can use it
without importing the numerical stack.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from .errors import show_path
from .registry import MAX_INPUT_BYTES, MAX_INT_DIGITS, MAX_NESTING

_INT_LIMIT = 10**MAX_INT_DIGITS


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_bytes(path: str | Path, error: type[ValueError],
               limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ``error`` (one line) otherwise."""
    name = show_path(path)
    if not str(path):
        raise error("expected a file name, got an empty one")
    try:
        st = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise error(f"{name}: cannot read file ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{name}: expected a regular file, got {_kind(st.st_mode)}")
    if st.st_size > limit:
        raise error(f"{name}: expected a file of at most {limit:,} bytes, got {st.st_size:,}")
    try:
        with open(path, "rb") as fh:
            blob = fh.read(limit + 1)
    except OSError as exc:
        raise error(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if len(blob) > limit:  # it grew since the stat
        raise error(f"{name}: expected a file of at most {limit:,} bytes")
    return blob


def read_text(path: str | Path, error: type[ValueError], limit: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of a regular file (see ``read_bytes``)."""
    blob = read_bytes(path, error, limit)
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{show_path(path)}: expected UTF-8 text ({exc.reason} at byte "
                    f"{exc.start})") from None


def text_or_none(path: str | Path) -> str | None:
    """The text of a regular input file, or None when it cannot be read (the caller checks the
    file again where it is used, with its own one-line error). Never blocks on a pipe."""
    try:
        return read_text(path, ValueError)
    except ValueError:
        return None


def parse_toml(text: str, path: str | Path, error: type[ValueError]) -> dict:
    """The table of a TOML text, checked by ``check_values``; ``error`` (one line) otherwise."""
    name = show_path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{name}: TOML syntax error: {exc}") from None
    except ValueError as exc:  # e.g. Python's limit on the digits of an int
        raise error(f"{name}: expected numbers of at most {MAX_INT_DIGITS} digits "
                    f"({exc})") from None
    except RecursionError:
        raise error(f"{name}: expected arrays and tables nested at most {MAX_NESTING} "
                    f"deep") from None
    check_values(raw, path, error)
    return raw


def read_toml(path: str | Path, error: type[ValueError]) -> tuple[dict, bytes]:
    """``(table, raw bytes)`` of a TOML file; ``error`` (one line naming the file) otherwise."""
    blob = read_bytes(path, error)
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{show_path(path)}: expected UTF-8 text ({exc.reason} at byte "
                    f"{exc.start})") from None
    return parse_toml(text, path, error), blob


def check_values(raw, path, error: type[ValueError], key: str = "", depth: int = 0) -> None:
    """Every integer of a parsed file has at most ``MAX_INT_DIGITS`` digits and nothing is
    nested deeper than ``MAX_NESTING``; ``error`` naming the first offending key otherwise."""
    if depth > MAX_NESTING:
        raise error(f"{show_path(path)}: key '{key}': expected arrays and tables nested at most "
                    f"{MAX_NESTING} deep")
    if isinstance(raw, dict):
        for k, v in raw.items():
            check_values(v, path, error, f"{key}.{k}" if key else str(k), depth + 1)
    elif isinstance(raw, list):
        for i, v in enumerate(raw):
            check_values(v, path, error, f"{key}[{i}]", depth + 1)
    elif isinstance(raw, int) and not isinstance(raw, bool) and abs(raw) >= _INT_LIMIT:
        digits = int(abs(raw).bit_length() * 0.30103) + 1  # no str(): it has a digit limit
        raise error(f"{show_path(path)}: key '{key}': expected a number of at most "
                    f"{MAX_INT_DIGITS} digits, got an integer of about {digits} digits")
