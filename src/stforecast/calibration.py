"""Self-checks of the driver model: data simulated from the model itself, then refitted.

* ``simulate_observations(params, template, spec, company, rng)``: the model's generative
  process in numpy, producing a history (each segment's log revenue growth over the history
  years after the first, every ratio driver's path given its first history year, the company's
  partial-year observations) from known parameter values. It walks the company's segments and
  observations in the order ``model.build_model`` does and uses the same processes
  (``stforecast.processes``), so the two are one generative story written for two backends.
* ``parameter_recovery``: known parameters -> data -> posterior; do the 90% intervals cover?
* ``sbc``: simulation-based calibration (Talts et al. 2018): for prior draws, the rank of the
  true value among thinned posterior draws must be uniform.

Fits re-use one compiled model with new observations (``stforecast.compiled``, the observations
kept as data: one entry on disk serves every process and every simulated history of the
company's shape), so hundreds of fits are affordable. It is loaded or compiled at the first fit,
not before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from scipy import stats

from .company import Company
from .model import Observations, build_model, centred_drivers, observed_data_values
from .priors import PriorSpec
from .processes import RATIO_DRIVERS, ar_step, logit, stationary_sd, to_scale


def simulate_observations(p: dict[str, float], template: Observations, spec: PriorSpec,
                          company: Company, rng: np.random.Generator) -> Observations:
    """A history drawn from the model at parameters ``p`` (name -> value, as in the posterior).

    ``template`` supplies what the model conditions on and does not generate: the last history
    year's revenue and unit counts, and the first history year's ratio values. ``spec``: the
    priors ``p`` was drawn under; every process it declares must have its parameters in ``p``.
    ``rng`` draws every innovation the model integrates out (the implied per-unit and direct
    growth paths before the forecast, the observation noise, the ratio innovations).
    """
    missing = [f"{name}_{part}" for name in spec.processes()
               for part in ("long_run", "persistence", "volatility") if f"{name}_{part}" not in p]
    if missing:
        raise ValueError(f"parameters: expected every process's parameters, missing {missing[0]}")
    pooled = p["company_growth_effect"]
    growth = {name: (p[f"{name}_long_run"] + pooled, p[f"{name}_persistence"],
                     p[f"{name}_volatility"]) for name in company.growth_drivers()}

    def path(name: str, innovations) -> list:
        """An AR(1) growth path from the stationary distribution, one value per innovation."""
        mu, phi, sigma = growth[name]
        out = [mu + stationary_sd(phi, sigma) * innovations[0]]
        for e in innovations[1:]:
            out.append(ar_step(mu, phi, sigma, out[-1], e))
        return out

    def first(name: str, previous, innovation):
        mu, phi, sigma = growth[name]
        return ar_step(mu, phi, sigma, previous, innovation)

    centred = centred_drivers(company)
    segment_growth, g1 = {}, {}
    for segment in (s for s in company.segments if s.kind == "units"):
        latent, implied = segment.growth_drivers
        n = len(template.segment_growth[segment.name])
        latent_path = path(latent, np.asarray(p[f"{latent}_innovation"], float))
        if latent in centred:
            g1[latent] = p[f"{latent}_first_growth"]
        else:
            g1[latent] = first(latent, latent_path[-1], p[f"{latent}_innovation_first"])
        implied_path = path(implied, rng.standard_normal(n))
        g1[implied] = first(implied, implied_path[-1], p[f"{implied}_innovation"])
        segment_growth[segment.name] = np.asarray(latent_path) + np.asarray(implied_path)
    for segment in (s for s in company.segments if s.kind == "direct"):
        (name,) = segment.growth_drivers
        n = len(template.segment_growth[segment.name])
        y = path(name, rng.standard_normal(n))
        g1[name] = first(name, y[-1], p[f"{name}_innovation"])
        segment_growth[segment.name] = np.asarray(y)

    revenue1 = {s.name: template.revenue_last[s.name] * np.exp(sum(g1[d] for d in s.growth_drivers))
                for s in company.segments}
    facts = {}
    for o in company.observations:
        if o.quantity == "units":
            driver = company.segment(o.segment).unit_driver
            log_units = (np.log(template.units_last[o.segment]) + o.fraction * g1[driver]
                         + o.sd * rng.standard_normal())
            facts[o.name] = float(np.exp(log_units))
        else:
            share = revenue1[o.segment] / sum(revenue1.values())
            facts[o.name] = float(1 / (1 + np.exp(-(logit(share) + o.sd * rng.standard_normal()))))

    ratios = {}
    for name in RATIO_DRIVERS:
        level = to_scale(name, p[f"{name}_long_run"])
        rho, s = p[f"{name}_persistence"], p[f"{name}_volatility"]
        x = [template.ratios[name][0]]
        for _ in range(len(template.ratios[name]) - 1):
            x.append(ar_step(level, rho, s, x[-1], rng.standard_normal()))
        ratios[name] = np.asarray(x, float)
    return replace(template, segment_growth=segment_growth, ratios=ratios, facts=facts)


@dataclass
class Refitter:
    """One model for ``company``, refitted on new observations (compiled at the first fit)."""

    spec: PriorSpec
    template: Observations
    company: Company
    draws: int = 400
    tune: int = 400
    chains: int = 2

    def __post_init__(self):
        self.model = build_model(self.spec, self.template, self.company)
        self.free = [rv.name for rv in self.model.free_RVs]

    @cached_property
    def compiled(self):
        """nutpie's model of ``model`` (``stforecast.compiled``, its observations as data),
        loaded from the disk cache or compiled and stored there."""
        from . import compiled as C
        key = C.driver_key(self.company, self.template, self.spec, observations_as_data=True)
        entry = C.load_or_build(self.model, key, observations_as_data=True)
        return entry, C.nutpie_model(entry, self.model)

    def prior_draws(self, n: int, seed: int) -> list[dict]:
        """``n`` draws of every free parameter from the prior, name -> value."""
        import pymc as pm
        with self.model:
            prior = pm.sample_prior_predictive(draws=n, random_seed=seed, var_names=self.free,
                                               compile_kwargs={"mode": "FAST_COMPILE"})
        ds = prior["prior"].to_dataset().isel(chain=0)
        return [{k: ds[k].isel(draw=i).values for k in self.free} for i in range(n)]

    def sample(self, obs: Observations, seed: int, draws: int | None = None,
               tune: int | None = None, chains: int | None = None):
        """The nutpie DataTree of a fit on ``obs`` (defaults: the refitter's settings)."""
        import nutpie

        from .compiled import with_data
        chains = chains or self.chains
        entry, compiled = self.compiled
        compiled = with_data(compiled, entry, self.model, observed_data_values(obs, self.company))
        return nutpie.sample(compiled, draws=draws or self.draws, tune=tune or self.tune,
                             chains=chains, cores=min(chains, 2), target_accept=0.99, seed=seed,
                             progress_bar=False)

    def fit(self, obs: Observations, seed: int):
        """(posterior Dataset, number of divergent transitions) of a fit on ``obs``."""
        idata = self.sample(obs, seed)
        return idata["posterior"].to_dataset(), int(idata["sample_stats"]["diverging"].sum())

    def simulate(self, truth: dict, rng: np.random.Generator) -> Observations:
        """Data drawn from the model at ``truth`` (see ``simulate_observations``)."""
        return simulate_observations(truth, self.template, self.spec, self.company, rng)


def _scalar_names(draw: dict) -> list[str]:
    """Parameter components as (name, index) pairs flattened to labels ``name[i]``."""
    labels = []
    for k, v in draw.items():
        v = np.asarray(v)
        labels += [k] if v.ndim == 0 else [f"{k}[{i}]" for i in range(v.size)]
    return labels


def _component(ds, label: str) -> np.ndarray:
    name, _, idx = label.partition("[")
    da = ds[name]
    if idx:
        da = da.isel({d: int(idx[:-1]) for d in da.dims if d not in ("chain", "draw")})
    return da.values.reshape(-1)


def _true(draw: dict, label: str) -> float:
    name, _, idx = label.partition("[")
    v = np.asarray(draw[name])
    return float(v.reshape(-1)[int(idx[:-1])] if idx else v)


def parameter_recovery(refitter: Refitter, n_datasets: int, seed: int, level: float = 0.9):
    """Coverage of central ``level`` intervals over all parameters of ``n_datasets`` fits.

    Returns (coverage, number of parameter components checked, divergent transitions).
    """
    rng = np.random.default_rng(seed)
    truths = refitter.prior_draws(n_datasets, seed)
    covered, total, divergences = 0, 0, 0
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    for i, truth in enumerate(truths):
        post, div = refitter.fit(refitter.simulate(truth, rng), seed + i)
        divergences += div
        for label in _scalar_names(truth):
            a, b = np.quantile(_component(post, label), [lo, hi])
            covered += a <= _true(truth, label) <= b
            total += 1
    return covered / total, total, divergences


def sbc(refitter: Refitter, n_fits: int, seed: int, thin_to: int = 99,
        labels: list[str] | None = None) -> dict[str, np.ndarray]:
    """Rank statistics of the true values among ``thin_to`` thinned posterior draws.

    Returns label -> int array of ranks in ``0..thin_to`` (one per fit); test their
    uniformity with ``rank_uniformity_pvalue``.
    """
    rng = np.random.default_rng(seed)
    truths = refitter.prior_draws(n_fits, seed)
    labels = labels or _scalar_names(truths[0])
    ranks = {label: [] for label in labels}
    for i, truth in enumerate(truths):
        post, _ = refitter.fit(refitter.simulate(truth, rng), seed + 1000 + i)
        for label in labels:
            draws = _component(post, label)
            keep = draws[np.linspace(0, draws.size - 1, thin_to).round().astype(int)]
            ranks[label].append(int((keep < _true(truth, label)).sum()))
    return {k: np.array(v) for k, v in ranks.items()}


def rank_uniformity_pvalue(ranks: np.ndarray, n_ranks: int, bins: int) -> float:
    """Chi-square test that ranks in 0..n_ranks-1 are uniform, pooled into ``bins`` bins."""
    counts = np.bincount((ranks * bins) // n_ranks, minlength=bins)
    return float(stats.chisquare(counts).pvalue)
