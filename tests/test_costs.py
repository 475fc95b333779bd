"""Costs in currency, cash that obeys accounting, funding and dilution, discounting
(``stforecast.costs`` and the engine's ``CORRECT`` conventions), and the conventions table."""

import numpy as np
import pytest
import xarray as xr

from stforecast.company import load_company
from stforecast.costs import point_funding, semi_variable
from stforecast.engine import CORRECT, REPORT, convention_table, report_case, run_engine
from stforecast.priors import load_priors
from stforecast.registry import SAMPLE_DIMS
from stforecast.simulate import driver_paths, statements

from test_shocks import OBS, fake_posterior

COMPANY = load_company("sensetime")
SPEC = load_priors(COMPANY.priors_path, COMPANY.growth_drivers())
YEARS = list(COMPANY.forecast_years)
M = COMPANY.market


def _case(**extra):
    funding = point_funding(SPEC, COMPANY).assign(
        {k: xr.DataArray(v) for k, v in extra.items()})
    return report_case(COMPANY, CORRECT, funding), funding


def _v(ds, name, year=None):
    da = ds[name] if year is None else ds[name].sel(year=year)
    return float(da)


# --- the report's case under both conventions ------------------------------------------------------
def test_conventions_table_on_the_report_case():
    table = convention_table(COMPANY, point_funding(SPEC, COMPANY))
    sbc = (COMPANY.report_case["sbc_ratio"] * COMPANY.report_case["segment_revenue"]
           .sum("segment")).values
    deposits = COMPANY.opening["term_deposits"] + COMPANY.opening["other_liquid_investments"]
    assert deposits == 5890
    for i, y in enumerate(YEARS):
        lines = {k: v[y] for k, v in table["lines"].items()}
        # the report's columns are the published figures (Figure 67 / 68)
        assert lines["operating_cash_flow"]["report"] == pytest.approx(
            float(COMPANY.published["operating_cash_flow"].sel(year=y)), abs=3)
        assert lines["cash"]["report"] == pytest.approx(
            float(COMPANY.published["cash"].sel(year=y)), abs=5)
        # SBC added back: OCF and FCF up by that year's SBC, cash by the cumulative SBC
        assert lines["operating_cash_flow"]["difference"] == pytest.approx(sbc[i], abs=1e-3)
        assert lines["free_cash_flow"]["difference"] == pytest.approx(sbc[i], abs=1e-3)
        assert lines["cash"]["difference"] == pytest.approx(sbc[: i + 1].sum(), abs=1e-3)
        # liquidity counts term deposits; net cash is liquidity less debt
        assert lines["liquidity"]["correct"] == pytest.approx(lines["cash"]["correct"] + deposits)
        assert lines["net_cash"]["difference"] == pytest.approx(sbc[: i + 1].sum() + deposits,
                                                                abs=1e-3)
    values = table["values"]
    assert values["target_price"]["report"] == pytest.approx(8.08, abs=0.01)
    assert values["value_today"]["report"] == values["target_price"]["report"]
    # correct: per diluted share (FY22 SBC paid in shares at the path's value), discounted
    vy = M.valuation_year
    shares = values["shares_outstanding"]["correct"]
    ev = M.ev_sales_multiple * float(COMPANY.report_case["segment_revenue"].sel(year=vy).sum())
    net_cash = table["lines"]["net_cash"][vy]["correct"]
    assert values["target_price"]["correct"] == pytest.approx((ev + net_cash) / shares / M.fx,
                                                              rel=1e-4)
    coe = float(SPEC.discounting["cost_of_equity"].frozen().ppf(0.5))
    assert values["value_today"]["correct"] == pytest.approx(
        values["target_price"]["correct"] / (1 + coe) ** SPEC.settings["horizon_years"],
        rel=1e-4)
    price = (ev + net_cash) / M.shares_outstanding_mn  # FY22 value before its new shares
    assert shares - M.shares_outstanding_mn == pytest.approx(sbc[1] / price, rel=1e-4)
    assert values["shares_outstanding"]["report"] == M.shares_outstanding_mn


def test_report_conventions_unchanged_by_the_new_lines():
    base = report_case(COMPANY)
    assert base.attrs["conventions"] == "report"
    assert _v(base, "target_price") == pytest.approx(8.0804, abs=1e-3)
    assert "shares_outstanding" not in base and "funding_raised" not in base
    np.testing.assert_allclose(base["liquidity"] - base["cash"], 5890)


# --- funding and dilution arithmetic ----------------------------------------------------------------
def test_equity_raise_restores_the_floor_and_dilutes_by_hand():
    floor = 20_000.0
    out, extra = _case(liquidity_floor=floor, raise_with_debt=0.0)
    disc = float(extra["equity_discount"])
    buffer = float(extra["raise_buffer_years"])
    shares = M.shares_outstanding_mn
    raised_any = False
    for i, y in enumerate(YEARS):
        liq = _v(out, "liquidity", y)
        raised = _v(out, "equity_raised", y)
        assert _v(out, "debt_raised", y) == 0.0
        burn = -_v(out, "free_cash_flow", y)
        if raised > 0:
            raised_any = True
            assert liq == pytest.approx(floor + buffer * max(burn, 0.0), rel=1e-9)
        assert liq >= floor - 1e-6
        # the path's value per share before this year's new shares
        value = (M.ev_sales_multiple * _v(out, "revenue", y)
                 + _v(out, "net_cash", y) - raised - M.minority_interest)
        price = value / shares
        vested = _v(out, "sbc", y) * float(extra["sbc_dilutes"].sel(year=y))
        new = raised / (price * (1 - disc)) + vested / price
        assert _v(out, "new_shares", y) == pytest.approx(new, rel=1e-9)
        shares += new
        assert _v(out, "shares_outstanding", y) == pytest.approx(shares, rel=1e-12)
    assert raised_any
    assert _v(out, "dilution") == pytest.approx(shares / M.shares_outstanding_mn - 1, rel=1e-12)
    # the target price is per diluted share at the valuation year
    vy = M.valuation_year
    equity = _v(out, "enterprise_value") + _v(out, "net_cash", vy) - M.minority_interest
    assert _v(out, "target_price") == pytest.approx(
        equity / _v(out, "shares_outstanding", vy) / M.fx, rel=1e-12)


def test_debt_raise_adds_debt_and_next_year_interest_not_shares():
    floor = 20_000.0
    debt_out, extra = _case(liquidity_floor=floor, raise_with_debt=1.0)
    plain = report_case(COMPANY, REPORT)
    rate = float(extra["debt_interest_rate"])
    raised = debt_out["debt_raised"].values
    assert raised.sum() > 0 and debt_out["equity_raised"].values.sum() == 0
    np.testing.assert_allclose(debt_out["total_debt"].values,
                               plain["total_debt"].values + np.cumsum(raised))
    assert (debt_out["liquidity"].values >= floor - 1e-6).all()
    # interest on last year's new debt lowers this year's PBT (tax credit aside)
    sbc_only = _v(debt_out, "new_shares", YEARS[-1])
    assert sbc_only == pytest.approx(
        _v(debt_out, "sbc", YEARS[-1]) * float(extra["sbc_dilutes"].sel(year=YEARS[-1]))
        / ((M.ev_sales_multiple * _v(debt_out, "revenue", YEARS[-1])
            + _v(debt_out, "net_cash", YEARS[-1]) - M.minority_interest)
           / _v(debt_out, "shares_outstanding", YEARS[-2])), rel=1e-9)
    extra_interest = np.concatenate([[0.0], np.cumsum(raised)[:-1]]) * rate
    nofund, _ = _case(liquidity_floor=0.0)
    np.testing.assert_allclose(
        (nofund["profit_before_tax"] - debt_out["profit_before_tax"]).values, extra_interest,
        atol=1e-6)


# --- simulated paths -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated():
    drivers = driver_paths(fake_posterior(draws=40), COMPANY, OBS, 10, np.random.default_rng(3))
    high = drivers.assign(liquidity_floor=xr.DataArray(15_000.0))
    return statements(drivers, COMPANY), statements(high, COMPANY), high


def test_liquidity_never_below_the_floor_on_any_path(simulated):
    _, out, drivers = simulated
    floor = float(drivers["liquidity_floor"])
    raised = (out["funding_raised"] > 0).any("year")
    assert 0.2 < float(raised.mean()) < 1.0  # the floor binds on some paths, not all
    assert float((out["liquidity"] - floor).min()) >= -1e-6
    # the cash roll-forward holds with the raises in the financing flows
    flows = out["operating_cash_flow"] + out["investing_cash_flow"] + out["financing_cash_flow"]
    prev = out["cash"].shift(year=1).fillna(COMPANY.opening["cash"])
    np.testing.assert_allclose((prev + flows).values, out["cash"].values, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["liquidity"].values,
                               (out["cash"] + out["term_deposits"]
                                + COMPANY.opening["other_liquid_investments"]).values, atol=1e-6)
    # SBC added back: OCF identity with the SBC term
    ocf = (out["profit_before_tax"] + out["depreciation_amortisation"]
           + out["change_in_working_capital"] + out["income_tax"] + out["sbc"])
    ocf = ocf + drivers["fv_loss_preferred_shares"] - drivers["finance_income"]
    finance = out["profit_before_tax"] * 0 + drivers["finance_expense"] + (
        out["debt_raised"].cumsum("year").shift(year=1).fillna(0) * drivers["debt_interest_rate"])
    np.testing.assert_allclose((ocf + finance).transpose(*out["operating_cash_flow"].dims).values,
                               out["operating_cash_flow"].values, rtol=1e-9, atol=1e-6)
    # raising dilutes: paths that raised equity have more shares than paths with SBC only
    assert float(out["dilution"].where(out["equity_raised"].sum("year") > 0).min()) > \
        float(out["dilution"].where(out["funding_raised"].sum("year") == 0).median())


def test_value_today_is_discounted_target_price(simulated):
    out, _, drivers = simulated
    expected = out["target_price"] / (1 + drivers["cost_of_equity"]) ** float(
        drivers["valuation_horizon_years"])
    np.testing.assert_allclose(out["value_today"].values,
                               expected.transpose(*out["value_today"].dims).values, rtol=1e-12)
    assert (out["value_today"] < out["target_price"]).mean() > 0.99


# --- cost behaviour -------------------------------------------------------------------------------
def test_costs_are_sticky_on_the_way_down():
    rev = xr.DataArray([100.0, 120.0, 90.0], dims="year", coords={"year": YEARS})
    e, s, infl = 0.6, 0.4, 0.03
    cost = semi_variable(50.0, e, infl, s, rev, 100.0)
    g = np.log([100 / 100, 120 / 100, 90 / 120])
    steps = infl + np.where(g >= 0, e * g, (1 - s) * e * g)
    np.testing.assert_allclose(cost.values, 50 * np.exp(np.cumsum(steps)))
    # a 25% fall in revenue cuts the cost by less than a 25% rise would add
    assert cost.values[2] / cost.values[1] > (90 / 120) ** e * np.exp(infl) - 1e-12


def test_management_cuts_costs_when_runway_is_short(simulated):
    base, _, drivers = simulated
    # everyone cuts when the threshold is huge; no one when it is zero
    always = statements(drivers.assign(cut_runway_years=xr.DataArray(1e6)), COMPANY)
    never = statements(drivers.assign(cut_runway_years=xr.DataArray(0.0)), COMPANY)
    burning = (-always["free_cash_flow"].sel(year=YEARS[0]) > 0)
    assert float(never["management_cut"].sum()) == 0.0
    cut = drivers["cut_size"]
    for year_index in (1,):
        y = YEARS[year_index]
        ratio = always["rnd_expense"].sel(year=y) / never["rnd_expense"].sel(year=y)
        expected = xr.where(burning, 1 - cut, 1.0)
        np.testing.assert_allclose(ratio.transpose(*SAMPLE_DIMS).values,
                                   expected.broadcast_like(ratio).transpose(*SAMPLE_DIMS).values,
                                   rtol=1e-9)
    assert float(always["management_cut"].sel(year=YEARS[1]).mean()) == pytest.approx(
        float(burning.mean()))
    assert float(always["management_cut"].sel(year=YEARS[0]).sum()) == 0.0  # decided at year end
    # R&D does not follow revenue: the same paths with revenue halved keep their R&D
    halved = drivers.assign(segment_revenue=drivers["segment_revenue"] * 0.5,
                            cut_runway_years=xr.DataArray(0.0))
    np.testing.assert_allclose(statements(halved, COMPANY)["rnd_expense"].values,
                               never["rnd_expense"].values)


def test_cash_below_zero_is_met_by_redeeming_term_deposits():
    """Correct conventions: the plan's term deposits are redeemed before cash goes negative;
    the redemption is a stock carried forward; liquidity (the sum) is unchanged."""
    import xarray as xr
    from stforecast.engine import _redeem_deposits

    cash = xr.DataArray([[100.0, -50.0, -20.0, -80.0], [5.0, 6.0, 7.0, 8.0]],
                        dims=("path", "year"))
    deposits = xr.DataArray([[60.0, 60.0, 60.0, 60.0], [1.0, 1.0, 1.0, 1.0]],
                            dims=("path", "year"))
    new_cash, new_deposits = _redeem_deposits(cash, deposits)
    assert new_cash.values.tolist() == [[100.0, 0.0, 30.0, -20.0], [5.0, 6.0, 7.0, 8.0]]
    assert new_deposits.values.tolist() == [[60.0, 10.0, 10.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    assert ((new_cash + new_deposits) == (cash + deposits)).all()
    # dims in another order come back in the order they came
    again, _ = _redeem_deposits(cash.T, deposits.T)
    assert again.dims == ("year", "path") and (again.T == new_cash).all()
