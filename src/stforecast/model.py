"""The PyMC driver model: priors (``PriorSpec``) conditioned on FY18A-FY20A and the 1H21 facts.

Processes (all on log or logit scales, t = FY19, FY20, FY21 for growth; FY18-FY20 for ratios):

* growth drivers: ``g_t = mu + phi (g_{t-1} - mu) + sigma e_t`` with ``mu = long_run +
  company_growth_effect`` (the shared effect pools the segments), ``g_FY19`` from the stationary
  distribution. Smart Business revenue growth = customers growth + revenue-per-customer growth;
  Smart City = cities growth + revenue-per-city growth. Only the sums are observed for FY19-FY20,
  so the customer (city) path is latent (non-centred) and the per-customer (per-city) growth is
  the observed sum minus it, entering through its own AR(1) density -- an exact likelihood, no
  artificial observation noise. Smart Life and Smart Auto growth are observed directly.
* FY21 growth innovations are latent for every growth driver: the 1H21 city count (119) and the
  1H21 Smart City revenue share (47.6%) observe them. FY21 city growth, which the 1H21 count
  pins down, is centred (``smart_city_cities_fy21``); the others are non-centred.
* ratio drivers (gross margin, opex ratios, working-capital days, capex and D&A ratios):
  ``x_t = L + rho (x_{t-1} - L) + s e_t`` on the log (logit) scale around the long-run level ``L``,
  observed for FY18-FY20; the likelihood is conditional on FY18 (the usual conditional AR
  likelihood: a stationary FY18 term couples a high persistence with a huge initial variance
  and caused divergences).
* the EV/sales multiple: its prior only (the history says nothing about it).

Names: ``<driver>_long_run``, ``<driver>_persistence``, ``<driver>_volatility`` for every process;
``<driver>_growth_fy21`` (deterministic) for growth drivers. All observations are ``pm.Data`` so a
compiled model can be re-used with simulated data (parameter recovery, SBC).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .data import Report, historical_ratios
from .priors import GROWTH_DRIVERS, RATIO_DRIVERS, Prior, PriorSpec

#: Observed segment growth series and the two latent components each is the sum of.
COMPOSITE = {
    "smart_business": ("smart_business_customers", "smart_business_revenue_per_customer"),
    "smart_city": ("smart_city_cities", "smart_city_revenue_per_city"),
}
DIRECT = {"smart_life": "smart_life_revenue", "smart_auto": "smart_auto_revenue"}
#: FY21 growth the 1H21 facts pin down closely: centred parametrisation (non-centred funnels).
CENTRED_FY21 = ("smart_city_cities",)
SEGMENT_DRIVERS = {**{s: c for s, c in COMPOSITE.items()}, **{s: (d,) for s, d in DIRECT.items()}}


@dataclass(frozen=True)
class Observations:
    """Everything the model conditions on, on the model's scales.

    ``segment_growth``: log revenue growth FY19, FY20 per segment. ``ratios``: FY18-FY20 values of
    each ratio driver on its transformed scale. ``revenue_fy20``: segment revenue FY20 (RMB mn).
    ``cities_fy20`` / ``cities_1h21``: counts; ``smart_city_share_1h21``: fraction.
    """

    segment_growth: dict[str, np.ndarray]
    ratios: dict[str, np.ndarray]
    revenue_fy20: dict[str, float]
    customers_fy20: float
    cities_fy20: float
    cities_1h21: float
    smart_city_share_1h21: float


def transform(name: str, x):
    """Natural units -> the process scale (log, or logit for gross margin)."""
    kind = RATIO_DRIVERS[name][0]
    return np.log(x / (1 - x)) if kind == "logit" else np.log(x)


def inverse_transform(name: str, y):
    kind = RATIO_DRIVERS[name][0]
    return 1 / (1 + np.exp(-y)) if kind == "logit" else np.exp(y)


def observations_from_report(report: Report) -> Observations:
    h = report.history
    growth = {s: np.diff(np.log(h[f"revenue_{s}"].values)) for s in SEGMENT_DRIVERS}
    ratios_nat = historical_ratios(h)
    ratios = {r: transform(r, ratios_nat[r].values) for r in RATIO_DRIVERS}
    f = report.facts
    return Observations(
        segment_growth=growth,
        ratios=ratios,
        revenue_fy20={s: float(h[f"revenue_{s}"].sel(year="FY20")) for s in SEGMENT_DRIVERS},
        customers_fy20=f["smart_business_customers_fy20"],
        cities_fy20=f["smart_city_cities_fy20"],
        cities_1h21=f["smart_city_cities_1h21"],
        smart_city_share_1h21=f["smart_city_share_1h21"],
    )


def prior_rv(prior: Prior, name: str):
    """A PyMC random variable from a validated ``Prior``."""
    p = prior.params
    match prior.dist:
        case "Normal":
            return pm.Normal(name, mu=p["mu"], sigma=p["sigma"])
        case "StudentT":
            return pm.StudentT(name, nu=p["nu"], mu=p["mu"], sigma=p["sigma"])
        case "LogNormal":
            return pm.LogNormal(name, mu=p["mu"], sigma=p["sigma"])
        case "Gamma":
            return pm.Gamma(name, alpha=p["alpha"], beta=p["beta"])
        case "HalfNormal":
            return pm.HalfNormal(name, sigma=p["sigma"])
        case "Exponential":
            return pm.Exponential(name, lam=p["lam"])
        case "Beta":
            return pm.Beta(name, alpha=p["alpha"], beta=p["beta"])
        case "LogitNormal":
            return pm.LogitNormal(name, mu=p["mu"], sigma=p["sigma"])
        case "Uniform":
            return pm.Uniform(name, lower=p["lower"], upper=p["upper"])
    raise ValueError(f"unsupported distribution {prior.dist}")


def _process_params(spec: PriorSpec, name: str):
    proc = spec.processes()[name]
    return (prior_rv(proc.long_run, f"{name}_long_run"),
            prior_rv(proc.persistence, f"{name}_persistence"),
            prior_rv(proc.volatility, f"{name}_volatility"))


def _ar_step(mu, phi, sigma, previous, innovation):
    return mu + phi * (previous - mu) + sigma * innovation


def _stationary_sd(phi, sigma):
    return sigma / pt.sqrt(1 - phi**2)


def build_model(spec: PriorSpec, obs: Observations) -> pm.Model:
    """The driver model conditioned on ``obs`` (see the module docstring)."""
    with pm.Model() as model:
        company = prior_rv(spec.pooling["company_growth_effect"], "company_growth_effect")
        growth = {}
        for name in GROWTH_DRIVERS:
            long_run, phi, sigma = _process_params(spec, name)
            growth[name] = (long_run + company, phi, sigma)
        g21 = {}
        for segment, (latent, implied) in COMPOSITE.items():
            y = pm.Data(f"{segment}_growth_observed", obs.segment_growth[segment])
            mu_l, phi_l, s_l = growth[latent]
            z = pm.Normal(f"{latent}_innovation", 0.0, 1.0, shape=2)
            g19 = mu_l + _stationary_sd(phi_l, s_l) * z[0]
            g20 = _ar_step(mu_l, phi_l, s_l, g19, z[1])
            if latent in CENTRED_FY21:
                g21[latent] = pm.Normal(f"{latent}_fy21", mu=_ar_step(mu_l, phi_l, s_l, g20, 0.0),
                                        sigma=s_l)
            else:
                z21 = pm.Normal(f"{latent}_innovation_fy21", 0.0, 1.0)
                g21[latent] = _ar_step(mu_l, phi_l, s_l, g20, z21)
            mu_i, phi_i, s_i = growth[implied]
            implied19 = y[0] - g19
            implied20 = y[1] - g20
            mean = pt.stack([g19 + mu_i, g20 + mu_i + phi_i * (implied19 - mu_i)])
            sd = pt.stack([_stationary_sd(phi_i, s_i), s_i])
            pm.Normal(f"{segment}_growth", mu=mean, sigma=sd, observed=y)
            z_i = pm.Normal(f"{implied}_innovation", 0.0, 1.0)
            g21[implied] = _ar_step(mu_i, phi_i, s_i, implied20, z_i)
        for segment, name in DIRECT.items():
            y = pm.Data(f"{segment}_growth_observed", obs.segment_growth[segment])
            mu, phi, s = growth[name]
            mean = pt.stack([mu, mu + phi * (y[0] - mu)])
            sd = pt.stack([_stationary_sd(phi, s), s])
            pm.Normal(f"{segment}_growth", mu=mean, sigma=sd, observed=y)
            z = pm.Normal(f"{name}_innovation", 0.0, 1.0)
            g21[name] = _ar_step(mu, phi, s, y[1], z)
        for name, value in g21.items():
            pm.Deterministic(f"{name}_growth_fy21", value)

        # 1H21 facts on FY21 growth.
        cities = pm.Data("smart_city_cities_1h21_observed", np.log(obs.cities_1h21))
        pm.Normal("smart_city_cities_1h21", mu=np.log(obs.cities_fy20)
                  + 0.5 * g21["smart_city_cities"], sigma=spec.observation["city_count_noise"],
                  observed=cities)
        revenue21 = {s: obs.revenue_fy20[s] * pt.exp(sum(g21[d] for d in drivers))
                     for s, drivers in SEGMENT_DRIVERS.items()}
        share = revenue21["smart_city"] / sum(revenue21.values())
        share_obs = pm.Data("smart_city_share_1h21_observed",
                            np.log(obs.smart_city_share_1h21 / (1 - obs.smart_city_share_1h21)))
        pm.Normal("smart_city_share_1h21", mu=pt.log(share / (1 - share)),
                  sigma=spec.observation["smart_city_share_noise"], observed=share_obs)

        for name in RATIO_DRIVERS:
            level, rho, s = _process_params(spec, name)
            L = pt.log(level / (1 - level)) if RATIO_DRIVERS[name][0] == "logit" else pt.log(level)
            x = pm.Data(f"{name}_observed", obs.ratios[name])
            pm.Normal(name, mu=L + rho * (x[:-1] - L), sigma=s, observed=x[1:])

        prior_rv(spec.valuation["ev_sales_multiple"], "ev_sales_multiple")
    return model


def observed_data_values(obs: Observations) -> dict[str, np.ndarray]:
    """The ``pm.Data`` values of the model for ``obs`` (for ``pm.set_data`` / nutpie)."""
    values = {f"{s}_growth_observed": np.asarray(obs.segment_growth[s], float)
              for s in SEGMENT_DRIVERS}
    values["smart_city_cities_1h21_observed"] = np.asarray(np.log(obs.cities_1h21))
    p = obs.smart_city_share_1h21
    values["smart_city_share_1h21_observed"] = np.asarray(np.log(p / (1 - p)))
    values.update({f"{r}_observed": np.asarray(obs.ratios[r], float) for r in RATIO_DRIVERS})
    return values
