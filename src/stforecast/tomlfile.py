"""Reading a user's TOML file with one-line errors (priors, scenarios, actuals).

Standard library only, so every command can use it without importing the numerical stack.
"""

from __future__ import annotations

import tomllib
from pathlib import Path


def read_toml(path: str | Path, error: type[ValueError]) -> tuple[dict, bytes]:
    """``(table, raw bytes)`` of a TOML file; ``error`` (one line naming the file) otherwise."""
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read file ({exc.strerror or exc})") from None
    try:
        return tomllib.loads(blob.decode("utf-8")), blob
    except UnicodeDecodeError as exc:
        raise error(f"{path}: expected UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: TOML syntax error: {exc}") from None
