"""A company as data: its folder (``company.toml``, ``priors.toml``, ``scenarios.toml``, peers).

``load_company(name_or_dir)`` reads and validates ``company.toml`` into a typed ``Company``:
name, ticker, currencies, price and shares; history and forecast years (coordinates, never
names); the valuation year; the segments, each ``direct`` (revenue follows a growth process) or
``units`` (units x revenue per unit, e.g. customers x revenue per customer); partial-year facts
as observations; exposures named by scenario shocks; the history, the opening balances, the
report case (drivers only) and the published figures for replication. Every problem is one line
naming the file, the key and what was expected (``DataFileError``).

Money is in the company's currency (millions) unless a name says otherwise; ratios are fractions;
days are days (receivables on revenue, inventory and payables on cost of sales). Nothing here
computes a forecast.

A company is found by folder path, or by name among the shipped ones: the folders of
``$STFORECAST_COMPANIES`` (``os.pathsep``-separated) and then the project's ``priors/`` folder.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import DataFileError, show, show_path
from .registry import (COMPANY_FILE, DAYS_PER_YEAR, MAX_COMPANY_VALUE, MAX_NAME_CHARS,
                       PRIORS_FILE, SCENARIOS_FILE)
from .tomlfile import parse_toml, read_toml, text_or_none

#: Engine drivers of the report case that carry a ``year`` dimension (besides segment revenue).
YEARLY_DRIVERS = (
    "gross_margin", "selling_marketing_ratio", "admin_ratio", "rnd_ratio", "sbc_ratio",
    "impairment_rate", "other_income_ratio", "other_gains", "finance_income", "finance_expense",
    "share_of_losses", "fv_loss_preferred_shares", "fv_gains_financial_assets", "tax_credit_rate",
    "minorities", "trade_receivable_days", "other_receivable_days", "inventory_days",
    "trade_payable_days", "other_payable_days", "prepayments_ratio", "receivables_other_ratio",
    "payables_other_ratio", "contract_liabilities_ratio", "da_ratio", "capex_ratio",
    "equity_financing", "total_debt", "term_deposit_change",
)
#: Closing balances of the last history year: the engine's opening position.
OPENING_ITEMS = (
    "cash", "total_debt", "trade_receivables", "other_receivables", "prepayments",
    "receivables_other", "inventories", "trade_payables", "other_payables", "payables_other",
    "contract_liabilities",
)
#: History lines the model conditions on (besides ``revenue_<segment>``).
HISTORY_LINES = (
    "revenue", "cost_of_sales", "gross_profit", "selling_marketing_expense", "admin_expense",
    "rnd_expense", "capex", "depreciation_amortisation", "trade_receivables",
    "other_receivables", "inventories", "trade_payables", "other_payables",
)
SEGMENT_KINDS = ("direct", "units")
OBSERVATION_QUANTITIES = {"units": "log", "revenue_share": "logit"}
SECTIONS = ("company", "years", "market", "segments", "observations", "exposures", "history",
            "opening", "report_case", "published", "facts", "cost_base")
#: ``[cost_base]``: the last history year's costs excluding share-based compensation and the
#: R&D staff count, the anchors of the currency cost model (``stforecast.costs``).
COST_BASE_ITEMS = ("rnd_expense", "selling_marketing_expense", "admin_expense", "rnd_staff")


@dataclass(frozen=True)
class Segment:
    """One revenue segment. ``kind``: ``direct`` or ``units`` (units x revenue per unit)."""

    name: str
    label: str
    kind: str
    unit: str | None = None
    unit_label: str = ""
    per_unit: str | None = None
    per_unit_label: str = ""
    units_last: float | None = None       # unit count in the last history year
    report_units_final: float | None = None     # the report's count in the last forecast year
    report_per_unit_final: float | None = None  # the report's revenue per unit, last year

    @property
    def revenue(self) -> str:
        """The segment's revenue line, ``revenue_<segment>``."""
        return f"revenue_{self.name}"

    @property
    def unit_driver(self) -> str | None:
        return f"{self.name}_{self.unit}" if self.kind == "units" else None

    @property
    def per_unit_driver(self) -> str | None:
        return f"{self.name}_{self.per_unit}" if self.kind == "units" else None

    @property
    def growth_drivers(self) -> tuple[str, ...]:
        """The log-growth processes whose sum is the segment's revenue growth."""
        if self.kind == "units":
            return (self.unit_driver, self.per_unit_driver)
        return (f"{self.name}_revenue",)

    def driver_labels(self, currency: str) -> dict[str, str]:
        if self.kind == "units":
            return {self.unit_driver: self.unit_label or f"{self.label} {self.unit} (count)",
                    self.per_unit_driver: self.per_unit_label
                    or f"{self.label} {self.per_unit.replace('_', ' ')} ({currency} mn)"}
        return {f"{self.name}_revenue": f"{self.label} revenue ({currency} mn)"}


@dataclass(frozen=True)
class Observation:
    """A partial-year fact about the first forecast year, on the model's latent growth.

    ``quantity``: ``units`` (the segment's unit count at ``fraction`` of the year; log scale)
    or ``revenue_share`` (the segment's share of the year's revenue; logit scale). ``sd``: the
    observation noise on that scale.
    """

    name: str
    quantity: str
    segment: str
    year: str
    value: float
    sd: float
    transform: str
    fraction: float = 1.0
    source: str = ""


@dataclass(frozen=True)
class Market:
    """Market and valuation constants. ``price`` and ``target_price_published`` in the price
    currency per share; ``fx``: reporting currency per unit of the price currency."""

    price: float
    target_price_published: float
    shares_outstanding_mn: float
    fx: float
    ev_sales_multiple: float
    valuation_year: str
    minority_interest: float
    #: The year whose end the share count describes: share-based compensation of later years
    #: is paid in new shares (dilution). ``None``: every forecast year's.
    shares_year: str | None = None


@dataclass(frozen=True)
class Company:
    """Everything stforecast knows about one company, as data.

    ``history``: dims ``year`` (history years). ``report_case``: engine drivers, dims ``year``
    (forecast years) and ``segment``. ``published``: the report's own forecast lines.
    ``opening``: closing balances of the last history year. ``sources``: ``"section.key" ->
    source text``. ``files``: the folder's input files, name -> (path, text).
    """

    key: str
    name: str
    ticker: str
    report_title: str
    currency: str
    price_currency: str
    folder: Path
    history_years: tuple[str, ...]
    forecast_years: tuple[str, ...]
    segments: tuple[Segment, ...]
    observations: tuple[Observation, ...]
    exposures: dict[str, float]
    market: Market
    history: xr.Dataset
    report_case: xr.Dataset
    published: xr.Dataset
    opening: dict[str, float]
    facts: dict[str, float]
    sources: dict[str, str]
    peers_path: Path | None
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: ``[cost_base]`` (currency mn; ``rnd_staff`` a count), or None when the file has none.
    cost_base: dict[str, float] | None = None

    # --- names --------------------------------------------------------------------------------
    @property
    def segment_names(self) -> list[str]:
        return [s.name for s in self.segments]

    @property
    def last_history_year(self) -> str:
        return self.history_years[-1]

    @property
    def first_forecast_year(self) -> str:
        return self.forecast_years[0]

    @property
    def last_forecast_year(self) -> str:
        return self.forecast_years[-1]

    def segment(self, name: str) -> Segment:
        for s in self.segments:
            if s.name == name:
                return s
        raise KeyError(name)

    def growth_drivers(self) -> dict[str, str]:
        """Every log-growth process, name -> label (units segments' two, then direct ones')."""
        out = {}
        for s in self.segments:
            out.update(s.driver_labels(self.currency))
        return out

    def unit_drivers(self) -> list[str]:
        """The units segments' unit and per-unit drivers (kept in the draws, in analyst terms)."""
        return [d for s in self.segments if s.kind == "units" for d in s.growth_drivers]

    def reported_lines(self, lines: tuple[str, ...]) -> tuple[str, ...]:
        """``lines`` with the segment revenue lines inserted after ``revenue``."""
        out = []
        for line in lines:
            out.append(line)
            if line == "revenue":
                out.extend(s.revenue for s in self.segments)
        return tuple(out)

    def last_history_revenue(self) -> float:
        return float(self.history["revenue"].sel(year=self.last_history_year))

    def published_final(self, name: str) -> float | None:
        """The report's published value of ``name`` in the last forecast year, if any."""
        if name in self.published and "year" in self.published[name].dims:
            return float(self.published[name].sel(year=self.last_forecast_year))
        return None

    @property
    def units(self) -> dict[str, str]:
        """Unit templates of the registry, filled for this company."""
        return {"currency": self.currency, "price": self.price_currency}

    def file_hashes(self) -> dict[str, str]:
        return {k: hashlib.sha256(text.encode()).hexdigest() for k, (_, text) in self.files.items()}

    @property
    def priors_path(self) -> Path:
        return self.folder / PRIORS_FILE

    @property
    def scenarios_path(self) -> Path:
        return self.folder / SCENARIOS_FILE


# --- finding companies ----------------------------------------------------------------------------
def company_roots() -> list[Path]:
    """Folders that hold shipped company folders (``$STFORECAST_COMPANIES``, then ``priors/``)."""
    roots = [Path(p) for p in os.environ.get("STFORECAST_COMPANIES", "").split(os.pathsep) if p]
    project = Path(__file__).resolve().parents[2] / "priors"
    roots.append(project if project.is_dir() else Path("priors"))
    return roots


def list_companies() -> dict[str, Path]:
    """Shipped companies, name -> folder (every folder holding a ``company.toml``)."""
    out: dict[str, Path] = {}
    for root in company_roots():
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if (folder / COMPANY_FILE).is_file():
                    out.setdefault(folder.name, folder)
    return out


def default_company() -> str:
    """The shipped company whose ``company.toml`` says ``default = true`` (else the first)."""
    shipped = list_companies()
    for name, folder in shipped.items():
        text = text_or_none(folder / COMPANY_FILE)
        try:
            info = parse_toml(text, folder / COMPANY_FILE, ValueError).get("company", {})
        except (TypeError, ValueError):
            continue
        if isinstance(info, dict) and info.get("default") is True:
            return name
    if not shipped:
        raise DataFileError(f"{company_roots()[-1]}: company: expected a folder of companies "
                            f"(none found; set STFORECAST_COMPANIES)")
    return next(iter(shipped))


def resolve_company(name_or_dir: str | Path | None = None) -> Path:
    """The folder of a company given by name or by path (default: ``default_company()``)."""
    target = str(name_or_dir) if name_or_dir is not None else default_company()
    path = Path(target)
    try:
        if (path / COMPANY_FILE).is_file():
            return path
        if path.is_file() and path.name == COMPANY_FILE:
            return path.parent
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        pass
    shipped = list_companies()
    if target in shipped:
        return shipped[target]
    known = ", ".join(shipped) or "none"
    raise DataFileError(f"{show_path(target)}: company: expected a shipped company ({known}) "
                        f"or a folder holding {COMPANY_FILE}")


def load_company(name_or_dir: str | Path | None = None) -> Company:
    """Read and validate a company folder; ``DataFileError`` (one line) on any problem."""
    folder = resolve_company(name_or_dir)
    path = folder / COMPANY_FILE
    _, blob = read_toml(path, DataFileError)
    files = {}
    for label, name in (("priors", PRIORS_FILE), ("scenarios", SCENARIOS_FILE)):
        text = text_or_none(folder / name)  # never blocks on a pipe; checked where it is used
        if text is not None:
            files[label] = (str(folder / name), text)
    company = _parse_company(blob.decode("utf-8"), str(path), str(folder.resolve()))
    peers = company.peers_path
    if peers is not None:
        text = text_or_none(peers)
        if text is not None:
            files["peers"] = (str(peers), text)
    files = {"company": (str(path), blob.decode("utf-8")), **files}
    return _with_files(company, files)


def company_from_text(text: str, path: str | Path, folder: str | Path,
                      files: dict | None = None) -> Company:
    """A company from the text of its ``company.toml`` (e.g. as a results file stores it);
    ``path`` names it in error messages, ``folder`` is where it came from (its key is the
    folder's name); ``files``: name -> (path, text) of its input files."""
    return _with_files(_parse_company(text, str(path), str(folder)), dict(files or {}))


def _with_files(company: Company, files: dict) -> Company:
    from dataclasses import replace
    return replace(company, files=files)


# --- parsing ----------------------------------------------------------------------------------------
def _fail(path, key, expected):
    raise DataFileError(f"{path}: key '{key}': expected {expected}")


def _is_number(x) -> bool:
    """A finite number of magnitude at most ``MAX_COMPANY_VALUE`` (not a bool)."""
    return (isinstance(x, (int, float)) and not isinstance(x, bool)
            and abs(x) <= MAX_COMPANY_VALUE and math.isfinite(x))


_NUMBER = f"a finite number of magnitude at most {MAX_COMPANY_VALUE:g}"


def _years(path, key, value) -> tuple[str, ...]:
    if not (isinstance(value, list) and value and all(isinstance(y, str) and y for y in value)
            and len(set(value)) == len(value)):
        _fail(path, key, "a list of distinct year labels (non-empty strings)")
    return tuple(value)


def _series_table(path, section: str, table: dict, sources: dict, years: tuple) -> xr.Dataset:
    given = _years(path, f"{section}.years", table.get("years"))
    if given != tuple(years):
        _fail(path, f"{section}.years", f"the years {list(years)}")
    data, attrs = {}, {}
    for key, entry in table.items():
        if key == "years":
            continue
        where = f"{section}.{key}"
        if not isinstance(entry, dict) or "source" not in entry:
            _fail(path, where, "a table with 'values' (or 'value') and 'source'")
        sources[where] = entry["source"]
        if "value" in entry:
            if not _is_number(entry["value"]):
                _fail(path, f"{where}.value", f"{_NUMBER}, got {show(entry['value'])}")
            data[key] = ((), float(entry["value"]))
            continue
        values = entry.get("values")
        if not (isinstance(values, list) and len(values) == len(years)
                and all(_is_number(v) for v in values)):
            _fail(path, f"{where}.values", f"a list of {len(years)} finite numbers (one per year "
                                           f"{list(years)}, each of magnitude at most "
                                           f"{MAX_COMPANY_VALUE:g}), got {show(values)}")
        data[key] = ("year", np.asarray(values, dtype=float), {"source": entry["source"]})
    # one coordinate for every series (a DataArray per series would each bring its own year
    # index, which the Dataset then aligns: ~10x slower for a company file's hundred series)
    return xr.Dataset(data, coords={"year": list(years)} if any(
        len(v) == 3 for v in data.values()) else None)


def _scalar_table(path, section: str, table: dict, sources: dict, numbers: bool = True) -> dict:
    out = {}
    for key, entry in table.items():
        if key == "year":
            continue
        where = f"{section}.{key}"
        if not isinstance(entry, dict) or "value" not in entry or "source" not in entry:
            _fail(path, where, "a table with 'value' and 'source'")
        if numbers and not _is_number(entry["value"]):
            _fail(path, f"{where}.value", f"{_NUMBER}, got {show(entry['value'])}")
        sources[where] = entry["source"]
        out[key] = entry["value"]
    return out


def _text(path, key, table, name, default=None, required=True) -> str:
    value = table.get(name, default)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        _fail(path, f"{key}.{name}", "a non-empty string")
    return value


def _segments(path, raw: dict, sources: dict) -> tuple[Segment, ...]:
    table = raw.get("segments")
    if not isinstance(table, dict) or not table:
        _fail(path, "segments", "one table [segments.<name>] per revenue segment")
    out = []
    for name, entry in table.items():
        key = f"segments.{name}"
        if not name.isidentifier() or name != name.lower() or len(name) > MAX_NAME_CHARS:
            _fail(path, key, f"a segment name in lower_snake_case of at most {MAX_NAME_CHARS} "
                             "characters")
        if not isinstance(entry, dict):
            _fail(path, key, "a table")
        kind = entry.get("kind")
        if kind not in SEGMENT_KINDS:
            _fail(path, f"{key}.kind", f"one of {', '.join(map(repr, SEGMENT_KINDS))}, got {kind!r}")
        allowed = {"label", "kind"} | ({"unit", "unit_label", "per_unit", "per_unit_label",
                                        "units_last", "report_units_final",
                                        "report_per_unit_final"} if kind == "units" else set())
        extra = sorted(set(entry) - allowed)
        if extra:
            _fail(path, f"{key}.{extra[0]}", f"only {', '.join(sorted(allowed))} for a {kind} "
                                              "segment")
        label = _text(path, key, entry, "label", default=name.replace("_", " ").title())
        if kind == "direct":
            out.append(Segment(name, label, kind))
            continue
        unit, per_unit = (_text(path, key, entry, k) for k in ("unit", "per_unit"))
        for k, v in (("unit", unit), ("per_unit", per_unit)):
            if not v.isidentifier() or v != v.lower():
                _fail(path, f"{key}.{k}", "a name in lower_snake_case (e.g. \"customers\")")
        if unit == per_unit:
            _fail(path, f"{key}.per_unit", "a name different from 'unit'")
        numbers = {}
        for k in ("units_last", "report_units_final", "report_per_unit_final"):
            if k not in entry:
                if k == "units_last":
                    _fail(path, f"{key}.units_last", "the unit count in the last history year, "
                                                     "{ value = ..., source = \"...\" }")
                numbers[k] = None
                continue
            v = entry[k]
            if not (isinstance(v, dict) and _is_number(v.get("value")) and v["value"] > 0
                    and isinstance(v.get("source"), str)):
                _fail(path, f"{key}.{k}", "{ value = <number > 0>, source = \"...\" }")
            sources[f"{key}.{k}"] = v["source"]
            numbers[k] = float(v["value"])
        out.append(Segment(name, label, kind, unit, _text(path, key, entry, "unit_label", ""),
                           per_unit, _text(path, key, entry, "per_unit_label", ""), **numbers))
    drivers = [d for s in out for d in s.growth_drivers]
    if len(set(drivers)) != len(drivers):
        _fail(path, "segments", "distinct driver names (<segment>_<unit>, <segment>_revenue)")
    return tuple(out)


def _observations(path, raw, segments, forecast_years, sources) -> tuple[Observation, ...]:
    rows = raw.get("observations", [])
    if not isinstance(rows, list):
        _fail(path, "observations", "an array of [[observations]] tables")
    names = {s.name: s for s in segments}
    out = []
    for i, row in enumerate(rows):
        key = f"observations[{i}]"
        if not isinstance(row, dict):
            _fail(path, key, "a table")
        allowed = {"name", "quantity", "segment", "year", "fraction", "transform", "value", "sd",
                   "source", "sd_source"}
        extra = sorted(set(row) - allowed)
        if extra:
            _fail(path, f"{key}.{extra[0]}", f"only {', '.join(sorted(allowed))}")
        name = _text(path, key, row, "name")
        if not name.isidentifier():
            _fail(path, f"{key}.name", "an identifier (letters, digits, _)")
        quantity = row.get("quantity")
        if not isinstance(quantity, str) or quantity not in OBSERVATION_QUANTITIES:
            _fail(path, f"{key}.quantity", f"one of {', '.join(map(repr, OBSERVATION_QUANTITIES))}"
                                           f", got {show(quantity)}")
        segment = row.get("segment")
        if not isinstance(segment, str) or segment not in names:
            _fail(path, f"{key}.segment", f"one of the segments {list(names)}, got {show(segment)}")
        if quantity == "units" and names[segment].kind != "units":
            _fail(path, f"{key}.segment", "a 'units' segment for quantity = \"units\"")
        year = row.get("year")
        if year != forecast_years[0]:
            _fail(path, f"{key}.year", f"the first forecast year {forecast_years[0]!r} (facts "
                                       f"observe the first year's latent growth), got {year!r}")
        transform = row.get("transform", OBSERVATION_QUANTITIES[quantity])
        if transform != OBSERVATION_QUANTITIES[quantity]:
            _fail(path, f"{key}.transform", f"{OBSERVATION_QUANTITIES[quantity]!r} for a "
                                            f"{quantity} observation, got {transform!r}")
        value, sd = row.get("value"), row.get("sd")
        lo, hi = (0.0, np.inf) if quantity == "units" else (0.0, 1.0)
        if not (_is_number(value) and lo < value < hi):
            _fail(path, f"{key}.value", f"a number in ({lo:g}, {hi:g}), got {value!r}")
        if not (_is_number(sd) and 1e-6 <= sd <= 10):
            _fail(path, f"{key}.sd", f"a noise sd on the {transform} scale in [1e-6, 10], got {sd!r}")
        fraction = row.get("fraction", 1.0)
        if not (_is_number(fraction) and 0 < fraction <= 1):
            _fail(path, f"{key}.fraction", f"a fraction of the year in (0, 1], got {fraction!r}")
        source = _text(path, key, row, "source")
        sources[f"observations.{name}"] = source
        out.append(Observation(name, quantity, segment, year, float(value), float(sd), transform,
                               float(fraction), source))
    if len({o.name for o in out}) != len(out):
        _fail(path, "observations", "distinct observation names")
    return tuple(out)


@lru_cache(maxsize=8)
def _parse_company(text: str, path: str, folder: str) -> Company:
    raw = parse_toml(text, path, DataFileError)
    for name in raw:
        if name not in SECTIONS:
            _fail(path, name, f"a known section: one of {', '.join(SECTIONS)}")
    for section in ("company", "years", "market", "segments", "history", "opening",
                    "report_case", "published"):
        if not isinstance(raw.get(section), dict):
            _fail(path, section, "a table")
    info = raw["company"]
    extra = sorted(set(info) - {"name", "ticker", "report", "currency", "price_currency", "peers",
                                "default"})
    if extra:
        _fail(path, f"company.{extra[0]}", "only name, ticker, report, currency, price_currency, "
                                           "peers, default")
    sources: dict[str, str] = {}
    history_years = _years(path, "years.history", raw["years"].get("history"))
    forecast_years = _years(path, "years.forecast", raw["years"].get("forecast"))
    if set(history_years) & set(forecast_years):
        _fail(path, "years.forecast", "years that are not also history years")
    segments = _segments(path, raw, sources)
    history = _series_table(path, "history", raw["history"], sources, history_years)
    case = _series_table(path, "report_case", raw["report_case"], sources, forecast_years)
    published = _series_table(path, "published", raw["published"], sources, forecast_years)
    for name in HISTORY_LINES + tuple(s.revenue for s in segments):
        if name not in history or "year" not in history[name].dims:
            _fail(path, f"history.{name}", "a history series (it is missing)")
        _check_positive(path, history, name)
    over = (history["gross_profit"] >= history["revenue"]).values
    if bool(over.any()):
        year = str(history["year"].values[int(np.argmax(over))])
        _fail(path, "history.gross_profit.values", f"gross profit below revenue in every year (the "
                                                   f"model works on the margin's logit), not in "
                                                   f"{year}")
    for name in YEARLY_DRIVERS + tuple(s.revenue for s in segments):
        if name not in case:
            _fail(path, f"report_case.{name}", "a driver series (it is missing)")
    market_raw = _scalar_table(path, "market", raw["market"], sources, numbers=False)
    fields = Market.__dataclass_fields__
    optional = {"shares_year"}
    for k in fields:
        if k in optional:
            continue
        if k not in market_raw:
            _fail(path, f"market.{k}", "a { value = ..., source = \"...\" } (it is missing)")
        if k != "valuation_year" and not _is_number(market_raw[k]):
            _fail(path, f"market.{k}.value", f"{_NUMBER}, got {show(market_raw[k])}")
    extra = sorted(set(market_raw) - set(fields))
    if extra:
        _fail(path, f"market.{extra[0]}", f"only {', '.join(fields)}")
    for k in ("price", "shares_outstanding_mn", "fx", "ev_sales_multiple"):
        if not market_raw[k] > 0:
            _fail(path, f"market.{k}.value", "a number > 0")
    market = Market(**{k: (market_raw[k] if k in ("valuation_year", "shares_year")
                           else float(market_raw[k])) for k in fields if k in market_raw})
    if market.valuation_year not in forecast_years:
        _fail(path, "market.valuation_year", f"one of the forecast years {list(forecast_years)}")
    if market.shares_year is not None and market.shares_year not in (
            history_years[-1],) + forecast_years:
        _fail(path, "market.shares_year", f"the last history year or a forecast year "
                                          f"{[history_years[-1], *forecast_years]}")
    cost_base = None
    if "cost_base" in raw:
        if not isinstance(raw["cost_base"], dict):
            _fail(path, "cost_base", "a table")
        if raw["cost_base"].get("year", history_years[-1]) != history_years[-1]:
            _fail(path, "cost_base.year", f"the last history year {history_years[-1]!r}")
        cost_base = _scalar_table(path, "cost_base", raw["cost_base"], sources)
        for k in COST_BASE_ITEMS:
            if k not in cost_base:
                _fail(path, f"cost_base.{k}", "a { value = ..., source = \"...\" } (it is missing)")
            if not cost_base[k] > 0:
                _fail(path, f"cost_base.{k}.value", "a number > 0")
        extra = sorted(set(cost_base) - set(COST_BASE_ITEMS))
        if extra:
            _fail(path, f"cost_base.{extra[0]}", f"only {', '.join(COST_BASE_ITEMS)} (and year)")
        cost_base = {k: float(v) for k, v in cost_base.items()}
    if raw["opening"].get("year", history_years[-1]) != history_years[-1]:
        _fail(path, "opening.year", f"the last history year {history_years[-1]!r}")
    opening = _scalar_table(path, "opening", raw["opening"], sources)
    for name in OPENING_ITEMS:
        if name not in opening:
            _fail(path, f"opening.{name}", "a closing balance of the last history year (missing)")
    observations = _observations(path, raw, segments, forecast_years, sources)
    if not isinstance(raw.get("exposures", {}), dict):
        _fail(path, "exposures", "a table")
    exposures = _scalar_table(path, "exposures", raw.get("exposures", {}), sources)
    for name, share in exposures.items():
        if name.endswith("_share") and not 0 <= share <= 1:
            _fail(path, f"exposures.{name}.value", f"a share of revenue in [0, 1], got {share:g}")
    facts = _scalar_table(path, "facts", raw.get("facts", {}), sources)
    seg_names = [s.name for s in segments]
    drivers = case[list(YEARLY_DRIVERS)].assign(
        segment_revenue=_segment_revenue(case, seg_names),
        ev_sales_multiple=xr.DataArray(market.ev_sales_multiple),
    )
    history = history.assign(segment_revenue=_segment_revenue(history, seg_names))
    peers = info.get("peers")
    if peers is not None and not isinstance(peers, str):
        _fail(path, "company.peers", "a file name relative to the company folder")
    currency = _text(path, "company", info, "currency")
    return Company(
        key=Path(folder).name, name=_text(path, "company", info, "name"),
        ticker=_text(path, "company", info, "ticker"),
        report_title=_text(path, "company", info, "report", default=""), currency=currency,
        price_currency=_text(path, "company", info, "price_currency", default=currency),
        folder=Path(folder), history_years=history_years, forecast_years=forecast_years,
        segments=segments, observations=observations,
        exposures={k: float(v) for k, v in exposures.items()}, market=market, history=history,
        report_case=drivers, published=published,
        opening={k: float(v) for k, v in opening.items()},
        facts={k: float(v) for k, v in facts.items() if _is_number(v)}, sources=sources,
        peers_path=Path(folder) / peers if peers else None, cost_base=cost_base)


def _check_positive(path, history: xr.Dataset, name: str) -> None:
    """Every year's ``history.<name>`` is > 0: the model takes the log of revenue growth and of
    each ratio built on these lines (costs, balances over revenue or cost of sales)."""
    values = history[name].values
    bad = np.flatnonzero(~(values > 0))
    if bad.size:
        year = str(history["year"].values[bad[0]])
        _fail(path, f"history.{name}.values", f"numbers > 0 (the model works on their "
                                              f"logarithm), got {values[bad[0]]:g} in {year}")


def _segment_revenue(ds: xr.Dataset, segments: list[str]) -> xr.DataArray:
    stacked = xr.concat([ds[f"revenue_{s}"] for s in segments], dim="segment")
    return stacked.assign_coords(segment=segments)


# --- history in the model's terms -----------------------------------------------------------------
def year_end_days(history: xr.Dataset) -> xr.Dataset:
    """Working-capital days on YEAR-END balances, recomputed from the published balances.

    Reports may quote historical days on average balances and forecast days on year-end
    balances; the model uses this one (year-end) basis for both. Receivables on revenue,
    inventory and payables on cost of sales; days = balance / flow x 365.
    """
    rev, cogs = history["revenue"], history["cost_of_sales"]
    return xr.Dataset({
        "trade_receivable_days": history["trade_receivables"] / rev * DAYS_PER_YEAR,
        "other_receivable_days": history["other_receivables"] / rev * DAYS_PER_YEAR,
        "inventory_days": history["inventories"] / cogs * DAYS_PER_YEAR,
        "trade_payable_days": history["trade_payables"] / cogs * DAYS_PER_YEAR,
        "other_payable_days": history["other_payables"] / cogs * DAYS_PER_YEAR,
    })


def historical_ratios(history: xr.Dataset) -> xr.Dataset:
    """The history's driver ratios (fractions of revenue; gross margin on revenue)."""
    rev = history["revenue"]
    ratios = xr.Dataset({
        "gross_margin": history["gross_profit"] / rev,
        "selling_marketing_ratio": history["selling_marketing_expense"] / rev,
        "admin_ratio": history["admin_expense"] / rev,
        "rnd_ratio": history["rnd_expense"] / rev,
        "capex_ratio": history["capex"] / rev,
        "da_ratio": history["depreciation_amortisation"] / rev,
    })
    return ratios.merge(year_end_days(history))
