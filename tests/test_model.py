"""The driver model: default fit meets the bar, recovers known parameters, is calibrated (SBC)."""

import numpy as np
import pytest

from stforecast.calibration import (Refitter, parameter_recovery, rank_uniformity_pvalue, sbc,
                                    simulate_observations)
from stforecast.data import load_report
from stforecast.fit import FitSettings, sample_posterior, sample_prior
from stforecast.model import build_model, observations_from_report
from stforecast.priors import default_priors_path, load_priors


@pytest.fixture(scope="module")
def spec():
    return load_priors(default_priors_path())


@pytest.fixture(scope="module")
def obs():
    return observations_from_report(load_report())


@pytest.fixture(scope="module")
def refitter(spec, obs):
    return Refitter(spec, obs)


@pytest.fixture(scope="module")
def default_fit(spec, obs):
    model = build_model(spec, obs)
    return model, sample_posterior(model, FitSettings(), seed=20220131)


def test_default_model_meets_quality_bar(default_fit):
    _, fit = default_fit
    d = fit.diagnostics
    assert d.rhat_max <= 1.01, d.reasons
    assert d.ess_bulk_min >= 400 and d.ess_tail_min >= 400, d.reasons
    assert d.divergences == 0, d.reasons
    assert d.ok


def test_posterior_learns_where_history_informs(default_fit):
    """History informs FY21 city growth (1H21 count) and receivable days; not the multiple."""
    model, fit = default_fit
    prior = sample_prior(model, 2000, seed=1)
    post = fit.idata["posterior"].to_dataset()

    def sd_ratio(name):
        return float(post[name].std() / prior[name].std())

    assert sd_ratio("smart_city_cities_growth_fy21") < 0.6
    assert sd_ratio("trade_receivable_days_volatility") < 0.9
    assert 0.85 < sd_ratio("ev_sales_multiple") < 1.15
    assert abs(float(post["ev_sales_multiple"].mean() / prior["ev_sales_multiple"].mean()) - 1) < 0.05


def test_simulated_history_has_the_model_shape(spec, obs):
    truth = {"company_growth_effect": 0.0}
    rng = np.random.default_rng(0)
    from stforecast.priors import GROWTH_DRIVERS, RATIO_DRIVERS
    for k in GROWTH_DRIVERS:
        truth |= {f"{k}_long_run": 0.1, f"{k}_persistence": 0.3, f"{k}_volatility": 0.1,
                  f"{k}_innovation": np.zeros(2) if k in ("smart_business_customers",
                                                          "smart_city_cities") else 0.0}
    truth["smart_business_customers_innovation_fy21"] = 0.0
    truth["smart_city_cities_fy21"] = 0.2
    for r in RATIO_DRIVERS:
        truth |= {f"{r}_long_run": 0.5 if r == "gross_margin" else 100.0,
                  f"{r}_persistence": 0.5, f"{r}_volatility": 0.1}
    sim = simulate_observations(truth, obs, spec, rng)
    assert set(sim.segment_growth) == set(obs.segment_growth)
    assert all(v.shape == (2,) for v in sim.segment_growth.values())
    assert all(v.shape == (3,) and v[0] == obs.ratios[k][0] for k, v in sim.ratios.items())
    # cities at mid-year grow by about half of FY21's log growth of 0.2
    assert abs(np.log(sim.cities_1h21 / obs.cities_fy20) - 0.1) < 0.25


def test_parameter_recovery_90pct_intervals(refitter):
    """Known parameters (prior draws) -> simulated history -> fit: 90% intervals cover ~90%."""
    coverage, n, divergences = parameter_recovery(refitter, n_datasets=8, seed=11)
    assert n > 400
    assert 0.84 <= coverage <= 0.96, coverage


def test_sbc_rank_uniformity(refitter, request):
    """Simulation-based calibration; reduced in CI, full with --full-sbc (250 fits)."""
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
