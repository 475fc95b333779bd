"""One registry of names: the variables stforecast computes and the constants shared by its stages.

Standard library only, so the command line and ``query`` import it without numpy. Units are
templates filled from the company (``{currency}``: its reporting currency, money in millions;
``{price}``: the currency of its share price); labels are the analyst's words. Variables named
after a company's segments or units (``revenue_<segment>``, ``<segment>_<unit>``) are not listed
here: they come from the company definition (``stforecast.company``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Dimensions of one sample of the predictive distribution (posterior draw x future path).
SAMPLE_DIMS = ("chain", "draw", "path")
#: Dimensions of one posterior draw (a fit's chains and draws).
POSTERIOR_DIMS = SAMPLE_DIMS[:2]
#: The scenario whose statistics are the headline (every risk at its prior probability).
HEADLINE_SCENARIO = "risk-weighted"
#: How the EV/sales multiple is set: the report's judgement, or the peer regression.
VALUATION_METHODS = ("report", "peer-regression")
#: Outcomes the EV/sales multiple feeds (the sensitivity ranking leaves it out of the others).
VALUATION_OUTPUTS = ("target_price", "target_price_report", "target_price_peer",
                     "enterprise_value", "equity_value")
#: NUTS implementations ``run --sampler`` accepts.
SAMPLERS = ("nutpie", "pymc")
#: The quality bar every fit must meet (DESIGN.md): R-hat, bulk and tail ESS, divergences.
RHAT_MAX = 1.01
ESS_MIN = 400
DIVERGENCES_MAX = 0
DAYS_PER_YEAR = 365.0
#: Quantiles reported for every variable (summary.json, fan charts).
QUANTILES = {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}
#: Results files and their schema.
SUMMARY_FILE = "summary.json"
DRAWS_FILE = "forecast.nc"
SCHEMA_VERSION = 2
#: Files of a company folder.
COMPANY_FILE = "company.toml"
PRIORS_FILE = "priors.toml"
SCENARIOS_FILE = "scenarios.toml"


@dataclass(frozen=True)
class Variable:
    """A predictive variable: its units (template), label and roles.

    ``kind``: ``line`` (per year), ``scalar`` (per path) or ``driver`` (per year).
    ``stored``: kept in the draws file; ``summarised``: quantiles in summary.json;
    ``fan``: drawn as a fan chart; ``sensitivity``: an outcome of the tornado ranking.
    """

    name: str
    units: str
    label: str
    kind: str = "line"
    stored: bool = True
    summarised: bool = True
    fan: bool = False
    sensitivity: bool = False

    def unit_text(self, currency: str = "", price: str = "") -> str:
        return self.units.format(currency=currency, price=price)


def _v(*args, **kw) -> tuple[str, Variable]:
    v = Variable(*args, **kw)
    return v.name, v


VARIABLES: dict[str, Variable] = dict([
    _v("revenue", "{currency} mn", "revenue", fan=True, sensitivity=True),
    _v("gross_profit", "{currency} mn", "gross profit"),
    _v("gross_margin", "fraction of revenue", "gross margin", fan=True),
    _v("operating_income", "{currency} mn", "operating income"),
    _v("net_income", "{currency} mn", "net income"),
    _v("adjusted_net_income", "{currency} mn", "adjusted net income"),
    _v("operating_cash_flow", "{currency} mn", "operating cash flow"),
    _v("capex", "{currency} mn", "capex"),
    _v("free_cash_flow", "{currency} mn", "free cash flow", fan=True),
    _v("cash", "{currency} mn", "cash and equivalents", fan=True),
    _v("net_cash", "{currency} mn", "net cash"),
    _v("trade_receivable_days", "days of revenue, year-end balance", "trade receivable days"),
    _v("enterprise_value", "{currency} mn", "enterprise value", kind="scalar"),
    _v("equity_value", "{currency} mn", "equity value", kind="scalar"),
    _v("target_price", "{price} per share", "target price", kind="scalar",
       sensitivity=True),
    _v("cash_burn", "{currency} mn", "cash burn (-sum of free cash flow over the forecast years)",
       kind="scalar"),
    _v("sales_cagr", "fraction per year",
       "revenue CAGR from the last history year to the last forecast year, as expected at the "
       "valuation date", kind="scalar", summarised=False),
    _v("fcf_margin_valuation", "fraction of revenue", "FCF margin in the valuation year",
       kind="scalar", summarised=False),
    _v("peer_outside_range", "1 = outside",
       "a peer-regression predictor outside the peers' observed range", kind="scalar",
       summarised=False),
    _v("target_price_report", "{price} per share", "target price, report multiple",
       kind="scalar", summarised=False),
    _v("target_price_peer", "{price} per share", "target price, peer-regression multiple",
       kind="scalar", summarised=False),
    _v("ev_sales_multiple", "x (EV/sales, valuation year)", "EV/sales multiple", kind="scalar",
       summarised=False),
    _v("ev_sales_multiple_report", "x (EV/sales, valuation year)", "EV/sales multiple, report",
       kind="scalar", summarised=False),
    _v("ev_sales_multiple_peer", "x (EV/sales, valuation year)",
       "EV/sales multiple, peer regression", kind="scalar", summarised=False),
    _v("selling_marketing_ratio", "fraction of revenue", "S&M / revenue", kind="driver",
       summarised=False),
    _v("admin_ratio", "fraction of revenue", "admin / revenue", kind="driver", summarised=False),
    _v("rnd_ratio", "fraction of revenue", "R&D / revenue", kind="driver", summarised=False),
    _v("other_receivable_days", "days of revenue, year-end balance", "other receivable days",
       kind="driver", summarised=False),
    _v("inventory_days", "days of cost of sales, year-end balance", "inventory days",
       kind="driver", summarised=False),
    _v("trade_payable_days", "days of cost of sales, year-end balance", "trade payable days",
       kind="driver", summarised=False),
    _v("other_payable_days", "days of cost of sales, year-end balance", "other payable days",
       kind="driver", summarised=False),
    _v("capex_ratio", "fraction of revenue", "capex / revenue", kind="driver", summarised=False),
    _v("da_ratio", "fraction of revenue", "D&A / revenue", kind="driver", summarised=False),
    _v("change_in_working_capital", "{currency} mn", "change in working capital", kind="driver",
       summarised=False),
])

#: Line items with a ``year`` dimension that ``replicate`` and summary.json report, in order
#: (the company's ``revenue_<segment>`` lines follow ``revenue``).
REPORTED_LINES = tuple(n for n, v in VARIABLES.items() if v.kind == "line" and v.summarised)
#: Per-path scalars that summary.json reports.
REPORTED_SCALARS = tuple(n for n, v in VARIABLES.items() if v.kind == "scalar" and v.summarised)
#: Target price and multiple under each valuation method.
METHOD_VARIABLES = {"report": ("target_price_report", "ev_sales_multiple_report"),
                    "peer-regression": ("target_price_peer", "ev_sales_multiple_peer")}


def variable(name: str) -> Variable | None:
    """The registry entry of ``name``, or None for company-specific names."""
    return VARIABLES.get(name)
