"""How a run stores its draws (``resimulation.compact_groups``, written by
``plain_netcdf.write_groups``): one gzip chunk per scenario, the values exactly the rounded float32
draws whatever the chunking."""

import numpy as np
import xarray as xr

from stforecast.plain_netcdf import write_groups
from stforecast.resimulation import compact_groups, round_mantissa as _round_mantissa


def _draws(seed=0):
    rng = np.random.default_rng(seed)
    dims = ("scenario", "chain", "draw", "path", "year")
    return xr.Dataset(
        {"revenue": (dims, rng.lognormal(8, 0.3, (3, 2, 40, 5, 3))),
         "target_price": (dims[:-1], rng.lognormal(1, 0.5, (3, 2, 40, 5))),
         "flag": (dims[:-1], rng.random((3, 2, 40, 5)) < 0.2)},
        coords={"scenario": ["a", "b", "c"], "chain": [0, 1], "draw": np.arange(40),
                "path": np.arange(5), "year": ["Y1", "Y2", "Y3"]})


def test_one_chunk_per_scenario_and_the_same_values(tmp_path):
    ds = _draws()
    stored = compact_groups({"posterior_predictive": ds, "posterior": ds.isel(scenario=0)})
    path = tmp_path / "draws.nc"
    write_groups(path, stored)
    import h5py
    with h5py.File(path, "r") as f:
        assert f["posterior_predictive/revenue"].chunks == (1, 2, 40, 5, 3)
        assert f["posterior_predictive/target_price"].chunks == (1, 2, 40, 5)
        assert f["posterior/revenue"].chunks == (2, 40, 5, 3)  # no scenario: one chunk
        assert f["posterior_predictive/revenue"].compression == "gzip"
    with xr.open_dataset(path, group="posterior_predictive", engine="h5netcdf") as back:
        np.testing.assert_array_equal(back["revenue"].values,
                                      _round_mantissa(ds["revenue"].values))
        np.testing.assert_array_equal(back["flag"].values, ds["flag"].values)
    with xr.open_dataset(path, group="posterior", engine="h5netcdf") as back:
        # the posterior is kept exactly: the scenarios not stored are recomputed from it
        assert back["revenue"].dtype == np.float64
        np.testing.assert_array_equal(back["revenue"].values, ds["revenue"].values[0])
