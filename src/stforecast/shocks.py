"""Scenario shocks: the report's named risks as transforms of driver paths.

A **shock** (a company's ``scenarios.toml``, section ``[shocks.<name>]``; parsed by
``stforecast.scenarios``) has

* ``probability``: a prior on its annual occurrence probability (e.g. Beta). Each simulated path
  draws its own probability from it, then an occurrence (Bernoulli) in each forecast year;
* ``severity``: a distribution of the intensity of one occurrence (1 = the typical occurrence the
  ``channels`` describe; 0.5 = half as bad);
* ``from_year`` (optional): the first year in which the shock may occur at random (years that
  had ended by the report date carry no new random event; a scenario may still force one);
* ``persistence``: the fraction of last year's intensity still acting this year (0 = a one-year
  hit, 1 = permanent), so a shock in one year still weighs on the next. Occurrences add up:
  ``intensity[t] = persistence * intensity[t-1] + occurred[t] * severity[t]``;
* ``channels``: the effect of a typical occurrence (intensity 1) on each driver it acts through,
  in the units of ``scenarios.company_channels``;
* ``source``: where the report names the risk; ``probability_basis`` and ``severity_basis``:
  the reference events (dated before the report, with their sources) the numbers rest on.

A **common factor** (``[factors.<name>]``) links the occurrences of its shocks: each year, shock
*i* of the factor occurs when ``Phi(sqrt(rho) * Z + sqrt(1 - rho) * E_i) < p_i``, with ``Z`` one
standard normal per path and year shared by the factor's shocks, ``E_i`` the shock's own, and the
latent correlation ``rho`` drawn per path from the factor's prior. This is a one-factor Gaussian
copula: each shock keeps exactly its own occurrence probability, and for ``rho > 0`` the shocks
occur together more often than if independent (a policy-stress year raises both hazards).

Shocks compose: relative effects multiply, additive effects add, and the result is clipped to
each driver's support. Costs are sticky: when shocks cut revenue, operating expenses (R&D,
selling and marketing, admin) stay at their unshocked RMB amounts, i.e. their ratios to revenue
rise; cost of sales (mostly hardware bought per order) moves with revenue. A **scenario** (``[scenarios.<name>]``) says what each shock does: ``"off"``,
``"prior"`` (occurs at its prior probability), a number (a fixed annual probability), a year label
(occurs in that year for certain and in no other), or a table
``{ probability = ..., year = ..., severity = ... }`` where a number ``severity`` fixes the
intensity of each occurrence. Shocks a scenario does not name follow its ``default`` ("off"
unless stated).

All scenarios of a run share the same random numbers (common random numbers): a path differs
between scenarios only by the shocks, so scenario differences carry no extra simulation noise.
Pure numpy/scipy/xarray; no refit is ever needed.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import xarray as xr
from scipy import special

from .scenarios import (CHANNELS, Factor, LogStudentT, Scenario, ScenarioSpec,  # noqa: F401
                        ScenariosError, Setting, Shock, company_channels, load_scenarios,
                        parse_setting)

#: Lower and upper bounds each shocked driver is clipped to.
_SUPPORT = {
    "gross_margin": (-1.0, 0.999), "impairment_rate": (0.0, 1.0),
}
#: Operating-expense ratios held at their unshocked amount when a shock cuts revenue.
STICKY_COSTS = ("rnd_ratio", "selling_marketing_ratio", "admin_ratio")


# --- random numbers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ShockDraws:
    """Per shock: its prior annual probability per path (chain, draw, path), a uniform per path
    and year for occurrence (linked across a factor's shocks), and the severity per path and year
    drawn from its own distribution (``OnDemand``: a heavy-tailed severity's quantile function
    runs when a scenario first needs it). Per factor: its latent correlation per path."""

    probability: dict[str, np.ndarray]
    uniform: dict[str, np.ndarray]
    severity: Mapping[str, np.ndarray]
    correlation: dict[str, np.ndarray] = field(default_factory=dict)


class OnDemand(Mapping):
    """Arrays by name: ``ready`` ones, and ``later`` ones computed by their function on first
    use (once, by whichever thread asks first; the others wait for it). Computed draws are the
    same wherever they are computed: their random numbers were taken in order beforehand."""

    def __init__(self, ready: dict[str, np.ndarray], later: dict[str, Callable[[], np.ndarray]]):
        self._ready, self._later, self._lock = dict(ready), dict(later), threading.Lock()

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._ready:
            with self._lock:
                if name not in self._ready:
                    self._ready[name] = self._later[name]()
        return self._ready[name]

    def __iter__(self):
        return iter([*self._ready, *(k for k in self._later if k not in self._ready)])

    def __len__(self) -> int:
        return len(set(self._ready) | set(self._later))


def draw_shocks(spec: ScenarioSpec, shape: tuple[int, ...], n_years: int,
                rng: np.random.Generator) -> ShockDraws:
    """The random numbers every scenario shares (common random numbers)."""
    prob, unif, sev, later, corr = {}, {}, {}, {}, {}
    for name, shock in spec.shocks.items():
        prob[name] = shock.probability.draw(shape, rng)
        unif[name] = rng.random(shape + (n_years,))
        if isinstance(shock.severity, LogStudentT):  # a costly quantile function: when needed
            later[name] = shock.severity.draw_later(shape + (n_years,), rng)
        else:
            sev[name] = shock.severity.draw(shape + (n_years,), rng)
    for name, factor in spec.factors.items():  # after the shocks: their own draws are unchanged
        rho = factor.correlation.draw(shape, rng)[..., None]
        common = rng.standard_normal(shape + (n_years,))
        for shock in factor.shocks:
            own = rng.standard_normal(shape + (n_years,))
            unif[shock] = special.ndtr(np.sqrt(rho) * common + np.sqrt(1.0 - rho) * own)
        corr[name] = rho[..., 0]
    return ShockDraws(prob, unif, OnDemand(sev, later), corr)


def intensities(spec: ScenarioSpec, scenario: Scenario, draws: ShockDraws,
                years: list[str]) -> dict[str, np.ndarray]:
    """Intensity of each shock per (chain, draw, path, year) under ``scenario``; a shock that
    occurs on no path gets zeros of shape (1, 1, 1, 1), which broadcast as those would."""
    out = {}
    for name, shock in spec.shocks.items():
        setting = scenario.settings[name]
        u = draws.uniform[name]
        if setting.year is not None:
            occurred = np.zeros(u.shape, dtype=bool)
            occurred[..., years.index(setting.year)] = True
        else:
            p = draws.probability[name][..., None] if setting.probability == "prior" \
                else setting.probability
            occurred = u < p
            if shock.from_year is not None:  # years over at the report date: no random event
                occurred[..., :years.index(shock.from_year)] = False
        if not occurred.any():  # no occurrence: no severity needed, and 0 in every year
            out[name] = np.zeros((1,) * u.ndim)
            continue
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
    """The combined effect of every shock on one channel (factor or additive delta).

    ``overseas_share``: for an exposure channel, the share of revenue it covers."""
    kind = CHANNELS[channel][0] if channel in CHANNELS else "relative"
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
                 company, with_intensities: bool = True) -> xr.Dataset:
    """Driver paths under the given shock intensities (dims chain, draw, path, year).

    ``drivers`` come from ``simulate.driver_paths``; returned drivers are ready for
    ``run_engine`` and keep their names and units. The shock intensities are added as
    ``shock_<name>`` (intensity per path and year, 0 = no shock) unless ``with_intensities``
    is False (the engine does not read them).
    """
    sample = drivers["gross_margin"]  # (chain, draw, path, year): the frame for new arrays
    dims, coords = sample.dims, sample.coords

    def wrap(x):
        return xr.DataArray(np.broadcast_to(x, sample.shape), dims=dims, coords=coords)

    def values(da):  # a driver as a numpy array broadcast to (chain, draw, path, year)
        return np.broadcast_to(da.transpose(*[d for d in dims if d in da.dims]).values,
                               sample.shape)

    out = {f"shock_{name}": wrap(level[name]) for name in spec.shocks
           if with_intensities}  # new and changed drivers
    level = {name: x for name, x in level.items() if x.any()}  # shocks that act on some path
    segment_factor = {}
    overall = _combined(spec, level, "revenue")
    exposures = [_combined(spec, level, name[:-len("_share")], share)
                 for name, share in company.exposures.items() if name.endswith("_share")]
    segments = company.segment_names
    for segment in segments:
        factor = None  # 1 (x 1.0 changes no number)
        for part in (overall, *exposures, _combined(spec, level, f"{segment}_revenue")):
            if part is not None:
                factor = part if factor is None else factor * part
        segment_factor[segment] = np.ones(sample.shape) if factor is None else factor
    if any((f != 1.0).any() for f in segment_factor.values()):
        before = drivers["segment_revenue"].transpose(*dims[:-1], "segment", "year")
        after = before.values * np.stack([segment_factor[s] for s in segments], axis=-2)
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
        for s in company.segments:  # a units segment's revenue shock acts on revenue per unit
            if s.kind == "units" and s.per_unit_driver in drivers:
                out[s.per_unit_driver] = drivers[s.per_unit_driver] * wrap(segment_factor[s.name])
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
        at_valuation = wrap(factor).sel(year=company.market.valuation_year, drop=True)
        out["ev_sales_multiple"] = drivers["ev_sales_multiple"] * at_valuation
        out["multiple_shock_factor"] = at_valuation  # for multiples set after the shocks
    return drivers.assign(out)
