"""Scenarios files: parse and validate shocks and scenarios (``scenarios.toml`` -> ``ScenarioSpec``).

What a shock and a scenario are, and how they act on driver paths, is ``stforecast.shocks``; this
module only reads the file. Channels a shock may act through are the engine's drivers
(``CHANNELS``) and the company's own: ``<segment>_revenue`` for each segment and
``<exposure>`` for each ``<exposure>_share`` in the company's ``[exposures]`` (e.g.
``overseas_revenue`` for ``overseas_revenue_share``). Each shock states what its probability and
severity rest on (``probability_basis``, ``severity_basis``); its severity is a positive family of
the priors or ``LogStudentT`` (heavy-tailed, truncated). ``[factors.<name>]`` links shocks'
occurrences through a common factor (``stforecast.shocks``). Every problem is one line naming the file,
the key and what was expected (``ScenariosError``); nothing is evaluated from the file's text.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .distributions import t_cdf, t_quantile
from .errors import StforecastError, show
from .priors import Prior, PriorsError, parse_prior
from .registry import (CHANNEL_RANGES, HEADLINE_SCENARIO, MAX_NAME_CHARS, MAX_SCENARIOS,
                       MAX_SHOCKS, PLAUSIBLE_RANGES, SCENARIO_NAME_PATTERN, SHOCK_NAME_PATTERN)
from .tomlfile import read_toml

#: The engine's channels -> (kind, units of the effect at intensity 1). ``relative``: the driver
#: is multiplied by (1 + effect x intensity); ``additive``: effect x intensity is added.
CHANNELS: dict[str, tuple[str, str]] = {
    "revenue": ("relative", "fraction of every segment's revenue"),
    "gross_margin": ("additive", "gross margin, fraction of revenue (-0.03 = 3pp lower)"),
    "rnd_ratio": ("additive", "R&D expense, fraction of revenue"),
    "selling_marketing_ratio": ("additive", "selling and marketing expense, fraction of revenue"),
    "admin_ratio": ("additive", "administrative expense, fraction of revenue"),
    "capex_ratio": ("additive", "capex, fraction of revenue"),
    "trade_receivable_days": ("additive", "days of revenue, year-end balance"),
    "other_receivable_days": ("additive", "days of revenue, year-end balance"),
    "inventory_days": ("additive", "days of cost of sales, year-end balance"),
    "trade_payable_days": ("additive", "days of cost of sales, year-end balance"),
    "impairment_rate": ("additive", "impairment losses, fraction of year-end trade receivables"),
    "ev_sales_multiple": ("relative", "fraction of the EV/sales multiple (at the valuation "
                                      "year's intensity)"),
}
SHOCK_KEYS = ("label", "probability", "severity", "persistence", "channels", "source",
              "reasoning", "probability_basis", "severity_basis", "from_year")
#: Each shock says what its numbers rest on: reference events dated before the report, with
#: their sources (or, for a judgement, that it is one).
BASIS_KEYS = ("probability_basis", "severity_basis")
SCENARIO_KEYS = ("description", "default", "shocks")
FACTOR_KEYS = ("label", "shocks", "correlation", "source", "reasoning")
#: Severity families beyond the priors' positive ones: a Student-t on the log scale, truncated
#: above at ``upper`` (intensity units), so that its mean is finite.
LOG_T_KEYS = ("dist", "nu", "mu", "sigma", "upper")


def company_channels(company) -> dict[str, tuple[str, str]]:
    """Every channel a shock may use for ``company``: the engine's, then per segment and per
    exposure (relative)."""
    out = dict(CHANNELS)
    for s in company.segments:
        out[f"{s.name}_revenue"] = ("relative", f"fraction of {s.label} revenue"
                                    + (f" (acts on {s.per_unit.replace('_', ' ')})"
                                       if s.kind == "units" else ""))
    for name, share in company.exposures.items():
        if name.endswith("_share"):
            out[name[:-len("_share")]] = ("relative", f"fraction of the {name[:-6].replace('_', ' ')}"
                                          f" ({share:.0%} of revenue) lost or gained, every "
                                          "segment pro rata")
    return out


class ScenariosError(StforecastError):
    """The scenarios file is invalid; one line naming file, key and what was expected."""


class _TruncatedLogT:
    """Frozen distribution of exp(T), T ~ Student-t(nu, mu, sigma) truncated to T <= log(upper)."""

    def __init__(self, nu, mu, sigma, upper):
        self._args = (nu, mu, sigma)
        self._log_upper = math.log(upper)
        self._mass = t_cdf(nu, mu, sigma, self._log_upper)

    def cdf(self, x):
        from scipy import stats

        x = np.asarray(x, dtype=float)
        logx = np.log(np.where(x > 0, x, 1.0))
        out = np.minimum(stats.t(*self._args).cdf(logx) / self._mass, 1.0)
        return np.where(x > 0, out, 0.0)

    def ppf(self, q):
        return np.exp(t_quantile(*self._args, np.asarray(q, dtype=float) * self._mass))

    def rvs(self, size=None, random_state=None):
        return self.ppf(np.random.default_rng(random_state).random(size))

    def median(self):
        return float(self.ppf(0.5))

    def mean(self):
        from scipy import integrate, stats

        t = stats.t(*self._args)
        value, _ = integrate.quad(lambda x: math.exp(x) * t.pdf(x), -np.inf, self._log_upper)
        return value / self._mass


@dataclass(frozen=True)
class LogStudentT:
    """A heavy-tailed severity: log(intensity) ~ Student-t(nu, mu, sigma), truncated at ``upper``."""

    params: dict[str, float]
    dist: str = "LogStudentT"
    source: str = ""

    def frozen(self) -> _TruncatedLogT:
        p = self.params
        return _TruncatedLogT(p["nu"], p["mu"], p["sigma"], p["upper"])

    def draw(self, size, rng: np.random.Generator) -> np.ndarray:
        """``size`` draws from ``rng`` (as ``frozen().rvs``)."""
        return self.frozen().rvs(size=size, random_state=rng)

    def draw_later(self, size, rng: np.random.Generator):
        """``draw`` in two steps: its random numbers are taken from ``rng`` now (the same ones),
        and the returned function turns them into the same draws (the quantile function, the
        costly part) when and where it is called."""
        u = np.random.default_rng(rng).random(size)
        frozen = self.frozen()
        return lambda: frozen.ppf(u)

    def describe(self) -> str:
        inner = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"{self.dist}({inner})"


@dataclass(frozen=True)
class Shock:
    name: str
    label: str
    probability: Prior
    severity: Prior | LogStudentT
    persistence: float
    channels: dict[str, float]
    source: str
    reasoning: str = ""
    probability_basis: str = ""
    severity_basis: str = ""
    from_year: str | None = None  # first year the shock may occur at random (None: the first)


@dataclass(frozen=True)
class Factor:
    """A common factor of occurrence: the listed shocks' yearly occurrences are linked by a
    one-factor Gaussian copula whose latent correlation has a prior (drawn per path). Each
    shock's own occurrence probability is unchanged; only their co-occurrence rises."""

    name: str
    label: str
    shocks: tuple[str, ...]
    correlation: Prior
    source: str
    reasoning: str = ""


@dataclass(frozen=True)
class Setting:
    """What one shock does in one scenario.

    ``probability``: ``"prior"``, a fixed annual probability, or ``None`` when ``year`` forces
    the occurrence. ``severity``: ``None`` = drawn from the shock's severity prior.
    """

    probability: str | float | None = 0.0
    year: str | None = None
    severity: float | None = None

    def describe(self) -> str:
        if self.year is not None:
            text = f"occurs in {self.year}"
        elif self.probability == "prior":
            text = "at its prior probability"
        elif self.probability == 0:
            return "off"
        else:
            text = f"probability {self.probability:g} a year"
        return text + (f", severity {self.severity:g}" if self.severity is not None else "")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    settings: dict[str, Setting]  # every shock of the file, explicitly


@dataclass(frozen=True)
class ScenarioSpec:
    path: str
    sha256: str
    shocks: dict[str, Shock]
    scenarios: dict[str, Scenario]
    factors: dict[str, Factor] = field(default_factory=dict)

    def with_scenarios(self, scenarios: dict[str, Scenario]) -> "ScenarioSpec":
        """The same shocks with another set of scenarios (e.g. user-defined settings)."""
        return ScenarioSpec(self.path, self.sha256, self.shocks, dict(scenarios), self.factors)


# --- loading ------------------------------------------------------------------------------------
def _fail(path, key, expected):
    raise ScenariosError(f"{path}: key '{key}': expected {expected}")


def _number(path, key, value, lo=-math.inf, hi=math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(path, key, f"a finite number, got {show(value)}")
    if not lo <= value <= hi:
        _fail(path, key, f"a number in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def _prior(path, key, entry, support, kind: str | None = None) -> Prior:
    try:
        return parse_prior(path, key, entry, support, kind)
    except PriorsError as exc:
        raise ScenariosError(str(exc)) from None


def check_counts_and_names(path, raw: dict) -> None:
    """At most ``MAX_SHOCKS`` shocks and ``MAX_SCENARIOS`` scenarios, with safe names unique
    regardless of case (``check_names``)."""
    for section, cap, pattern in (("shocks", MAX_SHOCKS, SHOCK_NAME_PATTERN),
                                  ("scenarios", MAX_SCENARIOS, SCENARIO_NAME_PATTERN)):
        table = raw.get(section) or {}
        if isinstance(table, dict):
            if len(table) > cap:
                _fail(path, section, f"at most {cap} {section} (each scenario simulates every "
                                     f"path again), got {len(table)}")
            check_names(path, section, table, pattern)


def channel_range(channel: str, channels: dict[str, tuple[str, str]]) -> tuple[float, float, str]:
    """The plausible effect of a channel at intensity 1 (``registry.CHANNEL_RANGES``)."""
    kind, units = channels[channel]
    if kind == "relative":
        return CHANNEL_RANGES["relative"]
    return CHANNEL_RANGES["days" if "days" in units else "fraction"]


def check_names(path, section: str, names, pattern: str) -> None:
    """Names of a safe character set (``pattern``), at most ``MAX_NAME_CHARS`` long, unique
    regardless of case; ``ScenariosError`` naming the first offending key otherwise."""
    seen: dict[str, str] = {}
    for name in names:
        if len(name) > MAX_NAME_CHARS or not re.fullmatch(pattern, name):
            what = ("letters, digits and underscores" if "-" not in pattern
                    else "letters, digits, underscores and hyphens")
            _fail(path, f"{section}.{name}", f"a name starting with a letter, then {what}, at "
                                             f"most {MAX_NAME_CHARS} characters, got {show(name)}")
        if name.lower() in seen:
            _fail(path, f"{section}.{name}", f"names that differ in more than case "
                                             f"({seen[name.lower()]!r} is already defined)")
        seen[name.lower()] = name
def _severity(path, key, entry) -> Prior | LogStudentT:
    """A positive family of the priors (e.g. LogNormal), or ``LogStudentT`` with nu, mu, sigma
    and a truncation point ``upper`` (all required)."""
    if isinstance(entry, dict) and entry.get("dist") == "LogStudentT":
        _check_table(path, key, entry, LOG_T_KEYS)
        params = {}
        for name in LOG_T_KEYS[1:]:
            if name not in entry:
                _fail(path, f"{key}.{name}", "a value (LogStudentT takes nu, mu, sigma, upper)")
            lo = -math.inf if name == "mu" else 0.0
            params[name] = _number(path, f"{key}.{name}", entry[name], lo)
            if name != "mu" and params[name] <= 0:
                _fail(path, f"{key}.{name}", f"a positive number, got {params[name]:g}")
        if params["upper"] <= math.exp(params["mu"]):
            _fail(path, f"{key}.upper", f"above the median exp(mu) = {math.exp(params['mu']):.3g}")
        return LogStudentT(params)
    return _prior(path, key, entry, "positive", "shock_severity")


def _check_table(path, key, table, allowed) -> None:
    """``table`` is a TOML table whose keys are among ``allowed``."""
    if not isinstance(table, dict):
        _fail(path, key, "a table")
    extra = sorted(set(table) - set(allowed))
    if extra:
        _fail(path, f"{key}.{extra[0]}", f"only {', '.join(allowed)}")


def _shock(path, name, table, channels, years) -> Shock:
    key = f"shocks.{name}"
    _check_table(path, key, table, SHOCK_KEYS)
    for part in ("probability", "severity", "persistence", "channels", "source", *BASIS_KEYS):
        if part not in table:
            _fail(path, f"{key}.{part}", "a value (it is missing)")
    source = table["source"]
    if not isinstance(source, str) or not source.strip():
        _fail(path, f"{key}.source", "a non-empty string saying where the report names the risk")
    effects = table["channels"]
    if not isinstance(effects, dict) or not effects:
        _fail(path, f"{key}.channels", "a table of channel = effect, e.g. { gross_margin = -0.03 }")
    for channel, effect in effects.items():
        if channel not in channels:
            _fail(path, f"{key}.channels.{channel}", f"a known channel: one of {', '.join(channels)}")
        lo, hi, units = channel_range(channel, channels)
        effect = _number(path, f"{key}.channels.{channel}", effect)
        if not lo <= effect <= hi:
            _fail(path, f"{key}.channels.{channel}", f"an effect in the plausible range [{lo:g}, "
                                                     f"{hi:g}] ({units}), got {effect:g}")
    for text in ("label", "reasoning"):
        if not isinstance(table.get(text, ""), str):
            _fail(path, f"{key}.{text}", "a string")
    for basis in BASIS_KEYS:
        if not isinstance(table[basis], str) or not table[basis].strip():
            _fail(path, f"{key}.{basis}", "a non-empty string naming the reference events (with "
                                          "their sources, dated before the report) or the "
                                          "judgement the number rests on")
    return Shock(
        name=name, label=table.get("label") or name.replace("_", " "),
        probability=_prior(path, f"{key}.probability", table["probability"], "unit",
                           "shock_probability"),
        severity=_severity(path, f"{key}.severity", table["severity"]),
        persistence=_number(path, f"{key}.persistence", table["persistence"], 0.0, 1.0),
        channels={c: float(v) for c, v in effects.items()},
        source=source, reasoning=table.get("reasoning", ""),
        probability_basis=table["probability_basis"], severity_basis=table["severity_basis"],
        from_year=_from_year(path, key, table, years))


def _from_year(path, key, table, years) -> str | None:
    """Years already over at the report date can be excluded from random occurrence."""
    if "from_year" not in table:
        return None
    if table["from_year"] not in years:
        _fail(path, f"{key}.from_year", f"one of {', '.join(years)}, got {table['from_year']!r}")
    return table["from_year"]


def _factor(path, name, table, shocks, taken) -> Factor:
    key = f"factors.{name}"
    _check_table(path, key, table, FACTOR_KEYS)
    for part in ("shocks", "correlation", "source"):
        if part not in table:
            _fail(path, f"{key}.{part}", "a value (it is missing)")
    members = table["shocks"]
    if not isinstance(members, list) or len(members) < 2 or len(set(members)) != len(members):
        _fail(path, f"{key}.shocks", "a list of at least two different shocks")
    for shock in members:
        if shock not in shocks:
            _fail(path, f"{key}.shocks", f"shocks defined in [shocks], got {shock!r}")
        if shock in taken:
            _fail(path, f"{key}.shocks", f"each shock in one factor at most; {shock!r} is also "
                                         f"in factors.{taken[shock]}")
        taken[shock] = name
    source = table["source"]
    if not isinstance(source, str) or not source.strip():
        _fail(path, f"{key}.source", "a non-empty string naming the evidence for the link")
    for text in ("label", "reasoning"):
        if not isinstance(table.get(text, ""), str):
            _fail(path, f"{key}.{text}", "a string")
    return Factor(name, table.get("label") or name.replace("_", " "), tuple(members),
                  _prior(path, f"{key}.correlation", table["correlation"], "unit"),
                  source, table.get("reasoning", ""))


def parse_setting(path, key, value, years) -> Setting:
    """One scenario entry for one shock (see the module docstring for the forms)."""
    if isinstance(value, str):
        if value == "off":
            return Setting(0.0)
        if value == "prior":
            return Setting("prior")
        if value in years:
            return Setting(None, year=value)
        _fail(path, key, f"\"off\", \"prior\", a year ({', '.join(years)}), a probability or a "
                         f"table, got {show(value)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Setting(_number(path, key, value, 0.0, 1.0))
    if not isinstance(value, dict):
        _fail(path, key, f"\"off\", \"prior\", a year, a probability or a table, got {show(value)}")
    extra = sorted(set(value) - {"probability", "year", "severity"})
    if extra:
        _fail(path, f"{key}.{extra[0]}", "only probability, year, severity")
    if "probability" in value and "year" in value:
        _fail(path, f"{key}.year", "either 'year' (forced occurrence) or 'probability', not both")
    severity = value.get("severity")
    if severity is not None:
        severity = _number(path, f"{key}.severity", severity,
                           *PLAUSIBLE_RANGES["shock_severity"][:2])
    if "year" in value:
        if not isinstance(value["year"], str) or value["year"] not in years:
            _fail(path, f"{key}.year", f"one of {', '.join(years)}, got {show(value['year'])}")
        return Setting(None, year=value["year"], severity=severity)
    probability = value.get("probability", "prior")
    if probability != "prior":
        probability = _number(path, f"{key}.probability", probability, 0.0, 1.0)
    return Setting(probability, severity=severity)


def _scenario(path, name, table, shocks, years) -> Scenario:
    key = f"scenarios.{name}"
    _check_table(path, key, table, SCENARIO_KEYS)
    description = table.get("description", "")
    if not isinstance(description, str):
        _fail(path, f"{key}.description", "a string")
    default = parse_setting(path, f"{key}.default", table.get("default", "off"), years)
    named = table.get("shocks", {})
    if not isinstance(named, dict):
        _fail(path, f"{key}.shocks", f"a table of shock = setting, got {show(named)}")
    for shock in named:
        if shock not in shocks:
            _fail(path, f"{key}.shocks.{shock}", f"a shock defined in [shocks]: one of "
                                                 f"{', '.join(shocks)}")
    settings = {s: (parse_setting(path, f"{key}.shocks.{s}", named[s], years) if s in named
                    else default) for s in shocks}
    return Scenario(name, description, settings)


def load_scenarios(path: str | Path, company, _table: tuple[dict, bytes] | None = None
                   ) -> ScenarioSpec:
    """Read and validate a scenarios file against ``company`` (its forecast years and channels).
    The file stands alone; :func:`load_user_scenarios` lays a user's file over the company's.
    ``_table``: the file's ``(table, bytes)`` already read (an overlay's merged table)."""
    years = list(company.forecast_years)
    channels = company_channels(company)
    path = str(path)
    raw, blob = _table or read_toml(path, ScenariosError)
    for section in raw:
        if section not in ("meta", "shocks", "factors", "scenarios"):
            _fail(path, section, "a known section: one of meta, shocks, factors, scenarios")
    for section in ("shocks", "scenarios"):
        if not isinstance(raw.get(section), dict) or not raw[section]:
            _fail(path, section, "a non-empty table")
    check_counts_and_names(path, raw)
    for name, t in raw["shocks"].items():
        if not isinstance(t, dict):
            _fail(path, f"shocks.{name}", f"a table, got {show(t)}")
    shocks = {name: _shock(path, name, t, channels, years) for name, t in raw["shocks"].items()}
    raw_factors = raw.get("factors", {})
    if not isinstance(raw_factors, dict):
        _fail(path, "factors", "a table of factors")
    taken: dict[str, str] = {}
    factors = {name: _factor(path, name, t, shocks, taken) for name, t in raw_factors.items()}
    scenarios = {name: _scenario(path, name, t, shocks, years)
                 for name, t in raw["scenarios"].items()}
    if HEADLINE_SCENARIO not in scenarios:
        _fail(path, f"scenarios.{HEADLINE_SCENARIO}", "the headline scenario (it is missing)")
    return ScenarioSpec(path, hashlib.sha256(blob).hexdigest(), shocks, scenarios, factors)


# --- overlays: a user's file laid over the company's ----------------------------------------------
#: ``[meta] overlay = false`` in a user's scenarios file: the file stands alone (no overlay).
OVERLAY_KEY = "overlay"
#: The name under which a run that used an overlay stores the company's own scenarios file.
BASE_FILE_LABEL = "scenarios_base"


def overlay_tables(base: dict, user: dict) -> dict:
    """The user's scenarios table laid over the company's: in ``[shocks]`` and ``[scenarios]``
    an entry of the same name REPLACES the company's, a new name is ADDED (after the company's,
    in the user's order); every entry the user does not name is kept. ``[meta]`` keys merge the
    same way. Anything else the user wrote is kept as written, for validation to judge."""
    merged = dict(base)
    for section, value in user.items():
        if isinstance(value, dict) and isinstance(base.get(section), dict):
            merged[section] = {**base[section], **value}
        else:
            merged[section] = value
    return merged


def _is_standalone(path, user: dict) -> bool:
    meta = user.get("meta", {})
    if not isinstance(meta, dict) or OVERLAY_KEY not in meta:
        return False
    if not isinstance(meta[OVERLAY_KEY], bool):
        _fail(path, f"meta.{OVERLAY_KEY}", f"true (lay this file over the company's scenarios, "
                                           f"the default) or false (this file stands alone), "
                                           f"got {meta[OVERLAY_KEY]!r}")
    return not meta[OVERLAY_KEY]


def _overlay(path: str, user: dict, blob: bytes, company,
             base: tuple[str, str] | None) -> ScenarioSpec:
    if base is None or _is_standalone(path, user) or base[1].encode("utf-8") == blob:
        return load_scenarios(path, company, _table=(user, blob))
    base_path, base_text = base
    try:
        base_table = tomllib.loads(base_text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenariosError(f"{base_path}: TOML syntax error: {exc}") from None
    merged = overlay_tables(base_table, user)
    return load_scenarios(path, company, _table=(merged, base_text.encode("utf-8") + b"\0" + blob))


def _company_base(company) -> tuple[str, str] | None:
    """``(path, text)`` of the company's own scenarios file: as a run stored it under
    ``scenarios_base`` when the run used an overlay, else the company's ``scenarios`` file."""
    files = getattr(company, "files", None) or {}
    base = files.get(BASE_FILE_LABEL) or files.get("scenarios")
    if base is None and getattr(company, "folder", None) is not None:
        own = Path(company.folder) / "scenarios.toml"
        if own.is_file():
            base = (str(own), own.read_text())
    return base


def load_user_scenarios(path: str | Path, company) -> ScenarioSpec:
    """A user's scenarios file laid over the company's own (see :func:`overlay_tables`): a
    file that defines only new scenarios (and, optionally, new shocks) extends the company's;
    ``[meta] overlay = false`` makes the file stand alone. The company's own file, given as
    ``path``, loads as itself. Errors name the user's file."""
    path = str(path)
    user, blob = read_toml(path, ScenariosError)
    return _overlay(path, user, blob, company, _company_base(company))


def run_scenarios(company) -> ScenarioSpec:
    """The scenarios a run of ``company`` read, from its stored files (``company.files``, e.g.
    a results folder's company): the stored ``scenarios`` file, laid over the stored
    ``scenarios_base`` when the run used an overlay."""
    files = getattr(company, "files", None) or {}
    if "scenarios" not in files:
        return load_scenarios(Path(company.folder) / "scenarios.toml", company)
    path, text = files["scenarios"]
    blob = text.encode("utf-8")
    try:
        user = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenariosError(f"{path}: TOML syntax error: {exc}") from None
    return _overlay(str(path), user, blob, company, files.get(BASE_FILE_LABEL))
