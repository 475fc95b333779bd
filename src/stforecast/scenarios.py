"""Scenarios files: parse and validate shocks and scenarios (``scenarios.toml`` -> ``ScenarioSpec``).

What a shock and a scenario are, and how they act on driver paths, is ``stforecast.shocks``; this
module only reads the file. Channels a shock may act through are the engine's drivers
(``CHANNELS``) and the company's own: ``<segment>_revenue`` for each segment and
``<exposure>`` for each ``<exposure>_share`` in the company's ``[exposures]`` (e.g.
``overseas_revenue`` for ``overseas_revenue_share``). Every problem is one line naming the file,
the key and what was expected (``ScenariosError``); nothing is evaluated from the file's text.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

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
              "reasoning")
SCENARIO_KEYS = ("description", "default", "shocks")


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


@dataclass(frozen=True)
class Shock:
    name: str
    label: str
    probability: Prior
    severity: Prior
    persistence: float
    channels: dict[str, float]
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

    def with_scenarios(self, scenarios: dict[str, Scenario]) -> "ScenarioSpec":
        """The same shocks with another set of scenarios (e.g. user-defined settings)."""
        return ScenarioSpec(self.path, self.sha256, self.shocks, dict(scenarios))


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


def _check_table(path, key, table, allowed) -> None:
    """``table`` is a TOML table whose keys are among ``allowed``."""
    if not isinstance(table, dict):
        _fail(path, key, "a table")
    extra = sorted(set(table) - set(allowed))
    if extra:
        _fail(path, f"{key}.{extra[0]}", f"only {', '.join(allowed)}")


def _shock(path, name, table, channels) -> Shock:
    key = f"shocks.{name}"
    _check_table(path, key, table, SHOCK_KEYS)
    for part in ("probability", "severity", "persistence", "channels", "source"):
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
    return Shock(
        name=name, label=table.get("label") or name.replace("_", " "),
        probability=_prior(path, f"{key}.probability", table["probability"], "unit",
                           "shock_probability"),
        severity=_prior(path, f"{key}.severity", table["severity"], "positive", "shock_severity"),
        persistence=_number(path, f"{key}.persistence", table["persistence"], 0.0, 1.0),
        channels={c: float(v) for c, v in effects.items()},
        source=source, reasoning=table.get("reasoning", ""))


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
    default = table.get("default", "off")
    if default not in ("off", "prior"):
        _fail(path, f"{key}.default", f"\"off\" or \"prior\", got {show(default)}")
    named = table.get("shocks", {})
    if not isinstance(named, dict):
        _fail(path, f"{key}.shocks", f"a table of shock = setting, got {show(named)}")
    for shock in named:
        if shock not in shocks:
            _fail(path, f"{key}.shocks.{shock}", f"a shock defined in [shocks]: one of "
                                                 f"{', '.join(shocks)}")
    settings = {s: (parse_setting(path, f"{key}.shocks.{s}", named[s], years) if s in named
                    else parse_setting(path, f"{key}.default", default, years)) for s in shocks}
    return Scenario(name, description, settings)


def load_scenarios(path: str | Path, company) -> ScenarioSpec:
    """Read and validate a scenarios file against ``company`` (its forecast years and channels)."""
    years = list(company.forecast_years)
    channels = company_channels(company)
    path = str(path)
    raw, blob = read_toml(path, ScenariosError)
    for section in raw:
        if section not in ("meta", "shocks", "scenarios"):
            _fail(path, section, "a known section: one of meta, shocks, scenarios")
    for section in ("shocks", "scenarios"):
        if not isinstance(raw.get(section), dict) or not raw[section]:
            _fail(path, section, "a non-empty table")
    check_counts_and_names(path, raw)
    for name, t in raw["shocks"].items():
        if not isinstance(t, dict):
            _fail(path, f"shocks.{name}", f"a table, got {show(t)}")
    shocks = {name: _shock(path, name, t, channels) for name, t in raw["shocks"].items()}
    scenarios = {name: _scenario(path, name, t, shocks, years)
                 for name, t in raw["scenarios"].items()}
    if HEADLINE_SCENARIO not in scenarios:
        _fail(path, f"scenarios.{HEADLINE_SCENARIO}", "the headline scenario (it is missing)")
    return ScenarioSpec(path, hashlib.sha256(blob).hexdigest(), shocks, scenarios)
