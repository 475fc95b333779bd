"""A sweep's draws in ONE zarr store, written by region from the workers.

``init_store`` (the client, once) creates the store with its full shape: every kept variable
with dims ``(setting, chain, draw, path[, year])``, one chunk per setting (and per variable), the
swept values as ``setting`` coordinates, nothing computed. ``write_setting`` (a worker, per
setting) writes that setting's slice with ``xarray.Dataset.to_zarr(region=...)``: a region is
whole chunks, so concurrent writers never touch the same chunk, and rewriting a setting (a
retried or resumed task) writes the same bytes again. Draws are float32. The store must be on
a disk every worker can write (a shared file system on a cluster). Read it back with
``xarray.open_zarr(path)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .registry import SAMPLE_DIMS

SETTING = "setting"
DTYPE = "float32"


@dataclass(frozen=True)
class DrawsStore:
    """Where (an absolute path) and which predictive variables a sweep stores."""

    path: str
    variables: tuple[str, ...]


def init_store(store: DrawsStore, probe: xr.Dataset, sizes: dict[str, int],
               settings: list[dict[str, float]], attrs: dict) -> None:
    """Create ``store`` for ``len(settings)`` settings: ``probe`` is one setting's predictive
    draws at any size (it gives each variable's dims and the ``year`` coordinate); ``sizes`` the
    full ``chain``, ``draw`` and ``path`` sizes. Only metadata and coordinates are written."""
    import dask.array as da

    n = len(settings)
    variables = {}
    for name in store.variables:
        dims = (SETTING,) + tuple(_full(probe[name], probe.sizes).dims)
        shape = tuple(n if d == SETTING else sizes.get(d, probe.sizes.get(d)) for d in dims)
        chunks = (1,) + shape[1:]
        variables[name] = (dims, da.zeros(shape, dtype=DTYPE, chunks=chunks))
    coords = {SETTING: np.arange(n)}
    if "year" in probe.coords:
        coords["year"] = [str(y) for y in probe["year"].values]
    for key in (settings[0] if settings else {}):
        coords[key] = (SETTING, np.array([s[key] for s in settings], dtype="float64"))
    ds = xr.Dataset(variables, coords=coords, attrs=attrs)
    with warnings.catch_warnings():  # zarr 3: consolidated metadata is not in its spec (yet)
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata")
        ds.to_zarr(store.path, mode="w", compute=False, consolidated=True)


def store_exists(store: DrawsStore) -> bool:
    path = Path(store.path)
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def write_setting(store: DrawsStore, index: int, predictive: xr.Dataset) -> None:
    """Write setting ``index``'s draws (one setting's predictive Dataset) into its region."""
    ds = xr.Dataset({name: _full(predictive[name], predictive.sizes).astype(DTYPE)
                     .expand_dims({SETTING: 1}) for name in store.variables})
    ds = ds.drop_vars([c for c in ds.coords if SETTING not in ds[c].dims])
    for name in ds.data_vars:
        ds[name].encoding = {}
    ds.to_zarr(store.path, region={SETTING: slice(index, index + 1)}, consolidated=False)


def _full(da: xr.DataArray, sizes) -> xr.DataArray:
    """``da`` over every sample dimension (a variable that does not vary by path in one setting
    may in another: e.g. a multiple a shock moves per path), sample dimensions first."""
    missing = {d: sizes[d] for d in SAMPLE_DIMS if d not in da.dims}
    if missing:
        da = da.expand_dims(missing)
    return da.transpose(*SAMPLE_DIMS, ...)
