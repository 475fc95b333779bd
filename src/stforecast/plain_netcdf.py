"""Plain groups of a netCDF-4 file (``forecast.nc``, the fit cache's entries) written and read
with h5py alone.

A *plain* group holds numbers, booleans and strings only: variables over named dimensions, the
dimensions' own coordinates (no other coordinates), attributes that are strings or numbers, and
per variable at most gzip compression, the byte shuffle and chunk sizes. That is what a run
stores. h5netcdf, through xarray, spends ~8 ms of Python bookkeeping per variable (dimension
scales looked up, attached and detached again, sizes recomputed over every variable); a run's
file has ~300 variables, so writing a small run's results took ~2.4 s, nearly all of it this
bookkeeping. ``write_groups`` writes the same file, the netCDF-4 way, with h5py's
dimension-scale calls (~0.2 s for those ~300 variables): each dimension is an HDF5 dimension
scale (its coordinate values, or a dimension-only scale named as netCDF-C names them), numbered
file-wide (``_Netcdf4Dimid``), and each variable lists its dimensions (``DIMENSION_LIST``,
``_Netcdf4Coordinates``); floats carry a NaN ``_FillValue``, numeric scalar attributes are
one-element arrays, booleans int8 marked ``dtype="bool"``, as xarray and h5netcdf write them.
xarray (h5netcdf), netCDF-C and ``read_group`` read it as they read h5netcdf's; a group that is
not plain is written by xarray (``tests/test_plain_netcdf.py`` compares both writers' files as
xarray and the readers read them).

``read_group`` reads a plain group back into an xarray Dataset without xarray's netCDF
machinery (a few ms per variable), with its attributes when asked (the fit cache).
Pure h5py / numpy / xarray.
"""

from __future__ import annotations

import numpy as np

#: Attributes by which xarray decodes values or makes coordinates (CF conventions): a variable
#: with one is not plain.
DECODING_ATTRS = frozenset({"scale_factor", "add_offset", "missing_value", "_Unsigned", "dtype",
                            "units", "calendar", "coordinates", "_Encoding", "bounds",
                            "grid_mapping", "flag_values", "flag_masks", "flag_meanings"})
#: The NAME of a dimension scale that is a dimension only (no coordinate variable).
DIMENSION_ONLY = b"This is a netCDF dimension but not a netCDF variable"
#: The prefix netCDF-4 gives a variable named like a dimension it is not the coordinate of.
NON_COORD_PREFIX = "_nc4_non_coord_"
#: The encodings a plain variable may carry (``resimulation.compact_groups`` sets them), and
#: those a variable read from a file carries that change nothing here (where it came from, its
#: layout); any other encoding must be off (False or None). A coordinate is written whole and
#: uncompressed whatever its encoding says.
WRITTEN_ENCODINGS = frozenset({"compression", "compression_opts", "shuffle", "chunksizes"})
IGNORED_ENCODINGS = frozenset({"source", "original_shape", "dtype", "preferred_chunks",
                               "contiguous"})
#: Attributes of a variable that a plain one may not have: those that make xarray decode or
#: re-label its values ("units" is plain unless it names a time: "days since ...").
RESERVED_ATTRS = DECODING_ATTRS - {"units"}


def _is_text(values: np.ndarray) -> bool:
    return values.dtype.kind == "U" or (
        values.dtype.kind == "O" and all(isinstance(v, str) for v in values.flat))


def _plain_attrs(attrs: dict) -> bool:
    for key, value in attrs.items():
        if not isinstance(key, str) or key.startswith("_") or key in RESERVED_ATTRS:
            return False
        if key == "units" and (not isinstance(value, str) or " since " in value):
            return False
        if isinstance(value, (bool, np.bool_)):
            return False
        if isinstance(value, (str, int, float, np.integer, np.floating)):
            continue
        values = np.asarray(value) if isinstance(value, (list, tuple, np.ndarray)) else None
        if values is None or values.ndim != 1 or values.size == 0:
            return False
        if not (values.dtype.kind in "iuf" or _is_text(values)):
            return False
    return True


def writable(ds) -> bool:
    """Whether ``write_groups`` writes the Dataset ``ds`` itself (it is plain, see the module
    docstring); otherwise xarray does."""
    if not _plain_attrs(ds.attrs):
        return False
    for name, coord in ds.coords.items():
        if coord.dims != (name,):  # a coordinate that is not its dimension's own
            return False
    if set(ds.data_vars) & set(ds.dims):  # a variable named like a dimension it is not of
        return False
    for name, var in ds.variables.items():
        if not isinstance(name, str) or name.startswith(NON_COORD_PREFIX):
            return False
        if any(not isinstance(dim, str) for dim in var.dims) or 0 in var.shape:
            return False  # (an empty variable: h5netcdf's own layout, unlimited, is xarray's)
        kind = var.dtype.kind
        if not (kind in "iufb" or (kind in "OU" and _is_text(var.values))):
            return False
        encoding = var.encoding
        if name not in ds.coords and (
                encoding.get("dtype", var.dtype) != var.dtype
                or encoding.get("compression") not in (None, "gzip")
                or any(value not in (None, False) for key, value in encoding.items()
                       if key not in WRITTEN_ENCODINGS | IGNORED_ENCODINGS)):
            return False
        if not _plain_attrs(var.attrs):
            return False
    return True


def _set_attrs(target, attrs: dict) -> None:
    """``attrs`` on an HDF5 object as h5netcdf writes them (numbers as one-element arrays)."""
    import h5py

    for key, value in attrs.items():
        if isinstance(value, str):
            target[key] = value
        elif isinstance(value, (list, tuple, np.ndarray)) and _is_text(np.asarray(value)):
            target.create(key, np.asarray(value, dtype=object), dtype=h5py.string_dtype())
        else:
            target[key] = np.atleast_1d(value)


def _values(var) -> tuple[np.ndarray, object]:
    """A variable's values as written, and their HDF5 type (text: variable-length UTF-8)."""
    import h5py

    if var.dtype.kind in "OU":
        return np.asarray(var.values, dtype=object), h5py.string_dtype()
    if var.dtype.kind == "b":  # as xarray stores booleans: int8, with the attribute dtype="bool"
        return np.asarray(var.values, dtype=np.int8, order="C"), np.dtype(np.int8)
    return np.asarray(var.values, order="C"), var.dtype


def _write_group(f, name: str, ds, dimid: int) -> int:
    """Write ``ds`` (plain) as the group ``name`` of the open h5py file ``f``; dimensions are
    numbered from ``dimid``; returns the next free number."""
    group = f.create_group(name, track_order=True)
    _set_attrs(group.attrs, ds.attrs)
    ids, scales = {}, {}
    for dim in [*ds.coords, *(d for d in ds.dims if d not in ds.coords)]:  # xarray's order
        size = ds.sizes[dim]
        if dim in ds.coords:
            values, dtype = _values(ds[dim].variable)
            scale = group.create_dataset(dim, data=values, dtype=dtype)
            scale.make_scale(dim)
            scale.attrs["_Netcdf4Coordinates"] = np.array([dimid], dtype=np.int32)
            _set_attrs(scale.attrs, ds[dim].attrs)
        else:
            scale = group.create_dataset(dim, shape=(size,), dtype=">f4")
            scale.make_scale(DIMENSION_ONLY + b".%10d" % size)
        scale.attrs["_Netcdf4Dimid"] = np.int32(dimid)
        ids[dim], scales[dim] = dimid, scale
        dimid += 1
    for var_name, var in ds.data_vars.items():
        values, dtype = _values(var.variable)
        options = {}
        if var.dtype.kind == "f":
            options["fillvalue"] = np.nan
        encoding = var.encoding
        if var.ndim and encoding.get("compression") == "gzip":
            options.update(compression="gzip", compression_opts=encoding.get("compression_opts"),
                           shuffle=bool(encoding.get("shuffle")),
                           chunks=tuple(encoding["chunksizes"]) if encoding.get("chunksizes")
                           else True)
        elif var.ndim and encoding.get("shuffle"):
            options.update(shuffle=True, chunks=tuple(encoding.get("chunksizes") or ()) or True)
        dataset = group.create_dataset(var_name, data=values, dtype=dtype, **options)
        if var.dtype.kind == "f":
            dataset.attrs["_FillValue"] = np.array([np.nan], dtype=var.dtype)
        for axis, dim in enumerate(var.dims):
            dataset.dims[axis].attach_scale(scales[dim])
        if var.dtype.kind == "b":
            dataset.attrs["dtype"] = "bool"
        if var.dims:
            dataset.attrs["_Netcdf4Coordinates"] = np.array([ids[d] for d in var.dims],
                                                            dtype=np.int32)
        _set_attrs(dataset.attrs, var.attrs)
    return dimid


def write_groups(path, groups: dict, attrs: dict | None = None) -> None:
    """A new netCDF-4 file at ``path`` with each
    Dataset of ``groups`` as a group and ``attrs`` as the file's attributes: the plain groups
    (``writable``) written here, the others then by xarray (h5netcdf)."""
    import h5py

    plain = {name: ds for name, ds in groups.items() if writable(ds)}
    with h5py.File(path, "w", track_order=True) as f:  # groups list their variables in order
        f.attrs["_NCProperties"] = np.bytes_(
            f"version=2,stforecast-plain-netcdf=1,hdf5={h5py.version.hdf5_version},"
            f"h5py={h5py.__version__}".encode())
        dimid = 0
        for name, ds in plain.items():
            dimid = _write_group(f, name, ds, dimid)
        _set_attrs(f.attrs, attrs or {})
    for name, ds in groups.items():
        if name not in plain:
            ds.to_netcdf(path, group=name, mode="a", engine="h5netcdf")


def attribute(value):
    """An HDF5 attribute's value as h5netcdf gives it to xarray: text as str (a list of them for
    an array of text), a one-element array as its element, other arrays as they are."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            value = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v
                     for v in value.flat]
        if len(value) == 1:
            return value[0]
    return value


#: HDF5 and netCDF-4 bookkeeping attributes (not a variable's own).
HIDDEN_ATTRS = frozenset({"CLASS", "NAME", "REFERENCE_LIST", "DIMENSION_LIST", "_Netcdf4Dimid",
                          "_Netcdf4Coordinates", "_FillValue", "_NCProperties"})


def _own_attrs(attrs) -> dict:
    return {key: attribute(attrs[key]) for key in attrs if key not in HIDDEN_ATTRS}


def dimension_name(scale, scales: dict) -> str:
    """The name of the dimension scale ``scale`` (an h5py Dataset a ``DIMENSION_LIST``
    references): looked up by object identity in ``scales`` (``{scale.id: name}``), its HDF5
    path's last part otherwise (~1 ms to resolve)."""
    return scales.get(scale.id) or scale.name.rsplit("/", 1)[-1]


def read_group(group, attrs: bool = False):
    """An h5netcdf- or ``write_groups``-written group (an open h5py Group) of plain numbers,
    booleans and strings as an xarray Dataset (values and coordinates as xarray decodes them: a
    float fill value reads as NaN, an int8 marked ``dtype="bool"`` as booleans, strings as
    str; with ``attrs``, the group's and the variables' attributes as xarray reads them), or
    None when it holds anything else."""
    import xarray as xr

    data_vars, coords = {}, {}
    items = list(group.items())
    # a variable's dimensions are the scales its DIMENSION_LIST references, matched by object
    # identity (a reference's name costs ~1 ms to resolve)
    scales = {ds.id: name for name, ds in items
              if hasattr(ds, "attrs") and ds.attrs.get("CLASS") == b"DIMENSION_SCALE"}
    for name, ds in items:
        own = ds.attrs if hasattr(ds, "attrs") else {}
        decoding = set(own) & DECODING_ATTRS
        if "units" in decoding and " since " not in str(attribute(own["units"])):
            decoding.discard("units")  # a unit, not a time: xarray leaves the values alone
        is_bool = decoding == {"dtype"} and attribute(own["dtype"]) == "bool"
        if (not hasattr(ds, "dtype") or (decoding and not is_bool)
                or name.startswith(NON_COORD_PREFIX)):  # renamed on disk: left to xarray
            return None
        is_scale = own.get("CLASS") == b"DIMENSION_SCALE"
        if is_scale and bytes(own.get("NAME", b"")).startswith(DIMENSION_ONLY):
            continue  # a dimension, not a variable
        if is_scale:
            dims = (name,)
        elif "DIMENSION_LIST" in own:
            dims = tuple(dimension_name(group.file[ref[0]], scales)
                         for ref in own["DIMENSION_LIST"])
        elif ds.ndim == 0:
            dims = ()
        else:
            return None
        values = ds[()]
        kind = values.dtype.kind
        fill = own.get("_FillValue")
        if is_bool:
            if kind != "i" or fill is not None:
                return None
            values = values.astype(bool)
        elif kind == "O":
            if fill is not None or not all(isinstance(v, (str, bytes)) for v in values.flat):
                return None
            values = np.array([v.decode() if isinstance(v, bytes) else v
                               for v in values.flat]).reshape(values.shape)
        elif kind == "f":
            if fill is not None:
                fill = np.asarray(fill, dtype=values.dtype).reshape(-1)
                if fill.size != 1:
                    return None
                missing = np.isnan(values) if np.isnan(fill[0]) else values == fill[0]
                values = np.where(missing, np.array(np.nan, dtype=values.dtype), values)
        elif kind not in "iub" or fill is not None:
            return None
        var_attrs = {k: v for k, v in _own_attrs(own).items() if k != "dtype"} if attrs else None
        (coords if is_scale else data_vars)[name] = xr.Variable(dims, values, var_attrs)
    return xr.Dataset(data_vars, coords=coords, attrs=_own_attrs(group.attrs) if attrs else None)
