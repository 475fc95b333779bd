"""Score saved forecasts against realised outcomes (the "actuals").

Once a year has been reported, the forecast can be checked. Each realised value is
compared with the model's predictive distribution (every ``(chain, draw, path)`` sample
of that variable and year) and with the report's single point forecast:

``pit`` (probability integral transform)
    The share of forecast paths below the outcome (ties count half). 0.5 means the outcome
    landed on the forecast median; values near 0 or 1 mean it fell in a tail. Over many
    outcomes a well-calibrated forecast gives PITs spread evenly between 0 and 1; bunching
    near the ends means the bands were too narrow, bunching in the middle too wide.
``in_50`` / ``in_80`` / ``in_95`` (coverage)
    Whether the outcome fell inside the central 50/80/95% band of the paths (ends
    included). Over many outcomes about 50/80/95% of them should.
``crps`` (continuous ranked probability score)
    How far the whole distribution was from the outcome, in the variable's own units
    (the company's currency, millions, for money; its price currency per share for prices);
    lower is better. For a forecast that is a
    single number it is just the absolute error, so ``crps`` can be compared directly
    with ``crps_point`` = |report's point forecast - outcome|: the distribution "beats"
    the point forecast when its CRPS is lower.

Actuals come from a small TOML file whose years are labels of the results' ``year``
coordinate, e.g. (plain numbers first, then tables)::

    target_price = 2.1            # a per-path scalar, no year
    [revenue]
    Y1 = 4700
    Y2 = 3809
    [cash]
    Y2 = 11000

``target_price_<price currency>`` is accepted for ``target_price`` (as in queries). The report's
point forecasts come from the company stored in the results (its published figures and
published target price).

This module uses numpy and xarray only (no PyMC, PyTensor, ArviZ or SciPy): it runs on
saved results in a light process and never writes files. Every problem with the actuals
raises :class:`ActualsError`, a ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .errors import StforecastError
from .registry import HEADLINE_SCENARIO, POSITIVE_VARIABLES, SAMPLE_DIMS
from .tomlfile import read_toml

if TYPE_CHECKING:  # xarray is only needed for the datasets passed in
    import xarray as xr

__all__ = [
    "Actual",
    "ActualsError",
    "COVERAGE_LEVELS",
    "crps_samples",
    "format_table",
    "interval_flags",
    "load_actuals",
    "pit",
    "run_score",
    "score",
]

#: Central predictive intervals checked for each outcome.
COVERAGE_LEVELS = (0.50, 0.80, 0.95)
_ALLOWED_DIMS = frozenset(SAMPLE_DIMS + ("year",))
_SIGNIFICANT = 6


class ActualsError(StforecastError):
    """Actuals that cannot be read or scored; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Actual:
    """One realised value: ``variable[year]`` (``year`` is ``None`` for a scalar variable)."""

    variable: str
    year: str | None
    value: float

    @property
    def key(self) -> str:
        return self.variable if self.year is None else f"{self.variable}.{self.year}"


# ------------------------------------------------------------------------------ loading
def _number(path: object, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ActualsError(f"{path}: key '{key}': expected a number, got {_describe(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ActualsError(f"{path}: key '{key}': expected a finite number, got {value!r}")
    return number


def _must_be_positive(name: str) -> bool:
    """Variables whose realised value is > 0 (revenue, a segment's revenue, a target price)."""
    return any(name == v or name.startswith(v + "_") for v in POSITIVE_VARIABLES)


def _checked(path: object, actual: Actual) -> Actual:
    if actual.value <= 0 and _must_be_positive(actual.variable):
        raise ActualsError(f"{path}: key '{actual.key}': expected a number > 0 "
                           f"({actual.variable} is positive), got {actual.value:g}")
    return actual


def _read_toml(path: Path) -> dict:
    return read_toml(path, ActualsError)[0]


def load_actuals(path: str | Path) -> list[Actual]:
    """Read realised values from a TOML file, in file order.

    A top-level table maps year labels to numbers (``[revenue] Y2 = 3809`` or
    ``revenue.Y2 = 3809``); a top-level number is a scalar variable with no year.
    Names and years are checked against the results later, by :func:`score`.
    """
    path = Path(path)
    raw = _read_toml(path)
    if not raw:
        raise ActualsError(f"{path}: expected at least one actual (e.g. revenue.<year> = 3809), "
                           f"the file is empty")
    actuals: list[Actual] = []
    for name, entry in raw.items():
        if isinstance(entry, dict):
            if not entry:
                raise ActualsError(f"{path}: key '{name}': expected year = number entries "
                                   f"(e.g. <year> = 3809), got an empty table")
            for year, value in entry.items():
                actuals.append(_checked(path, Actual(name, str(year),
                                                     _number(path, f"{name}.{year}", value))))
        elif isinstance(entry, (int, float)) and not isinstance(entry, bool):
            actuals.append(_checked(path, Actual(name, None, _number(path, name, entry))))
        else:
            raise ActualsError(f"{path}: key '{name}': expected a number or a table of "
                               f"year = number, got {_describe(entry)}")
    return actuals


def _describe(value: object) -> str:
    if isinstance(value, (bool, str)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # e.g. a date or time


# ------------------------------------------------------------------------ sample scores
def crps_samples(sorted_samples: np.ndarray, actual: float) -> float:
    """Sample CRPS ``mean|X - y| - 0.5 * mean|X - X'|`` from samples sorted ascending.

    The spread term is exact in O(n): for sorted x_(1..n),
    ``0.5 * E|X - X'| = (1/n^2) * sum_i (2i - n - 1) * x_(i)``. The samples are centred
    first (the weights sum to zero) so large levels do not cost precision.
    """
    xs = np.asarray(sorted_samples, dtype=np.float64)
    n = xs.size
    centre = xs[n // 2]
    weights = 2.0 * np.arange(1, n + 1, dtype=np.float64) - n - 1.0
    half_spread = float(np.dot(weights, xs - centre)) / (float(n) * n)
    error = float(np.mean(np.abs(xs - actual)))
    return error - half_spread


def pit(sorted_samples: np.ndarray, actual: float) -> float:
    """Fraction of samples below ``actual`` plus half the fraction equal to it."""
    below = np.searchsorted(sorted_samples, actual, side="left")
    at_or_below = np.searchsorted(sorted_samples, actual, side="right")
    return (float(below) + 0.5 * float(at_or_below - below)) / sorted_samples.size


def interval_flags(samples: np.ndarray, actual: float,
                   levels: tuple[float, ...] = COVERAGE_LEVELS) -> list[bool]:
    """Whether ``actual`` lies in each central interval [q((1-c)/2), q((1+c)/2)] (inclusive).

    Quantiles use numpy's default linear interpolation, as in :mod:`stforecast.query`.
    """
    probs = [p for c in levels for p in ((1.0 - c) / 2.0, (1.0 + c) / 2.0)]
    bounds = np.quantile(samples, probs)
    return [bool(bounds[2 * i] <= actual <= bounds[2 * i + 1]) for i in range(len(levels))]


def _round(x: float) -> float:
    return float(f"{x:.{_SIGNIFICANT}g}")


# ---------------------------------------------------------------------------- selection
def _labels(ds: "xr.Dataset", dim: str) -> list[str]:
    values = np.asarray(ds[dim].values).ravel() if dim in ds.coords else range(ds.sizes[dim])
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _select_scenario(predictive: "xr.Dataset", scenario: str | None) -> "xr.Dataset":
    from .query import QueryError, select_scenario as select

    try:
        return select(predictive, scenario)
    except QueryError as exc:
        raise ActualsError(str(exc)) from None


def _scorable(ds: "xr.Dataset") -> list[str]:
    return sorted(str(k) for k, v in ds.data_vars.items()
                  if set(v.dims) <= _ALLOWED_DIMS and v.dtype.kind in "biuf")


def _samples(ds: "xr.Dataset", names: list[str], actual: Actual, source: str) -> np.ndarray:
    """All (chain, draw, path) samples of ``actual.variable[actual.year]``, sorted, float64."""
    where = f"{source}: key '{actual.key}'"
    if actual.variable not in names:
        close = difflib.get_close_matches(actual.variable, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ActualsError(f"{where}: unknown variable {actual.variable!r}{hint}; "
                           f"valid names: {', '.join(names)}")
    da = ds[actual.variable]
    if "year" in da.dims:
        years = _labels(ds, "year")
        if actual.year is None:
            raise ActualsError(f"{where}: {actual.variable!r} has a year dimension: expected "
                               f"a table [{actual.variable}] with years among {', '.join(years)}")
        if actual.year not in years:
            hint = ""
            if actual.year in names:  # `name = x` written after `[table]` lands in the table
                hint = (f" ({actual.year!r} is a variable: in TOML, put plain "
                        f"`{actual.year} = ...` lines before the first [table])")
            raise ActualsError(f"{where}: unknown year {actual.year!r} for "
                               f"{actual.variable!r}; valid years: {', '.join(years)}{hint}")
        da = da.isel(year=years.index(actual.year))
    elif actual.year is not None:
        raise ActualsError(f"{where}: {actual.variable!r} has no year dimension: expected "
                           f"a plain number ({actual.variable} = ...), not a year table")
    xs = np.sort(np.asarray(da.values, dtype=np.float64), axis=None)
    if xs.size == 0:
        raise ActualsError(f"{where}: the forecast has no samples of {actual.variable!r}")
    bad = xs.size - int(np.count_nonzero(np.isfinite(xs)))
    if bad:
        raise ActualsError(f"{where}: the forecast has {bad:,} non-finite samples (of "
                           f"{xs.size:,}) of {actual.key}; cannot score it")
    return xs


def _point(published: "xr.Dataset", point_scalars: dict[str, float],
           actual: Actual) -> float | None:
    """The report's point forecast for ``actual``, or ``None`` if it has none."""
    value: object = None
    if actual.year is None and actual.variable in point_scalars:
        value = point_scalars[actual.variable]
    elif actual.variable in published.data_vars:
        da = published[actual.variable]
        if "year" in da.dims and actual.year is not None:
            years = _labels(published, "year")
            if actual.year in years:
                value = da.isel(year=years.index(actual.year)).values
        elif da.ndim == 0 and actual.year is None:
            value = da.values
    if value is None:
        return None
    point = float(value)
    return point if math.isfinite(point) else None


# ------------------------------------------------------------------------------ scoring
def _score_one(xs: np.ndarray, actual: Actual, point: float | None, source: str) -> dict:
    y = actual.value
    with np.errstate(over="ignore", invalid="ignore"):
        crps = crps_samples(xs, y)
    if not math.isfinite(crps):
        raise ActualsError(f"{source}: key '{actual.key}': the CRPS overflows float64; "
                           f"expected values of a sensible magnitude")
    in_50, in_80, in_95 = interval_flags(xs, y)
    crps_point = None if point is None else _round(abs(point - y))
    return {
        "variable": actual.variable,
        "year": actual.year,
        "actual": _round(y),
        "point": None if point is None else _round(point),
        "pit": _round(pit(xs, y)),
        "in_50": in_50,
        "in_80": in_80,
        "in_95": in_95,
        "crps": _round(crps),
        "crps_point": crps_point,
        "n": int(xs.size),
    }


def score(actuals: list[Actual], predictive: "xr.Dataset", published: "xr.Dataset",
          point_scalars: dict[str, float], scenario: str | None = None,
          source: str = "actuals") -> list[dict]:
    """Score each actual against the predictive samples and the report's point forecast.

    ``predictive``: the ``posterior_predictive`` group (dims ``chain, draw, path`` [, ``year``]
    [, ``scenario``]); with a ``scenario`` dimension ``None`` selects the headline scenario.
    ``published``: the report's point forecasts (over ``year``, plus scalars);
    ``point_scalars`` overrides or adds scalar point forecasts. ``source`` names the actuals
    file in error messages. Returns one dict per actual, in order (see the module docstring).
    """
    ds = _select_scenario(predictive, scenario)
    names = _scorable(ds)
    rows = []
    for actual in actuals:
        xs = _samples(ds, names, actual, source)
        rows.append(_score_one(xs, actual, _point(published, point_scalars, actual), source))
    return rows


# ---------------------------------------------------------------------------- reporting
def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if 1e3 <= abs(x) < 1e12:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_table(rows: list[dict]) -> str:
    """A fixed-width table of :func:`score` rows with a one-line verdict at the end."""
    if not rows:
        return "no actuals to score"
    header = ["variable", "year", "actual", "report point", "PIT", "in 50%", "in 80%",
              "in 95%", "CRPS forecast", "CRPS point"]
    body = [[r["variable"], r["year"] or "-", _fmt(r["actual"]), _fmt(r.get("point")),
             f"{r['pit']:.3f}", _yes(r["in_50"]), _yes(r["in_80"]), _yes(r["in_95"]),
             _fmt(r["crps"]), _fmt(r["crps_point"])] for r in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line(header), "  ".join("-" * w for w in widths)] + [line(b) for b in body]
    lines += ["", _coverage_line(rows), _verdict(rows)]
    return "\n".join(lines)


def _coverage_line(rows: list[dict]) -> str:
    n = len(rows)
    parts = [f"{sum(r[f'in_{int(c * 100)}'] for r in rows)}/{n} in the {c:.0%} band"
             for c in COVERAGE_LEVELS]
    return "Coverage: " + ", ".join(parts) + " (expect about 50%, 80%, 95%)."


def _verdict(rows: list[dict]) -> str:
    compared = [r for r in rows if r["crps_point"] is not None]
    missing = len(rows) - len(compared)
    note = f"; {missing} without a report point forecast" if missing else ""
    if not compared:
        return f"No report point forecast to compare with{note}."
    wins = sum(r["crps"] < r["crps_point"] for r in compared)
    return (f"The distribution beat the report's point forecast on {wins} of "
            f"{len(compared)} actuals (lower CRPS){note}.")


def run_score(actuals_path: str | Path, results_dir: str | Path, scenario: str | None = None,
              as_json: bool = False, out: Callable[[str], object] = print) -> int:
    """Load actuals and a results folder (``stforecast.results.load_results``: the draws and the
    company stored with them); print the JSON rows or the table. Returns 0, or 2 after printing
    one ``error: ...`` line to stderr. Never writes files."""
    from .results import load_results

    try:
        actuals = load_actuals(actuals_path)
        results = load_results(results_dir)
        aliases = results.summary.company.aliases()
        actuals = [Actual(aliases.get(a.variable, a.variable), a.year, a.value) for a in actuals]
        company = results.company
        from .query import QueryError
        try:  # the scenario scored: read from forecast.nc, or recomputed if it is not kept there
            predictive = results.predictive([scenario or HEADLINE_SCENARIO])
        except QueryError as exc:
            raise ActualsError(str(exc)) from None
        try:
            rows = score(actuals, predictive, company.published,
                         {"target_price": company.market.target_price_published},
                         scenario=scenario, source=str(actuals_path))
        finally:
            predictive.close()
    except StforecastError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot read results in {results_dir}: {exc}".replace("\n", " "),
              file=sys.stderr)
        return 2
    out(json.dumps(rows, indent=1) if as_json else format_table(rows))  # the CLI's one style
    return 0
