"""The report's data: history FY18A-FY20A, facts, opening balances and the report case.

Loads ``data/sensetime_report.toml`` (shipped with the package) into labelled xarray objects.
Money is RMB mn, ratios are fractions, days are days (see the file's header for the day
conventions). Nothing here computes a forecast: the report case holds drivers only.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import xarray as xr

SEGMENTS = ("smart_business", "smart_city", "smart_life", "smart_auto")
DAYS_PER_YEAR = 365.0

#: Engine drivers that carry a ``year`` dimension (besides ``segment_revenue``).
YEARLY_DRIVERS = (
    "gross_margin", "selling_marketing_ratio", "admin_ratio", "rnd_ratio", "sbc_ratio",
    "impairment_rate", "other_income_ratio", "other_gains", "finance_income", "finance_expense",
    "share_of_losses", "fv_loss_preferred_shares", "fv_gains_financial_assets", "tax_credit_rate",
    "minorities", "trade_receivable_days", "other_receivable_days", "inventory_days",
    "trade_payable_days", "other_payable_days", "prepayments_ratio", "receivables_other_ratio",
    "payables_other_ratio", "contract_liabilities_ratio", "da_ratio", "capex_ratio",
    "equity_financing", "total_debt", "term_deposit_change",
)
OPENING_ITEMS = (
    "cash", "total_debt", "trade_receivables", "other_receivables", "prepayments",
    "receivables_other", "inventories", "trade_payables", "other_payables", "payables_other",
    "contract_liabilities",
)
DEFAULT_PATH = "sensetime_report.toml"
#: Data files shipped with the package (the report's figures, the peer table).
DATASETS = Path(__file__).parent / "datasets"


class DataFileError(ValueError):
    """A data file is malformed; the message is one line naming file, key and expectation."""


@dataclass(frozen=True)
class Market:
    """Market and valuation constants (HK$ where named, RMB mn otherwise)."""

    price_hkd: float
    target_price_hkd_published: float
    shares_outstanding_mn: float
    cny_per_hkd: float
    ev_sales_multiple: float
    valuation_year: str
    minority_interest: float


@dataclass(frozen=True)
class Report:
    """Everything the report says, as data.

    ``history``: dims ``year`` (FY18-FY20). ``report_case``: engine drivers, dims ``year``
    (FY21-FY23) and ``segment``. ``published``: the report's own forecast lines, for comparison.
    ``opening``: FY20 closing balances. ``sources``: ``"section.key" -> source text``.
    """

    history: xr.Dataset
    report_case: xr.Dataset
    published: xr.Dataset
    opening: dict[str, float]
    market: Market
    facts: dict[str, float]
    sources: dict[str, str]
    path: str

    @property
    def forecast_years(self) -> list[str]:
        """The report case's years, e.g. ``["FY21", "FY22", "FY23"]``."""
        return [str(y) for y in self.report_case["year"].values]


def _fail(path, key, expected):
    raise DataFileError(f"{path}: key '{key}': expected {expected}")


def _series_table(path, section: str, table: dict, sources: dict) -> xr.Dataset:
    years = table.get("years")
    if not (isinstance(years, list) and years and all(isinstance(y, str) for y in years)):
        _fail(path, f"{section}.years", "a list of year labels like \"FY21\"")
    data, attrs = {}, {}
    for key, entry in table.items():
        if key == "years":
            continue
        where = f"{section}.{key}"
        if not isinstance(entry, dict) or "source" not in entry:
            _fail(path, where, "a table with 'values' (or 'value') and 'source'")
        sources[where] = entry["source"]
        if "value" in entry:
            value = entry["value"]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                _fail(path, f"{where}.value", "a number")
            data[key] = xr.DataArray(float(value))
            continue
        values = entry.get("values")
        if not (isinstance(values, list) and len(values) == len(years)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            _fail(path, f"{where}.values", f"a list of {len(years)} numbers (one per year {years})")
        data[key] = xr.DataArray(np.asarray(values, dtype=float), dims="year",
                                 coords={"year": years})
        attrs[key] = entry["source"]
    ds = xr.Dataset(data)
    for key, source in attrs.items():
        ds[key].attrs["source"] = source
    return ds


def _scalar_table(path, section: str, table: dict, sources: dict) -> dict:
    out = {}
    for key, entry in table.items():
        if key == "year":
            continue
        where = f"{section}.{key}"
        if not isinstance(entry, dict) or "value" not in entry or "source" not in entry:
            _fail(path, where, "a table with 'value' and 'source'")
        sources[where] = entry["source"]
        out[key] = entry["value"]
    return out


def _segment_revenue(ds: xr.Dataset) -> xr.DataArray:
    stacked = xr.concat([ds[f"revenue_{s}"] for s in SEGMENTS], dim="segment")
    return stacked.assign_coords(segment=list(SEGMENTS))


def load_report(path: str | Path | None = None) -> Report:
    """Load and validate the report data file (default: the packaged SenseTime file)."""
    if path is None:
        path = DATASETS / DEFAULT_PATH
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read file ({exc.strerror})") from None
    return _parse_report(text, str(path))


@lru_cache(maxsize=4)
def _parse_report(text: str, path: str) -> Report:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataFileError(f"{path}: TOML syntax error: {exc}") from None
    for section in ("history", "report_case", "published", "opening", "market", "facts"):
        if not isinstance(raw.get(section), dict):
            _fail(path, section, "a table")
    sources: dict[str, str] = {}
    history = _series_table(path, "history", raw["history"], sources)
    case = _series_table(path, "report_case", raw["report_case"], sources)
    published = _series_table(path, "published", raw["published"], sources)
    for name in YEARLY_DRIVERS + tuple(f"revenue_{s}" for s in SEGMENTS):
        if name not in case:
            _fail(path, f"report_case.{name}", "a driver series (it is missing)")
    market_raw = _scalar_table(path, "market", raw["market"], sources)
    try:
        market = Market(**{k: market_raw[k] for k in Market.__dataclass_fields__})
    except KeyError as exc:
        _fail(path, f"market.{exc.args[0]}", "a value (it is missing)")
    if market.valuation_year not in case["year"].values:
        _fail(path, "market.valuation_year", f"one of {list(case['year'].values)}")
    opening = _scalar_table(path, "opening", raw["opening"], sources)
    for name in OPENING_ITEMS:
        if name not in opening:
            _fail(path, f"opening.{name}", "an FY20 closing balance (it is missing)")
    drivers = case[list(YEARLY_DRIVERS)].assign(
        segment_revenue=_segment_revenue(case),
        ev_sales_multiple=xr.DataArray(float(market.ev_sales_multiple)),
    )
    history = history.assign(segment_revenue=_segment_revenue(history))
    facts = _scalar_table(path, "facts", raw["facts"], sources)
    return Report(history=history, report_case=drivers, published=published,
                  opening={k: float(v) for k, v in opening.items()}, market=market,
                  facts={k: float(v) for k, v in facts.items()}, sources=sources, path=path)


def year_end_days(history: xr.Dataset) -> xr.Dataset:
    """Working-capital days on YEAR-END balances, recomputed from the published balances.

    The report quotes historical days on average balances and forecast days on year-end
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
