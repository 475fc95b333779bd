"""Named arrays for the engine's inner loop: numpy arrays that carry their dimension names.

The engine is array code over named dimensions. On a million paths xarray's cost per operation
(aligning indexes, merging coordinates, transposing operands whose dimensions come in another
order) outweighs the arithmetic, and the engine runs its identities several times per call
(funding and management decisions, year by year). So inside the engine every array is laid out
on one ``Frame``: one axis per dimension of the drivers, in one order (``year`` last), length 1
where the array does not vary along that dimension. numpy's broadcasting then IS xarray's
broadcasting by name; a ``Named`` array only adds the set of dimensions it varies along (the
dimensions an xarray result would have). The arithmetic is numpy's, element by element the same
as xarray's; conversion to and from xarray happens at the engine's boundary (``Frame.named``,
``Frame.to_xarray``). Pure numpy/xarray.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


class Frame:
    """The dimensions of a set of drivers in one order, with their sizes and coordinates."""

    def __init__(self, dims: tuple[str, ...], sizes: dict[str, int], coords: dict | None = None):
        self.dims = tuple(dims)
        self.sizes = {d: int(sizes[d]) for d in self.dims}
        self.coords = coords or {}
        self.axis = {d: i for i, d in enumerate(self.dims)}

    @classmethod
    def of(cls, ds: xr.Dataset, skip: tuple[str, ...] = (), last: str = "year") -> "Frame":
        """The frame of ``ds``'s variables: dimensions in the order they first appear (without
        ``skip``), ``last`` moved to the end; the coordinates along them."""
        dims: list[str] = []
        for var in ds.data_vars.values():
            dims += [d for d in var.dims if d not in dims and d not in skip]
        if last in dims:
            dims = [d for d in dims if d != last] + [last]
        coords = {k: c for k, c in ds.coords.items() if not set(c.dims) & set(skip)}
        return cls(tuple(dims), {d: ds.sizes[d] for d in dims}, coords)

    def named(self, da: xr.DataArray | float) -> "Named":
        """A DataArray (or a number) on this frame (a view, no copy)."""
        if not isinstance(da, xr.DataArray):
            return Named(np.asarray(da, dtype=float).reshape((1,) * len(self.dims)),
                         frozenset(), self)
        data = da.transpose(*[d for d in self.dims if d in da.dims]).data
        missing = tuple(i for i, d in enumerate(self.dims) if d not in da.dims)
        return Named(np.expand_dims(data, missing) if missing else data, frozenset(da.dims),
                     self)

    def to_xarray(self, x: "Named", coords: bool = False) -> xr.DataArray:
        """``x`` as a DataArray over the dimensions it varies along (frame order); with the
        frame's coordinates along them when ``coords``."""
        dims = tuple(d for d in self.dims if d in x.dims)
        absent = tuple(i for i, d in enumerate(self.dims) if d not in x.dims)
        data = x.data.squeeze(axis=absent) if absent else x.data
        return xr.DataArray(data, dims=dims, coords={
            k: c for k, c in self.coords.items() if set(c.dims) <= set(dims)} if coords else None)

    def equals(self, dim: str, i: int) -> "Named":
        """True at position ``i`` of ``dim`` (e.g. one year), as a boolean array along it."""
        mask = np.zeros(self.sizes[dim], dtype=bool)
        mask[i] = True
        return self._along(dim, mask)

    def after(self, dim: str, i: int) -> "Named":
        """True at the positions of ``dim`` after ``i``."""
        return self._along(dim, np.arange(self.sizes[dim]) > i)

    def zeros(self, dim: str) -> "Named":
        """0.0 along ``dim``."""
        return self._along(dim, np.zeros(self.sizes[dim]))

    def _along(self, dim: str, values: np.ndarray) -> "Named":
        shape = tuple(len(values) if d == dim else 1 for d in self.dims)
        return Named(values.reshape(shape), frozenset((dim,)), self)


def without_attrs(da: xr.DataArray) -> xr.DataArray:
    """``da.drop_attrs()`` (no attributes on it or its coordinates) without the deep copy of
    its values that ``drop_attrs`` makes (the result shares them; ~6 ms on a million values)."""
    out = da.copy(deep=False)
    out.attrs = {}
    for coord in out.coords.values():
        coord.attrs = {}
    return out


def _data(x):
    return x.data if isinstance(x, Named) else x


def _dims(*xs) -> frozenset:
    out = frozenset()
    for x in xs:
        if isinstance(x, Named):
            out = out | x.dims
    return out


class Named:
    """A numpy array on a ``Frame`` (``data``: one axis per frame dimension) and the set of
    dimensions it varies along (``dims``). Arithmetic, comparisons and numpy ufuncs broadcast
    by name, as xarray does."""

    __slots__ = ("data", "dims", "frame")
    __array_priority__ = 100

    def __init__(self, data: np.ndarray, dims: frozenset, frame: Frame):
        self.data, self.dims, self.frame = data, dims, frame

    def _new(self, data, *operands) -> "Named":
        return Named(data, _dims(self, *operands), self.frame)

    # --- arithmetic (numpy's, on the aligned arrays) ---------------------------------------
    def __add__(self, o): return self._new(self.data + _data(o), o)
    def __radd__(self, o): return self._new(_data(o) + self.data, o)
    def __sub__(self, o): return self._new(self.data - _data(o), o)
    def __rsub__(self, o): return self._new(_data(o) - self.data, o)
    def __mul__(self, o): return self._new(self.data * _data(o), o)
    def __rmul__(self, o): return self._new(_data(o) * self.data, o)
    def __truediv__(self, o): return self._new(self.data / _data(o), o)
    def __rtruediv__(self, o): return self._new(_data(o) / self.data, o)
    def __pow__(self, o): return self._new(self.data ** _data(o), o)
    def __neg__(self): return self._new(-self.data)
    def __lt__(self, o): return self._new(self.data < _data(o), o)
    def __le__(self, o): return self._new(self.data <= _data(o), o)
    def __gt__(self, o): return self._new(self.data > _data(o), o)
    def __ge__(self, o): return self._new(self.data >= _data(o), o)
    def __and__(self, o): return self._new(self.data & _data(o), o)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__" or kwargs:
            return NotImplemented
        return Named(ufunc(*(_data(x) for x in inputs)), _dims(*inputs), self.frame)

    # --- the xarray methods the engine uses --------------------------------------------------
    def where(self, cond, other=np.nan) -> "Named":
        """``self`` where ``cond``, else ``other`` (as ``DataArray.where``)."""
        return where(cond, self, other)

    def fillna(self, value) -> "Named":
        return self._new(np.where(np.isnan(self.data), _data(value), self.data), value)

    def clip(self, min=None, max=None) -> "Named":  # noqa: A002 (xarray's names)
        return self._new(np.clip(self.data, min, max))

    def shift(self, fill_value=np.nan, **shifts: int) -> "Named":
        """One step along one dimension, as ``DataArray.shift(year=1)``: the first position
        gets ``fill_value``."""
        (dim, n), = shifts.items()
        if n != 1:
            raise NotImplementedError("Named.shift: one step only")
        ax = self._axis(dim)
        data = np.moveaxis(self.data, ax, 0)
        out = np.empty_like(data, dtype=np.result_type(data, fill_value))
        out[0], out[1:] = fill_value, data[:-1]
        return self._new(np.moveaxis(out, 0, ax))

    def cumsum(self, dim: str, skipna: bool | None = None) -> "Named":
        """As ``DataArray.cumsum(dim, skipna)``: NaN counts as 0 unless ``skipna=False``."""
        data = self.data
        if skipna is not False and data.dtype.kind == "f":
            data = np.where(np.isnan(data), 0.0, data)
        return self._new(_accumulate(np.add, data, self._axis(dim)))

    def cummax(self, dim: str) -> "Named":
        return self._new(_accumulate(np.maximum, self.data, self._axis(dim)))

    def sum(self, dim: str, skipna: bool = False) -> "Named":
        if skipna:
            raise NotImplementedError("Named.sum: only skipna=False")
        out = np.sum(self.data, axis=self._axis(dim), keepdims=True)
        return Named(out, self.dims - {dim}, self.frame)

    def at(self, dim: str, i: int) -> "Named":
        """Position ``i`` of ``dim`` (``isel(dim=i, drop=True)``), the axis kept at length 1."""
        if dim not in self.dims:
            return self
        ax = self.frame.axis[dim]
        index = (slice(None),) * ax + (slice(i, i + 1),)
        return Named(self.data[index], self.dims - {dim}, self.frame)

    def any(self) -> bool:
        return bool(self.data.any())

    def _axis(self, dim: str) -> int:
        if dim not in self.dims:
            raise ValueError(f"Named array has no dimension {dim!r} (has {sorted(self.dims)})")
        return self.frame.axis[dim]


def _accumulate(ufunc, data: np.ndarray, axis: int) -> np.ndarray:
    """``ufunc.accumulate(data, axis)`` (``np.cumsum`` for ``np.add``) of float data as one
    ``ufunc`` call per position along ``axis``: the same operations in the same order (each
    position is the ufunc of the one before and the data there), but numpy's accumulate along
    a short last axis (the years) runs element by element, several times slower."""
    if data.dtype != np.float64 or data.shape[axis] < 2:
        return ufunc.accumulate(data, axis=axis)
    out = np.empty_like(data)
    src, dst = np.moveaxis(data, axis, 0), np.moveaxis(out, axis, 0)
    dst[0, ...] = src[0, ...]
    for i in range(1, len(src)):
        ufunc(dst[i - 1, ...], src[i, ...], out=dst[i, ...])
    return out


def where(cond, x, y) -> Named:
    """``x`` where ``cond``, else ``y`` (as ``xr.where``)."""
    frame = next(v.frame for v in (cond, x, y) if isinstance(v, Named))
    return Named(np.where(_data(cond), _data(x), _data(y)), _dims(cond, x, y), frame)
