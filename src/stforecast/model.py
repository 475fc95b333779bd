"""The PyMC driver model: priors (``PriorSpec``) conditioned on a company's history and facts.

The company (``stforecast.company``) says which processes exist; the processes themselves are
``stforecast.processes``. On log or logit scales, over the history years after the first for
growth and all history years for ratios:

* growth drivers: ``g_t = mu + phi (g_{t-1} - mu) + sigma e_t`` with ``mu = long_run +
  company_growth_effect`` (the shared effect pools the segments), the first observed growth from
  the stationary distribution. A ``direct`` segment's revenue growth is its driver's growth. A
  ``units`` segment's revenue growth is units growth + revenue-per-unit growth: only the sum is
  observed, so the units path is latent (non-centred) and the per-unit growth is the observed
  sum minus it, entering through its own AR(1) density -- an exact likelihood, no artificial
  observation noise.
* first-forecast-year growth innovations are latent for every growth driver; the company's
  partial-year observations (a unit count part-way through the year, a segment's revenue share)
  observe them. A units driver whose count is observed is centred (``<driver>_first_growth``:
  the observation pins it down, and a non-centred one funnels); the others are non-centred.
* ratio drivers (gross margin, opex ratios, working-capital days, capex and D&A ratios):
  ``x_t = L + rho (x_{t-1} - L) + s e_t`` around the long-run level ``L``, observed for every
  history year; the likelihood is conditional on the first year (a stationary first-year term
  couples a high persistence with a huge initial variance and caused divergences).
* the EV/sales multiple: its prior only (the history says nothing about it).

Names: ``<driver>_long_run``, ``<driver>_persistence``, ``<driver>_volatility`` for every
process; ``first_year_growth`` (deterministic, dim ``growth_driver``, with the first forecast
year as its ``year`` coordinate). All observations are ``pm.Data`` so a compiled model can be
re-used with simulated data (parameter recovery, SBC), and so are the priors' parameters (one
vector, ``prior_values``), so that a compiled model takes a change of a prior's value
(``stforecast.compiled``).
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from .company import Company
from .observations import Observations, observations_from_company  # noqa: F401 (re-exported)
from .priors import FAMILIES, Prior, PriorSpec
from .processes import RATIO_DRIVERS, ar_step, logit, stationary_sd, to_scale


def prior_rv(prior: Prior, name: str, values: PriorValues):
    """A PyMC random variable from a validated ``Prior``, its parameters read from the model's
    prior-values vector (``PriorValues``), so that one compiled model serves any value of them."""
    if prior.dist not in _PYMC:
        raise ValueError(f"unsupported distribution {prior.dist}")
    return _PYMC[prior.dist](name, **{k: values.parameter(name, k)
                                      for k in FAMILIES[prior.dist][0]})


#: PyMC's class of each family of ``priors.FAMILIES`` (parameters by the same names).
_PYMC = {"Normal": pm.Normal, "StudentT": pm.StudentT, "LogNormal": pm.LogNormal,
         "Gamma": pm.Gamma, "HalfNormal": pm.HalfNormal, "Exponential": pm.Exponential,
         "Beta": pm.Beta, "LogitNormal": pm.LogitNormal, "Uniform": pm.Uniform}

#: Name of the driver model's data vector of prior parameters (``PriorValues``).
PRIOR_VALUES = "prior_values"


def named_priors(spec: PriorSpec) -> dict[str, Prior]:
    """The driver model's priors by the name of their random variable, in a fixed order."""
    priors = model_priors(spec)
    named = {}
    for name, proc in priors["processes"].items():
        named[f"{name}_long_run"] = proc.long_run
        named[f"{name}_persistence"] = proc.persistence
        named[f"{name}_volatility"] = proc.volatility
    named["company_growth_effect"] = priors["company_growth_effect"]
    named["ev_sales_multiple"] = priors["ev_sales_multiple"]
    return named


def prior_layout(spec: PriorSpec) -> tuple[tuple[str, str, str], ...]:
    """``(variable, family, parameter)`` of every entry of the prior-values vector: the model's
    structure as far as its priors go (their values excluded), for the compiled model's key."""
    return tuple((name, prior.dist, k) for name, prior in named_priors(spec).items()
                 for k in FAMILIES[prior.dist][0])


def prior_value_vector(spec: PriorSpec) -> np.ndarray:
    """The values of ``prior_layout(spec)``'s entries (float64), the model's ``prior_values``."""
    return np.array([float(prior.params[k]) for prior in named_priors(spec).values()
                     for k in FAMILIES[prior.dist][0]], dtype=float)


class PriorValues:
    """The driver model's prior parameters as one ``pm.Data`` vector (``PRIOR_VALUES``): a change
    of a prior's value changes data, not the graph, so a compiled model takes it
    (``stforecast.compiled``). Created inside the model context."""

    def __init__(self, spec: PriorSpec):
        layout = prior_layout(spec)
        self.index = {(v, k): i for i, (v, _, k) in enumerate(layout)}
        self.data = pm.Data(PRIOR_VALUES, prior_value_vector(spec))

    def parameter(self, variable: str, parameter: str):
        return self.data[self.index[(variable, parameter)]]


def label_first_year(posterior, company: Company):
    """``posterior`` with the first forecast year on ``first_year_growth`` (attribute
    ``year``): a coordinate of the company's data, not of the variable's name."""
    if "first_year_growth" in posterior:
        posterior["first_year_growth"].attrs["year"] = company.first_forecast_year
    return posterior


def model_priors(spec: PriorSpec) -> dict:
    """The priors the driver model reads, and nothing else: the growth and ratio processes
    (``processes``), the pooling prior (``company_growth_effect``) and the EV/sales prior
    (``ev_sales_multiple``). The fit depends on a priors file only through these (the fit
    cache's key, ``stforecast.run.driver_fit_key``), so a change of a prior the simulation alone
    reads (costs, funding, discounting, the outside view, the growth process's tails, the mix
    shift, the peer premium) re-simulates on the cached fit."""
    return {"processes": spec.processes(),
            "company_growth_effect": spec.pooling["company_growth_effect"],
            "ev_sales_multiple": spec.valuation["ev_sales_multiple"]}


def _process_params(priors: dict, name: str, values: PriorValues):
    proc = priors["processes"][name]
    return (prior_rv(proc.long_run, f"{name}_long_run", values),
            prior_rv(proc.persistence, f"{name}_persistence", values),
            prior_rv(proc.volatility, f"{name}_volatility", values))


def centred_drivers(company: Company) -> tuple[str, ...]:
    """Units drivers whose first-year growth an observed count pins down (centred)."""
    return tuple(company.segment(o.segment).unit_driver for o in company.observations
                 if o.quantity == "units")


def build_model(spec: PriorSpec, obs: Observations, company: Company) -> pm.Model:
    """The driver model conditioned on ``obs`` (see the module docstring)."""
    growth_names = list(company.growth_drivers())
    centred = centred_drivers(company)
    priors = model_priors(spec)
    with pm.Model(coords={"growth_driver": growth_names}) as model:
        values = PriorValues(spec)
        pooled = prior_rv(priors["company_growth_effect"], "company_growth_effect", values)
        growth = {}
        for name in growth_names:
            long_run, phi, sigma = _process_params(priors, name, values)
            growth[name] = (long_run + pooled, phi, sigma)
        g1 = {}
        for segment in (s for s in company.segments if s.kind == "units"):
            latent, implied = segment.growth_drivers
            y = pm.Data(f"{segment.name}_growth_observed", obs.segment_growth[segment.name])
            mu_l, phi_l, s_l = growth[latent]
            n = len(obs.segment_growth[segment.name])
            z = pm.Normal(f"{latent}_innovation", 0.0, 1.0, shape=n)
            path = [mu_l + stationary_sd(phi_l, s_l, pt) * z[0]]
            for t in range(1, n):
                path.append(ar_step(mu_l, phi_l, s_l, path[-1], z[t]))
            if latent in centred:
                g1[latent] = pm.Normal(f"{latent}_first_growth",
                                       mu=ar_step(mu_l, phi_l, s_l, path[-1], 0.0), sigma=s_l)
            else:
                z1 = pm.Normal(f"{latent}_innovation_first", 0.0, 1.0)
                g1[latent] = ar_step(mu_l, phi_l, s_l, path[-1], z1)
            mu_i, phi_i, s_i = growth[implied]
            implied_path = [y[t] - path[t] for t in range(n)]
            mean = pt.stack([path[0] + mu_i] + [path[t] + mu_i + phi_i * (implied_path[t - 1] - mu_i)
                                                for t in range(1, n)])
            sd = pt.stack([stationary_sd(phi_i, s_i, pt)] + [s_i] * (n - 1))
            pm.Normal(f"{segment.name}_growth", mu=mean, sigma=sd, observed=y)
            z_i = pm.Normal(f"{implied}_innovation", 0.0, 1.0)
            g1[implied] = ar_step(mu_i, phi_i, s_i, implied_path[-1], z_i)
        for segment in (s for s in company.segments if s.kind == "direct"):
            (name,) = segment.growth_drivers
            y = pm.Data(f"{segment.name}_growth_observed", obs.segment_growth[segment.name])
            mu, phi, s = growth[name]
            n = len(obs.segment_growth[segment.name])
            mean = pt.stack([mu] + [mu + phi * (y[t - 1] - mu) for t in range(1, n)])
            sd = pt.stack([stationary_sd(phi, s, pt)] + [s] * (n - 1))
            pm.Normal(f"{segment.name}_growth", mu=mean, sigma=sd, observed=y)
            z = pm.Normal(f"{name}_innovation", 0.0, 1.0)
            g1[name] = ar_step(mu, phi, s, y[n - 1], z)
        first = pm.Deterministic("first_year_growth", pt.stack([g1[n] for n in growth_names]),
                                 dims="growth_driver")
        del first

        # Partial-year facts on first-year growth.
        revenue1 = {s.name: obs.revenue_last[s.name] * pt.exp(sum(g1[d] for d in s.growth_drivers))
                    for s in company.segments}
        for o in company.observations:
            data = pm.Data(f"{o.name}_observed", observation_value(o, obs.facts[o.name]))
            if o.quantity == "units":
                driver = company.segment(o.segment).unit_driver
                mu = np.log(obs.units_last[o.segment]) + o.fraction * g1[driver]
            else:
                share = revenue1[o.segment] / sum(revenue1.values())
                mu = logit(share, pt)
            pm.Normal(o.name, mu=mu, sigma=o.sd, observed=data)

        for name in RATIO_DRIVERS:
            level, rho, s = _process_params(priors, name, values)
            L = to_scale(name, level, pt)
            x = pm.Data(f"{name}_observed", obs.ratios[name])
            pm.Normal(name, mu=L + rho * (x[:-1] - L), sigma=s, observed=x[1:])

        prior_rv(priors["ev_sales_multiple"], "ev_sales_multiple", values)
    return model


def observation_value(o, value: float) -> np.ndarray:
    """An observation in natural units -> the model's scale (log of a count, logit of a share)."""
    return np.asarray(np.log(value) if o.transform == "log" else logit(value))


def observed_data_values(obs: Observations, company: Company) -> dict[str, np.ndarray]:
    """The ``pm.Data`` values of the model for ``obs`` (for ``pm.set_data`` / nutpie)."""
    values = {f"{s.name}_growth_observed": np.asarray(obs.segment_growth[s.name], float)
              for s in company.segments}
    for o in company.observations:
        values[f"{o.name}_observed"] = observation_value(o, obs.facts[o.name])
    values.update({f"{r}_observed": np.asarray(obs.ratios[r], float) for r in RATIO_DRIVERS})
    return values
