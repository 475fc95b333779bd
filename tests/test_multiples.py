"""Valuation methods: the report's multiple vs the peer regression, through the one engine
(SenseTime's files; the ranges and the peer multiple also for the synthetic ToyCo)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from stforecast.company import load_company
from stforecast.engine import run_engine
from stforecast.model import observations_from_company
from stforecast.multiples import (PeerRelation, Valuation, _log_terms, method_target_prices,
                                  peer_multiple, peer_predictors, relation_from_fit, sales_cagr,
                                  set_multiples)
from stforecast.peers import load_peers, regression
from stforecast.priors import Prior, PriorsError, load_priors
from stforecast.registry import SAMPLE_DIMS
from stforecast.scenarios import load_scenarios
from stforecast.shocks import draw_shocks
from stforecast.simulate import driver_paths, simulate_scenarios, statements

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


BETA_GROWTH = 1.9  # log multiple per 1.00 of CAGR (the fitted slope is ~0.2 per 10pp)
BETA_MARGIN = -0.1
BETA_FCF = 0.7


def fake_peer_posterior(chains=2, draws=200, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (chains, draws)
    values = {
        "intercept_target": np.log(20.0) + 0.1 * rng.standard_normal(shape),
        "beta_growth": BETA_GROWTH + 0.2 * rng.standard_normal(shape),
        "beta_margin": BETA_MARGIN + 0.2 * rng.standard_normal(shape),
        "beta_fcf_margin": BETA_FCF + 0.2 * rng.standard_normal(shape),
        "sigma": np.full(shape, 0.3), "residual_nu": np.full(shape, 5.0),
        "growth_centre": np.full(shape, 0.35), "margin_centre": np.full(shape, 0.6),
        "fcf_margin_centre": np.full(shape, 0.1),
    }
    return xr.Dataset({k: (("chain", "draw"), v) for k, v in values.items()})


PREMIUM = Prior("Normal", {"mu": 0.095, "sigma": 0.15})
RERATING = Prior("Normal", {"mu": 0.0, "sigma": 0.26})


@pytest.fixture(scope="module")
def drivers():
    return driver_paths(fake_posterior(COMPANY), COMPANY, OBS, 10, np.random.default_rng(1))


def relation(seed=7, rerating=None, ranges=None):
    return PeerRelation(fake_peer_posterior(), PREMIUM, seed, rerating, ranges or {})


def engine(drivers, company=COMPANY):
    return run_engine(drivers, company.opening, company.market)


def multiples(drivers, method="peer-regression", rel=None, company=COMPANY):
    return set_multiples(drivers, Valuation(method, rel or relation()), company, engine(drivers,
                                                                                          company))


def test_report_method_keeps_the_driver_model_multiple(drivers):
    out = multiples(drivers, "report")
    xr.testing.assert_equal(out["ev_sales_multiple"], drivers["ev_sales_multiple"])
    assert "ev_sales_multiple_peer" in out and "sales_cagr" in out
    with pytest.raises(ValueError, match="statements"):
        set_multiples(drivers, Valuation("peer-regression", relation()), COMPANY)


def test_expected_growth_is_the_ar1_conditional_expectation(drivers):
    """A direct segment's expected log growth after the valuation year is mu + phi (g_v - mu)
    per (chain, draw, path), from its own valuation-year growth (one year ahead for SenseTime)."""
    post = fake_posterior(COMPANY)
    seg = next(s for s in COMPANY.segments if s.kind == "direct")
    (name,) = seg.growth_drivers
    years = list(COMPANY.forecast_years)
    v = years.index(COMPANY.market.valuation_year)
    assert len(years) - 1 - v == 1
    rev = drivers["segment_revenue"].sel(segment=seg.name)
    g_v = np.log(rev.isel(year=v) / rev.isel(year=v - 1))
    mu = post[f"{name}_long_run"] + post["company_growth_effect"]
    phi = post[f"{name}_persistence"]
    expected = mu + phi * (g_v - mu)
    got = drivers["expected_growth"].sel(segment=seg.name)
    np.testing.assert_allclose(got.transpose(*SAMPLE_DIMS).values,
                               expected.transpose(*SAMPLE_DIMS).values, rtol=1e-10)
    # unbiased: the realised next-year log growth minus its expectation averages to zero
    # (tolerance 4 standard errors of the mean over the paths)
    surprise = (np.log(rev.isel(year=v + 1) / rev.isel(year=v)) - got).values.ravel()
    assert abs(surprise.mean()) < 4 * surprise.std() / np.sqrt(surprise.size)


def test_no_look_ahead_revenue_after_the_valuation_year_does_not_move_the_multiple(drivers):
    """Doubling a path's revenue in the years after the valuation year leaves its multiple (and
    the CAGR the multiple is predicted from) unchanged; doubling it in the valuation year
    does not."""
    valuation = Valuation("peer-regression", relation())
    years = list(COMPANY.forecast_years)
    after = years[years.index(COMPANY.market.valuation_year) + 1:]
    assert after
    boost = xr.where(drivers["year"].isin(after) & (drivers["path"] == 0), 2.0, 1.0)
    later = drivers.assign(segment_revenue=drivers["segment_revenue"] * boost)
    a = statements(drivers, COMPANY, valuation=valuation)
    b = statements(later, COMPANY, valuation=valuation)
    assert float(b["revenue"].sel(year=after[-1], path=0).mean()) > \
        1.9 * float(a["revenue"].sel(year=after[-1], path=0).mean())
    xr.testing.assert_equal(a["ev_sales_multiple_peer"], b["ev_sales_multiple_peer"])
    xr.testing.assert_equal(a["sales_cagr"], b["sales_cagr"])
    now = drivers.assign(segment_revenue=drivers["segment_revenue"] * xr.where(
        (drivers["year"] == COMPANY.market.valuation_year) & (drivers["path"] == 0), 2.0, 1.0))
    c = statements(now, COMPANY, valuation=valuation)
    assert bool((c["ev_sales_multiple_peer"].sel(path=0)
                 != a["ev_sales_multiple_peer"].sel(path=0)).all())


def test_peer_method_multiple_rises_with_the_expected_growth(drivers):
    out = multiples(drivers)
    m, g = out["ev_sales_multiple"], out["sales_cagr"]
    assert set(m.dims) == set(SAMPLE_DIMS)
    top, bottom = g > g.quantile(0.75), g < g.quantile(0.25)
    ratio = float(m.where(top).median()) / float(m.where(bottom).median())
    expected = np.exp(BETA_GROWTH * (float(g.where(top).median()) - float(g.where(bottom).median())))
    assert expected > 1.3 and abs(np.log(ratio / expected)) < 0.3, (ratio, expected)
    # the CAGR: last history year -> valuation-year revenue grown at the expected growth
    seg = drivers["segment_revenue"].sel(year=COMPANY.market.valuation_year)
    final = (seg * np.exp(drivers["expected_growth"])).sum("segment")
    start = float(COMPANY.history["revenue"].sel(year=COMPANY.last_history_year))
    np.testing.assert_allclose(sales_cagr(drivers, COMPANY).values,
                               ((final / start) ** (1 / len(YEARS)) - 1).values)


def test_peer_multiple_is_reproducible_for_a_seed(drivers):
    x = peer_predictors(drivers, engine(drivers), COMPANY)
    a = peer_multiple(x, relation(3), COMPANY)
    b = peer_multiple(x, relation(3), COMPANY)
    c = peer_multiple(x, relation(4), COMPANY)
    xr.testing.assert_equal(a, b)
    assert not np.array_equal(a.values, c.values)


def test_method_target_prices_go_through_the_engine(drivers):
    for method in ("report", "peer-regression"):
        d = multiples(drivers, method)
        out = engine(d)
        tps = method_target_prices(out, d, COMPANY)
        chosen = "target_price_report" if method == "report" else "target_price_peer"
        xr.testing.assert_allclose(tps[chosen].transpose(*out["target_price"].dims),
                                   out["target_price"])


def test_no_clip_the_line_extends_and_its_spread_widens_away_from_the_peers(drivers):
    """Outside the peers' range the multiple follows the fitted line (log-linear in each
    predictor, no edge value), and the spread over the posterior grows with the distance."""
    from stforecast.peers import predict_multiple
    rel = relation(ranges={"growth": (0.16, 0.52), "margin": (0.0, 1.0),
                           "fcf_margin": (-10.0, 10.0)})
    out = multiples(drivers, rel=rel)
    g = out["sales_cagr"]
    outside = (g < 0.16) | (g > 0.52)
    assert bool(outside.any()) and bool((~outside).any())
    np.testing.assert_array_equal(out["peer_outside_range"].values, outside.astype(float).values)
    x = peer_predictors(drivers, engine(drivers), COMPANY)
    shifted = dict(x, sales_cagr=x["sales_cagr"] - 1.0)  # a whole 100pp lower: far outside
    log_ratio = np.log(peer_multiple(x, rel, COMPANY) / peer_multiple(shifted, rel, COMPANY))
    slope = rel.posterior["beta_growth"].values[..., None]
    np.testing.assert_allclose(log_ratio.transpose(*SAMPLE_DIMS).values,
                               np.broadcast_to(slope, log_ratio.shape), rtol=1e-9)
    post = fake_peer_posterior()
    sd = [float(np.log(predict_multiple(post.assign(sigma=post["sigma"] * 0), 0.35 + d, 0.6,
                                        0.1, rng=0)).std()) for d in (0.0, 0.5, 1.5)]
    assert sd[0] < sd[1] < sd[2], sd


def test_sector_rerating_widens_the_peer_multiple_and_is_common_to_scenarios(drivers):
    plain = multiples(drivers, rel=relation(5))["ev_sales_multiple"]
    rerated = multiples(drivers, rel=relation(5, RERATING))["ev_sales_multiple"]
    d = np.log(rerated / plain).values.ravel()
    # the log ratio is the re-rating draw itself: mean 0, sd 0.26 (tolerance: 4 standard errors)
    assert abs(d.mean()) < 4 * 0.26 / np.sqrt(d.size)
    assert abs(d.std() - 0.26) < 4 * 0.26 / np.sqrt(2 * d.size)


def test_stress_lowers_the_peer_multiple_by_what_the_slopes_explain():
    """Per path: log m(stress) - log m(base) = sum_k beta_k dx_k + log(shock factor): every
    scenario shares the regression's draws, premium, re-rating and residual noise."""
    rel = relation(rerating=RERATING)
    paths = driver_paths(fake_posterior(COMPANY), COMPANY, OBS, 10, np.random.default_rng(2))
    draws = draw_shocks(SPEC, tuple(paths.sizes[d] for d in SAMPLE_DIMS), len(YEARS),
                        np.random.default_rng(3))
    spec = SPEC.with_scenarios({k: SPEC.scenarios[k] for k in ("base", "combined-stress")})
    out = simulate_scenarios(paths, COMPANY, spec, draws, valuation=Valuation("peer-regression",
                                                                              rel))
    base, stress = out.sel(scenario="base"), out.sel(scenario="combined-stress")
    assert float(stress["ev_sales_multiple"].median()) < float(base["ev_sales_multiple"].median())
    beta = {k: rel.posterior[f"beta_{k}"].values[..., None]
            for k in ("growth", "margin", "fcf_margin")}
    d_growth = (stress["sales_cagr"] - base["sales_cagr"]).values
    d_margin = (stress["gross_margin"] - base["gross_margin"]).sel(
        year=COMPANY.market.valuation_year).values
    d_fcf = (stress["fcf_margin_valuation"] - base["fcf_margin_valuation"]).values
    factor = stress["ev_sales_multiple"] / stress["ev_sales_multiple_peer"]  # 1: same variable
    np.testing.assert_allclose(factor.values, 1.0)
    us = SPEC.shocks["us_restrictions"].channels["ev_sales_multiple"]
    level = stress["shock_us_restrictions"].sel(year=COMPANY.market.valuation_year).values
    explained = (beta["growth"] * d_growth + beta["margin"] * d_margin
                 + beta["fcf_margin"] * d_fcf + np.log(1 + us * level))
    actual = np.log(stress["ev_sales_multiple"].values / base["ev_sales_multiple"].values)
    np.testing.assert_allclose(actual, explained, atol=1e-9)


def test_priors_file_valuation_method_is_validated(tmp_path):
    spec = load_priors(COMPANY.priors_path, COMPANY.growth_drivers())
    assert spec.valuation_method in ("report", "peer-regression")
    assert "peer_premium" in spec.valuation and spec.valuation["peer_premium"].source
    assert "sector_rerating" in spec.valuation and spec.valuation["sector_rerating"].source
    text = COMPANY.priors_path.read_text()
    bad = tmp_path / "p.toml"
    bad.write_text(text.replace('method = "peer-regression"', 'method = "peers"'))
    with pytest.raises(PriorsError, match="valuation.method") as err:
        load_priors(bad)
    assert "\n" not in str(err.value) and "peer-regression" in str(err.value)
    start = text.index("[valuation.peer_premium]")
    end = text.index("[valuation.sector_rerating]")
    bad.write_text(text[:start] + text[end:])
    with pytest.raises(PriorsError, match="valuation.peer_premium"):
        load_priors(bad)
    bad.write_text((text[:start] + text[end:]).replace('method = "peer-regression"',
                                                       'method = "report"'))
    assert load_priors(bad).valuation_method == "report"


def test_cached_linear_form_equals_predict_multiple(drivers):
    """The per-path linear form (cached across scenarios) is predict_multiple itself."""
    from stforecast.peers import predict_multiple
    rel = relation(seed=11, rerating=RERATING)
    x = peer_predictors(drivers, engine(drivers), COMPANY)
    fast = peer_multiple(x, rel, COMPANY)
    values = [v.transpose(*SAMPLE_DIMS) for v in x.values()]
    shape = values[0].shape
    log_factor = (PREMIUM.frozen().rvs(size=shape, random_state=np.random.default_rng([11, 1]))
                  + RERATING.frozen().rvs(size=shape, random_state=np.random.default_rng([11, 3])))
    direct = predict_multiple(rel.posterior, *(v.drop_vars(v.coords) for v in values),
                              premium=xr.DataArray(log_factor, dims=SAMPLE_DIMS),
                              rng=np.random.default_rng([11, 2]))
    np.testing.assert_allclose(fast.transpose(*SAMPLE_DIMS).values, direct.values, rtol=1e-10)


def test_ranges_come_from_the_columns_the_peers_file_declares():
    for company in (COMPANY, TOYCO):
        peers = load_peers(company.peers_path)
        reg = regression(peers)
        rel = relation_from_fit(fake_peer_posterior(), PREMIUM, 1, peers)
        for role, col in (("growth", reg.growth), ("margin", reg.margin),
                          ("fcf_margin", reg.fcf_margin)):
            assert rel.ranges[role] == (float(peers[col].min()), float(peers[col].max()))


def test_toyco_peer_multiple_uses_its_own_years_and_segments():
    obs = observations_from_company(TOYCO)
    paths = driver_paths(fake_posterior(TOYCO), TOYCO, obs, 5, np.random.default_rng(4))
    assert list(paths["segment"].values) == TOYCO.segment_names
    assert list(paths["expected_growth"]["segment"].values) == TOYCO.segment_names
    rel = relation_from_fit(fake_peer_posterior(), PREMIUM, 5, load_peers(TOYCO.peers_path))
    out = multiples(paths, rel=rel, company=TOYCO)
    assert out["sales_cagr"].attrs["period"] == \
        f"{TOYCO.last_history_year}-{TOYCO.last_forecast_year}"
    m = out["ev_sales_multiple"]
    assert set(m.dims) == set(SAMPLE_DIMS) and bool((m > 0).all())
    tps = method_target_prices(engine(out, TOYCO), out, TOYCO)
    assert tps["target_price_peer"].attrs["units"] == "EUR per share"


@pytest.mark.parametrize("threads", [2, 3])
def test_scenarios_simulated_in_parts_are_the_whole_number_for_number(threads):
    """With more scenarios than threads and no even split (5 on 2 or 3), the last scenarios are
    simulated by chain in parts; the peer regression's random numbers of a part are the whole's
    (``Valuation.on_chains``), so every variable equals the one-thread result bit for bit."""
    paths = driver_paths(fake_posterior(COMPANY, chains=4, draws=30), COMPANY, OBS, 5,
                         np.random.default_rng(4))
    draws = draw_shocks(SPEC, tuple(paths.sizes[d] for d in SAMPLE_DIMS), len(YEARS),
                        np.random.default_rng(5))
    valuation = Valuation("peer-regression", relation(rerating=RERATING))
    assert len(SPEC.scenarios) % threads
    one = simulate_scenarios(paths, COMPANY, SPEC, draws, valuation=valuation, threads=1)
    parts = simulate_scenarios(paths, COMPANY, SPEC, draws, valuation=valuation,
                               threads=threads)
    xr.testing.assert_identical(parts, one)
    for name in one.data_vars:
        assert parts[name].values.tobytes() == one[name].values.tobytes(), name
    summaries = simulate_scenarios(paths, COMPANY, SPEC, draws, valuation=valuation,
                                   threads=threads, then=lambda name, ds: ds["target_price"])
    for name, tp in summaries.items():
        assert tp.values.tobytes() == one["target_price"].sel(scenario=name).values.tobytes()


def test_a_relation_on_chains_refuses_paths_of_another_shape():
    rel = Valuation("peer-regression", relation()).on_chains(1, 3, 4).peers
    with pytest.raises(ValueError, match="chains 1:3"):
        _log_terms(rel, ["chain", "draw", "path"], (3, 5, 2))
