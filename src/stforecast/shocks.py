"""Scenario shocks: the report's named risks as transforms of driver paths.

A **shock** (``priors/scenarios.toml``, section ``[shocks.<name>]``) has

* ``probability``: a prior on its annual occurrence probability (e.g. Beta). Each simulated path
  draws its own probability from it, then an occurrence (Bernoulli) in each forecast year;
* ``severity``: a distribution of the intensity of one occurrence (1 = the typical occurrence the
  ``channels`` describe; 0.5 = half as bad);
* ``persistence``: the fraction of last year's intensity still acting this year (0 = a one-year
  hit, 1 = permanent), so a shock in FY22 still weighs on FY23. Occurrences add up:
  ``intensity[t] = persistence * intensity[t-1] + occurred[t] * severity[t]``;
* ``channels``: the effect of a typical occurrence (intensity 1) on each driver it acts through,
  in the units of ``CHANNELS`` below;
* ``source``: where the report names the risk.

Shocks compose: relative effects multiply, additive effects add, and the result is clipped to
each driver's support. Costs are sticky: when shocks cut revenue, operating expenses (R&D,
selling and marketing, admin) stay at their unshocked RMB amounts, i.e. their ratios to revenue
rise; cost of sales (mostly hardware bought per order) moves with revenue. A **scenario** (``[scenarios.<name>]``) says what each shock does: ``"off"``,
``"prior"`` (occurs at its prior probability), a number (a fixed annual probability), a year label
such as ``"FY22"`` (occurs in that year for certain and in no other), or a table
``{ probability = ..., year = ..., severity = ... }`` where a number ``severity`` fixes the
intensity of each occurrence. Shocks a scenario does not name follow its ``default`` ("off"
unless stated).

All scenarios of a run share the same random numbers (common random numbers): a path differs
between scenarios only by the shocks, so scenario differences carry no extra simulation noise.
Pure numpy/scipy/xarray; no refit is ever needed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .data import SEGMENTS, Report
from .priors import Prior, PriorsError, parse_prior
from .tomlfile import read_toml

#: Channel -> (kind, driver(s), units of the effect at intensity 1). ``relative``: the driver is
#: multiplied by (1 + effect x intensity); ``additive``: effect x intensity is added.
CHANNELS: dict[str, tuple[str, str]] = {
    "overseas_revenue": ("relative", "fraction of overseas revenue (22% of FY20 revenue) lost or "
                                     "gained, all segments pro rata"),
    "revenue": ("relative", "fraction of every segment's revenue"),
    **{f"{s}_revenue": ("relative", f"fraction of {s.replace('_', ' ').title()} revenue "
                                    f"(acts on revenue per customer / per city)") for s in SEGMENTS},
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
#: Lower and upper bounds each shocked driver is clipped to.
_SUPPORT = {
    "gross_margin": (-1.0, 0.999), "impairment_rate": (0.0, 1.0),
}
#: Operating-expense ratios held at their unshocked RMB amount when a shock cuts revenue.
STICKY_COSTS = ("rnd_ratio", "selling_marketing_ratio", "admin_ratio")
SHOCK_KEYS = ("label", "probability", "severity", "persistence", "channels", "source",
              "reasoning")
SCENARIO_KEYS = ("description", "default", "shocks")
HEADLINE_SCENARIO = "risk-weighted"


class ScenariosError(ValueError):
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
        _fail(path, key, f"a finite number, got {value!r}")
    if not lo <= value <= hi:
        _fail(path, key, f"a number in [{lo:g}, {hi:g}], got {value:g}")
    return float(value)


def _prior(path, key, entry, support) -> Prior:
    try:
        return parse_prior(path, key, entry, support)
    except PriorsError as exc:
        raise ScenariosError(str(exc)) from None


def _check_table(path, key, table, allowed) -> None:
    """``table`` is a TOML table whose keys are among ``allowed``."""
    if not isinstance(table, dict):
        _fail(path, key, "a table")
    extra = sorted(set(table) - set(allowed))
    if extra:
        _fail(path, f"{key}.{extra[0]}", f"only {', '.join(allowed)}")


def _shock(path, name, table) -> Shock:
    key = f"shocks.{name}"
    _check_table(path, key, table, SHOCK_KEYS)
    for part in ("probability", "severity", "persistence", "channels", "source"):
        if part not in table:
            _fail(path, f"{key}.{part}", "a value (it is missing)")
    source = table["source"]
    if not isinstance(source, str) or not source.strip():
        _fail(path, f"{key}.source", "a non-empty string saying where the report names the risk")
    channels = table["channels"]
    if not isinstance(channels, dict) or not channels:
        _fail(path, f"{key}.channels", "a table of channel = effect, e.g. { gross_margin = -0.03 }")
    for channel, effect in channels.items():
        if channel not in CHANNELS:
            _fail(path, f"{key}.channels.{channel}", f"a known channel: one of {', '.join(CHANNELS)}")
        _number(path, f"{key}.channels.{channel}", effect)
    for text in ("label", "reasoning"):
        if not isinstance(table.get(text, ""), str):
            _fail(path, f"{key}.{text}", "a string")
    return Shock(
        name=name, label=table.get("label") or name.replace("_", " "),
        probability=_prior(path, f"{key}.probability", table["probability"], "unit"),
        severity=_prior(path, f"{key}.severity", table["severity"], "positive"),
        persistence=_number(path, f"{key}.persistence", table["persistence"], 0.0, 1.0),
        channels={c: float(v) for c, v in channels.items()},
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
                         f"table, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Setting(_number(path, key, value, 0.0, 1.0))
    if not isinstance(value, dict):
        _fail(path, key, f"\"off\", \"prior\", a year, a probability or a table, got {value!r}")
    extra = sorted(set(value) - {"probability", "year", "severity"})
    if extra:
        _fail(path, f"{key}.{extra[0]}", "only probability, year, severity")
    if "probability" in value and "year" in value:
        _fail(path, f"{key}.year", "either 'year' (forced occurrence) or 'probability', not both")
    severity = value.get("severity")
    if severity is not None:
        severity = _number(path, f"{key}.severity", severity, 0.0)
    if "year" in value:
        if value["year"] not in years:
            _fail(path, f"{key}.year", f"one of {', '.join(years)}, got {value['year']!r}")
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
        _fail(path, f"{key}.default", f"\"off\" or \"prior\", got {default!r}")
    named = table.get("shocks", {})
    if not isinstance(named, dict):
        _fail(path, f"{key}.shocks", "a table of shock = setting")
    for shock in named:
        if shock not in shocks:
            _fail(path, f"{key}.shocks.{shock}", f"a shock defined in [shocks]: one of "
                                                 f"{', '.join(shocks)}")
    settings = {s: (parse_setting(path, f"{key}.shocks.{s}", named[s], years) if s in named
                    else parse_setting(path, f"{key}.default", default, years)) for s in shocks}
    return Scenario(name, description, settings)


def load_scenarios(path: str | Path, years: list[str] | None = None) -> ScenarioSpec:
    """Read and validate a scenarios file; ``years``: the forecast years (default: the report
    case's, FY21-FY23)."""
    if years is None:
        from .data import load_report
        years = load_report().forecast_years
    path = str(path)
    raw, blob = read_toml(path, ScenariosError)
    for section in raw:
        if section not in ("meta", "shocks", "scenarios"):
            _fail(path, section, "a known section: one of meta, shocks, scenarios")
    for section in ("shocks", "scenarios"):
        if not isinstance(raw.get(section), dict) or not raw[section]:
            _fail(path, section, "a non-empty table")
    shocks = {name: _shock(path, name, t) for name, t in raw["shocks"].items()}
    scenarios = {name: _scenario(path, name, t, shocks, years)
                 for name, t in raw["scenarios"].items()}
    if HEADLINE_SCENARIO not in scenarios:
        _fail(path, f"scenarios.{HEADLINE_SCENARIO}", "the headline scenario (it is missing)")
    return ScenarioSpec(path, hashlib.sha256(blob).hexdigest(), shocks, scenarios)


def default_scenarios_path(priors_path: str | Path) -> Path:
    """``scenarios.toml`` beside the priors file, else the project's ``priors/scenarios.toml``."""
    beside = Path(priors_path).parent / "scenarios.toml"
    if beside.exists():
        return beside
    here = Path(__file__).resolve().parents[2] / "priors" / "scenarios.toml"
    return here if here.exists() else beside


# --- random numbers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ShockDraws:
    """Per shock: its prior annual probability per path (chain, draw, path), a uniform per path
    and year for occurrence, and the severity per path and year drawn from its prior."""

    probability: dict[str, np.ndarray]
    uniform: dict[str, np.ndarray]
    severity: dict[str, np.ndarray]


def draw_shocks(spec: ScenarioSpec, shape: tuple[int, ...], n_years: int,
                rng: np.random.Generator) -> ShockDraws:
    """The random numbers every scenario shares (common random numbers)."""
    prob, unif, sev = {}, {}, {}
    for name, shock in spec.shocks.items():
        prob[name] = shock.probability.frozen().rvs(size=shape, random_state=rng)
        unif[name] = rng.random(shape + (n_years,))
        sev[name] = shock.severity.frozen().rvs(size=shape + (n_years,), random_state=rng)
    return ShockDraws(prob, unif, sev)


def intensities(spec: ScenarioSpec, scenario: Scenario, draws: ShockDraws,
                years: list[str]) -> dict[str, np.ndarray]:
    """Intensity of each shock per (chain, draw, path, year) under ``scenario``."""
    out = {}
    for name, shock in spec.shocks.items():
        setting = scenario.settings[name]
        u = draws.uniform[name]
        if setting.year is not None:
            occurred = np.zeros(u.shape, dtype=bool)
            occurred[..., years.index(setting.year)] = True
        elif setting.probability == "prior":
            occurred = u < draws.probability[name][..., None]
        else:
            occurred = u < setting.probability
        severity = draws.severity[name] if setting.severity is None else setting.severity
        hit = np.where(occurred, severity, 0.0)
        level = np.empty(u.shape)
        carried = np.zeros(u.shape[:-1])
        for t in range(len(years)):
            carried = shock.persistence * carried + hit[..., t]
            level[..., t] = carried
        out[name] = level
    return out


# --- applying shocks to driver paths ------------------------------------------------------------
def _combined(spec: ScenarioSpec, level: dict[str, np.ndarray], channel: str,
              overseas_share: float = 1.0) -> np.ndarray | None:
    """The combined effect of every shock on one channel (factor or additive delta)."""
    kind = CHANNELS[channel][0]
    total = None
    for name, shock in spec.shocks.items():
        effect = shock.channels.get(channel)
        if effect is None or name not in level:
            continue
        if kind == "relative":
            term = np.maximum(0.0, 1.0 + effect * overseas_share * level[name])
            total = term if total is None else total * term
        else:
            term = effect * level[name]
            total = term if total is None else total + term
    return total


def apply_shocks(drivers: xr.Dataset, spec: ScenarioSpec, level: dict[str, np.ndarray],
                 report: Report) -> xr.Dataset:
    """Driver paths under the given shock intensities (dims chain, draw, path, year).

    ``drivers`` come from ``simulate.driver_paths``; returned drivers are ready for
    ``run_engine`` and keep their names and units. The shock intensities are added as
    ``shock_<name>`` (intensity per path and year, 0 = no shock).
    """
    sample = drivers["gross_margin"]  # (chain, draw, path, year): the frame for new arrays
    dims, coords = sample.dims, sample.coords

    def wrap(x):
        return xr.DataArray(np.broadcast_to(x, sample.shape), dims=dims, coords=coords)

    def values(da):  # a driver as a numpy array broadcast to (chain, draw, path, year)
        return np.broadcast_to(da.transpose(*[d for d in dims if d in da.dims]).values,
                               sample.shape)

    out = {f"shock_{name}": wrap(level[name]) for name in spec.shocks}  # new and changed drivers
    level = {name: x for name, x in level.items() if x.any()}  # shocks that act on some path
    segment_factor = {}
    overall = _combined(spec, level, "revenue")
    overseas = _combined(spec, level, "overseas_revenue",
                         report.facts["overseas_revenue_share_fy20"])
    for segment in SEGMENTS:
        factor = np.ones(sample.shape)
        for part in (overall, overseas, _combined(spec, level, f"{segment}_revenue")):
            if part is not None:
                factor = factor * part
        segment_factor[segment] = factor
    if any((f != 1.0).any() for f in segment_factor.values()):
        before = drivers["segment_revenue"].transpose(*dims[:-1], "segment", "year")
        after = before.values * np.stack([segment_factor[s] for s in SEGMENTS], axis=-2)
        out["segment_revenue"] = before.copy(data=after)
        # Costs are sticky: a revenue shock does not cut operating expenses in RMB, so the opex
        # ratios rise by the inverse of the revenue lost (gross margin stays: cost of sales is
        # mostly hardware bought per order).
        total_before = before.values.sum(axis=-2)
        kept = np.divide(after.sum(axis=-2), total_before, out=np.ones(sample.shape),
                         where=total_before > 0)
        kept = np.where(kept > 0, kept, np.inf)
        for ratio in STICKY_COSTS:
            out[ratio] = wrap(values(drivers[ratio]) / kept)
        out["smart_business_revenue_per_customer"] = (
            drivers["smart_business_revenue_per_customer"] * wrap(segment_factor["smart_business"]))
        out["smart_city_revenue_per_city"] = (
            drivers["smart_city_revenue_per_city"] * wrap(segment_factor["smart_city"]))
    for channel, (kind, _) in CHANNELS.items():
        if kind != "additive":
            continue
        delta = _combined(spec, level, channel)
        if delta is None:
            continue
        lo, hi = _SUPPORT.get(channel, (0.0, math.inf))
        out[channel] = wrap(np.clip(values(out.get(channel, drivers[channel])) + delta, lo, hi))
    factor = _combined(spec, level, "ev_sales_multiple")
    if factor is not None:
        at_valuation = wrap(factor).sel(year=report.market.valuation_year, drop=True)
        out["ev_sales_multiple"] = drivers["ev_sales_multiple"] * at_valuation
        out["multiple_shock_factor"] = at_valuation  # for multiples set after the shocks
    return drivers.assign(out)
