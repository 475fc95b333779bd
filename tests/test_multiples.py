"""Valuation methods: the report's multiple vs the peer regression, through the one engine
(SenseTime's files; the ranges and the peer multiple also for the synthetic ToyCo)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from stforecast.company import load_company
from stforecast.engine import run_engine
from stforecast.model import observations_from_company
from stforecast.multiples import (PeerRelation, Valuation, method_target_prices, peer_multiple,
                                  relation_from_fit, sales_cagr, set_multiples)
from stforecast.peers import load_peers, regression
from stforecast.priors import Prior, PriorsError, load_priors
from stforecast.registry import SAMPLE_DIMS
from stforecast.scenarios import load_scenarios
from stforecast.shocks import draw_shocks
from stforecast.simulate import driver_paths, simulate_scenarios

COMPANY = load_company("sensetime")
TOYCO = load_company("toyco")
OBS = observations_from_company(COMPANY)
SPEC = load_scenarios(COMPANY.scenarios_path, COMPANY)
YEARS = list(COMPANY.forecast_years)


def fake_posterior(company, chains=2, draws=200, seed=0) -> xr.Dataset:
    """Parameters drawn from a narrow band around each prior's median (no fit needed)."""
    rng = np.random.default_rng(seed)
    priors = load_priors(company.priors_path, company.growth_drivers())
    values = {}

    def draw(centre, rel=0.05):
        return centre * (1 + rel * rng.standard_normal((chains, draws)))

    for name, proc in priors.processes().items():
        for part in ("long_run", "persistence", "volatility"):
            values[f"{name}_{part}"] = (("chain", "draw"),
                                        draw(float(getattr(proc, part).frozen().median())))
    first = [draw(float(priors.growth[n].long_run.frozen().median())) for n in priors.growth]
    values["first_year_growth"] = (("chain", "draw", "growth_driver"), np.stack(first, axis=-1))
    values["company_growth_effect"] = (("chain", "draw"), draw(0.0))
    values["ev_sales_multiple"] = (("chain", "draw"), draw(
        float(priors.valuation["ev_sales_multiple"].frozen().median())))
    return xr.Dataset(values, coords={"chain": np.arange(chains), "draw": np.arange(draws),
                                      "growth_driver": list(priors.growth)})


BETA_GROWTH = 1.9  # log multiple per 1.00 of CAGR (the fitted slope is ~0.19 per 10pp)
BETA_MARGIN = -0.1


def fake_peer_posterior(chains=2, draws=200, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    values = {
        "intercept_target": np.log(20.0) + 0.1 * rng.standard_normal(shape),
        "beta_growth": BETA_GROWTH + 0.2 * rng.standard_normal(shape),
        "beta_margin": BETA_MARGIN + 0.2 * rng.standard_normal(shape),
        "sigma": np.full(shape, 0.3), "residual_nu": np.full(shape, 5.0),
        "growth_centre": np.full(shape, 0.35), "margin_centre": np.full(shape, 0.6),
    }
    return xr.Dataset({k: (("chain", "draw"), v) for k, v in values.items()})


PREMIUM = Prior("Normal", {"mu": 0.095, "sigma": 0.15})


@pytest.fixture(scope="module")
def drivers():
    return driver_paths(fake_posterior(COMPANY), COMPANY, OBS, 10, np.random.default_rng(1))


def relation(seed=7, growth_range=(-np.inf, np.inf)):
    return PeerRelation(fake_peer_posterior(), PREMIUM, seed, growth_range=growth_range)


def test_report_method_keeps_the_driver_model_multiple(drivers):
    out = set_multiples(drivers, Valuation("report", relation()), COMPANY)
    xr.testing.assert_equal(out["ev_sales_multiple"], drivers["ev_sales_multiple"])
    assert "ev_sales_multiple_peer" in out and "sales_cagr" in out


def test_peer_method_multiple_rises_with_the_path_growth(drivers):
    out = set_multiples(drivers, Valuation("peer-regression", relation()), COMPANY)
    m, g = out["ev_sales_multiple"], out["sales_cagr"]
    assert set(m.dims) == set(SAMPLE_DIMS)
    top, bottom = g > g.quantile(0.75), g < g.quantile(0.25)
    ratio = float(m.where(top).median()) / float(m.where(bottom).median())
    expected = np.exp(BETA_GROWTH * (float(g.where(top).median()) - float(g.where(bottom).median())))
    assert expected > 1.3 and abs(np.log(ratio / expected)) < 0.15, (ratio, expected)
    # the CAGR is last history year -> last forecast year revenue
    rev = drivers["segment_revenue"].sum("segment").sel(year=COMPANY.last_forecast_year)
    start = float(COMPANY.history["revenue"].sel(year=COMPANY.last_history_year))
    expected = (rev / start) ** (1 / len(YEARS)) - 1
    np.testing.assert_allclose(sales_cagr(drivers, COMPANY).values, expected.values)


def test_peer_multiple_is_reproducible_for_a_seed(drivers):
    a = peer_multiple(drivers, relation(3), COMPANY)
    b = peer_multiple(drivers, relation(3), COMPANY)
    c = peer_multiple(drivers, relation(4), COMPANY)
    xr.testing.assert_equal(a, b)
    assert not np.array_equal(a.values, c.values)


def test_method_target_prices_go_through_the_engine(drivers):
    for method in ("report", "peer-regression"):
        d = set_multiples(drivers, Valuation(method, relation()), COMPANY)
        statements = run_engine(d, COMPANY.opening, COMPANY.market)
        tps = method_target_prices(statements, d, COMPANY)
        chosen = "target_price_report" if method == "report" else "target_price_peer"
        xr.testing.assert_allclose(tps[chosen].transpose(*statements["target_price"].dims),
                                   statements["target_price"])


def test_no_extrapolation_beyond_the_peer_growth_range(drivers):
    clipped = set_multiples(drivers, Valuation("peer-regression", relation(growth_range=(0.16, 0.52))),
                            COMPANY)
    free = set_multiples(drivers, Valuation("peer-regression", relation()), COMPANY)
    g = clipped["sales_cagr"]
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
    paths = driver_paths(fake_posterior(COMPANY), COMPANY, OBS, 10, np.random.default_rng(2))
    draws = draw_shocks(SPEC, tuple(paths.sizes[d] for d in SAMPLE_DIMS), len(YEARS),
                        np.random.default_rng(3))
    spec = SPEC.with_scenarios({k: SPEC.scenarios[k] for k in ("base", "combined-stress")})
    out = simulate_scenarios(paths, COMPANY, spec, draws, valuation=Valuation("peer-regression",
                                                                              rel))
    base, stress = out.sel(scenario="base"), out.sel(scenario="combined-stress")
    assert float(stress["ev_sales_multiple"].median()) < float(base["ev_sales_multiple"].median())
    beta_g = rel.posterior["beta_growth"].values[..., None]
    beta_m = rel.posterior["beta_margin"].values[..., None]
    lo, hi = rel.growth_range
    d_growth = (stress["sales_cagr"].clip(lo, hi)
                - base["sales_cagr"].clip(lo, hi)).values
    d_margin = (stress["gross_margin"] - base["gross_margin"]).sel(
        year=COMPANY.market.valuation_year).values
    factor = stress["ev_sales_multiple"] / stress["ev_sales_multiple_peer"]  # 1: same variable
    np.testing.assert_allclose(factor.values, 1.0)
    us = SPEC.shocks["us_restrictions"].channels["ev_sales_multiple"]
    level = stress["shock_us_restrictions"].sel(year=COMPANY.market.valuation_year).values
    explained = beta_g * d_growth + beta_m * d_margin + np.log(1 + us * level)
    actual = np.log(stress["ev_sales_multiple"].values / base["ev_sales_multiple"].values)
    np.testing.assert_allclose(actual, explained, atol=1e-9)


def test_priors_file_valuation_method_is_validated(tmp_path):
    spec = load_priors(COMPANY.priors_path, COMPANY.growth_drivers())
    assert spec.valuation_method in ("report", "peer-regression")
    assert "peer_premium" in spec.valuation and spec.valuation["peer_premium"].source
    text = COMPANY.priors_path.read_text()
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
    fast = peer_multiple(drivers, rel, COMPANY)
    growth = sales_cagr(drivers, COMPANY).transpose(*SAMPLE_DIMS)
    margin = drivers["gross_margin"].sel(year=COMPANY.market.valuation_year,
                                         drop=True).transpose(*SAMPLE_DIMS)
    premium = xr.DataArray(PREMIUM.frozen().rvs(size=growth.shape,
                                                random_state=np.random.default_rng([11, 1])),
                           dims=SAMPLE_DIMS)
    direct = predict_multiple(rel.posterior, growth.drop_vars(growth.coords),
                              margin.drop_vars(margin.coords), premium=premium,
                              rng=np.random.default_rng([11, 2]))
    np.testing.assert_allclose(fast.transpose(*SAMPLE_DIMS).values, direct.values, rtol=1e-10)


def test_ranges_come_from_the_columns_the_peers_file_declares():
    for company in (COMPANY, TOYCO):
        peers = load_peers(company.peers_path)
        reg = regression(peers)
        rel = relation_from_fit(fake_peer_posterior(), PREMIUM, 1, peers)
        assert rel.growth_range == (float(peers[reg.growth].min()), float(peers[reg.growth].max()))
        assert rel.margin_range == (float(peers[reg.margin].min()), float(peers[reg.margin].max()))


def test_toyco_peer_multiple_uses_its_own_years_and_segments():
    obs = observations_from_company(TOYCO)
    paths = driver_paths(fake_posterior(TOYCO), TOYCO, obs, 5, np.random.default_rng(4))
    assert list(paths["segment"].values) == TOYCO.segment_names
    rel = relation_from_fit(fake_peer_posterior(), PREMIUM, 5, load_peers(TOYCO.peers_path))
    out = set_multiples(paths, Valuation("peer-regression", rel), TOYCO)
    assert out["sales_cagr"].attrs["period"] == \
        f"{TOYCO.last_history_year}-{TOYCO.last_forecast_year}"
    m = out["ev_sales_multiple"]
    assert set(m.dims) == set(SAMPLE_DIMS) and bool((m > 0).all())
    statements = run_engine(out, TOYCO.opening, TOYCO.market)
    tps = method_target_prices(statements, out, TOYCO)
    assert tps["target_price_peer"].attrs["units"] == "EUR per share"
