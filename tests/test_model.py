"""The driver model: the simulator mirrors it exactly; the default fit meets the bar, learns
where the history informs, recovers known parameters and is calibrated (SBC).

Fast tests build the model but never compile it for NUTS; every fit shares the session's
``refitter`` (one nutpie compilation) and is marked ``slow``.
"""

import numpy as np
import pytensor
import pytest

from stforecast.calibration import (parameter_recovery, rank_uniformity_pvalue, sbc,
                                    simulate_observations)
from stforecast.fit import FitSettings, diagnose, sample_prior
from stforecast.model import PRIOR_VALUES, centred_drivers, observed_data_values
from stforecast.processes import RATIO_DRIVERS


class ConstantInnovations:
    """A stand-in for ``np.random.Generator`` whose standard normals are all ``value``."""

    def __init__(self, value: float):
        self.value = value

    def standard_normal(self, size=None):
        return self.value if size is None else np.full(size, self.value)


def standardised_residuals(model):
    """A function (free parameters in ``model.free_RVs`` order) -> per observed variable, its
    observed values minus the model's conditional mean, over its sd, given the ``pm.Data``."""
    free = model.free_RVs
    inputs = [rv.type() for rv in free]
    outputs = []
    for rv in model.observed_RVs:
        mu, sigma = rv.owner.op.dist_params(rv.owner)
        outputs.append((model.rvs_to_values[rv] - mu) / sigma)
    outputs = pytensor.graph.replace.graph_replace(outputs, dict(zip(free, inputs)), strict=False)
    fn = pytensor.function(inputs, outputs, mode="FAST_COMPILE", on_unused_input="ignore")
    names = [rv.name for rv in model.observed_RVs]
    free_names = [rv.name for rv in free]

    def residuals(params: dict) -> dict[str, np.ndarray]:
        return dict(zip(names, fn(*[np.asarray(params[n], dtype=rv.dtype)
                                    for n, rv in zip(free_names, free)])))
    return residuals


@pytest.fixture(scope="module")
def truths(refitter):
    return refitter.prior_draws(4, seed=3)


@pytest.fixture(scope="module")
def residuals(refitter):
    return standardised_residuals(refitter.model)


@pytest.mark.parametrize("innovation", [0.0, 0.7, -1.3])
def test_simulator_mirrors_the_model_term_by_term(refitter, company, truths, residuals,
                                                  innovation):
    """Data simulated with every innovation equal to c sit exactly c model sds from the
    model's conditional mean, for every observed value: same processes, same means, same sds,
    same observations (units at a fraction of the year, revenue share), same conditioning."""
    rng = ConstantInnovations(innovation)
    try:
        for truth in truths:
            sim = simulate_observations(truth, refitter.template, refitter.spec, company, rng)
            for name, value in observed_data_values(sim, company).items():
                refitter.model.set_data(name, value)
            for name, z in residuals(truth).items():
                np.testing.assert_allclose(z, innovation, atol=1e-8, err_msg=name)
    finally:  # the shared model goes back to the company's own data
        for name, value in observed_data_values(refitter.template, company).items():
            refitter.model.set_data(name, value)


def test_simulated_history_has_the_model_shape(refitter, company, obs, truths):
    rng = np.random.default_rng(0)
    sims = [simulate_observations(t, obs, refitter.spec, company, rng) for t in truths]
    for sim in sims:
        assert set(sim.segment_growth) == set(obs.segment_growth) == set(company.segment_names)
        n = len(company.history_years) - 1
        assert all(v.shape == (n,) and np.isfinite(v).all() for v in sim.segment_growth.values())
        assert set(sim.ratios) == set(RATIO_DRIVERS)
        assert all(v.shape == (n + 1,) and v[0] == obs.ratios[k][0] for k, v in sim.ratios.items())
        assert set(sim.facts) == {o.name for o in company.observations}
        for o in company.observations:
            assert sim.facts[o.name] > 0 and (o.quantity == "units" or sim.facts[o.name] < 1)
        # what the model conditions on and does not generate is the template's
        assert sim.revenue_last == obs.revenue_last and sim.units_last == obs.units_last
    assert not np.array_equal(sims[0].segment_growth[company.segment_names[0]],
                              sims[1].segment_growth[company.segment_names[0]])


def test_units_observation_follows_the_fraction_of_first_year_growth(refitter, company, obs,
                                                                      truths):
    """A centred units driver's first-year growth g, observed at fraction f of the year with
    no noise: the count is units_last x exp(f g)."""
    for o in (o for o in company.observations if o.quantity == "units"):
        driver = company.segment(o.segment).unit_driver
        assert driver in centred_drivers(company)
        truth = dict(truths[0]) | {f"{driver}_first_growth": np.asarray(0.3)}
        sim = simulate_observations(truth, obs, refitter.spec, company, ConstantInnovations(0.0))
        assert sim.facts[o.name] == pytest.approx(obs.units_last[o.segment]
                                                  * np.exp(o.fraction * 0.3), rel=1e-12)


def test_missing_parameter_is_named(refitter, company, obs, truths):
    truth = {k: v for k, v in truths[0].items() if k != "gross_margin_volatility"}
    with pytest.raises(ValueError, match="gross_margin_volatility"):
        simulate_observations(truth, obs, refitter.spec, company, np.random.default_rng(0))


def test_model_data_are_the_company_observations(refitter, company, obs):
    """Every ``pm.Data`` of the model but the priors' values (``PRIOR_VALUES``) is fed by
    ``observed_data_values`` (names and values)."""
    values = observed_data_values(obs, company)
    data = {v.name: v.get_value() for v in refitter.model.data_vars if v.name != PRIOR_VALUES}
    assert set(data) == set(values)
    for name, value in values.items():
        np.testing.assert_array_equal(data[name], value, err_msg=name)


# --- fits (one nutpie compilation per session) -------------------------------------------------
@pytest.mark.slow
def test_default_model_meets_quality_bar(refitter, obs):
    fs = FitSettings()
    idata = refitter.sample(obs, 20220131, draws=fs.draws, tune=fs.tune, chains=fs.chains)
    d = diagnose(idata["posterior"].to_dataset(), idata["sample_stats"].to_dataset(),
                 refitter.free)
    assert d.rhat_max <= 1.01, d.reasons
    assert d.ess_bulk_min >= 400 and d.ess_tail_min >= 400, d.reasons
    assert d.divergences == 0, d.reasons
    assert d.ok


@pytest.mark.slow
def test_posterior_learns_where_history_informs(refitter, company, small_fit):
    """History informs the observed units' first-year growth and receivable days; not the
    multiple."""
    prior = sample_prior(refitter.model, 2000, seed=1)
    post = small_fit["posterior"].to_dataset()

    def sd_ratio(da_post, da_prior):
        return float(da_post.std() / da_prior.std())

    centred = centred_drivers(company)
    assert centred
    for o in (o for o in company.observations if o.quantity == "units"):
        g = {"growth_driver": company.segment(o.segment).unit_driver}
        # a count at `fraction` of the year with noise sd on the log scale observes first-year
        # growth with sd `sd / fraction`: a Gaussian update would leave the prior sd times
        # (1 + prior var / (sd / fraction)^2)^-1/2; the posterior must learn at least that much
        # (0.1 of slack: the prior is not Gaussian and the small fit has Monte Carlo error)
        var = float(prior["first_year_growth"].sel(g).var())
        expected = (1 + var * o.fraction**2 / o.sd**2) ** -0.5
        ratio = sd_ratio(post["first_year_growth"].sel(g), prior["first_year_growth"].sel(g))
        assert ratio < min(expected + 0.1, 0.95), (ratio, expected)
    assert sd_ratio(post["trade_receivable_days_volatility"],
                    prior["trade_receivable_days_volatility"]) < 0.9
    assert 0.85 < sd_ratio(post["ev_sales_multiple"], prior["ev_sales_multiple"]) < 1.15
    assert abs(float(post["ev_sales_multiple"].mean() / prior["ev_sales_multiple"].mean()) - 1) \
        < 0.05


@pytest.mark.slow
def test_parameter_recovery_90pct_intervals(refitter):
    """Known parameters (prior draws) -> simulated history -> fit: 90% intervals cover ~90%."""
    coverage, n, divergences = parameter_recovery(refitter, n_datasets=8, seed=11)
    assert n > 400
    assert 0.84 <= coverage <= 0.96, coverage


@pytest.mark.slow
def test_sbc_rank_uniformity(refitter, request):
    """Simulation-based calibration; reduced by default, full with --full-sbc (250 fits)."""
    full = request.config.getoption("--full-sbc")
    n_fits = 250 if full else 40
    ranks = sbc(refitter, n_fits=n_fits, seed=7, thin_to=99)
    bins = 10 if full else 4
    pvalues = {k: rank_uniformity_pvalue(v, 100, bins) for k, v in ranks.items()}
    worst = min(pvalues, key=pvalues.get)
    # Bonferroni over parameters at a 1% family-wise level
    assert pvalues[worst] > 0.01 / len(pvalues), (worst, pvalues[worst])
    if full:
        print(f"SBC {n_fits} fits, {len(pvalues)} parameters: min p = {pvalues[worst]:.4f} "
              f"({worst}); share p<0.05 = {np.mean([p < 0.05 for p in pvalues.values()]):.3f}")


def test_rank_uniformity_pvalue_detects_skew():
    rng = np.random.default_rng(0)
    assert rank_uniformity_pvalue(rng.integers(0, 100, 400), 100, 4) > 0.001
    assert rank_uniformity_pvalue(rng.integers(0, 50, 400), 100, 4) < 1e-6
