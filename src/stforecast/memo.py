"""A persistent memo of a deterministic function's results, in the cache folder.

The elicited parameters of a prior given as a range (a Beta or Gamma whose central interval is
the range) come from a numerical solve that needs ``scipy.optimize``, and importing it costs
about 0.2 s: most of what parsing a scenarios file costs. The solve is a pure function of the
family, the range and the code, so its results are kept: one JSON file per memo in the cache
folder (``cache.cache_dir()``), under a ``salt`` (the source of the code that computes them and
the versions of the packages it calls; another salt starts the file anew). JSON keeps floats
exactly (their shortest repr reads back as the same float), so a result read back is the result
computed. Reading or writing failures are ignored: the memo only saves time. Standard library
only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class Memo:
    """Results of one deterministic function by key (a string), kept in ``<name>.json``."""

    def __init__(self, name: str, salt: str):
        self.name, self.salt = name, salt
        self._entries: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        from .cache import cache_dir

        return cache_dir() / f"{self.name}.json"

    def _read(self) -> dict[str, Any]:
        if self._entries is None:
            try:
                doc = json.loads(self.path.read_text(encoding="utf-8"))
                entries = doc.get("entries") if doc.get("salt") == self.salt else None
                self._entries = entries if isinstance(entries, dict) else {}
            except (OSError, ValueError, AttributeError):
                self._entries = {}
        return self._entries

    def get(self, key: str) -> Any:
        """The result kept for ``key``, or None."""
        return self._read().get(key)

    def put(self, key: str, value: Any) -> None:
        """Keep ``value`` (JSON) for ``key``; the file is replaced whole (``os.replace``: a
        reader sees the old file or the new one)."""
        entries = self._read()
        entries[key] = value
        tmp = None
        try:
            path = self.path
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{self.name}-", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"salt": self.salt, "entries": entries}, f)
            os.replace(tmp, path)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
