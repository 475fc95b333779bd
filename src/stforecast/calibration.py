"""Self-checks of the driver model: data simulated from the model itself, then refitted.

* ``simulate_observations(params, template, spec, rng)``: the model's generative process in
  numpy, producing a history (FY19-FY20 segment growth, FY19-FY20 ratios given FY18, the 1H21
  facts) from known parameter values. It mirrors ``model.build_model`` term by term.
* ``parameter_recovery``: known parameters -> data -> posterior; do the 90% intervals cover?
* ``sbc``: simulation-based calibration (Talts et al. 2018): for prior draws, the rank of the
  true value among thinned posterior draws must be uniform.

Fits re-use one nutpie compilation with new ``pm.Data`` values (``with_data``), so hundreds of
fits are affordable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from .model import COMPOSITE, CENTRED_FY21, DIRECT, SEGMENT_DRIVERS, Observations, \
    build_model, inverse_transform, observed_data_values
from .priors import GROWTH_DRIVERS, RATIO_DRIVERS, PriorSpec


def _stationary(phi, sigma):
    return sigma / np.sqrt(1 - phi**2)


def simulate_observations(p: dict[str, float], template: Observations, spec: PriorSpec,
                          rng: np.random.Generator) -> Observations:
    """A history drawn from the model at parameters ``p`` (name -> value, as in the posterior).

    ``template`` supplies what the model conditions on and does not generate: FY20 revenue by
    segment, FY20 counts and the FY18 ratio values.
    """
    company = p["company_growth_effect"]
    mu = {k: p[f"{k}_long_run"] + company for k in GROWTH_DRIVERS}
    phi = {k: p[f"{k}_persistence"] for k in GROWTH_DRIVERS}
    sig = {k: p[f"{k}_volatility"] for k in GROWTH_DRIVERS}

    def step(k, previous, e):
        return mu[k] + phi[k] * (previous - mu[k]) + sig[k] * e

    growth, g21 = {}, {}
    for segment, (latent, implied) in COMPOSITE.items():
        z = np.asarray(p[f"{latent}_innovation"])
        l19 = mu[latent] + _stationary(phi[latent], sig[latent]) * z[0]
        l20 = step(latent, l19, z[1])
        if latent in CENTRED_FY21:
            g21[latent] = p[f"{latent}_fy21"]
        else:
            g21[latent] = step(latent, l20, p[f"{latent}_innovation_fy21"])
        i19 = mu[implied] + _stationary(phi[implied], sig[implied]) * rng.standard_normal()
        i20 = step(implied, i19, rng.standard_normal())
        g21[implied] = step(implied, i20, p[f"{implied}_innovation"])
        growth[segment] = np.array([l19 + i19, l20 + i20])
    for segment, k in DIRECT.items():
        y19 = mu[k] + _stationary(phi[k], sig[k]) * rng.standard_normal()
        y20 = step(k, y19, rng.standard_normal())
        g21[k] = step(k, y20, p[f"{k}_innovation"])
        growth[segment] = np.array([y19, y20])

    cities = np.exp(np.log(template.cities_fy20) + 0.5 * g21["smart_city_cities"]
                    + spec.observation["city_count_noise"] * rng.standard_normal())
    revenue21 = {s: template.revenue_fy20[s] * np.exp(sum(g21[d] for d in drivers))
                 for s, drivers in SEGMENT_DRIVERS.items()}
    share = revenue21["smart_city"] / sum(revenue21.values())
    logit = np.log(share / (1 - share)) + spec.observation["smart_city_share_noise"] \
        * rng.standard_normal()

    ratios = {}
    for name in RATIO_DRIVERS:
        level = p[f"{name}_long_run"]
        L = np.log(level / (1 - level)) if RATIO_DRIVERS[name][0] == "logit" else np.log(level)
        rho, s = p[f"{name}_persistence"], p[f"{name}_volatility"]
        x = [template.ratios[name][0]]
        for _ in range(2):
            x.append(L + rho * (x[-1] - L) + s * rng.standard_normal())
        ratios[name] = np.array(x)
    return replace(template, segment_growth=growth, ratios=ratios, cities_1h21=float(cities),
                   smart_city_share_1h21=float(1 / (1 + np.exp(-logit))))


@dataclass
class Refitter:
    """One compiled model, refitted on new observations."""

    spec: PriorSpec
    template: Observations
    draws: int = 400
    tune: int = 400
    chains: int = 2

    def __post_init__(self):
        import nutpie
        self.model = build_model(self.spec, self.template)
        self.compiled = nutpie.compile_pymc_model(self.model)
        self.free = [rv.name for rv in self.model.free_RVs]

    def prior_draws(self, n: int, seed: int) -> list[dict]:
        import pymc as pm
        with self.model:
            prior = pm.sample_prior_predictive(draws=n, random_seed=seed, var_names=self.free)
        ds = prior["prior"].to_dataset().isel(chain=0)
        return [{k: ds[k].isel(draw=i).values for k in self.free} for i in range(n)]

    def fit(self, obs: Observations, seed: int):
        import nutpie
        compiled = self.compiled.with_data(**observed_data_values(obs))
        idata = nutpie.sample(compiled, draws=self.draws, tune=self.tune, chains=self.chains,
                              cores=min(self.chains, 2), target_accept=0.99, seed=seed,
                              progress_bar=False)
        return idata["posterior"].to_dataset(), int(idata["sample_stats"]["diverging"].sum())


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
    """Coverage of central ``level`` intervals over all parameters of ``n_datasets`` fits."""
    rng = np.random.default_rng(seed)
    truths = refitter.prior_draws(n_datasets, seed)
    covered, total, divergences = 0, 0, 0
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    for i, truth in enumerate(truths):
        obs = simulate_observations(truth, refitter.template, refitter.spec, rng)
        post, div = refitter.fit(obs, seed + i)
        divergences += div
        for label in _scalar_names(truth):
            draws = _component(post, label)
            a, b = np.quantile(draws, [lo, hi])
            covered += a <= _true(truth, label) <= b
            total += 1
    return covered / total, total, divergences


def sbc(refitter: Refitter, n_fits: int, seed: int, thin_to: int = 99,
        labels: list[str] | None = None):
    """Rank statistics of the true values among ``thin_to`` thinned posterior draws.

    Returns (ranks: dict label -> int array, p_values: dict label -> chi-square p-value of
    uniformity over ``thin_to + 1`` ranks pooled into bins).
    """
    rng = np.random.default_rng(seed)
    truths = refitter.prior_draws(n_fits, seed)
    labels = labels or _scalar_names(truths[0])
    ranks = {label: [] for label in labels}
    for i, truth in enumerate(truths):
        obs = simulate_observations(truth, refitter.template, refitter.spec, rng)
        post, _ = refitter.fit(obs, seed + 1000 + i)
        for label in labels:
            draws = _component(post, label)
            keep = draws[np.linspace(0, draws.size - 1, thin_to).round().astype(int)]
            ranks[label].append(int((keep < _true(truth, label)).sum()))
    return {k: np.array(v) for k, v in ranks.items()}


def rank_uniformity_pvalue(ranks: np.ndarray, n_ranks: int, bins: int) -> float:
    """Chi-square test that ranks in 0..n_ranks-1 are uniform, pooled into ``bins`` bins."""
    counts = np.bincount((ranks * bins) // n_ranks, minlength=bins)
    return float(stats.chisquare(counts).pvalue)
