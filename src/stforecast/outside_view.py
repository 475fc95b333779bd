"""The outside view: a company's reference class, and its blend with the inside view.

Inside-view forecasts of growth are optimistic and overconfident; the realised growth of companies
like this one (a reference class: similar starting sales, or similar prior growth) is a check
that the inside view cannot give itself. A priors file names the class and the weight ``w`` given
to it (``[outside_view]``, ``stforecast.priors.OutsideViewSpec``); the classes themselves are data
with sources in the base-rates file (``[[sales_cagr_3y]]``: a histogram of 3-year sales CAGRs,
``[[stall]]``: the annual probability of a growth stall).

**How the two views are blended: a mixture over paths, not an average of parameters.** On each
simulated path a Bernoulli(``w``) draw says whose growth the path follows:

* inside paths (probability ``1 - w``) follow the fitted growth processes (``stforecast.simulate``:
  the first forecast year from the model, conditioned on the partial-year facts, then AR(1) log
  growth per driver with Student-t innovations, a common factor, a stall regime);
* outside paths (probability ``w``) grow the company's revenue at ``m = log(1 + c)`` every
  forecast year, the first included, where ``c`` is a draw of the class's 3-year CAGR (a new
  draw per path), so that the path's 3-year CAGR is ``c``. The class is conditioned on the
  partial-year facts the report date knows (``first_year_facts``, ``class_given_facts``): the
  class knows the company's revenue, not its segments, so on an outside path every driver is
  read as growing at ``m``, and a unit count at ``fraction`` of the first year is the likelihood
  ``Normal(log(count / last count); fraction m, sd)`` with the model's own noise ``sd`` (a
  segment's revenue share does not depend on ``m`` and says nothing here). The posterior of ``c``
  is one-dimensional and the same for every path: it is computed exactly, once. In the prior
  predictive no fact is known and ``c`` is the class's (``GrowthSettings.first_year_known``).
  Every segment is scaled by the same factor each year, so the segment mix (and every unit
  count) stays the inside view's, first year included.

Why the first year too: the model's first-year growth is the inside view (the AR(1) of each
driver around long-run levels that the company's own history pulls up), and the facts inform
only part of it (one segment's count and share). Keeping it on outside paths let the inside
view's optimism through the first year and, by momentum, into the later ones: on synthetic
companies drawn from the base rates the 3-year revenue forecast was biased high (the truths'
mean PIT was 0.25 in the coverage test of ``tests/test_outside_view.py``). Now the facts reach
the outside paths by their likelihood, and nothing else of the inside view does but the mix.
Consequences: the outside paths' growth is the same every year (a year-1 fact moves the whole
3-year CAGR of an outside path: the class does not say how a 3-year CAGR splits into years), and
their first year is as narrow as the class's 3-year CAGRs (a single year's growth is noisier).

Why a mixture: the forecast's CAGR distribution is then exactly ``(1 - w) F_inside + w F_outside``,
which lies between the two for every quantile and every probability (an average of the two
views' long-run growth per draw, or a precision-weighted prior, would be narrower than both and
could show a left tail thinner than either view's). The reference class's dispersion is already
the dispersion of realised CAGRs (noise, stalls and busts included), so outside paths get no
innovation noise of their own. With ``w = 0`` the forecast is the inside view alone, computed on
the same posterior and the same random numbers (``inside_only`` in ``stforecast.run``).

The summary's ``outside_view`` block puts side by side, for the reference class, the inside view
alone and the final forecast: P(3-year CAGR < 0), P(CAGR < 10%) (with Monte Carlo errors) and the
CAGR quartiles. Pure numpy / scipy: no PyMC here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import StforecastError
from .mcse import mcse_quantile, probability
from .priors import OutsideViewSpec, Prior, PriorSpec
from .registry import SAMPLE_DIMS
from .tomlfile import read_toml

CAGR_YEARS = 3  # the base rates' horizon: 3-year sales CAGR
THRESHOLDS = {"p_cagr_below_0": 0.0, "p_cagr_below_10pct": 0.10}
QUARTILES = (0.25, 0.5, 0.75)
CAGR_FLOOR = -0.99  # a CAGR below -99% a year is a company that no longer sells anything


class BaseRatesError(StforecastError):
    """The base-rates file is invalid or lacks the class a priors file names (one line)."""


@dataclass(frozen=True)
class ReferenceClass:
    """A ``[[sales_cagr_3y]]`` entry: a histogram of 3-year sales CAGRs (fractions per year).

    ``edges``: bin edges, the outer ones may be infinite; ``frequency``: the share of companies
    per bin (normalised to sum to 1). An open-ended bin is given an exponential tail whose scale
    is the width of its finite neighbour (the histogram says nothing finer); a CAGR is floored at
    ``CAGR_FLOOR``.
    """

    name: str
    by: str
    lower: float
    upper: float
    edges: tuple[float, ...]
    frequency: tuple[float, ...]
    mean: float | None
    sd: float | None
    source: str

    def _tail_scale(self, left: bool) -> float:
        e = self.edges
        return (e[2] - e[1]) if left else (e[-2] - e[-3])

    def cdf(self, x) -> np.ndarray:
        x = np.asarray(x, float)
        e, f = np.asarray(self.edges), np.asarray(self.frequency)
        out = np.zeros_like(x)
        for i in range(len(f)):
            lo, hi = e[i], e[i + 1]
            if np.isinf(lo):
                part = np.where(x < hi, f[i] * np.exp(-(hi - np.minimum(x, hi))
                                                       / self._tail_scale(True)), f[i])
            elif np.isinf(hi):
                part = np.where(x > lo, f[i] * (1 - np.exp(-(np.maximum(x, lo) - lo)
                                                           / self._tail_scale(False))), 0.0)
            else:
                part = f[i] * np.clip((x - lo) / (hi - lo), 0.0, 1.0)
            out = out + part
        return np.where(x < CAGR_FLOOR, 0.0, out)

    def ppf(self, u) -> np.ndarray:
        """The quantile function (inverse of ``cdf``), vectorised."""
        u = np.asarray(u, float)
        e, f = np.asarray(self.edges), np.asarray(self.frequency)
        cum = np.concatenate([[0.0], np.cumsum(f)])
        i = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(f) - 1)
        lo, hi, fi = e[i], e[i + 1], f[i]
        within = np.clip((u - cum[i]) / np.where(fi > 0, fi, 1.0), 1e-12, 1 - 1e-12)
        with np.errstate(invalid="ignore", divide="ignore"):
            finite = lo + within * (hi - lo)
            left = hi + self._tail_scale(True) * np.log(within)
            right = lo - self._tail_scale(False) * np.log1p(-within)
        x = np.where(np.isinf(lo), left, np.where(np.isinf(hi), right, finite))
        return np.maximum(x, CAGR_FLOOR)

    def sample(self, rng: np.random.Generator, size) -> np.ndarray:
        return self.ppf(rng.uniform(size=size))

    def table(self) -> dict:
        """The class's row of the outside-view table (exact: no Monte Carlo error)."""
        row = {k: {"p": round(float(self.cdf(t)), 4), "mcse": 0.0}
               for k, t in THRESHOLDS.items()}
        row["quartiles"] = [round(float(self.ppf(q)), 4) for q in QUARTILES]
        return row

    def histogram(self) -> dict:
        """Edges and frequencies for charts (open ends closed one tail scale out)."""
        e = list(self.edges)
        if math.isinf(e[0]):
            e[0] = max(e[1] - self._tail_scale(True), CAGR_FLOOR)
        if math.isinf(e[-1]):
            e[-1] = e[-2] + self._tail_scale(False)
        return {"edges": [round(x, 4) for x in e],
                "frequency": [round(x, 5) for x in self.frequency]}


@dataclass(frozen=True)
class GrowthSettings:
    """What the simulation needs beyond the posterior to forecast growth and margins.

    Built from a priors file by ``growth_settings``; every prior is drawn once per posterior
    draw in the simulation. ``reference`` is None (and ``weight`` 0) without an outside view.
    """

    reference: ReferenceClass | None = None
    weight: float = 0.0
    stall_probability: float = 0.0
    stall_drop: Prior | None = None
    df: Prior | None = None
    factor_loading: Prior | None = None
    mix_share: Prior | None = None
    hardware_margin: Prior | None = None
    note: str = ""
    #: False for the prior predictive: no partial-year fact is known, so outside paths' CAGRs
    #: are the class's itself (not the class conditioned on the facts)
    first_year_known: bool = True

    def with_weight(self, weight: float) -> GrowthSettings:
        from dataclasses import replace
        return replace(self, weight=float(weight))

    def for_prior(self) -> GrowthSettings:
        from dataclasses import replace
        return replace(self, first_year_known=False)


def _edge(path, key, v) -> float:
    if v in ("-inf", "inf"):
        return float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BaseRatesError(f"{path}: key '{key}': expected numbers (or \"-inf\"/\"inf\" at the "
                             f"ends), got {v!r}")
    return float(v)


def _reference_class(path, i: int, entry: dict) -> ReferenceClass | dict:
    """A class with its histogram, or (no ``bins``) the entry itself: its summary statistics."""
    key = f"sales_cagr_3y[{i}]"
    needed = ("name", "by", "lower", "upper", "source") + (("bins", "frequency")
                                                            if "bins" in entry else ("sd",))
    for name in needed:
        if name not in entry:
            raise BaseRatesError(f"{path}: key '{key}.{name}': expected it (it is missing)")
    if "bins" not in entry:
        return dict(entry)
    edges = [_edge(path, f"{key}.bins", v) for v in entry["bins"]]
    freq = [_edge(path, f"{key}.frequency", v) for v in entry["frequency"]]
    if len(edges) < 4 or len(freq) != len(edges) - 1 or any(np.diff(edges) <= 0):
        raise BaseRatesError(f"{path}: key '{key}.bins': expected at least 4 increasing edges and "
                             f"one frequency per bin")
    if any(np.isinf(edges[1:-1])) or min(freq) < 0 or sum(freq) <= 0:
        raise BaseRatesError(f"{path}: key '{key}.frequency': expected non-negative shares with "
                             f"only the outer edges infinite")
    total = sum(freq)
    return ReferenceClass(
        name=str(entry["name"]), by=str(entry["by"]),
        lower=_edge(path, f"{key}.lower", entry["lower"]),
        upper=_edge(path, f"{key}.upper", entry["upper"]),
        edges=tuple(edges), frequency=tuple(x / total for x in freq),
        mean=entry.get("mean"), sd=entry.get("sd"), source=str(entry["source"]))


def _derived(path, stats: dict, shapes: list[ReferenceClass]) -> ReferenceClass:
    """A class published as summary statistics only (median or mean, sd): the histogram of the
    widest class of the same dimension that holds it, moved and scaled so that its median and sd
    are the class's (a CAGR ``x`` of the wide class becomes ``m + (x - M) s / S``)."""
    lo, hi = _edge(path, "lower", stats["lower"]), _edge(path, "upper", stats["upper"])
    holders = [c for c in shapes if c.by == stats["by"] and c.lower <= lo and hi <= c.upper]
    if not holders:
        raise BaseRatesError(f"{path}: key 'sales_cagr_3y.{stats['name']}': expected bins, or a "
                             f"wider class of the same 'by' with bins to take its shape from")
    shape = max(holders, key=lambda c: c.upper - c.lower)
    centre = stats.get("median", stats.get("mean"))
    if shape.sd is None or centre is None:
        raise BaseRatesError(f"{path}: key 'sales_cagr_3y.{shape.name}.sd': expected the sd of "
                             f"the class whose shape {stats['name']} borrows")
    wide_median = float(shape.ppf(0.5))
    k = float(stats["sd"]) / float(shape.sd)
    edges = tuple(e if math.isinf(e) else round(float(centre) + (e - wide_median) * k, 6)
                  for e in shape.edges)
    return ReferenceClass(
        name=str(stats["name"]), by=str(stats["by"]), lower=lo, upper=hi, edges=edges,
        frequency=shape.frequency, mean=stats.get("mean"), sd=float(stats["sd"]),
        source=f"{stats['source']}; shape: {shape.name} moved and scaled to this class's "
               f"{'median' if 'median' in stats else 'mean'} and sd")


def load_base_rates(path: str | Path) -> dict:
    """The base-rates file as ``{"sales_cagr_3y": [ReferenceClass], "stall": [dict], ...}``;
    classes published as summary statistics borrow a histogram (see ``_derived``)."""
    raw, _ = read_toml(str(path), BaseRatesError)
    classes = raw.get("sales_cagr_3y", [])
    if not isinstance(classes, list):
        raise BaseRatesError(f"{path}: key 'sales_cagr_3y': expected an array of tables")
    out = {k: v for k, v in raw.items() if k != "sales_cagr_3y"}
    parsed = [_reference_class(path, i, e) for i, e in enumerate(classes)]
    full = [c for c in parsed if isinstance(c, ReferenceClass)]
    out["sales_cagr_3y"] = [c if isinstance(c, ReferenceClass) else _derived(path, c, full)
                            for c in parsed]
    return out


def reference_class(rates: dict, spec: OutsideViewSpec, path="base rates") -> ReferenceClass:
    """The narrowest class of ``spec.by`` whose ``[lower, upper)`` holds the company's value."""
    holders = [c for c in rates["sales_cagr_3y"]
               if c.by == spec.by and c.lower <= spec.value < c.upper]
    if not holders:
        raise BaseRatesError(f"{path}: key 'sales_cagr_3y': expected a class by {spec.by} "
                             f"holding {spec.value:g} (the priors' [outside_view])")
    return min(holders, key=lambda c: c.upper - c.lower)


def stall_probability(rates: dict, name: str, path="base rates") -> float:
    """The annual probability of a growth stall from the ``[[stall]]`` entry ``name``.

    Either ``annual_probability``, or ``probability`` that an ``n``-year CAGR (of the class
    ``of``, a ``sales_cagr_<n>y`` entry) is below ``below``: a negative n-year CAGR is read as a
    stall somewhere in those n years, so the annual hazard is ``1 - (1 - p)^(1/n)``.
    """
    for entry in rates.get("stall", []):
        if entry.get("name") != name:
            continue
        p = entry.get("annual_probability", entry.get("probability"))
        if not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise BaseRatesError(f"{path}: key 'stall.{name}.probability': expected a "
                                 f"probability in [0, 1)")
        if "annual_probability" in entry:
            return float(p)
        years = next((int(kind[len("sales_cagr_"):-1]) for kind in rates
                      if kind.startswith("sales_cagr_") and kind.endswith("y")
                      and any(isinstance(c, dict) and c.get("name") == entry.get("of")
                              or getattr(c, "name", None) == entry.get("of")
                              for c in rates[kind])), None)
        if years is None:
            raise BaseRatesError(f"{path}: key 'stall.{name}.of': expected the name of a "
                                 f"sales_cagr_<n>y class")
        return float(1 - (1 - p) ** (1 / years))
    raise BaseRatesError(f"{path}: key 'stall': expected an entry named {name!r}")


def growth_settings(spec: PriorSpec, log=None) -> GrowthSettings:
    """The simulation's growth settings from a priors file (its base rates read here).

    A missing base-rates file is a one-line ``PriorsError`` (a forecast whose outside view
    silently went off would differ from the same company's elsewhere).
    """
    gp, mm = spec.growth_process, spec.margin_mix
    base = GrowthSettings(df=gp.get("df"), factor_loading=gp.get("factor_loading"),
                          mix_share=mm.get("extra_share_per_year"),
                          hardware_margin=mm.get("hardware_margin"))
    ov = spec.outside_view
    if ov is None:
        return base
    from dataclasses import replace
    if not Path(ov.base_rates).is_file():
        from .priors import PriorsError
        raise PriorsError(f"{spec.path}: key 'outside_view.base_rates': expected a base-rates "
                          f"file, found none at {ov.base_rates} (nor beside the shipped "
                          f"companies); copy it there or name it in the priors file")
    rates = load_base_rates(ov.base_rates)
    ref = reference_class(rates, ov, ov.base_rates)
    p_stall = stall_probability(rates, ov.stall, ov.base_rates) if ov.stall else 0.0
    return replace(base, reference=ref, weight=ov.weight,
                   stall_probability=p_stall, stall_drop=ov.stall_drop)


def draw_prior(prior: Prior | None, rng: np.random.Generator, shape, default: float) -> np.ndarray:
    """``shape`` draws of ``prior`` (``default`` everywhere when there is none)."""
    if prior is None:
        return np.full(shape, float(default))
    return np.asarray(prior.draw(shape, rng), float).reshape(shape)


@dataclass(frozen=True)
class FirstYearFact:
    """A partial-year fact as the outside view reads it: log growth ``log_growth`` observed over
    ``fraction`` of the first forecast year with noise ``sd`` (on the log scale), if the company
    grew at the path's rate ``m`` a year: ``log_growth ~ Normal(fraction * m, sd)``."""

    name: str
    fraction: float
    log_growth: float
    sd: float


def first_year_facts(company, obs) -> tuple[FirstYearFact, ...]:
    """The company's partial-year facts that speak to its revenue growth under the outside view.

    The class knows the company's revenue, not its segments, so an outside path moves every
    driver at the company's rate: a unit count at ``fraction`` of the year grew by ``fraction x
    m`` (its noise as in the model); a segment's revenue share is then last year's whatever
    ``m`` is, so share facts say nothing here (the inside view, whose mix every path keeps,
    reads them). ``obs``: ``model.Observations`` (the facts' values and last unit counts).
    """
    out = []
    for o in company.observations:
        if o.quantity == "units":
            out.append(FirstYearFact(o.name, float(o.fraction),
                                     float(np.log(obs.facts[o.name] / obs.units_last[o.segment])),
                                     float(o.sd)))
    return tuple(out)


#: Equal-mass points of the class on which it is conditioned on the facts (a grid of 4,096:
#: quantiles to ~1e-4 in the tails; finer than any Monte Carlo error of a run)
CONDITIONING_GRID = 4096


def class_given_facts(ref: ReferenceClass, facts, u) -> np.ndarray:
    """Quantile function of the class's CAGR conditioned on first-year facts, at ``u``.

    An outside path grows at ``m = log(1 + c)`` every year, ``c`` its CAGR: a priori ``c`` is
    the class's; a fact is the likelihood ``Normal(log_growth; fraction m, sd)``. The posterior
    is one-dimensional and the same for every path, so it is computed exactly on equal-mass
    points of the class (``CONDITIONING_GRID``) and inverted by interpolation; without facts
    it is the class itself (``ReferenceClass.ppf``).
    """
    if not facts:
        return ref.ppf(u)
    n = CONDITIONING_GRID
    c = ref.ppf((np.arange(n) + 0.5) / n)
    m = np.log1p(c)
    loglik = sum(-0.5 * ((f.log_growth - f.fraction * m) / f.sd) ** 2 for f in facts)
    w = np.exp(loglik - loglik.max())
    w = w / w.sum()
    cum = np.cumsum(w) - w / 2
    return np.interp(np.asarray(u, float), cum, c)


def outside_scale(total: np.ndarray, total_last: float, settings: GrowthSettings,
                  rng: np.random.Generator, facts=()) -> tuple[np.ndarray, np.ndarray]:
    """Per path and year, the factor taking the inside view's revenue to the path's blended
    revenue (1 on inside paths), and the outside indicator per path.

    ``total``: company revenue on the inside paths, shape (chain, draw, path, year); ``facts``:
    ``first_year_facts`` (ignored for the prior predictive, ``settings.first_year_known``
    False). The random numbers drawn do not depend on the weight (the inside-only forecast
    shares them).
    """
    shape = total.shape[:-1]
    u = rng.uniform(size=shape)
    v = rng.uniform(size=shape)
    outside = u < settings.weight
    if settings.reference is None or not outside.any():
        return np.ones_like(total), outside
    known = facts if settings.first_year_known else ()
    m = np.log1p(class_given_facts(settings.reference, known, v))
    k = np.arange(1, total.shape[-1] + 1)
    target = total_last * np.exp(m[..., None] * k)
    scale = np.where(outside[..., None], target / total, 1.0)
    return scale, outside


# --- statistics -----------------------------------------------------------------------------------
def cagr_3y(revenue: xr.DataArray, revenue_start: float) -> xr.DataArray:
    """The 3-year sales CAGR from the last history year (``revenue_start``) over the first
    ``CAGR_YEARS`` forecast years (fewer when the forecast is shorter)."""
    n = min(CAGR_YEARS, revenue.sizes["year"])
    end = revenue.isel(year=n - 1, drop=True)
    return ((end / revenue_start) ** (1.0 / n) - 1.0).assign_attrs(years=n)


def cagr_table(cagr: xr.DataArray) -> dict:
    """P(CAGR < 0), P(CAGR < 10%) with MCSE, and the quartiles of simulated CAGRs."""
    x = cagr.transpose(*[d for d in SAMPLE_DIMS if d in cagr.dims]).values
    row = {}
    for k, t in THRESHOLDS.items():
        p, se, _ = probability(x < t)
        row[k] = {"p": round(float(p), 4), "mcse": round(float(se), 4)}
    row["quartiles"] = [round(float(mcse_quantile(x, q)[0]), 4) for q in QUARTILES]
    return row


def summary_block(spec: PriorSpec, settings: GrowthSettings, company, final: xr.Dataset,
                  inside: xr.Dataset | None, extra: dict | None = None) -> dict | None:
    """The summary's ``outside_view`` block (None without an ``[outside_view]`` section).

    ``final`` / ``inside``: predictive draws (chain, draw, path, year) with ``revenue``, of the
    blended forecast and of the inside view alone (weight 0, same posterior).
    """
    ov = spec.outside_view
    if ov is None:
        return None
    start = company.last_history_revenue()
    years = [str(y) for y in final["year"].values[:CAGR_YEARS]]
    block = {
        "reference_class": {
            "description": ov.reference_class, "by": ov.by, "value": ov.value,
            "starting_sales_usd": ov.starting_sales_usd, "prior_growth": ov.prior_growth,
            "source": ov.source},
        "weight": ov.weight if settings.reference is not None else 0.0,
        "weight_configured": ov.weight, "weight_source": ov.weight_source,
        "period": f"{company.last_history_year}-{years[-1]}",
        "note": settings.note,
    }
    if settings.reference is not None:
        ref = settings.reference
        block["reference_class"].update(name=ref.name, lower=ref.lower, upper=ref.upper,
                                        base_rates_source=ref.source)
        block["stall_probability"] = settings.stall_probability
        rows = {"reference_class": ref.table()}
    else:
        rows = {}
    if inside is not None:
        rows["inside_view"] = cagr_table(cagr_3y(inside["revenue"], start))
    rows["final"] = cagr_table(cagr_3y(final["revenue"], start))
    block["cagr_3y"] = rows
    block.update(extra or {})
    return block


def log_table(block: dict | None, log) -> None:
    """The outside-view table, one line per row, to ``log``."""
    if not block:
        return
    rc = block["reference_class"]
    log(f"outside view: reference class {rc.get('name', rc['description'])} "
        f"({rc['by']} = {rc['value']:g}), weight {block['weight']:g}"
        + (f" ({block['note']})" if block.get("note") else ""))
    for name, row in block["cagr_3y"].items():
        q = row["quartiles"]
        log(f"  {name:<16} P(CAGR<0) {row['p_cagr_below_0']['p']:.3f} "
            f"± {row['p_cagr_below_0']['mcse']:.3f}  P(CAGR<10%) "
            f"{row['p_cagr_below_10pct']['p']:.3f} ± {row['p_cagr_below_10pct']['mcse']:.3f}  "
            f"quartiles {q[0]:+.1%} / {q[1]:+.1%} / {q[2]:+.1%}")
