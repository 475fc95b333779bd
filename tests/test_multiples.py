"""Valuation methods: the report's multiple vs the peer regression, through the one engine."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from stforecast.engine import run_engine
from stforecast.multiples import (PeerRelation, Valuation, method_target_prices, peer_multiple,
                                  sales_cagr, set_multiples)
from stforecast.priors import Prior, PriorsError, default_priors_path, load_priors
from stforecast.shocks import draw_shocks
from stforecast.simulate import SAMPLE_DIMS, driver_paths, simulate_scenarios

from test_shocks import OBS, REPORT, SPEC, YEARS, fake_posterior

BETA_GROWTH = 1.9  # log multiple per 1.00 of CAGR (the fitted slope is ~0.19 per 10pp)
BETA_MARGIN = -0.1


def fake_peer_posterior(chains=2, draws=200, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    values = {
        "intercept_sensetime": np.log(20.0) + 0.1 * rng.standard_normal(shape),
        "beta_growth": BETA_GROWTH + 0.2 * rng.standard_normal(shape),
        "beta_margin": BETA_MARGIN + 0.2 * rng.standard_normal(shape),
        "sigma": np.full(shape, 0.3), "residual_nu": np.full(shape, 5.0),
        "growth_centre": np.full(shape, 0.35), "margin_centre": np.full(shape, 0.6),
    }
    return xr.Dataset({k: (("chain", "draw"), v) for k, v in values.items()})


PREMIUM = Prior("Normal", {"mu": 0.095, "sigma": 0.15})


@pytest.fixture(scope="module")
def drivers():
    return driver_paths(fake_posterior(), REPORT, OBS, 10, np.random.default_rng(1))


def relation(seed=7, growth_range=(-np.inf, np.inf)):
    return PeerRelation(fake_peer_posterior(), PREMIUM, seed, growth_range=growth_range)


def test_report_method_keeps_the_driver_model_multiple(drivers):
    out = set_multiples(drivers, Valuation("report", relation()), REPORT)
    xr.testing.assert_equal(out["ev_sales_multiple"], drivers["ev_sales_multiple"])
    assert "ev_sales_multiple_peer" in out and "sales_cagr_fy20_fy23" in out


def test_peer_method_multiple_rises_with_the_path_growth(drivers):
    out = set_multiples(drivers, Valuation("peer-regression", relation()), REPORT)
    m, g = out["ev_sales_multiple"], out["sales_cagr_fy20_fy23"]
    assert set(m.dims) == set(SAMPLE_DIMS)
    top, bottom = g > g.quantile(0.75), g < g.quantile(0.25)
    ratio = float(m.where(top).median()) / float(m.where(bottom).median())
    expected = np.exp(BETA_GROWTH * (float(g.where(top).median()) - float(g.where(bottom).median())))
    assert expected > 1.3 and abs(np.log(ratio / expected)) < 0.15, (ratio, expected)
    # the CAGR is FY20 -> FY23 revenue
    rev = drivers["segment_revenue"].sum("segment").sel(year="FY23")
    expected = (rev / float(REPORT.history["revenue"].sel(year="FY20"))) ** (1 / 3) - 1
    np.testing.assert_allclose(sales_cagr(drivers, REPORT).values, expected.values)


def test_peer_multiple_is_reproducible_for_a_seed(drivers):
    a = peer_multiple(drivers, relation(3), REPORT)
    b = peer_multiple(drivers, relation(3), REPORT)
    c = peer_multiple(drivers, relation(4), REPORT)
    xr.testing.assert_equal(a, b)
    assert not np.array_equal(a.values, c.values)


def test_method_target_prices_go_through_the_engine(drivers):
    for method in ("report", "peer-regression"):
        d = set_multiples(drivers, Valuation(method, relation()), REPORT)
        statements = run_engine(d, REPORT.opening, REPORT.market)
        tps = method_target_prices(statements, d, REPORT)
        chosen = "target_price_hkd_report" if method == "report" else "target_price_hkd_peer"
        xr.testing.assert_allclose(tps[chosen].transpose(*statements["target_price_hkd"].dims),
                                   statements["target_price_hkd"])


def test_no_extrapolation_beyond_the_peer_growth_range(drivers):
    clipped = set_multiples(drivers, Valuation("peer-regression", relation(growth_range=(0.16, 0.52))),
                            REPORT)
    free = set_multiples(drivers, Valuation("peer-regression", relation()), REPORT)
    g = clipped["sales_cagr_fy20_fy23"]
    inside = (g > 0.16) & (g < 0.52)
    assert bool(inside.any()) and bool((~inside).any())
    np.testing.assert_allclose(clipped["ev_sales_multiple"].where(inside, 1.0),
                               free["ev_sales_multiple"].where(inside, 1.0))
    slow = g < 0.16  # below the range: the multiple at the edge, higher than extrapolated
    assert (clipped["ev_sales_multiple"].where(slow) >= free["ev_sales_multiple"].where(slow)
            ).sum() == slow.sum()


def test_stress_lowers_the_peer_multiple_by_what_the_slopes_explain():
    """Per path: log m(stress) - log m(base) = beta_g dCAGR + beta_m dGM + log(shock factor),
    with CAGR clipped to the peers' range (no extrapolation)."""
    rel = relation(growth_range=(0.16, 0.52))
    paths = driver_paths(fake_posterior(), REPORT, OBS, 10, np.random.default_rng(2))
    draws = draw_shocks(SPEC, tuple(paths.sizes[d] for d in SAMPLE_DIMS), len(YEARS),
                        np.random.default_rng(3))
    spec = SPEC.with_scenarios({k: SPEC.scenarios[k] for k in ("base", "combined-stress")})
    out = simulate_scenarios(paths, REPORT, spec, draws, valuation=Valuation("peer-regression",
                                                                              rel))
    base, stress = out.sel(scenario="base"), out.sel(scenario="combined-stress")
    assert float(stress["ev_sales_multiple"].median()) < float(base["ev_sales_multiple"].median())
    beta_g = rel.posterior["beta_growth"].values[..., None]
    beta_m = rel.posterior["beta_margin"].values[..., None]
    lo, hi = rel.growth_range
    d_growth = (stress["sales_cagr_fy20_fy23"].clip(lo, hi)
                - base["sales_cagr_fy20_fy23"].clip(lo, hi)).values
    d_margin = (stress["gross_margin"] - base["gross_margin"]).sel(year="FY22").values
    factor = stress["ev_sales_multiple"] / stress["ev_sales_multiple_peer"]  # 1: same variable
    np.testing.assert_allclose(factor.values, 1.0)
    us = SPEC.shocks["us_restrictions"].channels["ev_sales_multiple"]
    level = stress["shock_us_restrictions"].sel(year="FY22").values
    explained = beta_g * d_growth + beta_m * d_margin + np.log(1 + us * level)
    actual = np.log(stress["ev_sales_multiple"].values / base["ev_sales_multiple"].values)
    np.testing.assert_allclose(actual, explained, atol=1e-9)


def test_priors_file_valuation_method_is_validated(tmp_path):
    spec = load_priors(default_priors_path())
    assert spec.valuation_method in ("report", "peer-regression")
    assert "peer_premium" in spec.valuation and spec.valuation["peer_premium"].source
    text = default_priors_path().read_text()
    bad = tmp_path / "p.toml"
    bad.write_text(text.replace('method = "peer-regression"', 'method = "peers"'))
    with pytest.raises(PriorsError, match="valuation.method") as err:
        load_priors(bad)
    assert "\n" not in str(err.value) and "peer-regression" in str(err.value)
    start = text.index("[valuation.peer_premium]")
    end = text.index("[valuation.ev_sales_multiple]")
    bad.write_text(text[:start] + text[end:])
    with pytest.raises(PriorsError, match="valuation.peer_premium"):
        load_priors(bad)
    bad.write_text((text[:start] + text[end:]).replace('method = "peer-regression"',
                                                       'method = "report"'))
    assert load_priors(bad).valuation_method == "report"


def test_cached_linear_form_equals_predict_multiple(drivers):
    """The per-path linear form (cached across scenarios) is predict_multiple itself."""
    from stforecast.peers import predict_multiple
    rel = relation(seed=11)
    fast = peer_multiple(drivers, rel, REPORT)
    growth = sales_cagr(drivers, REPORT).transpose(*SAMPLE_DIMS)
    margin = drivers["gross_margin"].sel(year="FY22", drop=True).transpose(*SAMPLE_DIMS)
    premium = xr.DataArray(PREMIUM.frozen().rvs(size=growth.shape,
                                                random_state=np.random.default_rng([11, 1])),
                           dims=SAMPLE_DIMS)
    direct = predict_multiple(rel.posterior, growth.drop_vars(growth.coords),
                              margin.drop_vars(margin.coords), premium=premium,
                              rng=np.random.default_rng([11, 2]))
    np.testing.assert_allclose(fast.transpose(*SAMPLE_DIMS).values, direct.values, rtol=1e-10)
