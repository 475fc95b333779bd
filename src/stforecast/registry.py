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
REPORT_FILE = "report.html"
SCHEMA_VERSION = 4
#: Schema versions ``load_results`` still reads: 3 only added keys to 2 (``upside``, each
#: scenario's ``funding``) and changed what ``p_upside`` measures (see ``upside``); 4 changed
#: forecast.nc alone: its ``posterior_predictive`` keeps the headline scenario (the others are
#: recomputed from the posterior, stored at full precision), where 2 and 3 keep every scenario.
READABLE_SCHEMAS = (2, 3, 4)
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
    _v("liquidity", "{currency} mn",
       "liquidity (cash, term deposits and other liquid investments)"),
    _v("opex_ratio", "fraction of revenue", "operating expenses / revenue"),
    _v("funding_raised", "{currency} mn", "money raised (equity and debt) in the year"),
    _v("shares_outstanding", "count", "shares outstanding at year end (mn)"),
    _v("trade_receivable_days", "days of revenue, year-end balance", "trade receivable days"),
    _v("enterprise_value", "{currency} mn", "enterprise value", kind="scalar"),
    _v("equity_value", "{currency} mn", "equity value", kind="scalar"),
    _v("target_price", "{price} per share", "target price", kind="scalar",
       sensitivity=True),
    _v("cash_burn", "{currency} mn", "cash burn (-sum of free cash flow over the forecast years)",
       kind="scalar"),
    _v("value_today", "{price} per share",
       "value per diluted share today (the target price discounted at the cost of equity)",
       kind="scalar"),
    _v("dilution", "fraction",
       "dilution: new shares to the last forecast year over today's shares", kind="scalar"),
    _v("discount_factor", "fraction", "discount factor over the horizon", kind="scalar"),
    _v("cost_of_equity", "fraction per year", "cost of equity", kind="scalar",
       summarised=False),
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
    # the opex ratios carry only shocks' add-ons on the currency cost model (stforecast.costs):
    # not among a run's outputs, so not stored (a sweep's draws store asks for what is stored)
    _v("selling_marketing_ratio", "fraction of revenue", "S&M / revenue (shock add-on)",
       kind="driver", summarised=False, stored=False),
    _v("admin_ratio", "fraction of revenue", "admin / revenue (shock add-on)", kind="driver",
       summarised=False, stored=False),
    _v("rnd_ratio", "fraction of revenue", "R&D / revenue (shock add-on)", kind="driver",
       summarised=False, stored=False),
    _v("other_receivable_days", "days of revenue, year-end balance", "other receivable days",
       kind="driver", summarised=False),
    _v("inventory_days", "days of cost of sales, year-end balance", "inventory days",
       kind="driver", summarised=False),
    _v("trade_payable_days", "days of cost of sales, year-end balance", "trade payable days",
       kind="driver", summarised=False),
    _v("other_payable_days", "days of cost of sales, year-end balance", "other payable days",
       kind="driver", summarised=False),
    _v("capex_ratio", "fraction of revenue", "capex / revenue (shock add-on)", kind="driver",
       summarised=False, stored=False),
    _v("da_ratio", "fraction of revenue", "D&A / revenue", kind="driver", summarised=False),
    _v("change_in_working_capital", "{currency} mn", "change in working capital", kind="driver",
       summarised=False),
    _v("rnd_headcount", "count", "R&D headcount", kind="driver", summarised=False),
    _v("capex_overrun", "x", "capex / the build-out plan", kind="driver", summarised=False),
    _v("selling_marketing_elasticity", "fraction", "S&M elasticity to revenue", kind="driver",
       summarised=False),
    _v("cost_inflation", "fraction per year", "cost inflation", kind="driver",
       summarised=False),
    _v("management_cut", "fraction", "cost cut starts this year (1 = yes)", kind="driver",
       summarised=False),
    _v("equity_raised", "{currency} mn", "equity raised in the year", kind="driver",
       summarised=False),
    _v("debt_raised", "{currency} mn", "debt raised in the year", kind="driver",
       summarised=False),
])

#: Line items with a ``year`` dimension that ``replicate`` and summary.json report, in order
#: (the company's ``revenue_<segment>`` lines follow ``revenue``).
REPORTED_LINES = tuple(n for n, v in VARIABLES.items() if v.kind == "line" and v.summarised)
#: Per-path scalars that summary.json reports.
REPORTED_SCALARS = tuple(n for n, v in VARIABLES.items() if v.kind == "scalar" and v.summarised)
#: Lines of the forecast's (correct) conventions only: ``replicate`` leaves them out of its
#: replication table (the report publishes no such line) and shows them in the conventions
#: table.
FORECAST_ONLY_LINES = ("liquidity", "opex_ratio", "funding_raised", "shares_outstanding")
#: The report's convention against the correct one, on the report's own case (``replicate``
#: and the report): the lines, the valuation-year or per-path values compared.
CONVENTION_LINES = ("operating_cash_flow", "free_cash_flow", "cash", "liquidity", "net_cash")
CONVENTION_VALUES = ("target_price", "value_today")
#: Target price and multiple under each valuation method.
METHOD_VARIABLES = {"report": ("target_price_report", "ev_sales_multiple_report"),
                    "peer-regression": ("target_price_peer", "ev_sales_multiple_peer")}


def variable(name: str) -> Variable | None:
    """The registry entry of ``name``, or None for company-specific names."""
    return VARIABLES.get(name)


# --- validation limits (stforecast.errors, tomlfile, priors, scenarios, preflight) ---------------
#: Longest message a user-facing error prints, longest echoed value, longest unbroken word.
MAX_MESSAGE_CHARS = 1200
MAX_ECHO_CHARS = 60
MAX_WORD_CHARS = 100
#: ... except a file path (a word with a '/'), which an error must name whole.
MAX_PATH_CHARS = 600
#: Input files (TOML: company, priors, scenarios, peers, actuals, sweeps) larger than this are
#: refused before they are read; so are pipes, devices and folders.
MAX_INPUT_BYTES = 1_000_000
#: Integers in input files: at most this many digits (larger ones are typos or attacks; a float
#: carries 15-17 significant digits anyway).
MAX_INT_DIGITS = 15
#: Variables whose realised values (actuals) must be > 0; ``<name>_<suffix>`` too (a segment's
#: revenue, a target price in a named currency).
POSITIVE_VARIABLES = ("revenue", "target_price", "ev_sales_multiple", "enterprise_value")
#: Largest magnitude of a number in a company file (money is in millions).
MAX_COMPANY_VALUE = 1e12
#: Nesting depth of arrays and tables in an input file.
MAX_NESTING = 32
#: Names of shocks (they become variables ``shock_<name>``: a letter, then letters, digits or
#: underscores) and of scenarios (hyphens too), at most ``MAX_NAME_CHARS`` long; both unique
#: regardless of case.
SHOCK_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]*"
SCENARIO_NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_-]*"
MAX_NAME_CHARS = 48
#: How many shocks and scenarios a scenarios file may declare (each scenario is a full
#: simulation of every path: memory and time grow with the count).
MAX_SHOCKS = 40
MAX_SCENARIOS = 40

#: Plausible values per kind of prior, on the variable's own scale: the prior's central
#: ``PLAUSIBLE_MASS`` interval must lie inside [low, high]. These are generous (no real company's
#: driver comes near the edges); they exist so that a typo (sd = 1e6, a multiple of 1e9,
#: mu = 1e300) is refused with the allowed range instead of crashing the sampler.
#: kind -> (low, high, units).
PLAUSIBLE_MASS = 0.98
PLAUSIBLE_RANGES: dict[str, tuple[float, float, str]] = {
    "growth_long_run": (-2.0, 2.0, "log growth per year"),
    "growth_pooling": (-2.0, 2.0, "log growth per year"),
    "persistence": (0.0, 0.999, "AR(1) persistence"),
    "volatility": (1e-4, 5.0, "innovation sd on the driver's log or logit scale"),
    "ratio_long_run": (1e-5, 10.0, "fraction of revenue"),
    "days_long_run": (0.01, 3650.0, "days"),
    "margin_long_run": (1e-4, 0.9999, "fraction of revenue"),
    "ev_sales_multiple": (0.01, 500.0, "x EV/sales"),
    "peer_premium": (-5.0, 5.0, "log premium to the peer regression"),
    "shock_probability": (0.0, 1.0, "annual probability"),
    "shock_severity": (0.0, 100.0, "intensity (1 = a typical occurrence)"),
}
#: Largest and smallest parameter of any prior (a scale below MIN is a constant in disguise).
MAX_PRIOR_PARAMETER = 1e6
MIN_PRIOR_SCALE = 1e-6
#: A shock channel's effect at intensity 1, per kind of channel: (low, high, units).
CHANNEL_RANGES: dict[str, tuple[float, float, str]] = {
    "relative": (-1.0, 10.0, "relative change (-0.2 = 20% lower)"),
    "fraction": (-1.0, 1.0, "fraction of revenue added"),
    "days": (-365.0, 365.0, "days added"),
}

#: Ranges of the command-line options: option -> (low, high).
OPTION_RANGES: dict[str, tuple[int, int]] = {
    "paths": (1, 100_000_000),
    "seed": (0, 2**32 - 1),
    "draws": (10, 1_000_000),
    "tune": (10, 1_000_000),
    "chains": (1, 64),
    "top": (1, 10_000),
    "fits": (1, 100_000),
    "thin_to": (1, 100_000),
    "per_task": (1, 100_000),
    "workers": (1, 1_024),
}
#: The memory estimate of a run (``preflight.estimate_bytes``, itself generous) refuses paths
#: whose draws would not fit in this fraction of the memory available.
MEMORY_FRACTION = 0.9

#: Tuning steps per chain of the driver model's NUTS (``fit.FitSettings``, ``stforecast run
#: --tune``): with 1000, one chain of ten seeds (seed 9) ended with 8 divergences; 2000 gives
#: none there, and higher ESS, for ~10 s more a fit.
DEFAULT_TUNE = 2000


def axis_label(label: str, units: str) -> str:
    """``"Gross margin (% of revenue)"``: a fraction's units are drawn as percent (charts and
    the report's tables)."""
    if not units:
        return label
    return f"{label} ({units.replace('fraction', '%', 1)})"
