"""A content-addressed cache of fits: the same inputs never pay for the same fit twice.

An entry is one file ``<kind>-<key>.fit`` in the cache folder (``$STFORECAST_CACHE``, else
``$XDG_CACHE_HOME/stforecast``, else ``~/.cache/stforecast``). ``key`` is the sha256 of
everything the fit depends on (`fit_key`): the model's source files, the data it conditions
on, the resolved prior values (not the priors file's text: a changed source or comment is not
a new fit), the sampler settings, the seed and the versions of the packages that sample. Two
runs with one key would sample the same draws, so the second reads them instead.

The file is one JSON header line (format, kind, key, the layout, the groups, free attributes
and the sha256 of the rest of the header and the payload) followed by the payload: one
netCDF-4 file with a group per fitted group (``plain_netcdf``; float64 exactly as sampled), or,
in the ``ARRAYS`` layout for large entries read on a hot path (``stored_paths``), the arrays'
bytes one after the other, described in the header (their values come back as views of the
bytes read, without a netCDF reader's per-variable cost). Writes go to a temporary
file beside the entry and are moved in with ``os.replace`` (a reader sees a whole entry or none); a
truncated or altered entry fails its checksum, is logged, deleted and refitted, never used.
After each write the folder is pruned to the newest ``max_entries`` entries and
``max_bytes`` bytes (a hit refreshes an entry's modification time).

PyTensor note (measured): the first compilation of a graph into an empty PyTensor compile
cache can give gradients that differ in the last bits from the cached module later processes
load, so a fit made by a cold-compile process may differ in the last digits from the same fit
made warm. Whichever fit is stored first is served to every later run with the same key (runs
agree with each other from then on); ``stforecast run --refit`` replaces it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import StforecastError

logger = logging.getLogger(__name__)

CACHE_ENV = "STFORECAST_CACHE"
FORMAT = 1
SUFFIX = ".fit"
MAX_ENTRIES = 32
MAX_BYTES = 1 << 30  # 1 GiB
#: The packages whose versions are part of every key (they make the draws).
PACKAGES = ("stforecast", "pymc", "pytensor", "nutpie", "numba", "numpy", "scipy")
#: Fields of the priors' dataclasses that document and do not enter the model.
DOCUMENTATION_FIELDS = frozenset({"source", "reasoning", "path", "sha256", "meta"})
_SRC = Path(__file__).parent


def cache_dir() -> Path:
    """``$STFORECAST_CACHE``, else ``$XDG_CACHE_HOME/stforecast``, else ``~/.cache/stforecast``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stforecast"


def cache_folder(path: Path) -> Path:
    """``path``, a folder of the cache, created if needed; a one-line ``StforecastError`` naming
    it and ``STFORECAST_CACHE`` when it cannot be (a file in the way, no permission)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StforecastError(f"{path}: cannot create this cache folder ({exc.strerror or exc}); "
                              f"set {CACHE_ENV} to a folder you can write") from None
    return path


def source_hash(*modules: str) -> str:
    """sha256 over the source files of ``modules`` (names of stforecast's modules)."""
    h = hashlib.sha256()
    for name in modules:
        h.update(name.encode() + b"\0" + (_SRC / f"{name}.py").read_bytes() + b"\0")
    return h.hexdigest()


def package_hash() -> str:
    """sha256 over every source and data file of the stforecast package (``*.py``, ``*.toml``,
    by relative path): any change of the code or of the shipped data changes it."""
    h = hashlib.sha256()
    files = sorted(p for p in _SRC.rglob("*") if p.suffix in (".py", ".toml") and p.is_file()
                   and "__pycache__" not in p.parts)
    for p in files:
        h.update(p.relative_to(_SRC).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (default ``PACKAGES``; from their metadata: nothing is
    imported)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def canonical(obj: Any) -> Any:
    """``obj`` as plain JSON values, exactly: floats as their hex form, arrays as dtype, shape
    and the sha256 of their bytes, dataclasses as dicts without their documentation fields."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name not in DOCUMENTATION_FIELDS}
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"dtype": a.dtype.str, "shape": list(a.shape),
                "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj).hex()
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"fit cache key: cannot hash a {type(obj).__name__}")


def fit_key(kind: str, **parts: Any) -> str:
    """The sha256 (hex) of ``kind``, the cache format, the package versions and ``parts``."""
    doc = {"kind": kind, "format": FORMAT, "versions": package_versions(),
           "parts": canonical(parts)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


#: The payload of an entry: one netCDF-4 file, a group per fitted group
#: (``plain_netcdf.write_groups``; read back with ``plain_netcdf.read_group``). An entry without
#: it (written before) holds one netCDF file per group, one after the other.
LAYOUT = "netcdf-groups"
#: The other layout: every array's bytes, C order, one after the other from a multiple of
#: ``ALIGN`` bytes; the header describes them (group, name, coordinate or not, dimensions,
#: dtype, shape, offset in the payload, attributes) and holds text coordinates as lists.
ARRAYS = "arrays"
ALIGN = 64


def _read_groups(payload: bytes, names: list[str]) -> dict[str, xr.Dataset]:
    """The groups ``names`` of the netCDF file ``payload``: plain ones read with h5py
    (attributes included), any other by xarray."""
    import h5py

    from .plain_netcdf import read_group

    groups = {}
    with h5py.File(io.BytesIO(payload), "r") as f:
        for name in names:
            if not isinstance(f.get(name), h5py.Group):
                raise KeyError(f"no group {name!r} in the entry's netCDF file")
            groups[name] = read_group(f[name], attrs=True)
    for name in [n for n, ds in groups.items() if ds is None]:
        with xr.open_dataset(io.BytesIO(payload), group=name, engine="h5netcdf") as ds:
            groups[name] = ds.load()
    return groups


def _encode_arrays(groups: dict[str, xr.Dataset]) -> tuple[list[dict], list[np.ndarray]]:
    """The ``ARRAYS`` layout of ``groups``: the header's description of every variable and
    coordinate (in the Dataset's order, coordinates first) and the numeric arrays whose bytes
    follow (each from a multiple of ``ALIGN`` bytes)."""
    items, arrays, offset = [], [], 0
    for group, ds in groups.items():
        for role, variables in (("coord", ds.coords), ("data", ds.data_vars)):
            for name, var in variables.items():
                values = np.asarray(var.values)
                item = {"group": group, "name": name, "role": role, "dims": list(var.dims),
                        "attrs": dict(var.attrs)}
                if values.dtype.kind in "biuf":
                    item.update(dtype=values.dtype.str, shape=list(values.shape), offset=offset)
                    arrays.append(values)
                    offset += -(-values.nbytes // ALIGN) * ALIGN
                elif values.dtype.kind in "UO" and all(isinstance(v, str) for v in values.flat):
                    item.update(dtype=values.dtype.str, text=values.tolist())
                else:
                    raise TypeError(f"cache: {group}/{name}: cannot store dtype {values.dtype}")
                items.append(item)
    return items, arrays


def _read_arrays(payload: memoryview, header: dict) -> dict[str, xr.Dataset]:
    """The groups of an ``ARRAYS`` payload: numeric values are views of ``payload`` (writable
    when it is)."""
    parts: dict[str, dict] = {g: {"coord": {}, "data": {}} for g in header["groups"]}
    for item in header["arrays"]:
        dtype = np.dtype(item["dtype"])
        if "text" in item:
            values = np.array(item["text"], dtype=dtype)
        else:
            shape = tuple(item["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            end = item["offset"] + count * dtype.itemsize
            if end > len(payload):
                raise ValueError(f"array {item['name']!r} runs past the payload")
            values = (np.frombuffer(payload, dtype, count, item["offset"]).reshape(shape)
                      if count else np.empty(shape, dtype))
        parts[item["group"]][item["role"]][item["name"]] = xr.Variable(
            tuple(item["dims"]), values, item["attrs"])
    return {g: xr.Dataset(p["data"], coords=p["coord"], attrs=header["group_attrs"][g])
            for g, p in parts.items()}


def _checksum(header: dict, *payload) -> str:
    """sha256 of the header (without its checksum) and the payload (bytes-like parts)."""
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for part in payload:
        h.update(part)
    return h.hexdigest()


def _read_whole(path: Path) -> bytearray:
    """The file's bytes in a writable buffer (arrays of the ``ARRAYS`` layout are views of
    it); a file that changes size while read is an ``OSError``."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        raw = bytearray(size)
        if fh.readinto(raw) != size or fh.read(1):
            raise OSError(f"{path}: changed while read")
    return raw


def _jsonable_attrs(ds: xr.Dataset) -> xr.Dataset:
    """netCDF attributes are strings, numbers and lists of strings (ArviZ's may be other types:
    those are kept as JSON text)."""
    def plain(v) -> bool:
        if isinstance(v, (list, tuple)):
            return bool(v) and all(isinstance(x, str) for x in v)
        return isinstance(v, (str, int, float)) and not isinstance(v, bool)

    ds = ds.copy()
    ds.attrs = {k: (v if plain(v) else json.dumps(v)) for k, v in ds.attrs.items()}
    return ds


class FitCache:
    """The fit cache in ``root`` (see the module docstring)."""

    def __init__(self, root: str | Path | None = None, max_entries: int = MAX_ENTRIES,
                 max_bytes: int = MAX_BYTES, instead: str = "refitting"):
        self.root = Path(root) if root is not None else cache_dir()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: what is done when an entry cannot be used (said in the warning)
        self.instead = instead

    def __repr__(self) -> str:
        return f"FitCache({str(self.root)!r})"

    def path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}{SUFFIX}"

    def load(self, kind: str, key: str) -> tuple[dict[str, xr.Dataset], dict] | None:
        """``(groups, attrs)`` of the entry, or None when there is none or it is damaged
        (checksum, header or netCDF: logged and deleted)."""
        path = self.path(kind, key)
        try:
            raw = _read_whole(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning(f"fit cache: {path}: cannot read ({exc.strerror or exc}); "
                           f"{self.instead}")
            return None
        try:
            groups, attrs = self._decode(raw, kind, key)
        except (ValueError, KeyError, TypeError, OSError) as exc:
            logger.warning(f"fit cache: {path}: damaged entry ({exc}); deleted, {self.instead}")
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # recently used: pruned last
        except OSError:
            pass
        return groups, attrs

    @staticmethod
    def _decode(raw: bytearray, kind: str, key: str) -> tuple[dict[str, xr.Dataset], dict]:
        end = raw.find(b"\n")
        if end < 0:
            raise ValueError("no header line")
        header = json.loads(raw[:end])
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        checksum = header.pop("sha256", None)
        payload = memoryview(raw)[end + 1:]
        if checksum != _checksum(header, payload):
            raise ValueError("checksum mismatch (truncated or altered)")
        if (header.get("format"), header.get("kind"), header.get("key")) != (FORMAT, kind, key):
            raise ValueError("format, kind or key differ from the file's name")
        if header.get("layout") == ARRAYS:
            return _read_arrays(payload, header), header["attrs"]
        payload = bytes(payload)
        if header.get("layout") == LAYOUT:
            return _read_groups(payload, header["groups"]), header["attrs"]
        groups, offset = {}, 0  # an entry written before: one netCDF file per group
        for name, size in header["groups"]:
            chunk = payload[offset:offset + size]
            offset += size
            with xr.open_dataset(io.BytesIO(chunk), engine="h5netcdf") as ds:
                groups[name] = ds.load()
        if offset != len(payload):
            raise ValueError("payload length differs from the header's")
        return groups, header["attrs"]

    def store(self, kind: str, key: str, groups: dict[str, xr.Dataset],
              attrs: dict | None = None, layout: str = LAYOUT, durable: bool = True) -> Path:
        """Write the entry atomically, then prune. ``layout``: ``LAYOUT`` (netCDF; object-dtype
        variables are not stored) or ``ARRAYS`` (numbers and text only: a ``TypeError``
        otherwise, before anything is written). ``durable``: flushed to the disk before it is
        moved in (without, a crash may leave an entry that fails its checksum: it is then
        deleted and made again, never used)."""
        cache_folder(self.root)
        path = self.path(kind, key)
        header = {"format": FORMAT, "kind": kind, "key": key, "layout": layout,
                  "groups": list(groups), "attrs": dict(attrs or {})}
        if layout == ARRAYS:
            header["arrays"], arrays = _encode_arrays(groups)
            header["group_attrs"] = {g: dict(ds.attrs) for g, ds in groups.items()}
            chunks = [chunk for a in arrays for chunk in (
                memoryview(np.ascontiguousarray(a).reshape(-1)).cast("B"),
                bytes(-a.nbytes % ALIGN))]
        else:
            chunks = [self._netcdf_payload(path, groups)]
        header["sha256"] = _checksum(header, *chunks)
        line = json.dumps(header, sort_keys=True).encode()
        line += b" " * (-(len(line) + 1) % ALIGN) + b"\n"  # the payload starts aligned
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(line)
                for chunk in chunks:
                    fh.write(chunk)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.prune()
        return path

    @staticmethod
    def _netcdf_payload(path: Path, groups: dict[str, xr.Dataset]) -> bytes:
        from .plain_netcdf import write_groups

        draws = path.with_name(f".{path.name}.tmp-{os.getpid()}.nc")  # pruned if left
        try:
            write_groups(draws, {
                name: _jsonable_attrs(ds.drop_vars([v for v in ds.data_vars
                                                    if ds[v].dtype == object]))
                for name, ds in groups.items()})
            return draws.read_bytes()
        finally:
            draws.unlink(missing_ok=True)

    def entries(self) -> list[Path]:
        """The entries, newest (most recently written or used) first."""
        if not self.root.is_dir():
            return []
        items = []
        for p in self.root.glob(f"*{SUFFIX}"):
            try:
                items.append((p.stat().st_mtime, p))
            except FileNotFoundError:  # pruned by another process
                continue
        return [p for _, p in sorted(items, reverse=True)]

    def prune(self) -> list[Path]:
        """Delete all but the newest ``max_entries`` entries within ``max_bytes`` (and temporary
        files left by interrupted writes more than an hour ago); returns what was deleted."""
        removed, total = [], 0
        for i, p in enumerate(self.entries()):
            try:
                size = p.stat().st_size
            except FileNotFoundError:
                continue
            total += size
            if i >= self.max_entries or total > self.max_bytes:
                p.unlink(missing_ok=True)
                removed.append(p)
        for p in self.root.glob(f".*{SUFFIX}.tmp-*"):
            try:
                if time.time() - p.stat().st_mtime > 3600:
                    p.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
        return removed

    def clear(self) -> None:
        for p in self.entries():
            p.unlink(missing_ok=True)

