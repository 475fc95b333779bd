"""forecast.nc written with h5py alone (``stforecast.plain_netcdf``): the file reads, in xarray
and in the package's own readers, exactly as the file xarray (h5netcdf) writes from the same
groups (booleans included); a group that is not plain is left to xarray."""

import h5netcdf
import h5py
import numpy as np
import pytest
import xarray as xr

from stforecast import plain_netcdf
from stforecast.resimulation import compact_groups

ROOT_ATTRS = {"company": "toyco", "seed": 7, "settings": '{"paths": 100}', "share": 0.25}


def _groups(seed=0):
    rng = np.random.default_rng(seed)
    posterior = xr.Dataset(
        {"growth": (("chain", "draw"), rng.normal(size=(2, 30))),
         "first_year_growth": (("chain", "draw", "growth_driver"), rng.normal(size=(2, 30, 3)),
                               {"year": "FY21"}),
         "innovation": (("chain", "draw", "innovation_dim_0"), rng.normal(size=(2, 30, 4))),
         "depth": (("chain", "draw"), rng.integers(1, 9, size=(2, 30))),
         "constant": ((), 3.5)},
        coords={"chain": [0, 1], "draw": np.arange(30),
                "growth_driver": ["smart_city", "smart_life", "auto"]},
        attrs={"created_at": "2022-01-31", "sample_dims": ["chain", "draw"]})
    dims = ("scenario", "chain", "draw", "path", "year")
    predictive = xr.Dataset(
        {"revenue": (dims, rng.lognormal(8, 0.3, (2, 2, 30, 5, 3))),
         "target_price": (dims[:-1], rng.lognormal(1, 0.5, (2, 2, 30, 5)),
                          {"units": "HKD per share", "valuation_method": "report"}),
         "cash": (dims, np.where(rng.random((2, 2, 30, 5, 3)) < 0.1, np.nan,
                                 rng.normal(4000, 900, (2, 2, 30, 5, 3))))},
        coords={"scenario": ["base", "us-restrictions"], "chain": [0, 1],
                "draw": np.arange(30), "path": np.arange(5), "year": ["FY21", "FY22", "FY23"]},
        attrs={"conventions": "correct", "liquidity_floor": 3000.0})
    stats = xr.Dataset({"diverging": (("chain", "draw"), rng.random((2, 30)) < 0.1),
                        "energy": (("chain", "draw"), rng.normal(size=(2, 30)))},
                       coords={"chain": [0, 1], "draw": np.arange(30)})
    observed = xr.Dataset({"gross_margin_observed": (("gross_margin_observed_dim",),
                                                     np.array([0.7, 0.72, 0.71], "f4"))})
    return compact_groups({"posterior": posterior, "sample_stats": stats,
                           "observed_data": observed, "posterior_predictive": predictive})


def _with_xarray(path, groups, attrs):
    """The same file as xarray writes it (group by group), with h5netcdf's root attributes."""
    for i, (name, ds) in enumerate(groups.items()):
        ds.to_netcdf(path, group=name, mode="a" if i else "w", engine="h5netcdf")
    with h5netcdf.File(path, "a") as f:
        for key, value in attrs.items():
            f.attrs[key] = value


def _read(path, group):
    with xr.open_dataset(path, group=group, engine="h5netcdf") as ds:
        return ds.load()


def test_the_file_reads_as_xarray_s_own(tmp_path):
    groups = _groups()
    groups["not_plain"] = groups["posterior"].assign_coords(label=("draw", list("abcdefghij" * 3)))
    assert [plain_netcdf.writable(ds) for ds in groups.values()] == [True, True, True, True, False]
    ours, theirs = tmp_path / "ours.nc", tmp_path / "theirs.nc"
    plain_netcdf.write_groups(ours, groups, ROOT_ATTRS)
    _with_xarray(theirs, groups, ROOT_ATTRS)
    for name in groups:
        a, b = _read(ours, name), _read(theirs, name)
        assert a.identical(b), name  # values, dtypes, dimensions, coordinates, attributes
        assert list(a.data_vars) == list(b.data_vars) == list(groups[name].data_vars)
        assert list(a.coords) == list(b.coords)
        with h5py.File(ours, "r") as f, h5py.File(theirs, "r") as g:
            mine, reference = plain_netcdf.read_group(f[name]), plain_netcdf.read_group(g[name])
        assert (mine is None) == (reference is None) == (name == "not_plain"), name
        if mine is not None:
            assert mine.identical(reference), name
            assert mine.identical(a.drop_attrs(deep=True)), name
        with h5py.File(ours, "r") as f:  # with attributes: as xarray reads them
            full = plain_netcdf.read_group(f[name], attrs=True)
        if full is not None:
            assert full.identical(a), name
            assert list(full.data_vars) == list(a.data_vars), name
    with xr.open_dataset(ours, engine="h5netcdf") as a, \
            xr.open_dataset(theirs, engine="h5netcdf") as b:
        assert dict(a.attrs) == dict(b.attrs) == ROOT_ATTRS
    with h5netcdf.File(ours, "r") as f:  # h5netcdf's own reading: dimensions and their sizes
        assert dict(f["posterior_predictive"].dimensions.items()).keys() == {
            "scenario", "chain", "draw", "path", "year"}
        assert f["posterior"].dimensions["innovation_dim_0"].size == 4


def test_compression_and_chunks_as_encoded(tmp_path):
    groups = _groups()
    plain_netcdf.write_groups(tmp_path / "f.nc", groups)
    with h5py.File(tmp_path / "f.nc", "r") as f:
        revenue = f["posterior_predictive/revenue"]
        assert revenue.compression == "gzip" and revenue.compression_opts == 1
        assert revenue.shuffle and revenue.chunks == (1, 2, 30, 5, 3)  # one scenario a chunk
        assert revenue.dtype == np.float32  # rounded draws (compact_groups)
        assert f["posterior/growth"].dtype == np.float64  # the posterior exactly
        assert f["posterior/constant"].shape == ()


@pytest.mark.parametrize("change", [
    lambda ds: ds.assign_coords(label=("draw", [str(i) for i in range(30)])),  # not a dim's own
    lambda ds: ds.assign(when=("draw", np.arange(30).astype("datetime64[D]"))),  # a time
    lambda ds: ds.assign(growth=ds["growth"].assign_attrs(units="days since 2020-01-01")),
    lambda ds: ds.assign(growth=ds["growth"].assign_attrs(scale_factor=2.0)),
    lambda ds: ds.assign(innovation_dim_0=("chain", [1.0, 2.0])),  # a variable named as a dim
    lambda ds: ds.assign(nothing=("empty", np.zeros(0))),  # an empty dimension
])
def test_what_is_not_plain_is_left_to_xarray(change, tmp_path):
    ds = change(_groups()["posterior"])
    assert not plain_netcdf.writable(ds)
    ds["growth"].encoding = {"compression": "gzip", "compression_opts": 1, "_FillValue": -1.0}
    assert not plain_netcdf.writable(_groups()["posterior"].assign(growth=ds["growth"]))
    plain_netcdf.write_groups(tmp_path / "f.nc", {"posterior": ds})  # by xarray, readable
    assert set(_read(tmp_path / "f.nc", "posterior").data_vars) == set(ds.data_vars)
