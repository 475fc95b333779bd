"""How to store a run's predictive draws (issue 13, item 2): size and writing time of the
``posterior_predictive`` group of a results folder's ``forecast.nc`` in other layouts, and the
start-up of a reader, measured on the stored (float32, rounded-mantissa) draws themselves:

* ``as stored``: the folder's own file (``stforecast run`` wrote gzip level 1 + shuffle in the
  netCDF library's default chunks of a few thousand values before 2026-11, one chunk per
  scenario since);
* ``netcdf-gzip1-scenario-chunks``: gzip level 1 + shuffle, one chunk per scenario;
* ``netcdf-lzf``: h5py's built-in LZF + shuffle, one chunk per scenario;
* ``zarr3-blosc-zstd1-bitshuffle``: a zarr v3 store, Blosc-zstd level 1 with bit-shuffle;
* ``zarr3-...-xor-headline``: the same with every scenario stored as the XOR of its bits with
  the first scenario's (lossless: scenarios share random numbers, so many values are equal);
* ``drivers-and-shocks-only``: the stored size (current layout) of the variables a
  recomputation of the statements on load would need to keep (the registry's drivers, the
  units drivers, the shocks and the other per-path inputs), i.e. a lower bound for that option.

Run: .venv/bin/python bench/bench_store.py RESULTS_FOLDER
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

#: Variables of the draws that are statements (recomputable from drivers and shocks).
KINDS_RECOMPUTED = ("line", "scalar")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _h5(path: Path, arrays: dict, dims: dict, **options) -> None:
    with h5py.File(path, "w") as f:
        for name, a in arrays.items():
            f.create_dataset(name, data=a, chunks=_scenario_chunks(a, dims[name]), **options)


def _scenario_chunks(a: np.ndarray, dims: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(1 if d == "scenario" else n for d, n in zip(dims, a.shape))


def _zarr(path: Path, arrays: dict, xor: bool) -> None:
    import zarr
    from zarr.codecs import BloscCodec

    root = zarr.open_group(path, mode="w", zarr_format=3)
    for name, a in arrays.items():
        if xor and a.ndim and a.shape[0] > 1:
            bits = a.view(np.uint32).copy()
            bits[1:] ^= bits[0]
            a = bits
        z = root.create_array(name, shape=a.shape, dtype=a.dtype,
                              chunks=(1,) + a.shape[1:] if a.ndim else (),
                              compressors=[BloscCodec(cname="zstd", clevel=1,
                                                      shuffle="bitshuffle")])
        z[...] = a


def _import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def main(folder: str) -> None:
    from stforecast.registry import VARIABLES

    with h5py.File(Path(folder) / "forecast.nc", "r") as f:
        group = f["posterior_predictive"]
        arrays, dims, stored = {}, {}, {}
        for name, ds in group.items():
            if isinstance(ds, h5py.Dataset) and ds.dtype == np.float32:
                arrays[name] = ds[()]
                dims[name] = tuple(f[refs[0]].name.rsplit("/", 1)[-1]
                                   for refs in ds.attrs["DIMENSION_LIST"])
                stored[name] = ds.id.get_storage_size()
    raw = sum(a.nbytes for a in arrays.values())
    print(f"{folder}: posterior_predictive, {len(arrays)} float32 variables, {raw / 1e6:.1f} MB "
          f"raw, {sum(stored.values()) / 1e6:.1f} MB as stored")
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        cases = {
            "netcdf-gzip1-scenario-chunks": lambda p: _h5(p, arrays, dims, compression="gzip",
                                                          compression_opts=1, shuffle=True),
            "netcdf-lzf": lambda p: _h5(p, arrays, dims, compression="lzf", shuffle=True),
            "zarr3-blosc-zstd1-bitshuffle": lambda p: _zarr(p, arrays, False),
            "zarr3-blosc-zstd1-bitshuffle-xor-headline": lambda p: _zarr(p, arrays, True),
        }
        for name, write in cases.items():
            path = work / name
            t = time.perf_counter()
            write(path)
            seconds = time.perf_counter() - t
            print(f"{name:>44}: {_size(path) / 1e6:6.1f} MB, written in {seconds:.2f} s")
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kept = sum(s for n, s in stored.items()
               if n not in VARIABLES or VARIABLES[n].kind not in KINDS_RECOMPUTED)
    print(f"{'drivers-and-shocks-only (as stored)':>44}: {kept / 1e6:6.1f} MB")
    print(f"reader start-up: import h5py {_import_seconds('h5py'):.2f} s, "
          f"import zarr {_import_seconds('zarr'):.2f} s; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/sensetime")
