"""Tests for stforecast.engine: replication of the report, driver sensitivities computed by hand,
accounting identities on random drivers (hypothesis), and vectorisation over sample dimensions."""

from dataclasses import replace

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stforecast.company import OPENING_ITEMS, YEARLY_DRIVERS, load_company
from stforecast.engine import report_case, run_engine

COMPANY = load_company()
YEARS = list(COMPANY.forecast_years)
SEGMENTS = COMPANY.segment_names
#: The lines `stforecast replicate --json` prints with a ``year`` dimension (besides net_cash).
REPLICATED_LINES = (
    "revenue", "revenue_smart_business", "revenue_smart_city", "revenue_smart_life",
    "revenue_smart_auto", "gross_profit", "operating_income", "net_income", "adjusted_net_income",
    "operating_cash_flow", "capex", "free_cash_flow", "cash",
)
WC_ASSETS = ("trade_receivables", "other_receivables", "prepayments", "receivables_other",
             "inventories")
WC_LIABILITIES = ("trade_payables", "other_payables", "payables_other", "contract_liabilities")


@pytest.fixture(scope="module")
def report():
    return COMPANY


@pytest.fixture(scope="module")
def base(report):
    return report_case(report)


def _run(report, drivers):
    return run_engine(drivers, report.opening, report.market)


# --- replication of Figures 64-68 ---------------------------------------------------------------
@pytest.mark.parametrize("year", YEARS)
@pytest.mark.parametrize("line", REPLICATED_LINES)
def test_replicates_published_line(report, base, line, year):
    engine = float(base[line].sel(year=year))
    published = float(report.published[line].sel(year=year))
    tol = max(0.005 * abs(published), 3.0)
    assert abs(engine - published) <= tol, f"{line} {year}: engine {engine:,.1f} vs report {published:,.1f}"


def test_replicates_target_price(report, base):
    assert base["target_price"].ndim == 0
    assert abs(float(base["target_price"]) - 8.08) <= 0.02
    assert report.market.target_price_published == pytest.approx(8.08)
    assert float(report.published["target_price_hkd"]) == pytest.approx(8.08)


@pytest.mark.parametrize("name, published", [("enterprise_value", 217_555),
                                             ("equity_value", 224_743)])
def test_replicates_figure_68(report, base, name, published):
    assert float(report.published[name]) == published
    assert float(base[name]) == pytest.approx(published, rel=0.005)


# --- driver changes, checked against the identities worked by hand -----------------------------
def test_receivable_days_change_flows_through_by_hand(report, base):
    d = report.report_case.copy(deep=True)
    d["trade_receivable_days"].loc[{"year": "FY22"}] += 10.0
    new = _run(report, d)

    drivers = report.report_case
    revenue_fy22 = float(drivers["segment_revenue"].sel(year="FY22").sum())
    impairment_rate = float(drivers["impairment_rate"].sel(year="FY22"))
    tax_credit_rate = float(drivers["tax_credit_rate"].sel(year="FY22"))
    m = report.market

    d_ar = 10.0 * revenue_fy22 / 365.0
    d_impairment = impairment_rate * d_ar
    d_pbt = -d_impairment
    d_tax = -tax_credit_rate * d_pbt
    d_ocf_fy22 = d_pbt + d_tax - d_ar
    d_ocf_fy23 = d_ar                    # FY23 days unchanged: the extra receivable is collected
    d_cash_fy22 = d_ocf_fy22             # investing and financing flows do not move
    d_cash_fy23 = d_cash_fy22 + d_ocf_fy23
    d_target = d_cash_fy22 / m.shares_outstanding_mn / m.fx   # net cash at FY22

    def delta(name, year=None):
        a, b = new[name], base[name]
        if year is not None:
            a, b = a.sel(year=year), b.sel(year=year)
        return float(a - b)

    def close(actual, expected):
        assert actual == pytest.approx(expected, rel=1e-6, abs=1e-12)

    assert m.valuation_year == "FY22"
    close(delta("trade_receivables", "FY22"), d_ar)
    close(delta("impairment_losses", "FY22"), d_impairment)
    close(delta("profit_before_tax", "FY22"), d_pbt)
    close(delta("income_tax", "FY22"), d_tax)
    close(delta("net_income", "FY22"), d_pbt + d_tax)
    close(delta("change_in_working_capital", "FY22"), -d_ar)
    close(delta("change_in_working_capital", "FY23"), d_ar)
    close(delta("operating_cash_flow", "FY22"), d_ocf_fy22)
    close(delta("operating_cash_flow", "FY23"), d_ocf_fy23)
    close(delta("cash", "FY22"), d_cash_fy22)
    close(delta("cash", "FY23"), d_cash_fy23)
    close(delta("target_price"), d_target)
    # Nothing before FY22 moves, and neither does EV (revenue is unchanged).
    assert delta("cash", "FY21") == 0.0
    assert delta("net_income", "FY23") == 0.0
    assert delta("enterprise_value") == 0.0
    assert d_ocf_fy22 < 0 and d_target < 0


def test_gross_margin_point_raises_gross_profit(report, base):
    d = report.report_case.copy(deep=True)
    d["gross_margin"].loc[{"year": "FY22"}] += 0.01
    new = _run(report, d)
    revenue_fy22 = float(report.report_case["segment_revenue"].sel(year="FY22").sum())
    d_gp = new["gross_profit"] - base["gross_profit"]
    assert float(d_gp.sel(year="FY22")) == pytest.approx(0.01 * revenue_fy22, rel=1e-9)
    assert float(d_gp.sel(year="FY21")) == 0.0 and float(d_gp.sel(year="FY23")) == 0.0
    d_oi = new["operating_income"] - base["operating_income"]
    assert float(d_oi.sel(year="FY22")) == pytest.approx(0.01 * revenue_fy22, rel=1e-9)


def test_multiple_scales_enterprise_value(report, base):
    d = report.report_case.copy(deep=True)
    d["ev_sales_multiple"] = d["ev_sales_multiple"] * 1.1
    new = _run(report, d)
    assert float(new["enterprise_value"]) == pytest.approx(1.1 * float(base["enterprise_value"]),
                                                           rel=1e-12)
    m = report.market
    d_ev = float(new["enterprise_value"] - base["enterprise_value"])
    assert float(new["target_price"] - base["target_price"]) == pytest.approx(
        d_ev / m.shares_outstanding_mn / m.fx, rel=1e-9)
    # The multiple is a valuation input only: no statement line moves.
    xr.testing.assert_equal(new["cash"], base["cash"])


# --- accounting identities on random drivers ----------------------------------------------------
N_DRAW = 5
MARKET = COMPANY.market


def _arr(shape, lo, hi):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False,
                                                            allow_infinity=False,
                                                            exclude_min=True, exclude_max=True))


# (low, high) of each yearly driver; anything not listed is a money amount in (-2000, 2000).
DRIVER_RANGES = {
    "gross_margin": (0.2, 0.9),
    "selling_marketing_ratio": (0.0, 0.6), "admin_ratio": (0.0, 0.8), "rnd_ratio": (0.0, 1.2),
    "sbc_ratio": (0.0, 0.4), "impairment_rate": (0.0, 0.2), "other_income_ratio": (0.0, 0.2),
    "tax_credit_rate": (-0.1, 0.3), "prepayments_ratio": (0.0, 0.1),
    "receivables_other_ratio": (0.0, 0.1), "payables_other_ratio": (0.0, 0.4),
    "contract_liabilities_ratio": (0.0, 0.2), "da_ratio": (0.0, 0.4), "capex_ratio": (0.0, 0.8),
    "trade_receivable_days": (10.0, 500.0), "other_receivable_days": (10.0, 500.0),
    "inventory_days": (10.0, 500.0), "trade_payable_days": (10.0, 500.0),
    "other_payable_days": (10.0, 500.0),
    "finance_income": (0.0, 500.0), "finance_expense": (0.0, 500.0),
    "share_of_losses": (0.0, 50.0), "fv_loss_preferred_shares": (0.0, 30_000.0),
    "fv_gains_financial_assets": (0.0, 200.0), "minorities": (-50.0, 50.0),
    "equity_financing": (0.0, 6_000.0), "total_debt": (0.0, 3_000.0),
}


@st.composite
def engine_inputs(draw):
    shape = (N_DRAW, len(YEARS))
    seg = draw(_arr(shape + (len(SEGMENTS),), 1.0, 5_000.0))
    data = {"segment_revenue": (("draw", "year", "segment"), seg)}
    # Revenue, margin, days and the multiple are drawn element by element (hypothesis shrinks
    # them); the remaining ratios and amounts come from a drawn seed, to keep the test fast.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for name in YEARLY_DRIVERS:
        lo, hi = DRIVER_RANGES.get(name, (-2_000.0, 2_000.0))
        if name == "gross_margin" or name.endswith("_days"):
            values = draw(_arr(shape, lo, hi))
        else:
            values = rng.uniform(lo, hi, shape)
        data[name] = (("draw", "year"), values)
    data["ev_sales_multiple"] = (("draw",), draw(_arr((N_DRAW,), 1.0, 80.0)))
    drivers = xr.Dataset(data, coords={"year": YEARS, "segment": list(SEGMENTS)})
    opening = {k: draw(st.floats(0.0, 12_000.0)) for k in OPENING_ITEMS}
    market = replace(MARKET,
                     shares_outstanding_mn=draw(st.floats(1_000.0, 50_000.0)),
                     fx=draw(st.floats(0.5, 1.2)),
                     valuation_year=draw(st.sampled_from(YEARS)),
                     minority_interest=draw(st.floats(0.0, 500.0)))
    return drivers, opening, market


def _same(actual, expected, *terms):
    """Equal up to floating-point error relative to the size of the terms involved."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    scale = max([1.0] + [float(np.max(np.abs(np.asarray(t, float)))) for t in terms]
                + [float(np.max(np.abs(expected)))])
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9 * scale)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine_inputs())
def test_accounting_identities(inputs):
    check_accounting_identities(*inputs)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine_inputs())
def test_accounting_identities_thorough(inputs):
    check_accounting_identities(*inputs)


def check_accounting_identities(d, opening, market):
    out = run_engine(d, opening, market)
    v = {k: out[k].transpose(*[x for x in ("draw", "year") if x in out[k].dims]).values
         for k in out.data_vars}
    seg = d["segment_revenue"].values
    revenue = v["revenue"]

    assert set(out["revenue"].dims) == {"draw", "year"}
    for name in ("enterprise_value", "equity_value", "target_price", "cash_burn"):
        assert out[name].dims == ("draw",)

    # Income statement
    _same(revenue, seg.sum(axis=-1), seg)
    for i, s in enumerate(SEGMENTS):
        _same(v[f"revenue_{s}"], seg[..., i])
    _same(v["gross_profit"], revenue - v["cost_of_sales"], revenue)
    _same(v["gross_profit"], revenue * d["gross_margin"].values, revenue)
    _same(v["operating_income"],
          v["gross_profit"] - v["selling_marketing_expense"] - v["admin_expense"]
          - v["rnd_expense"], revenue, v["rnd_expense"])
    _same(v["selling_marketing_expense"], revenue * d["selling_marketing_ratio"].values, revenue)
    _same(v["profit_before_tax"], v["operating_income"] + v["non_operating_income"],
          v["operating_income"], v["non_operating_income"])
    _same(v["net_income"], v["profit_before_tax"] + v["income_tax"] - d["minorities"].values,
          v["profit_before_tax"], v["income_tax"])

    # Cash flow: roll-forward from the opening balance
    flows = v["operating_cash_flow"] + v["investing_cash_flow"] + v["financing_cash_flow"]
    prev_cash = np.concatenate([np.full((N_DRAW, 1), opening["cash"]), v["cash"][:, :-1]], axis=1)
    _same(v["cash"], prev_cash + flows, v["cash"], prev_cash, v["operating_cash_flow"],
          v["investing_cash_flow"], v["financing_cash_flow"])
    _same(v["net_change_in_cash"], flows, v["operating_cash_flow"], v["investing_cash_flow"])
    _same(v["free_cash_flow"], v["operating_cash_flow"] - v["capex"], v["operating_cash_flow"],
          v["capex"])
    _same(v["cash_burn"], -v["free_cash_flow"].sum(axis=1), v["free_cash_flow"])
    _same(v["net_cash"], v["cash"] - d["total_debt"].values, v["cash"], d["total_debt"].values)

    # Valuation
    iy = YEARS.index(market.valuation_year)
    ev = d["ev_sales_multiple"].values * revenue[:, iy]
    _same(v["enterprise_value"], ev, ev)
    _same(v["target_price"] * market.shares_outstanding_mn * market.fx,
          ev + v["net_cash"][:, iy] - market.minority_interest, ev, v["net_cash"])

    # Working capital: the changes add up to the move from the opening position
    wc_open = sum(opening[k] for k in WC_ASSETS) - sum(opening[k] for k in WC_LIABILITIES)
    wc = sum(v[k] for k in WC_ASSETS) - sum(v[k] for k in WC_LIABILITIES)
    _same(v["working_capital"], wc, *(v[k] for k in WC_ASSETS + WC_LIABILITIES))
    _same(v["change_in_working_capital"].sum(axis=1), -(wc[:, -1] - wc_open),
          wc, wc_open, *(v[k] for k in WC_ASSETS + WC_LIABILITIES))


# --- vectorisation ------------------------------------------------------------------------------
def test_broadcast_report_case_equals_point_case(report, base):
    drivers = report.report_case.expand_dims(draw=1000)
    out = _run(report, drivers)
    assert out.sizes["draw"] == 1000
    assert set(base.data_vars) == set(out.data_vars)
    for name in base.data_vars:
        point = base[name]
        assert "draw" in out[name].dims, name
        expected = point.broadcast_like(out[name]).transpose(*out[name].dims)
        np.testing.assert_allclose(out[name].values, expected.values, rtol=1e-12, atol=1e-9,
                                   err_msg=name)


def test_varying_draws_match_point_runs(report):
    """Each draw of a batch (chain x draw, sample dims AFTER year) equals the engine on that
    draw's drivers alone."""
    rng = np.random.default_rng(7)
    case = report.report_case
    days = case["trade_receivable_days"] * xr.DataArray(rng.uniform(0.7, 1.4, (2, 3)),
                                                        dims=("chain", "draw"))
    multiple = case["ev_sales_multiple"] * xr.DataArray(rng.uniform(0.5, 1.5, (2, 3)),
                                                        dims=("chain", "draw"))
    drivers = case.assign(trade_receivable_days=days.transpose("year", "chain", "draw"),
                          ev_sales_multiple=multiple)
    out = _run(report, drivers)
    for c in range(2):
        for k in range(3):
            one = _run(report, drivers.isel(chain=c, draw=k))
            got = out.isel(chain=c, draw=k)
            for name in ("cash", "operating_cash_flow", "net_income", "target_price",
                         "cash_burn", "enterprise_value"):
                xr.testing.assert_allclose(got[name].transpose(*one[name].dims), one[name],
                                           rtol=1e-12)
