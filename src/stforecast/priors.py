"""Priors files: load, validate and type them (``priors/*.toml`` -> ``PriorSpec``).

A priors file declares, for each driver the model knows, its prior distributions with their
provenance in the report. A distribution is a TOML table::

    long_run = { dist = "Normal", mu = 0.10, sigma = 0.06 }
    long_run = { dist = "Normal", range = [0.0, 0.20] }              # "90% between 0 and 0.20"
    long_run = { dist = "Beta", range = [0.55, 0.75], mass = 0.8 }   # 80% between ...

An elicited ``range`` (central ``mass`` interval, default 0.9) is turned into the family's
parameters by the package (closed form where there is one, otherwise a numerical solve).
Every problem is reported as ONE line naming the file, the key and what was expected
(``PriorsError``); nothing is ever evaluated from the file's text.

Three optional sections shape the forecast years beyond the fitted processes (see
``stforecast.outside_view`` and ``stforecast.simulate``); a file without them forecasts as before:

* ``[outside_view]``: the company's reference class (its starting sales in USD and prior growth,
  which dimension of the base rates picks the class), the weight on the outside view with its
  justification, the base-rates file, the fade of growth toward the class's level and the stall
  regime (its class in the base-rates file and the drop in growth once stalled);
* ``[growth_process]``: Student-t innovations (``df``) and the loading of every growth driver on a
  common factor (``factor_loading``);
* ``[margin_mix]``: a mix shift toward lower-margin revenue (``extra_share_per_year`` of revenue
  moving to a business with gross margin ``hardware_margin``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import distributions
from .errors import StforecastError, show
from .memo import Memo
from .costs import (COST_PRIORS, DISCOUNT_PRIORS, DISCOUNT_SETTINGS, FUNDING_PRIORS,
                    FUNDING_SETTINGS, SUPPORT)
from .processes import RATIO_DRIVERS
from .registry import (MAX_PRIOR_PARAMETER, MIN_PRIOR_SCALE, PLAUSIBLE_MASS, PLAUSIBLE_RANGES,
                       VALUATION_METHODS)
from .tomlfile import read_toml

PROCESS_PARTS = ("long_run", "persistence", "volatility")
#: [growth_process] priors -> the support each must have.
GROWTH_PROCESS_KEYS = {"df": "positive", "factor_loading": "unit"}
#: [margin_mix] priors -> the support each must have.
MARGIN_MIX_KEYS = {"extra_share_per_year": "positive", "hardware_margin": "unit"}
#: What may pick a company's reference class in the base rates.
REFERENCE_DIMENSIONS = ("starting_sales_usd", "prior_growth")
DEFAULT_BASE_RATES = "../base_rates.toml"  # relative to the priors file
POOLING_KEYS = ("company_growth_effect",)
VALUATION_KEYS = ("ev_sales_multiple", "peer_premium", "sector_rerating")
TEXT_KEYS = ("source", "reasoning", "units", "note")

# family -> (parameter names, support of the variable)
FAMILIES = {
    "Normal": (("mu", "sigma"), "real"),
    "StudentT": (("nu", "mu", "sigma"), "real"),
    "LogNormal": (("mu", "sigma"), "positive"),
    "Gamma": (("alpha", "beta"), "positive"),
    "HalfNormal": (("sigma",), "positive"),
    "Exponential": (("lam",), "positive"),
    "Beta": (("alpha", "beta"), "unit"),
    "LogitNormal": (("mu", "sigma"), "unit"),
    "Uniform": (("lower", "upper"), "real"),
}
POSITIVE_PARAMS = {"sigma", "nu", "alpha", "beta", "lam"}
ELICITABLE = {"Normal", "LogNormal", "LogitNormal", "Beta", "Gamma"}
#: What each process part must support (a persistence is a fraction; a volatility positive).
PART_SUPPORT = {"persistence": "unit", "volatility": "positive"}
#: The plausible range (``registry.PLAUSIBLE_RANGES``) of each process part and valuation prior.
PART_KIND = {"persistence": "persistence", "volatility": "volatility"}
VALUATION_KIND = {"ev_sales_multiple": "ev_sales_multiple", "peer_premium": "peer_premium"}


def long_run_kind(section: str, transform: str | None, units: str) -> str:
    """The plausible-range kind of a process's long-run level (growth, margin, days, ratio)."""
    if section == "growth":
        return "growth_long_run"
    if transform == "logit":
        return "margin_long_run"
    return "days_long_run" if "days" in units else "ratio_long_run"


class PriorsError(StforecastError):
    """A priors file is invalid. The message is one line: file, key, what was expected."""


@dataclass(frozen=True)
class Prior:
    """One distribution: family, resolved parameters, and where it comes from."""

    dist: str
    params: dict[str, float]
    source: str = ""
    elicited: tuple[float, float, float] | None = None  # (low, high, mass) when given as a range

    def frozen(self):
        """The scipy.stats frozen distribution (for prior checks and plots; ``quantile`` and
        ``draw`` give its ``ppf`` and ``rvs`` without importing scipy.stats)."""
        from scipy import stats

        p = self.params
        match self.dist:
            case "Normal":
                return stats.norm(p["mu"], p["sigma"])
            case "StudentT":
                return stats.t(p["nu"], p["mu"], p["sigma"])
            case "LogNormal":
                return stats.lognorm(p["sigma"], scale=math.exp(p["mu"]))
            case "Gamma":
                return stats.gamma(p["alpha"], scale=1.0 / p["beta"])
            case "HalfNormal":
                return stats.halfnorm(scale=p["sigma"])
            case "Exponential":
                return stats.expon(scale=1.0 / p["lam"])
            case "Beta":
                return stats.beta(p["alpha"], p["beta"])
            case "LogitNormal":
                return _LogitNormal(p["mu"], p["sigma"])
            case "Uniform":
                return stats.uniform(p["lower"], p["upper"] - p["lower"])
        raise AssertionError(self.dist)

    def mean(self) -> float:
        """The mean (the frozen distribution's ``mean()``; without scipy.stats where its
        closed form is known, ``distributions.mean``; a LogitNormal's by Gauss-Hermite
        quadrature, to ~1e-12)."""
        if self.dist == "LogitNormal":  # no closed form (nor a scipy.stats family): quadrature
            z, w = np.polynomial.hermite_e.hermegauss(64)
            p = self.params
            return float(np.sum(w / (1.0 + np.exp(-(p["mu"] + p["sigma"] * z)))) / np.sum(w))
        value = distributions.mean(self.dist, self.params)
        return float(self.frozen().mean()) if value is None else value

    def quantile(self, q):
        """The quantile function at ``q`` (the frozen distribution's ``ppf``)."""
        return distributions.quantile(self.dist, self.params, q)

    def draw(self, size, rng: np.random.Generator) -> np.ndarray:
        """``size`` draws from ``rng`` (the frozen distribution's ``rvs(size=size,
        random_state=rng)``: the same numbers)."""
        return distributions.draw(self.dist, self.params, size, rng)

    def describe(self) -> str:
        inner = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"{self.dist}({inner})"


class _LogitNormal:
    """Minimal frozen LogitNormal (scipy has none): logit(X) ~ Normal(mu, sigma)."""

    def __init__(self, mu, sigma):
        from scipy import stats

        self._norm = stats.norm(mu, sigma)

    def ppf(self, q):
        return 1.0 / (1.0 + np.exp(-self._norm.ppf(q)))

    def rvs(self, size=None, random_state=None):
        return 1.0 / (1.0 + np.exp(-self._norm.rvs(size=size, random_state=random_state)))

    def median(self):
        return float(self.ppf(0.5))


@dataclass(frozen=True)
class ProcessPrior:
    """Priors of one driver process: its long-run level or growth, persistence, volatility.

    Growth drivers: long-run log growth per year. Ratio drivers: long-run level in natural
    units (a fraction or days); the process runs on the ``transform`` scale.
    """

    name: str
    long_run: Prior
    persistence: Prior
    volatility: Prior
    source: str
    reasoning: str = ""
    transform: str | None = None
    units: str = ""
    upper: float | None = None  # ratio drivers: a ceiling on simulated paths (natural units)


@dataclass(frozen=True)
class OutsideViewSpec:
    """A priors file's ``[outside_view]``: the reference class and the weight given to it.

    ``by``: the base rates' dimension that picks the class (``starting_sales_usd`` in USD mn,
    or ``prior_growth`` as a fraction per year); the class is the ``[[sales_cagr_3y]]`` entry of
    the base-rates file (``base_rates``, an absolute path) whose ``[lower, upper)`` holds the
    company's value. ``weight``: the share of forecast paths whose growth comes from the
    reference class (conditioned on the partial-year facts, ``stforecast.outside_view``).
    ``stall``: the name of the base rates' ``[[stall]]`` entry (annual probability of a growth
    stall) and ``stall_drop`` the prior of the fall in log growth per year once a path has
    stalled.
    """

    reference_class: str
    by: str
    starting_sales_usd: float
    prior_growth: float
    weight: float
    weight_source: str
    base_rates: str
    stall: str | None = None
    stall_drop: Prior | None = None
    source: str = ""

    @property
    def value(self) -> float:
        """The company's value on the dimension that picks its class."""
        return self.starting_sales_usd if self.by == "starting_sales_usd" else self.prior_growth


@dataclass(frozen=True)
class PriorSpec:
    """A validated priors file."""

    path: str
    sha256: str
    growth: dict[str, ProcessPrior]
    ratios: dict[str, ProcessPrior]
    pooling: dict[str, Prior]
    valuation: dict[str, Prior]
    meta: dict = field(default_factory=dict)
    valuation_method: str = "report"
    #: ``[costs]``, ``[funding]``, ``[discounting]``: per-path priors of the currency cost
    #: model, the funding rule and the cost of equity (``stforecast.costs``), and their fixed
    #: settings (``liquidity_floor``, ``raise_buffer_years``, ``horizon_years``).
    costs: dict[str, Prior] = field(default_factory=dict)
    funding: dict[str, Prior] = field(default_factory=dict)
    discounting: dict[str, Prior] = field(default_factory=dict)
    settings: dict[str, float] = field(default_factory=dict)
    outside_view: OutsideViewSpec | None = None
    growth_process: dict[str, Prior] = field(default_factory=dict)
    margin_mix: dict[str, Prior] = field(default_factory=dict)

    def processes(self) -> dict[str, ProcessPrior]:
        return {**self.growth, **self.ratios}

    def ceilings(self) -> dict[str, float]:
        """Ceilings on simulated ratio drivers (``upper``, natural units), by driver."""
        return {name: p.upper for name, p in self.ratios.items() if p.upper is not None}

    def summary(self) -> str:
        return (f"{self.path}: valid — {len(self.growth)} growth drivers, {len(self.ratios)} ratio "
                f"drivers, {len(self.valuation)} valuation prior(s), {len(self.pooling)} pooling "
                f"prior(s), {len(self.costs)} cost, {len(self.funding)} funding and "
                f"{len(self.discounting)} discounting prior(s); sha256 {self.sha256[:12]}")


def _fail(path, key, expected) -> None:
    raise PriorsError(f"{path}: key '{key}': expected {expected}")


def _number(path, key, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(path, key, f"a finite number, got {show(value)}")
    return float(value)


def check_plausible(path, key, prior: "Prior", kind: str) -> None:
    """The prior's central ``PLAUSIBLE_MASS`` interval lies in the kind's plausible range
    (``registry.PLAUSIBLE_RANGES``); ``PriorsError`` with the allowed range otherwise."""
    low, high, units = PLAUSIBLE_RANGES[kind]
    lo, hi = _central(prior.dist, tuple(prior.params.items()))
    if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo and hi <= high):
        _fail(path, key, f"a prior whose central {PLAUSIBLE_MASS:.0%} lies in the plausible "
                         f"range [{low:g}, {high:g}] ({units}), got {prior.describe()} with "
                         f"{PLAUSIBLE_MASS:.0%} in [{lo:.3g}, {hi:.3g}]")


@lru_cache(maxsize=1024)
def _central(dist: str, params: tuple) -> tuple[float, float]:
    """The central ``PLAUSIBLE_MASS`` interval of a distribution (NaN when it has none)."""
    tail = (1 - PLAUSIBLE_MASS) / 2
    try:
        with np.errstate(all="ignore"):
            prior = Prior(dist, dict(params))
            return tuple(float(prior.quantile(q)) for q in (tail, 1 - tail))
    except (ArithmeticError, ValueError):
        return math.nan, math.nan


def _check_params(path, key, dist, params) -> None:
    """Every parameter of a magnitude the samplers can work with."""
    for name, v in params.items():
        if not abs(v) <= MAX_PRIOR_PARAMETER:
            _fail(path, f"{key}.{name}", f"a parameter of magnitude at most "
                                         f"{MAX_PRIOR_PARAMETER:g}, got {v:g}")
        if name in POSITIVE_PARAMS and not v >= MIN_PRIOR_SCALE:
            _fail(path, f"{key}.{name}", f"{name} >= {MIN_PRIOR_SCALE:g} (a smaller one makes "
                                         f"the {dist} a constant), got {v:g}")


def _check_support(path, key, dist, support, values) -> None:
    lo_ok = {"real": -math.inf, "positive": 0.0, "unit": 0.0}[support]
    hi_ok = {"real": math.inf, "positive": math.inf, "unit": 1.0}[support]
    for v in values:
        if not (lo_ok < v < hi_ok) and not (support == "real"):
            _fail(path, key, f"values inside the support of {dist} ({lo_ok}, {hi_ok}), got {v:g}")


def _elicit(path, key, dist, low, high, mass) -> dict[str, float]:
    """Parameters whose central ``mass`` interval is [low, high]."""
    params = _solve(dist, low, high, mass)
    if params is None:
        _fail(path, f"{key}.range", f"a range a {dist} can match, [{low:g}, {high:g}] cannot")
    return dict(params)


@lru_cache(maxsize=512)
def _solve(dist, low, high, mass) -> tuple[tuple[str, float], ...] | None:
    """``_elicit``'s parameters as pairs (cached: a numerical solve for Beta and Gamma), or
    None when no member of the family matches."""
    z = distributions.quantile("Normal", {"mu": 0.0, "sigma": 1.0}, 0.5 + mass / 2)
    match dist:
        case "Normal":
            return (("mu", (low + high) / 2), ("sigma", (high - low) / (2 * z)))
        case "LogNormal":
            a, b = math.log(low), math.log(high)
            return (("mu", (a + b) / 2), ("sigma", (b - a) / (2 * z)))
        case "LogitNormal":
            a, b = math.log(low / (1 - low)), math.log(high / (1 - high))
            return (("mu", (a + b) / 2), ("sigma", (b - a) / (2 * z)))
    names = {"Beta": ("alpha", "beta"), "Gamma": ("alpha", "beta")}[dist]
    key = json.dumps([dist, float(low), float(high), float(mass)])
    known = _solved().get(key)
    if isinstance(known, list) and len(known) == len(names) and all(
            isinstance(v, float) for v in known):
        return tuple(zip(names, known))
    params = _solve_numerically(dist, names, low, high, mass)
    if params is not None:
        _solved().put(key, [v for _, v in params])
    return params


@lru_cache(maxsize=1)
def _solved() -> Memo:
    """``_solve``'s numerical solutions kept between processes (``stforecast.memo``: a solve
    needs scipy.optimize, whose import costs more than the rest of parsing a scenarios file),
    valid for this module's and ``distributions``' source and the numpy and scipy versions."""
    import scipy

    from .cache import source_hash

    return Memo("elicited_priors", json.dumps([source_hash("priors", "distributions"),
                                               np.__version__, scipy.__version__]))


def _solve_numerically(dist, names, low, high, mass) -> tuple[tuple[str, float], ...] | None:
    """The Beta or Gamma whose central ``mass`` interval is [low, high] (least squares on the
    log parameters), or None when the solve fails."""
    q = np.array([0.5 - mass / 2, 0.5 + mass / 2])
    target = np.array([low, high])

    def loss(log_params):
        a, b = np.exp(log_params)
        return np.log(distributions.quantile(dist, dict(zip(names, (a, b))), q) / target)

    mid = (low + high) / 2
    start = np.log([mid * 10, (1 - mid) * 10]) if dist == "Beta" else np.log([4.0, 4.0 / mid])
    start = np.clip(start, -9.9, 9.9)  # inside the solver's bounds, whatever the range
    from scipy import optimize

    try:
        with np.errstate(all="ignore"):
            sol = optimize.least_squares(loss, start, bounds=(-10, 10))
        ok = sol.success and bool(np.all(np.isfinite(sol.fun))) and np.max(np.abs(sol.fun)) <= 1e-3
    except (ArithmeticError, ValueError):
        ok = False
    return tuple(zip(names, map(float, np.exp(sol.x)))) if ok else None


def parse_prior(path, key, entry, support_needed: str | None = None,
                kind: str | None = None) -> Prior:
    """Validate one distribution table and resolve its parameters; with ``kind`` (a key of
    ``registry.PLAUSIBLE_RANGES``) its central interval must lie in that plausible range."""
    prior = _parse_prior(path, key, entry, support_needed)
    _check_params(path, key, prior.dist, prior.params)
    if kind is not None:
        check_plausible(path, key, prior, kind)
    return prior


def _parse_prior(path, key, entry, support_needed: str | None = None) -> Prior:
    if not isinstance(entry, dict):
        _fail(path, key, "a table like { dist = \"Normal\", mu = 0.1, sigma = 0.05 }, got "
                         f"{show(entry)}")
    dist = entry.get("dist")
    if not isinstance(dist, str) or dist not in FAMILIES:
        _fail(path, f"{key}.dist", f"one of {', '.join(FAMILIES)}, got {show(dist)}")
    names, support = FAMILIES[dist]
    if support_needed == "unit" and support != "unit":
        _fail(path, f"{key}.dist", f"a distribution on (0, 1) (Beta or LogitNormal), got {dist}")
    if support_needed == "positive" and support == "real":
        _fail(path, f"{key}.dist", f"a distribution on positive values, got {dist}")
    allowed = set(names) | {"dist", "range", "mass"} | set(TEXT_KEYS)
    extra = sorted(set(entry) - allowed)
    if extra:
        _fail(path, f"{key}.{extra[0]}", f"only parameters {', '.join(names)} (or range/mass) for {dist}")
    source = entry.get("source", "")
    if not isinstance(source, str):
        _fail(path, f"{key}.source", "a string")
    if "range" in entry:
        given = [n for n in names if n in entry]
        if given:
            _fail(path, f"{key}.{given[0]}", "either 'range' or parameters, not both")
        if dist not in ELICITABLE:
            _fail(path, f"{key}.range", f"parameters {', '.join(names)}: a range is not supported for {dist}")
        rng = entry["range"]
        if not (isinstance(rng, list) and len(rng) == 2):
            _fail(path, f"{key}.range", f"a list [low, high] of two numbers, got {show(rng)}")
        low, high = (_number(path, f"{key}.range", v) for v in rng)
        if not low < high:
            _fail(path, f"{key}.range", f"low < high, got [{low:g}, {high:g}]")
        mass = _number(path, f"{key}.mass", entry.get("mass", 0.9))
        if not 0 < mass < 1:
            _fail(path, f"{key}.mass", f"a probability in (0, 1), got {mass:g}")
        _check_support(path, f"{key}.range", dist, support, (low, high))
        return Prior(dist, _elicit(path, key, dist, low, high, mass), source, (low, high, mass))
    if "mass" in entry:
        _fail(path, f"{key}.mass", "'mass' only together with 'range'")
    params = {}
    for name in names:
        if name not in entry:
            _fail(path, f"{key}.{name}", f"parameter '{name}' of {dist} (it is missing)")
        params[name] = _number(path, f"{key}.{name}", entry[name])
        if name in POSITIVE_PARAMS and params[name] <= 0:
            _fail(path, f"{key}.{name}", f"{name} > 0, got {params[name]:g}")
    if dist == "Uniform" and not params["lower"] < params["upper"]:
        _fail(path, f"{key}.upper", "upper > lower")
    return Prior(dist, params, source)


def _text(path, key, table, name, required=False) -> str:
    value = table.get(name, "")
    if required and not value:
        _fail(path, f"{key}.{name}", "a non-empty string saying where in the report this comes from")
    if not isinstance(value, str):
        _fail(path, f"{key}.{name}", "a string")
    return value


def _process(path, section, name, table, transform=None, units="") -> ProcessPrior:
    key = f"{section}.{name}"
    if not isinstance(table, dict):
        _fail(path, key, f"a table, got {show(table)}")
    allowed = PROCESS_PARTS + TEXT_KEYS + (("upper",) if transform is not None else ())
    extra = sorted(set(table) - set(allowed))
    if extra:
        _fail(path, f"{key}.{extra[0]}", f"only {', '.join(allowed)}")
    upper = None
    if "upper" in table:
        upper = _number(path, f"{key}.upper", table["upper"])
        if upper <= 0 or (transform == "logit" and upper >= 1):
            _fail(path, f"{key}.upper", "a ceiling > 0 (and < 1 for a margin) in the driver's "
                                        f"units, got {upper:g}")
        high = PLAUSIBLE_RANGES[long_run_kind(section, transform, units)][1]
        if upper > high:
            _fail(path, f"{key}.upper", f"a ceiling of at most {high:g} (the plausible range of "
                                        f"the driver), got {upper:g}")
    parts = {}
    for part in PROCESS_PARTS:
        if part not in table:
            _fail(path, f"{key}.{part}", "a prior distribution (it is missing)")
        needed = PART_SUPPORT.get(part)
        if part == "long_run" and transform == "logit":
            needed = "unit"
        elif part == "long_run" and transform == "log":
            needed = "positive"
        kind = (long_run_kind(section, transform, units) if part == "long_run"
                else PART_KIND[part])
        parts[part] = parse_prior(path, f"{key}.{part}", table[part], needed, kind)
    return ProcessPrior(name=name, source=_text(path, key, table, "source", required=True),
                        reasoning=_text(path, key, table, "reasoning"), transform=transform,
                        units=_text(path, key, table, "units") or units, upper=upper, **parts)


def _section(raw, path, name) -> dict:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        _fail(path, name, "a table")
    return table


def _known(path, section, table, valid) -> None:
    for name in table:
        if name not in valid:
            _fail(path, f"{section}.{name}", f"a known driver: one of {', '.join(valid)}")


def load_priors(path: str | Path, growth_drivers: dict[str, str] | None = None) -> PriorSpec:
    """Read and validate a priors file; raise ``PriorsError`` (one line) on any problem.

    ``growth_drivers``: the company's log-growth processes, name -> label
    (``Company.growth_drivers()``); the file must give exactly these. ``None`` accepts the
    growth drivers the file names (``check-priors`` without a company).
    """
    path = str(path)
    raw, blob = read_toml(path, PriorsError)
    sections = ("meta", "growth", "ratio", "pooling", "valuation", "costs", "funding",
                "discounting", "outside_view", "growth_process", "margin_mix")
    for name in raw:
        if name == "observation":
            _fail(path, name, "no [observation] section: observation noise now sits with each "
                              "observation in the company's company.toml ([[observations]] sd)")
        if name not in sections:
            _fail(path, name, f"a known section: one of {', '.join(sections)}")
    growth_t, ratio_t = _section(raw, path, "growth"), _section(raw, path, "ratio")
    if growth_drivers is None:
        growth_drivers = {name: "" for name in growth_t}
    _known(path, "growth", growth_t, growth_drivers)
    _known(path, "ratio", ratio_t, RATIO_DRIVERS)
    growth = {n: _process(path, "growth", n, growth_t[n], units=growth_drivers[n])
              for n in growth_drivers if n in growth_t}
    ratios = {n: _process(path, "ratio", n, t, *RATIO_DRIVERS[n]) for n, t in ratio_t.items()}
    for name in growth_drivers:
        if name not in growth:
            _fail(path, f"growth.{name}", "a growth driver (it is missing)")
    for name in RATIO_DRIVERS:
        if name not in ratios:
            _fail(path, f"ratio.{name}", "a ratio driver (it is missing)")
    pool_t = _section(raw, path, "pooling")
    _known(path, "pooling", pool_t, POOLING_KEYS)
    pooling = {n: parse_prior(path, f"pooling.{n}", t, kind="growth_pooling")
               for n, t in pool_t.items()}
    val_t = dict(_section(raw, path, "valuation"))
    method = val_t.pop("method", "report")
    if method not in VALUATION_METHODS:
        _fail(path, "valuation.method", f"one of {', '.join(map(repr, VALUATION_METHODS))}, "
                                        f"got {show(method)}")
    _known(path, "valuation", val_t, VALUATION_KEYS + ("method",))
    # ev_sales_multiple is a multiple (positive); peer_premium and sector_rerating are log
    # factors (any real number)
    valuation = {n: parse_prior(path, f"valuation.{n}", t,
                                "positive" if n == "ev_sales_multiple" else None,
                                VALUATION_KIND.get(n))
                 for n, t in val_t.items()}
    if "ev_sales_multiple" not in valuation:
        _fail(path, "valuation.ev_sales_multiple", "a prior for the EV/sales multiple (it is missing)")
    if method == "peer-regression" and "peer_premium" not in valuation:
        _fail(path, "valuation.peer_premium", "a prior on the log premium to the peer regression "
                                              "(needed by method = \"peer-regression\")")
    for name in POOLING_KEYS:
        if name not in pooling:
            _fail(path, f"pooling.{name}", "a prior (it is missing)")
    blocks, settings = {}, {}
    for section, names, fixed in (("costs", COST_PRIORS, ()),
                                  ("funding", FUNDING_PRIORS, FUNDING_SETTINGS),
                                  ("discounting", DISCOUNT_PRIORS, DISCOUNT_SETTINGS)):
        table = _section(raw, path, section)
        _known(path, section, table, names + fixed)
        for name in names + fixed:
            if name not in table:
                _fail(path, f"{section}.{name}", "a prior (it is missing)" if name in names
                      else "a setting { value = ..., source = \"...\" } (it is missing)")
        blocks[section] = {n: parse_prior(path, f"{section}.{n}", table[n], SUPPORT.get(n))
                           for n in names}
        for name in fixed:
            entry = table[name]
            if not isinstance(entry, dict) or "value" not in entry or not isinstance(
                    entry.get("source"), str):
                _fail(path, f"{section}.{name}", "a setting { value = <number>, source = \"...\" }")
            settings[name] = _number(path, f"{section}.{name}.value", entry["value"])
            if settings[name] < 0:
                _fail(path, f"{section}.{name}.value", f"a number >= 0, got {settings[name]:g}")
    return PriorSpec(path=path, sha256=hashlib.sha256(blob).hexdigest(), growth=growth,
                     ratios=ratios, pooling=pooling,
                     valuation=valuation, meta=_section(raw, path, "meta"),
                     valuation_method=method, costs=blocks["costs"],
                     funding=blocks["funding"], discounting=blocks["discounting"],
                     settings=settings,
                     outside_view=_outside_view(path, raw.get("outside_view")),
                     growth_process=_priors_table(path, raw, "growth_process",
                                                  GROWTH_PROCESS_KEYS),
                     margin_mix=_priors_table(path, raw, "margin_mix", MARGIN_MIX_KEYS))


def _base_rates_path(path, base: str) -> Path:
    """The base-rates file a priors file names: relative to the priors file; when that file is
    not there (a company folder copied elsewhere, a stored priors text), the shipped file of the
    same name (beside the shipped companies). A file found nowhere is refused where it is read
    (``outside_view.growth_settings``), in one line."""
    beside = (Path(path).parent / base).resolve()
    if beside.is_file():
        return beside
    from .company import company_roots
    for root in company_roots():
        shipped = root / Path(base).name
        if shipped.is_file():
            return shipped.resolve()
    return beside


def _priors_table(path, raw, section, keys: dict[str, str]) -> dict[str, Prior]:
    """An optional section of priors: all of ``keys`` (each with its support) or none."""
    if section not in raw:
        return {}
    table = _section(raw, path, section)
    for name in table:
        if name not in keys and name not in TEXT_KEYS:
            _fail(path, f"{section}.{name}", f"one of {', '.join(keys)} (or {', '.join(TEXT_KEYS)})")
    _text(path, section, table, "source", required=True)
    out = {}
    for name, support in keys.items():
        if name not in table:
            _fail(path, f"{section}.{name}", "a prior distribution (it is missing)")
        out[name] = parse_prior(path, f"{section}.{name}", table[name], support)
    return out


def _outside_view(path, table) -> OutsideViewSpec | None:
    """The ``[outside_view]`` section (None when the file has none)."""
    if table is None:
        return None
    key = "outside_view"
    if not isinstance(table, dict):
        _fail(path, key, "a table")
    allowed = {"reference_class", "by", "starting_sales_usd", "prior_growth", "weight",
               "weight_source", "base_rates", "stall", "stall_drop",
               "starting_sales_source", "prior_growth_source"} | set(TEXT_KEYS)
    extra = sorted(set(table) - allowed)
    if extra:
        _fail(path, f"{key}.{extra[0]}", f"only {', '.join(sorted(allowed))}")
    by = table.get("by", "starting_sales_usd")
    if by not in REFERENCE_DIMENSIONS:
        _fail(path, f"{key}.by", f"one of {', '.join(map(repr, REFERENCE_DIMENSIONS))}, got {by!r}")
    numbers = {}
    for name in ("starting_sales_usd", "prior_growth", "weight"):
        if name not in table:
            _fail(path, f"{key}.{name}", "a number (it is missing)")
        numbers[name] = _number(path, f"{key}.{name}", table[name])
    if numbers["starting_sales_usd"] <= 0:
        _fail(path, f"{key}.starting_sales_usd", "sales in USD mn > 0")
    if not 0 <= numbers["weight"] <= 1:
        _fail(path, f"{key}.weight", f"a weight in [0, 1], got {numbers['weight']:g}")
    for name in ("weight_source", "source", "starting_sales_source"):
        _text(path, key, table, name, required=True)
    base = table.get("base_rates", DEFAULT_BASE_RATES)
    if not isinstance(base, str) or not base:
        _fail(path, f"{key}.base_rates", "a path to the base-rates file (relative to this file)")
    stall = table.get("stall")
    if stall is not None and not (isinstance(stall, str) and stall):
        _fail(path, f"{key}.stall", "the name of a [[stall]] entry of the base-rates file")
    if (stall is None) != ("stall_drop" not in table):
        _fail(path, f"{key}.stall_drop", "a prior on the drop in log growth once stalled, "
                                         "given together with 'stall' (or neither)")
    return OutsideViewSpec(
        reference_class=_text(path, key, table, "reference_class", required=True), by=by,
        weight_source=table["weight_source"], source=table["source"],
        base_rates=str(_base_rates_path(path, base)),
        stall=stall,
        stall_drop=(parse_prior(path, f"{key}.stall_drop", table["stall_drop"], "positive")
                    if stall is not None else None),
        **numbers)
