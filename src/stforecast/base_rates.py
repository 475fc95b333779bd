"""Base rates: published reference-class distributions as typed data (``priors/base_rates.toml``).

The file is shared by every company (it sits beside the company folders, and is not one: it is a
file, not a folder with a ``company.toml``). It holds

* **reference classes** of sales growth (``[[sales_cagr_3y]]``, ``[[sales_cagr_5y]]``): a class
  is bounded in the units of ``by`` (``starting_sales_usd``: USD mn; ``prior_growth``: a
  fraction) and gives the distribution of the CAGR as bin edges and frequencies, with the
  published mean, median and sd;
* **findings** (``[[growth_persistence]]``, ``[[analyst_optimism]]``,
  ``[[gross_margin_change]]``): a published result, numeric where it could be read;
* **stalls** (``[[stall]]``): the share of a class below a CAGR threshold, checked against the
  class's own table.

Every entry names its source (exhibit/table and page) and says whether the number was read here
(``verified = true``) or not (``verified = false`` with a ``note`` saying what it rests on).
Problems are one line naming the file, the key and what was expected (``BaseRatesError``).
Standard library plus numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import StforecastError
from .tomlfile import read_toml

FILE_NAME = "base_rates.toml"
CLASS_KINDS = ("sales_cagr_3y", "sales_cagr_5y")
FINDING_KINDS = ("growth_persistence", "analyst_optimism", "gross_margin_change")
SECTIONS = ("meta", *CLASS_KINDS, *FINDING_KINDS, "stall")
BY = ("starting_sales_usd", "prior_growth")
#: Frequencies are published to 0.1pp: 16 rounded bins may miss 100% by up to 0.8pp.
SUM_TOLERANCE = 0.01
CLASS_KEYS = ("name", "by", "lower", "upper", "bins", "frequency", "frequency_missing", "mean",
              "median", "sd", "source", "verified", "note")
FINDING_TEXT = ("name", "finding", "source", "verified", "note")
STALL_KEYS = ("name", "of", "below", "probability", "source", "verified", "note")


class BaseRatesError(StforecastError):
    """The base-rates file is invalid; one line naming file, key and what was expected."""


@dataclass(frozen=True)
class ReferenceClass:
    """One published distribution of a CAGR over ``horizon_years`` for firms in [lower, upper)."""

    kind: str
    name: str
    horizon_years: int
    by: str
    lower: float
    upper: float
    edges: np.ndarray | None  # bin edges (fractions), may start at -inf and end at +inf
    frequency: np.ndarray | None  # fraction of firm-periods per bin (sums to 1 within rounding)
    mean: float | None
    median: float | None
    sd: float | None
    source: str
    verified: bool
    note: str = ""

    def contains(self, value: float) -> bool:
        return self.lower <= value < self.upper

    def prob_below(self, x: float) -> float:
        """P(CAGR < x), linear within a closed bin; open end bins count only when ``x`` is at
        or beyond their finite edge (no shape is assumed inside them)."""
        if self.edges is None:
            raise BaseRatesError(f"{self.name}: no bin frequencies (frequency_missing)")
        freq = self.frequency / self.frequency.sum()
        total = 0.0
        for lo, hi, f in zip(self.edges[:-1], self.edges[1:], freq):
            if x >= hi:
                total += f
            elif x > lo and math.isfinite(lo) and math.isfinite(hi):
                total += f * (x - lo) / (hi - lo)
        return float(total)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile, linear within closed bins; inside an open end bin, its finite edge."""
        if self.edges is None:
            raise BaseRatesError(f"{self.name}: no bin frequencies (frequency_missing)")
        freq = self.frequency / self.frequency.sum()
        cum = np.concatenate([[0.0], np.cumsum(freq)])
        i = int(np.clip(np.searchsorted(cum, q, side="right") - 1, 0, len(freq) - 1))
        lo, hi = self.edges[i], self.edges[i + 1]
        if not math.isfinite(lo):
            return float(hi)
        if not math.isfinite(hi) or freq[i] == 0:
            return float(lo)
        return float(lo + (hi - lo) * (q - cum[i]) / freq[i])


@dataclass(frozen=True)
class Finding:
    kind: str
    name: str
    finding: str
    source: str
    verified: bool
    note: str = ""
    values: dict[str, float] = field(default_factory=dict)  # numeric keys, as published


@dataclass(frozen=True)
class Stall:
    name: str
    of: str
    below: float
    probability: float
    source: str
    verified: bool
    note: str = ""


@dataclass(frozen=True)
class BaseRates:
    path: str
    meta: dict
    classes: dict[str, ReferenceClass]  # by name
    findings: dict[str, Finding]
    stalls: dict[str, Stall]

    def of_kind(self, kind: str) -> list[ReferenceClass]:
        return [c for c in self.classes.values() if c.kind == kind]

    def reference_class(self, kind: str, by: str, value: float,
                        with_bins: bool = False) -> ReferenceClass:
        """The narrowest class of ``kind`` conditioned on ``by`` that contains ``value`` (with
        ``with_bins``: among the classes that give bin frequencies)."""
        found = [c for c in self.of_kind(kind) if c.by == by and c.contains(value)
                 and (c.edges is not None or not with_bins)]
        if not found:
            raise BaseRatesError(f"{self.path}: {kind}: expected a class with by = {by!r} "
                                 f"containing {value:g}" + (" and bin frequencies" if with_bins
                                                             else "") + " (none)")
        return min(found, key=lambda c: c.upper - c.lower)


# --- loading ------------------------------------------------------------------------------------
def default_path() -> Path:
    """``priors/base_rates.toml`` of the project (beside the shipped company folders)."""
    project = Path(__file__).resolve().parents[2] / "priors"
    return (project if project.is_dir() else Path("priors")) / FILE_NAME


def _fail(path, key, expected):
    raise BaseRatesError(f"{path}: key '{key}': expected {expected}")


def _number(path, key, value, lo=-math.inf, hi=math.inf, infinite=False) -> float:
    if infinite and value in ("-inf", "inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(path, key, "a finite number" + (' (or "-inf"/"inf")' if infinite else "")
              + f", got {value!r}")
    if not lo <= value <= hi:
        _fail(path, key, f"a number in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def _text(path, key, table, name, required=True) -> str:
    value = table.get(name, "")
    if not isinstance(value, str) or (required and not value.strip()):
        _fail(path, f"{key}.{name}", "a non-empty string" if required else "a string")
    return value


def _provenance(path, key, table) -> tuple[str, bool, str]:
    """source, verified, note: every entry says where its numbers come from."""
    source = _text(path, key, table, "source")
    verified = table.get("verified")
    if not isinstance(verified, bool):
        _fail(path, f"{key}.verified", "true (read here) or false (not read here; say why in note)")
    note = _text(path, key, table, "note", required=False)
    if not verified and not note.strip():
        _fail(path, f"{key}.note", "a note saying what an unverified number rests on")
    if verified and not ("p." in source or "pp." in source):
        _fail(path, f"{key}.source", "an exhibit/table and page (p. N) for a verified entry")
    return source, verified, note


def _check_keys(path, key, table, allowed):
    if not isinstance(table, dict):
        _fail(path, key, "a table")
    extra = sorted(set(table) - set(allowed))
    if extra:
        _fail(path, f"{key}.{extra[0]}", f"only {', '.join(allowed)}")


def _class(path, kind, i, table) -> ReferenceClass:
    key = f"{kind}[{i}]"
    _check_keys(path, key, table, CLASS_KEYS)
    name = _text(path, key, table, "name")
    if table.get("by") not in BY:
        _fail(path, f"{key}.by", f"one of {', '.join(BY)}, got {table.get('by')!r}")
    for part in ("lower", "upper"):
        if part not in table:
            _fail(path, f"{key}.{part}", "a value (it is missing)")
    lower = _number(path, f"{key}.lower", table["lower"], infinite=True)
    upper = _number(path, f"{key}.upper", table["upper"], infinite=True)
    if not lower < upper:
        _fail(path, f"{key}.upper", f"above lower ({lower:g}), got {upper:g}")
    edges = freq = None
    if "frequency_missing" in table:
        _text(path, key, table, "frequency_missing")
        if "bins" in table or "frequency" in table:
            _fail(path, f"{key}.frequency_missing", "either bins and frequency, or "
                  "frequency_missing, not both")
    else:
        bins, frequency = table.get("bins"), table.get("frequency")
        if not isinstance(bins, list) or len(bins) < 3:
            _fail(path, f"{key}.bins", "a list of at least 3 bin edges")
        edges = np.array([_number(path, f"{key}.bins[{j}]", b, infinite=True)
                          for j, b in enumerate(bins)])
        if np.isinf(edges[1:-1]).any():
            _fail(path, f"{key}.bins", "infinite edges only first (-inf) or last (inf)")
        if not (np.diff(edges) > 0).all():
            _fail(path, f"{key}.bins", "strictly increasing bin edges")
        if not isinstance(frequency, list) or len(frequency) != len(edges) - 1:
            _fail(path, f"{key}.frequency", f"a list of {len(edges) - 1} frequencies "
                                            "(one per bin)")
        freq = np.array([_number(path, f"{key}.frequency[{j}]", f, 0.0, 1.0)
                         for j, f in enumerate(frequency)])
        if abs(freq.sum() - 1.0) > SUM_TOLERANCE:
            _fail(path, f"{key}.frequency", f"fractions summing to 1 within {SUM_TOLERANCE:g} "
                                            f"(rounding), got {freq.sum():.4f}")
    stats = {s: (_number(path, f"{key}.{s}", table[s], -1.0, 10.0) if s in table else None)
             for s in ("mean", "median", "sd")}
    source, verified, note = _provenance(path, key, table)
    return ReferenceClass(kind, name, int(kind.rsplit("_", 1)[1].rstrip("y")), table["by"],
                          lower, upper, edges, freq, stats["mean"], stats["median"], stats["sd"],
                          source, verified, note)


def _finding(path, kind, i, table) -> Finding:
    key = f"{kind}[{i}]"
    if not isinstance(table, dict):
        _fail(path, key, "a table")
    name = _text(path, key, table, "name")
    finding = _text(path, key, table, "finding")
    values = {k: _number(path, f"{key}.{k}", v) for k, v in table.items()
              if k not in FINDING_TEXT}
    return Finding(kind, name, finding, *_provenance(path, key, table), values=values)


def _stall(path, i, table, classes) -> Stall:
    key = f"stall[{i}]"
    _check_keys(path, key, table, STALL_KEYS)
    name = _text(path, key, table, "name")
    of = _text(path, key, table, "of")
    if of not in classes or classes[of].edges is None:
        _fail(path, f"{key}.of", f"the name of a class with bin frequencies, got {of!r}")
    below = _number(path, f"{key}.below", table.get("below"))
    if below not in classes[of].edges:
        _fail(path, f"{key}.below", f"a bin edge of {of}, got {below:g}")
    probability = _number(path, f"{key}.probability", table.get("probability"), 0.0, 1.0)
    implied = classes[of].prob_below(below)
    if abs(probability - implied) > SUM_TOLERANCE:
        _fail(path, f"{key}.probability", f"the table's share below {below:g} "
                                          f"({implied:.3f}), got {probability:g}")
    return Stall(name, of, below, probability, *_provenance(path, key, table))


def load_base_rates(path: str | Path | None = None) -> BaseRates:
    """Read and validate the base-rates file (default: the project's ``priors/base_rates.toml``)."""
    path = str(path if path is not None else default_path())
    raw, _ = read_toml(path, BaseRatesError)
    for section in raw:
        if section not in SECTIONS:
            _fail(path, section, f"a known section: one of {', '.join(SECTIONS)}")
    meta = raw.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("sources"), list) \
            or not meta["sources"]:
        _fail(path, "meta.sources", "a non-empty list of the publications used")
    classes: dict[str, ReferenceClass] = {}
    findings: dict[str, Finding] = {}
    for kind in (*CLASS_KINDS, *FINDING_KINDS, "stall"):
        entries = raw.get(kind, [])
        if not isinstance(entries, list):
            _fail(path, kind, f"an array of tables ([[{kind}]])")
        for i, table in enumerate(entries):
            if kind in CLASS_KINDS:
                item = _class(path, kind, i, table)
                target = classes
            elif kind in FINDING_KINDS:
                item = _finding(path, kind, i, table)
                target = findings
            else:
                continue
            if item.name in classes or item.name in findings:
                _fail(path, f"{kind}[{i}].name", f"a unique name, got {item.name!r} twice")
            target[item.name] = item
    if not any(c.kind == "sales_cagr_3y" for c in classes.values()):
        _fail(path, "sales_cagr_3y", "at least one reference class")
    stalls = {}
    for i, table in enumerate(raw.get("stall", [])):
        item = _stall(path, i, table, classes)
        stalls[item.name] = item
    return BaseRates(path, meta, classes, findings, stalls)
