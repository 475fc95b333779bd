"""Scenario shocks: the file's validation, the shock semantics, and coherence of the scenarios.

Driver paths come from a synthetic "posterior" (each parameter random around its prior median),
so these tests need no fit and run in seconds.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import stats
import pytest
import xarray as xr

from stforecast.company import load_company
from stforecast.model import observations_from_company
from stforecast.priors import load_priors
from stforecast.registry import SAMPLE_DIMS
from stforecast.scenarios import company_channels
from stforecast.shocks import (CHANNELS, STICKY_COSTS, Scenario, ScenariosError, apply_shocks,
                               draw_shocks, intensities, load_scenarios, parse_setting)
from stforecast.simulate import driver_paths, simulate, simulate_scenarios, statements

COMPANY = load_company()
REPORT = COMPANY  # the name other test modules import
OBS = observations_from_company(COMPANY)
YEARS = list(COMPANY.forecast_years)
SCENARIOS_FILE = COMPANY.scenarios_path
SPEC = load_scenarios(SCENARIOS_FILE, COMPANY)
PRIORS = load_priors(COMPANY.priors_path, COMPANY.growth_drivers())


def fake_posterior(chains=2, draws=200, seed=0) -> xr.Dataset:
    """Parameters drawn from a narrow band around each prior's median (no fit needed); every
    growth driver's first-year growth around its long-run median."""
    rng = np.random.default_rng(seed)
    values = {}

    def draw(centre, rel=0.05):
        return centre * (1 + rel * rng.standard_normal((chains, draws)))

    def put(name, centre, rel=0.05):
        values[name] = (("chain", "draw"), draw(centre, rel))

    first = []
    for name, proc in PRIORS.processes().items():
        put(f"{name}_long_run", float(proc.long_run.frozen().median()))
        put(f"{name}_persistence", float(proc.persistence.frozen().median()))
        put(f"{name}_volatility", float(proc.volatility.frozen().median()))
        if name in PRIORS.growth:
            first.append(draw(float(proc.long_run.frozen().median())))
    put("company_growth_effect", 0.0)
    put("ev_sales_multiple", float(PRIORS.valuation["ev_sales_multiple"].frozen().median()))
    values["first_year_growth"] = (("chain", "draw", "growth_driver"), np.stack(first, axis=-1))
    return xr.Dataset(values, coords={"chain": np.arange(chains), "draw": np.arange(draws),
                                      "growth_driver": list(PRIORS.growth)})


@pytest.fixture(scope="module")
def paths():
    drivers = driver_paths(fake_posterior(), COMPANY, OBS, 25, np.random.default_rng(1))
    shape = tuple(drivers.sizes[d] for d in SAMPLE_DIMS)
    return drivers, draw_shocks(SPEC, shape, len(YEARS), np.random.default_rng(2))


def scenario(settings: dict, default="off", name="user") -> Scenario:
    return Scenario(name, "", {s: parse_setting("test", s, settings.get(s, default), YEARS)
                               for s in SPEC.shocks})


def run(paths, **scenarios) -> xr.Dataset:
    drivers, draws = paths
    spec = SPEC.with_scenarios({k: scenario(v) for k, v in scenarios.items()})
    return simulate_scenarios(drivers, COMPANY, spec, draws)


# --- the file ------------------------------------------------------------------------------------
def test_default_file_declares_the_required_shocks_and_scenarios():
    assert {"us_restrictions", "public_sector_squeeze"} <= set(SPEC.shocks)
    assert len(SPEC.shocks) >= 4
    assert list(SPEC.scenarios)[:5] == ["base", "risk-weighted", "us-restrictions",
                                        "public-sector-squeeze", "combined-stress"]
    for shock in SPEC.shocks.values():
        assert shock.source and shock.channels and 0 <= shock.persistence <= 1
        assert 0 < shock.probability.frozen().mean() < 0.5
    us = SPEC.shocks["us_restrictions"].channels
    assert us["overseas_revenue"] < 0 and us["gross_margin"] < 0 and us["capex_ratio"] > 0
    assert us["ev_sales_multiple"] < 0
    ps = SPEC.shocks["public_sector_squeeze"].channels
    assert ps["smart_city_revenue"] < 0 and ps["trade_receivable_days"] > 0
    assert ps["impairment_rate"] > 0
    stress = SPEC.scenarios["combined-stress"].settings
    assert stress["us_restrictions"].year == "FY22" and stress["public_sector_squeeze"].year == "FY22"
    assert all(s.probability == "prior" for s in SPEC.scenarios["risk-weighted"].settings.values())
    assert all(s.probability == 0 for s in SPEC.scenarios["base"].settings.values())


GOOD = SCENARIOS_FILE.read_text()
BAD_CASES = {
    "syntax": (GOOD.replace("persistence = 0.9", "persistence = = 0.9"), "TOML syntax error"),
    "unknown channel": (GOOD.replace("overseas_revenue = -0.5", "overseas_revenu = -0.5"),
                        "shocks.us_restrictions.channels.overseas_revenu"),
    "effect not a number": (GOOD.replace("overseas_revenue = -0.5", 'overseas_revenue = "half"'),
                            "shocks.us_restrictions.channels.overseas_revenue"),
    "probability not on (0,1)": (GOOD.replace(
        'probability = { dist = "Beta", range = [0.08, 0.40] }',
        'probability = { dist = "Normal", mu = 0.1, sigma = 0.05 }'),
        "shocks.us_restrictions.probability.dist"),
    "severity not positive": (GOOD.replace(
        'severity = { dist = "LogStudentT", nu = 3.0, mu = -0.2877, sigma = 0.55, upper = 4.0 }',
        'severity = { dist = "Normal", mu = 1.0, sigma = 0.5 }'),
        "shocks.us_restrictions.severity.dist"),
    "log-t without upper": (GOOD.replace(", sigma = 0.55, upper = 4.0 }", ", sigma = 0.55 }"),
                            "shocks.us_restrictions.severity.upper"),
    "log-t negative sigma": (GOOD.replace("sigma = 0.55, upper", "sigma = -0.55, upper"),
                             "shocks.us_restrictions.severity.sigma"),
    "missing basis": (GOOD.replace('probability_basis = "US measures', 'basis = "US measures'),
                      "shocks.us_restrictions.basis"),
    "empty basis": (re.sub(r'(?m)^severity_basis = "Heavy-tailed.*$', 'severity_basis = " "',
                           GOOD), "shocks.us_restrictions.severity_basis"),
    "factor with unknown shock": (GOOD.replace(
        'shocks = ["us_restrictions", "public_sector_squeeze"]',
        'shocks = ["us_restrictions", "public_sector_sqeeze"]'), "factors.policy_stress.shocks"),
    "from_year not a year": (GOOD.replace('from_year = "FY22"', 'from_year = "FY27"', 1),
                             "shocks.us_restrictions.from_year"),
    "factor with one shock": (GOOD.replace(
        'shocks = ["us_restrictions", "public_sector_squeeze"]', 'shocks = ["us_restrictions"]'),
        "factors.policy_stress.shocks"),
    "factor correlation not on (0,1)": (GOOD.replace(
        'correlation = { dist = "Beta", range = [0.10, 0.60] }',
        'correlation = { dist = "Normal", mu = 0.3, sigma = 0.1 }'),
        "factors.policy_stress.correlation.dist"),
    "persistence above 1": (GOOD.replace("persistence = 0.9", "persistence = 1.5"),
                            "shocks.us_restrictions.persistence"),
    "missing source": (GOOD.replace('source = "Investment risks: Tightening', 'sauce = "x'),
                       "shocks.us_restrictions.sauce"),
    "unknown shock in scenario": (GOOD.replace('shocks = { us_restrictions = "FY22" }',
                                               'shocks = { us_restriction = "FY22" }'),
                                  "scenarios.us-restrictions.shocks.us_restriction"),
    "unknown year": (GOOD.replace('shocks = { us_restrictions = "FY22" }',
                                  'shocks = { us_restrictions = "FY25" }'),
                     "scenarios.us-restrictions.shocks.us_restrictions"),
    "year and probability": (GOOD.replace(
        'shocks = { us_restrictions = "FY22" }',
        'shocks = { us_restrictions = { year = "FY22", probability = 0.5 } }'),
        "scenarios.us-restrictions.shocks.us_restrictions.year"),
    "probability above 1": (GOOD.replace('shocks = { us_restrictions = "FY22" }',
                                         'shocks = { us_restrictions = 1.5 }'),
                            "scenarios.us-restrictions.shocks.us_restrictions"),
    "bad default": (GOOD.replace('default = "prior"', 'default = "sometimes"'),
                    "scenarios.risk-weighted.default"),
    "no headline": (GOOD.replace("[scenarios.risk-weighted]", "[scenarios.risk-weighed]"),
                    "scenarios.risk-weighted"),
    "unknown section": (GOOD + "\n[scenario.extra]\n", "key 'scenario'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_scenarios_file_gives_one_line_naming_the_key(tmp_path, case):
    text, key = BAD_CASES[case]
    assert text != GOOD
    path = tmp_path / "scenarios.toml"
    path.write_text(text)
    with pytest.raises(ScenariosError) as err:
        load_scenarios(path, COMPANY)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and key in message, message


def test_cli_run_with_bad_scenarios_exits_2_before_fitting(tmp_path, capsys):
    from stforecast.cli import main
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text("previous")
    bad = tmp_path / "s.toml"
    bad.write_text(BAD_CASES["unknown channel"][0])
    assert main(["run", "--out", str(out), "--scenarios", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "overseas_revenu" in err
    assert (out / "summary.json").read_text() == "previous"


# --- semantics -----------------------------------------------------------------------------------
def test_forced_shock_intensity_follows_persistence(paths):
    _, draws = paths
    sc = scenario({"us_restrictions": "FY22"})
    level = intensities(SPEC, sc, draws, YEARS)
    us = level["us_restrictions"]
    sev = draws.severity["us_restrictions"][..., 1]
    np.testing.assert_array_equal(us[..., 0], 0.0)
    np.testing.assert_allclose(us[..., 1], sev)
    np.testing.assert_allclose(us[..., 2], SPEC.shocks["us_restrictions"].persistence * sev)
    assert all(not level[n].any() for n in SPEC.shocks if n != "us_restrictions")


def first_random_year(shock) -> int:
    """Index of the first year a shock may occur at random (its ``from_year``, else the first)."""
    return YEARS.index(shock.from_year) if shock.from_year else 0


def test_prior_occurrence_rate_matches_the_prior_mean(paths):
    _, draws = paths
    level = intensities(SPEC, scenario({}, default="prior"), draws, YEARS)
    for name, shock in SPEC.shocks.items():
        t = first_random_year(shock)
        assert not level[name][..., :t].any(), name  # no random event before from_year
        first_year = level[name][..., t] > 0  # no carry-over into the first random year
        expected = shock.probability.frozen().mean()
        se = np.sqrt(expected * (1 - expected) / first_year.size) * 5  # paths share p per draw
        assert abs(first_year.mean() - expected) < max(se, 0.01), name


def test_years_over_at_the_report_date_have_no_random_shock_but_can_be_forced(paths):
    _, draws = paths
    shock = SPEC.shocks["us_restrictions"]
    assert shock.from_year == YEARS[1]  # the first forecast year had ended at the report date
    always = intensities(SPEC, scenario({"us_restrictions": 1.0}), draws, YEARS)
    assert not always["us_restrictions"][..., 0].any()
    assert (always["us_restrictions"][..., 1] > 0).all()
    forced = intensities(SPEC, scenario({"us_restrictions": YEARS[0]}), draws, YEARS)
    assert (forced["us_restrictions"][..., 0] > 0).all()


def test_fixed_probability_and_severity(paths):
    _, draws = paths
    always = intensities(SPEC, scenario({"aidc_capex_overrun": {"probability": 1.0,
                                                                 "severity": 2.0}}), draws, YEARS)
    shock = SPEC.shocks["aidc_capex_overrun"]
    rho, expected, level = shock.persistence, [], 0.0
    for t in range(len(YEARS)):  # 2.0 a year from the first random year on, carried at rho
        level = rho * level + (2.0 if t >= first_random_year(shock) else 0.0)
        expected.append(level)
    np.testing.assert_allclose(always["aidc_capex_overrun"][0, 0, 0], expected)
    never = intensities(SPEC, scenario({"aidc_capex_overrun": 0.0}), draws, YEARS)
    assert not never["aidc_capex_overrun"].any()


def shocked_driver(channel: str) -> tuple[str, dict]:
    """The driver a channel changes, and the selection of it that moves: a units segment's
    revenue channel acts on its revenue per unit; a direct segment's on its revenue; revenue
    and exposure channels on every segment's revenue; the others on the driver of that name."""
    for s in COMPANY.segments:
        if channel == f"{s.name}_revenue":
            if s.kind == "units":
                return s.per_unit_driver, {}
            return "segment_revenue", {"segment": s.name}
    if channel in CHANNELS and channel != "revenue":
        return channel, {}
    return "segment_revenue", {}


def test_channels_cover_segments_and_exposures():
    channels = company_channels(COMPANY)
    assert set(CHANNELS) <= set(channels)
    for s in COMPANY.segments:
        assert channels[f"{s.name}_revenue"][0] == "relative"
    for name in COMPANY.exposures:
        assert channels[name[:-len("_share")]][0] == "relative"
    assert len(channels) == len(CHANNELS) + len(COMPANY.segments) + len(COMPANY.exposures)


@pytest.mark.parametrize("shock", sorted(SPEC.shocks))
def test_every_channel_moves_its_driver_in_the_declared_direction(paths, shock):
    drivers, draws = paths
    sc = scenario({shock: "FY22"})
    shocked = apply_shocks(drivers, SPEC, intensities(SPEC, sc, draws, YEARS), COMPANY)
    for channel, effect in SPEC.shocks[shock].channels.items():
        name, where = shocked_driver(channel)
        diff = (shocked[name] - drivers[name]).sel(where)
        diff = (diff if channel == "ev_sales_multiple" else diff.sel(year="FY22")).values
        direction = np.sign(effect)
        assert (direction * diff >= -1e-9).all(), (shock, channel)
        assert (direction * diff).mean() > 0, (shock, channel)


def test_relative_effects_compose_by_multiplying(paths):
    drivers, draws = paths
    sc = scenario({"customer_concentration": {"year": "FY22", "severity": 1.0},
                   "talent_competition": {"year": "FY22", "severity": 1.0}})
    shocked = apply_shocks(drivers, SPEC, intensities(SPEC, sc, draws, YEARS), COMPANY)
    e1 = SPEC.shocks["customer_concentration"].channels["revenue"]
    e2 = SPEC.shocks["talent_competition"].channels["revenue"]
    ratio = (shocked["segment_revenue"] / drivers["segment_revenue"]).sel(year="FY22")
    np.testing.assert_allclose(ratio.values, (1 + e1) * (1 + e2))


def test_costs_are_sticky_when_revenue_is_cut(paths):
    """Operating costs are amounts (``stforecast.costs``): a revenue shock leaves R&D as it was
    and cuts selling and admin costs by less than revenue (sticky); the ratio drivers that carry
    cost shocks stay 0 when no shock acts on them."""
    drivers, draws = paths
    sc = scenario({"customer_concentration": "FY22"})
    shocked = apply_shocks(drivers, SPEC, intensities(SPEC, sc, draws, YEARS), COMPANY)
    rev0 = drivers["segment_revenue"].sum("segment")
    rev1 = shocked["segment_revenue"].sum("segment")
    assert (rev1.sel(year="FY22") < rev0.sel(year="FY22")).all()
    for ratio in STICKY_COSTS:
        assert float(abs(shocked[ratio]).max()) == 0.0
    base, hit = statements(drivers, COMPANY), statements(shocked, COMPANY)
    fy22 = dict(year="FY22")
    np.testing.assert_allclose(hit["rnd_expense"].sel(**fy22), base["rnd_expense"].sel(**fy22))
    kept = (rev1 / rev0).sel(**fy22)
    for line in ("selling_marketing_expense", "admin_expense"):
        fell = (hit[line] / base[line]).sel(**fy22)
        assert (fell < 1).all() and (fell > kept).all(), line


def test_base_scenario_is_the_unshocked_model(paths):
    drivers, _ = paths
    out = run(paths, base={})
    plain = statements(drivers, COMPANY)
    for name in ("revenue", "cash", "target_price"):
        np.testing.assert_array_equal(out[name].isel(scenario=0).values, plain[name].values)


# --- coherence -----------------------------------------------------------------------------------
def test_forced_shocks_move_outcomes_the_way_their_channels_say(paths):
    out = run(paths, base={}, us={"us_restrictions": "FY22"},
              squeeze={"public_sector_squeeze": "FY22"})
    base, us, sq = (out.sel(scenario=n) for n in ("base", "us", "squeeze"))
    fy22 = dict(year="FY22")
    # US restrictions: less revenue, lower margin, more capex, lower multiple and target price
    assert (us["revenue"].sel(**fy22) < base["revenue"].sel(**fy22)).all()
    assert (us["gross_margin"].sel(**fy22) < base["gross_margin"].sel(**fy22)).all()
    assert (us["capex"].sel(**fy22) >= base["capex"].sel(**fy22)).all()
    assert (us["capex"].sel(**fy22) > base["capex"].sel(**fy22)).mean() > 0.99
    assert (us["ev_sales_multiple"] < base["ev_sales_multiple"]).all()
    assert (us["target_price"] < base["target_price"]).all()
    # Public-sector squeeze: less Smart City revenue, longer receivable days, less cash
    assert (sq["revenue_smart_city"].sel(**fy22) < base["revenue_smart_city"].sel(**fy22)).all()
    assert (sq["revenue_smart_business"] == base["revenue_smart_business"]).all()
    assert (sq["trade_receivable_days"].sel(**fy22) > base["trade_receivable_days"].sel(**fy22)).all()
    # Cash: lower on (almost) every path. Where receivable days are already extreme (500+), the
    # revenue cut itself releases more receivables than the extra days add: a few paths in 1,000.
    cash_lower = sq["cash"].sel(**fy22) < base["cash"].sel(**fy22)
    assert cash_lower.mean() > 0.99
    assert float((sq["cash"] - base["cash"]).sel(**fy22).median()) < -300
    # both persist: FY23 still below base, FY21 untouched
    for shocked in (us, sq):
        assert (shocked["revenue"].sel(year="FY23") < base["revenue"].sel(year="FY23")).all()
        np.testing.assert_array_equal(shocked["revenue"].sel(year="FY21"),
                                      base["revenue"].sel(year="FY21"))


def test_risk_weighted_and_stress_lie_below_base_and_stress_below_its_own_prior():
    """The risk-weighted scenario and both stress shocks forced in FY22 lie below the base; the
    two stress shocks at their prior probability lie between the base and both forced. (Since the
    shocks' probabilities were calibrated to pre-report events, seven shocks at their priors can
    cost as much by FY23 as the two forced ones alone, so risk-weighted is no longer required to
    lie above combined-stress.)"""
    drivers = driver_paths(fake_posterior(draws=400, seed=3), COMPANY, OBS, 25,
                           np.random.default_rng(4))
    draws = draw_shocks(SPEC, tuple(drivers.sizes[d] for d in SAMPLE_DIMS), len(YEARS),
                        np.random.default_rng(5))
    spec = SPEC.with_scenarios({
        **SPEC.scenarios,
        "pair-at-prior": scenario({"us_restrictions": "prior", "public_sector_squeeze": "prior"},
                                  name="pair-at-prior")})
    out = simulate_scenarios(drivers, COMPANY, spec, draws, keep=["revenue", "target_price"])
    med = out.median(SAMPLE_DIMS)
    for name, m in (("revenue", med["revenue"].sel(year="FY23")),
                    ("target_price", med["target_price"])):
        base, risk, pair, stress = (float(m.sel(scenario=s)) for s in
                                    ("base", "risk-weighted", "pair-at-prior", "combined-stress"))
        assert risk < base and stress < base, (name, base, risk, stress)
        assert stress < pair < base, (name, base, pair, stress)


def test_simulate_with_scenarios_is_reproducible():
    post = fake_posterior(draws=50)
    a = simulate(post, COMPANY, OBS, 4, np.random.default_rng(9), scenarios=SPEC,
                 keep=["target_price"])
    b = simulate(post, COMPANY, OBS, 4, np.random.default_rng(9), scenarios=SPEC,
                 keep=["target_price"])
    assert list(a["scenario"].values) == list(SPEC.scenarios)
    xr.testing.assert_identical(a, b)


def test_channels_table_is_documented():
    for channel, (kind, units) in company_channels(COMPANY).items():
        assert kind in ("relative", "additive") and units, channel


# --- calibrated shocks: own severities, common factor, sources -------------------------------------
def _occurs_by_last_year(spec, draws, name) -> np.ndarray:
    """Whether shock ``name`` occurs in some forecast year (at its prior), per (chain, draw, path)."""
    level = intensities(spec, scenario({}, default="prior"), draws, YEARS)[name]
    return (level > 0).any(axis=-1)


def test_common_factor_raises_the_chance_that_both_stress_shocks_occur():
    """With the policy-stress factor, P(both by the last year) exceeds P(US) x P(squeeze) by more
    than 4 MCSE; without it (same file, factor removed) the excess is within 4 MCSE of zero.
    100,000 paths (2 x 2,000 x 25); the MCSE of the covariance is from ``mcse.mcse_mean``."""
    from stforecast.mcse import mcse_mean
    assert SPEC.factors["policy_stress"].shocks == ("us_restrictions", "public_sector_squeeze")
    shape = (2, 2000, 25)
    excess = {}
    for label, spec in (("factor", SPEC), ("independent", SPEC.__class__(
            SPEC.path, SPEC.sha256, SPEC.shocks, SPEC.scenarios, {}))):
        draws = draw_shocks(spec, shape, len(YEARS), np.random.default_rng(11))
        us = _occurs_by_last_year(spec, draws, "us_restrictions").astype(float)
        ps = _occurs_by_last_year(spec, draws, "public_sector_squeeze").astype(float)
        cov = (us - us.mean()) * (ps - ps.mean())  # mean = P(both) - P(us) P(ps)
        excess[label] = (float(cov.mean()), mcse_mean(cov), us.mean(), ps.mean())
    value, se, p_us, p_ps = excess["factor"]
    assert value > 4 * se and value > 0.01, excess
    value0, se0, q_us, q_ps = excess["independent"]
    assert abs(value0) < 4 * se0, excess
    # the factor leaves each shock's own chance of occurring unchanged (same marginal draws)
    assert abs(p_us - q_us) < 0.01 and abs(p_ps - q_ps) < 0.01, excess


def test_factor_correlation_is_drawn_from_its_prior():
    draws = draw_shocks(SPEC, (1, 4000, 5), len(YEARS), np.random.default_rng(12))
    rho = draws.correlation["policy_stress"].ravel()
    prior = SPEC.factors["policy_stress"].correlation.frozen()
    assert stats.kstest(rho, prior.cdf).pvalue > 1e-3


@pytest.mark.parametrize("shock", sorted(SPEC.shocks))
def test_each_shock_severity_follows_its_own_declared_distribution(shock):
    """KS test of 20,000 drawn severities against the shock's declared distribution (fails at
    p < 0.001); and the test can tell distributions apart: the same draws are rejected against
    the old shared template (LogNormal, 90% in [0.5, 1.5]) for the heavy-tailed shocks."""
    from stforecast.priors import parse_prior
    draws = draw_shocks(SPEC, (1, 800, 25), len(YEARS), np.random.default_rng(13))
    x = draws.severity[shock][..., 0].ravel()
    declared = SPEC.shocks[shock].severity.frozen()
    assert stats.kstest(x, declared.cdf).pvalue > 1e-3, shock
    if SPEC.shocks[shock].severity.dist == "LogStudentT":
        template = parse_prior("t", "k", {"dist": "LogNormal", "range": [0.5, 1.5]},
                               "positive").frozen()
        assert stats.kstest(x, template.cdf).pvalue < 1e-6, shock
        upper = SPEC.shocks[shock].severity.params["upper"]
        assert x.max() <= upper + 1e-9 and np.isfinite(declared.mean())


def test_stress_shocks_are_heavy_tailed_and_differ():
    us = SPEC.shocks["us_restrictions"].severity.frozen()
    ps = SPEC.shocks["public_sector_squeeze"].severity.frozen()
    assert SPEC.shocks["us_restrictions"].severity.describe() != \
        SPEC.shocks["public_sector_squeeze"].severity.describe()
    for d in (us, ps):  # 99th percentile well beyond the old template's (1.88)
        assert float(d.ppf(0.99)) > 2.3 and float(d.ppf(0.5)) < 1.0


YEAR = re.compile(r"\b(19|20)\d{2}\b")


def test_every_shock_states_its_basis_and_cites_nothing_after_the_report():
    for name, shock in SPEC.shocks.items():
        assert shock.probability_basis.strip() and shock.severity_basis.strip(), name
        for text in (shock.probability_basis, shock.severity_basis, shock.source):
            years = [int(m.group(0)) for m in YEAR.finditer(text)]
            assert all(y <= 2021 for y in years), (name, years)
    for name in ("us_restrictions", "public_sector_squeeze"):
        basis = SPEC.shocks[name].probability_basis + SPEC.shocks[name].severity_basis
        assert len(YEAR.findall(basis)) >= 3 and "was " in basis, name  # dated events; before/after
    for factor in SPEC.factors.values():
        assert factor.source.strip() and factor.reasoning.strip()


def test_toyco_scenarios_carry_the_new_fields():
    toy = load_company("toyco")
    spec = load_scenarios(toy.scenarios_path, toy)
    assert spec.factors and all(s.probability_basis.startswith("synthetic") for s in
                                spec.shocks.values())
    draws = draw_shocks(spec, (1, 10, 3), len(toy.forecast_years), np.random.default_rng(0))
    assert set(draws.correlation) == set(spec.factors)
