"""Tests for stforecast.mcse: ESS against theory/ArviZ and MCSE calibration."""

import numpy as np
import pytest

from stforecast import mcse


def ar1(rng, shape, phi):
    """Stationary unit-variance AR(1) along the last axis."""
    e = rng.normal(size=shape)
    x = np.empty(shape)
    x[..., 0] = e[..., 0]
    scale = np.sqrt(1.0 - phi**2)
    for t in range(1, shape[-1]):
        x[..., t] = phi * x[..., t - 1] + scale * e[..., t]
    return x


def test_ess_iid_close_to_n():
    x = np.random.default_rng(1).normal(size=(4, 1000))
    assert mcse.ess(x) == pytest.approx(x.size, rel=0.15)


def test_ess_ar1_matches_theory():
    phi = 0.9
    x = ar1(np.random.default_rng(2), (4, 5000), phi)
    assert mcse.ess(x) == pytest.approx(x.size * (1 - phi) / (1 + phi), rel=0.25)


def test_ess_edge_cases():
    assert mcse.ess(np.full((4, 100), 3.0)) == 400  # constant: n (its MCSE is 0)
    assert np.isnan(mcse.ess(np.zeros((4, 3)) + np.arange(3)))  # fewer than 4 draws
    x = np.random.default_rng(3).normal(size=(2, 50))
    x[0, 5] = np.nan
    assert np.isnan(mcse.ess(x))
    assert mcse.mcse_mean(np.full((2, 10, 5), 1.0)) == 0.0


def test_probability_helper():
    ind = np.random.default_rng(4).random((4, 100, 10)) < 0.3
    value, err, n = mcse.probability(ind)
    assert value == ind.mean() and n == 4000
    assert err == pytest.approx(mcse.mcse_mean(ind))


def test_agrees_with_arviz_stats():
    """Cross-check the rank-free split-chain ESS and quantile MCSE against ArviZ."""
    array_stats = pytest.importorskip("arviz_stats.base.array").array_stats
    rng = np.random.default_rng(5)
    for phi in (0.0, 0.6, -0.4):
        x = ar1(rng, (4, 301), phi)  # odd draw count exercises the split
        kw = {"chain_axis": 0, "draw_axis": 1}
        assert mcse.ess(x) == pytest.approx(array_stats.ess(x, method="mean", **kw), rel=1e-10)
        assert mcse.mcse_mean(x) == pytest.approx(array_stats.mcse(x, method="mean", **kw), rel=1e-10)
        ours = mcse.mcse_quantile(x, 0.1)[1]
        theirs = array_stats.mcse(x, method="quantile", prob=0.1, **kw)
        assert ours == pytest.approx(theirs, rel=0.2)  # normal vs exact Beta interval


def simulate(rng, reps, chains=4, draws=200, paths=25, phi=0.7):
    """Paths = per-draw AR(1) latent (shared by a draw's paths) + independent noise."""
    latent = ar1(rng, (reps, chains, draws), phi)
    return latent[..., None] + rng.normal(size=(reps, chains, draws, paths))


def test_mcse_calibration_mean_probability_quantile():
    rng = np.random.default_rng(20240601)
    x = simulate(rng, reps=200)
    reps = x.shape[0]
    n = x[0].size
    c = 0.8

    est_mean = x.mean(axis=(1, 2, 3))
    est_prob = (x > c).mean(axis=(1, 2, 3))
    mcse_mean = np.array([mcse.mcse_mean(x[r]) for r in range(reps)])
    mcse_prob = np.array([mcse.probability(x[r] > c)[1] for r in range(reps)])
    quant = [mcse.mcse_quantile(x[r], 0.9) for r in range(reps)]
    est_q = np.array([v for v, _ in quant])
    mcse_q = np.array([e for _, e in quant])

    def within(reported, estimates):
        ratio = np.mean(reported) / np.std(estimates, ddof=1)
        return 1 / 1.5 < ratio < 1.5

    assert within(mcse_mean, est_mean)
    assert within(mcse_prob, est_prob)
    assert within(mcse_q, est_q)

    # The naive iid standard errors ignore shared draws and autocorrelation and
    # fail the same check, so the check has teeth.
    naive_mean = np.array([x[r].std() / np.sqrt(n) for r in range(reps)])
    naive_prob = np.sqrt(est_prob * (1 - est_prob) / n)
    assert not within(naive_mean, est_mean)
    assert not within(naive_prob, est_prob)
