"""The financial engine: one implementation of the accounting identities.

``run_engine(drivers, opening, market, conventions)`` maps driver paths to financial
statements. It is pure array code over named dimensions: ``drivers`` is an ``xarray.Dataset``
whose variables carry a ``year`` dimension (the forecast years), ``segment_revenue`` also a
``segment`` dimension, and any number of sample dimensions (``chain``, ``draw``, ``path``,
``scenario`` ...) that simply broadcast. The same code evaluates the report's point case and a
million draws.

Units: money in the company's currency, millions; ratios are fractions of revenue
(``impairment_rate`` of year-end trade receivables; ``tax_credit_rate`` of the pre-tax loss
before preferred-share fair-value losses); days are days on year-end balances (receivables on
revenue, inventory and payables on cost of sales); ``target_price`` in the price currency per
share (``market.fx``: reporting currency per unit of the price currency). Sign conventions
follow the report: expenses and losses are positive amounts that are subtracted;
``income_tax`` is a credit (positive = gain).

Operating costs come in one of two forms (the drivers say which): fractions of revenue
(``rnd_ratio`` ...; the report's case), or the currency cost model of ``stforecast.costs``
(``rnd_cash_cost`` ...; the forecast), where the ``*_ratio`` drivers only carry shocks.

**Conventions** (:class:`Conventions`). ``REPORT`` replicates Figures 64-68 as published:

* operating cash flow = PBT + finance expense + D&A + change in working capital + tax
  + preferred-share FV losses - finance income (finance income is shown under investing);
  share-based compensation and impairments are NOT added back (the report does not);
* investing cash flow = - capex - increase in term deposits + finance income;
* financing cash flow = equity raised + net borrowing - finance expense;
* free cash flow = operating cash flow - capex; ``cash`` is cash and cash equivalents;
* net cash = cash and cash equivalents - total debt (Figure 68: term deposits and restricted
  cash are excluded); EV = EV/sales multiple x valuation-year revenue; target price = equity
  value per basic share, undiscounted.

``CORRECT`` (the forecast) differs in six ways:

* share-based compensation is added back in operating cash flow (it is non-cash) and is paid
  in new shares issued at the path's value per share (dilution);
* net cash = liquidity - total debt, liquidity = cash + term deposits + other liquid
  investments (``opening``); cash that would go below zero is met by redeeming term deposits
  first (liquidity unchanged);
* funding: when liquidity at a year end would fall below ``liquidity_floor``, the company
  raises the gap plus ``raise_buffer_years`` of that year's burn, as debt (on paths where
  ``raise_with_debt`` is 1; interest at ``debt_interest_rate`` from the next year) or as equity
  at ``equity_discount`` below the path's value per share (new shares); liquidity never ends a
  year below the floor;
* management response: when the runway at a year end (liquidity / that year's burn) is below
  ``cut_runway_years``, opex and capex are cut by ``cut_size`` from the next year (currency
  cost model only);
* the target price is per diluted share (shares at the valuation year's end), and
  ``value_today`` discounts it to today at ``cost_of_equity`` over ``valuation_horizon_years``.

Funding and the management response are decided year by year (each year's decision uses that
year's statements), vectorised over paths: one pass of the vectorised identities per year.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .company import Market
from .costs import operating_costs, uses_cost_model
from .registry import DAYS_PER_YEAR

#: Lowest value per share at which new shares are issued, as a fraction of today's price (a
#: path whose equity value is gone would otherwise issue infinitely many shares).
MIN_ISSUE_PRICE_FRACTION = 0.01


@dataclass(frozen=True)
class Conventions:
    """How the engine turns flows into cash and value (see the module docstring)."""

    name: str
    sbc_add_back: bool = False
    liquid_investments_in_net_cash: bool = False
    redeem_deposits: bool = False
    funding: bool = False
    dilution: bool = False
    management_response: bool = False
    discount: bool = False

    @property
    def iterative(self) -> bool:
        return self.funding or self.dilution or self.management_response


REPORT = Conventions("report")
CORRECT = Conventions("correct", sbc_add_back=True, liquid_investments_in_net_cash=True,
                      redeem_deposits=True, funding=True, dilution=True, management_response=True, discount=True)
CONVENTIONS = {c.name: c for c in (REPORT, CORRECT)}


def _previous(balance: xr.DataArray, opening: float) -> xr.DataArray:
    """Last year's closing balance along ``year``; the first year's is the opening balance."""
    return balance.shift(year=1).fillna(opening)


def _with_funding(d: xr.Dataset) -> xr.Dataset:
    """Drivers with the funding decisions (``equity_raised``, ``debt_raised`` per year) folded
    into equity financing, total debt and next years' finance expense."""
    if "equity_raised" not in d:
        return d
    debt = d["debt_raised"].cumsum("year")
    interest = (debt.shift(year=1).fillna(0.0)) * d["debt_interest_rate"]
    return d.assign(equity_financing=d["equity_financing"] + d["equity_raised"],
                    total_debt=d["total_debt"] + debt,
                    finance_expense=d["finance_expense"] + interest)


def income_statement(d: xr.Dataset) -> xr.Dataset:
    """Segment revenue -> gross profit -> operating income -> PBT -> net income."""
    segment_revenue = d["segment_revenue"]
    revenue = segment_revenue.sum("segment", skipna=False)  # NaN stays NaN (and is faster)
    gross_profit = revenue * d["gross_margin"]
    if uses_cost_model(d):
        costs = operating_costs(d, revenue)
        sm, admin, rnd = (costs["selling_marketing_expense"], costs["admin_expense"],
                          costs["rnd_expense"])
        sbc = d["sbc_amount"] + 0.0 * revenue
    else:
        sm, admin, rnd = (revenue * d["selling_marketing_ratio"], revenue * d["admin_ratio"],
                          revenue * d["rnd_ratio"])
        sbc = revenue * d["sbc_ratio"]
    opex = sm + admin + rnd
    operating_income = gross_profit - opex
    trade_receivables = revenue * d["trade_receivable_days"] / DAYS_PER_YEAR
    impairment = trade_receivables * d["impairment_rate"]
    other_income = revenue * d["other_income_ratio"]
    non_operating = (other_income + d["other_gains"] + d["finance_income"] - d["finance_expense"]
                     - d["share_of_losses"] - impairment - d["fv_loss_preferred_shares"])
    pbt = operating_income + non_operating
    income_tax = -d["tax_credit_rate"] * (pbt + d["fv_loss_preferred_shares"])
    net_income = pbt + income_tax - d["minorities"]
    adjusted = net_income + d["fv_loss_preferred_shares"] + sbc - d["fv_gains_financial_assets"]
    out = {
        "revenue": revenue,
        "cost_of_sales": revenue - gross_profit,
        "gross_profit": gross_profit,
        "gross_margin": d["gross_margin"],
        "selling_marketing_expense": sm,
        "admin_expense": admin,
        "rnd_expense": rnd,
        "opex": opex,
        "opex_ratio": opex / revenue,
        "operating_income": operating_income,
        "impairment_losses": impairment,
        "other_income": other_income,
        "non_operating_income": non_operating,
        "profit_before_tax": pbt,
        "income_tax": income_tax,
        "net_income": net_income,
        "sbc": sbc,
        "adjusted_net_income": adjusted,
        "trade_receivables": trade_receivables,
    }
    if uses_cost_model(d):
        out["capex_build"] = costs["capex_build"]
    for segment in segment_revenue["segment"].values:
        out[f"revenue_{segment}"] = segment_revenue.sel(segment=segment, drop=True)
    return xr.Dataset(out)


def working_capital(d: xr.Dataset, inc: xr.Dataset, opening: Mapping[str, float]) -> xr.Dataset:
    """Balances from days and ratios; the cash-flow change in working capital.

    Working capital = trade, other receivables and prepayments + inventories
    - trade and other payables - contract liabilities (Figures 59, 66, 67).
    """
    revenue, cogs = inc["revenue"], inc["cost_of_sales"]
    per_day_rev, per_day_cogs = revenue / DAYS_PER_YEAR, cogs / DAYS_PER_YEAR
    bal = {
        "trade_receivables": inc["trade_receivables"],
        "other_receivables": per_day_rev * d["other_receivable_days"],
        "prepayments": revenue * d["prepayments_ratio"],
        "receivables_other": revenue * d["receivables_other_ratio"],
        "inventories": per_day_cogs * d["inventory_days"],
        "trade_payables": per_day_cogs * d["trade_payable_days"],
        "other_payables": per_day_cogs * d["other_payable_days"],
        "payables_other": revenue * d["payables_other_ratio"],
        "contract_liabilities": revenue * d["contract_liabilities_ratio"],
    }
    assets = ("trade_receivables", "other_receivables", "prepayments", "receivables_other",
              "inventories")
    liabilities = ("trade_payables", "other_payables", "payables_other", "contract_liabilities")
    wc = sum(bal[k] for k in assets) - sum(bal[k] for k in liabilities)
    wc_open = (sum(opening[k] for k in assets) - sum(opening[k] for k in liabilities))
    out = xr.Dataset(bal)
    out["working_capital"] = wc
    out["change_in_working_capital"] = -(wc - _previous(wc, wc_open))
    return out


def cash_flow(d: xr.Dataset, inc: xr.Dataset, wc: xr.Dataset,
              opening: Mapping[str, float], conventions: Conventions = REPORT) -> xr.Dataset:
    """Operating, investing and financing cash flows; cash roll-forward; free cash flow;
    liquidity and net cash."""
    revenue = inc["revenue"]
    da = revenue * d["da_ratio"]
    if "capex_build" in inc:  # the currency cost model: the plan, never below maintenance
        capex = np.maximum(inc["capex_build"], d["maintenance_capex_share"] * da)
    else:
        capex = revenue * d["capex_ratio"]
    ocf = (inc["profit_before_tax"] + d["finance_expense"] + da + wc["change_in_working_capital"]
           + inc["income_tax"] + d["fv_loss_preferred_shares"] - d["finance_income"])
    if conventions.sbc_add_back:
        ocf = ocf + inc["sbc"]
    icf = -capex - d["term_deposit_change"] + d["finance_income"]
    net_borrowing = d["total_debt"] - _previous(d["total_debt"], opening["total_debt"])
    fcf_fin = d["equity_financing"] + net_borrowing - d["finance_expense"]
    net_change = ocf + icf + fcf_fin
    years = [str(y) for y in revenue["year"].values]
    cash = opening["cash"] + net_change.cumsum("year", skipna=False)
    term_deposits = opening.get("term_deposits", 0.0) + d["term_deposit_change"].cumsum("year")
    if conventions.redeem_deposits:
        cash, term_deposits = _redeem_deposits(cash, term_deposits)
    liquidity = cash + term_deposits + opening.get("other_liquid_investments", 0.0)
    free_cash_flow = ocf - capex
    net_cash = (liquidity if conventions.liquid_investments_in_net_cash else cash) \
        - d["total_debt"]
    return xr.Dataset({
        "depreciation_amortisation": da,
        "capex": capex,
        "operating_cash_flow": ocf,
        "investing_cash_flow": icf,
        "financing_cash_flow": fcf_fin,
        "net_change_in_cash": net_change,
        "cash": cash,
        "term_deposits": term_deposits,
        "liquidity": liquidity,
        "total_debt": d["total_debt"],
        "net_cash": net_cash,
        "free_cash_flow": free_cash_flow,
        # Cash burn: cumulative negative free cash flow over the forecast years (> 0 = burn).
        "cash_burn": (-free_cash_flow.sum("year", skipna=False)).assign_attrs(
            period=f"{years[0]}-{years[-1]}"),
    })


def _redeem_deposits(cash: xr.DataArray, term_deposits: xr.DataArray
                     ) -> tuple[xr.DataArray, xr.DataArray]:
    """Cash that the plan would take below zero is met by redeeming term deposits (as far as
    they go): the redeemed amount is the deepest shortfall so far, a stock carried into later
    years. Liquidity (their sum) is unchanged; only its split moves."""
    shortfall = (-cash).clip(min=0).transpose(..., "year")
    deepest = xr.apply_ufunc(np.maximum.accumulate, shortfall, kwargs={"axis": -1})
    redeemed = np.minimum(deepest, term_deposits.clip(min=0)).transpose(*cash.dims)
    return cash + redeemed, term_deposits - redeemed


def valuation(d: xr.Dataset, inc: xr.Dataset, cf: xr.Dataset, market: Market) -> xr.Dataset:
    """EV/sales valuation (Figure 68): EV -> + net cash - minorities -> equity -> per share.

    Per diluted share when ``cf`` carries ``shares_outstanding`` (the correct conventions), per
    basic share otherwise; ``value_today`` is the target price times ``cf["discount_factor"]``
    when present (else undiscounted).
    """
    year = market.valuation_year
    ev = d["ev_sales_multiple"] * inc["revenue"].sel(year=year, drop=True)
    equity = ev + cf["net_cash"].sel(year=year, drop=True) - market.minority_interest
    shares = (cf["shares_outstanding"].sel(year=year, drop=True) if "shares_outstanding" in cf
              else market.shares_outstanding_mn)
    per_share = equity / shares  # reporting currency per share
    target = (per_share / market.fx).assign_attrs(units="price currency per share")
    today = target * cf["discount_factor"] if "discount_factor" in cf else target
    return xr.Dataset({
        "ev_sales_multiple": d["ev_sales_multiple"],
        "enterprise_value": ev,
        "equity_value": equity,
        "target_price": target,
        "value_today": today.assign_attrs(units="price currency per share"),
    })


def _pass(d: xr.Dataset, opening, conventions: Conventions) -> tuple:
    d = _with_funding(d)
    inc = income_statement(d)
    wc = working_capital(d, inc, opening)
    cf = cash_flow(d, inc, wc, opening, conventions)
    return d, inc, wc, cf


def _decide(drivers: xr.Dataset, opening, market: Market, conventions: Conventions):
    """Funding, dilution and management cuts, year by year; returns the final pass and the
    decisions (``shares_outstanding``, ``funding_raised`` ...)."""
    years = list(drivers["year"].values)
    d, inc, wc, cf = _pass(drivers, opening, conventions)
    zero = cf["cash"] * 0.0
    cut, equity, debt, shares_new, sbc_shares = zero + 1.0, zero.copy(), zero.copy(), \
        zero.copy(), zero.copy()
    cut_flag = zero.copy()
    funding = conventions.funding and "liquidity_floor" in drivers
    respond = conventions.management_response and "cut_runway_years" in drivers
    dilutes = drivers["sbc_dilutes"] if "sbc_dilutes" in drivers else xr.zeros_like(
        drivers["year"], dtype=float)
    shares = xr.DataArray(market.shares_outstanding_mn)
    min_price = MIN_ISSUE_PRICE_FRACTION * market.price * market.fx
    dirty = False  # a decision changed the drivers since the last pass
    for i, y in enumerate(years):
        at = {"year": y}
        here = (drivers["year"] == y)
        if dirty:
            d, inc, wc, cf = _pass(drivers.assign(cost_cut_factor=cut, equity_raised=equity,
                                                  debt_raised=debt), opening, conventions)
            dirty = False
        value = (d["ev_sales_multiple"] * inc["revenue"].sel(at, drop=True)
                 + cf["net_cash"].sel(at, drop=True) - market.minority_interest)
        price = np.maximum(value / shares, min_price)  # currency per share, before new shares
        liquidity = cf["liquidity"].sel(at, drop=True)
        burn = -cf["free_cash_flow"].sel(at, drop=True)
        raised = 0.0
        new = 0.0
        if funding:
            floor = drivers["liquidity_floor"]
            short = floor - liquidity
            raised = xr.where(short > 0, short + drivers["raise_buffer_years"]
                              * np.maximum(burn, 0.0), 0.0)
            dirty = dirty or bool((short > 0).any())
            as_debt = raised * drivers["raise_with_debt"]
            as_equity = raised - as_debt
            equity = equity + here * as_equity
            debt = debt + here * as_debt
            new = as_equity / (price * (1.0 - drivers["equity_discount"]))
        if conventions.dilution:
            vested = inc["sbc"].sel(at, drop=True) * dilutes.sel(at, drop=True) / price
            sbc_shares = sbc_shares + here * vested
            new = new + vested
        shares = shares + new
        shares_new = shares_new + here * new
        if respond and i + 1 < len(years):
            runway = xr.where(burn > 0, (liquidity + raised) / burn.where(burn > 0), np.inf)
            trigger = runway < drivers["cut_runway_years"]
            dirty = dirty or bool(trigger.any())
            later = xr.DataArray([j > i for j in range(len(years))], dims="year",
                                 coords={"year": years})
            cut = cut * xr.where(trigger & later, 1.0 - drivers["cut_size"], 1.0)
            cut_flag = cut_flag + (here.shift(year=1, fill_value=False)) * trigger
    if dirty:
        d, inc, wc, cf = _pass(drivers.assign(cost_cut_factor=cut, equity_raised=equity,
                                              debt_raised=debt), opening, conventions)
    base = xr.DataArray(market.shares_outstanding_mn)
    shares_path = base + shares_new.cumsum("year")
    decisions = {
        "shares_outstanding": shares_path,
        "new_shares": shares_new,
        "sbc_shares": sbc_shares,
        "equity_raised": equity,
        "debt_raised": debt,
        "funding_raised": equity + debt,
        "management_cut": cut_flag,
        "cost_cut_factor": cut,
        "dilution": shares_path.isel(year=-1, drop=True) / base - 1.0,
    }
    return d, inc, wc, cf, decisions


def run_engine(drivers: xr.Dataset, opening: Mapping[str, float], market: Market,
               conventions: Conventions = REPORT) -> xr.Dataset:
    """Evaluate the accounting identities on driver paths; returns every line item."""
    with xr.set_options(keep_attrs=False):  # a driver's "source" is not the line item's
        if conventions.iterative:
            d, inc, wc, cf, decisions = _decide(drivers, opening, market, conventions)
            cf = cf.assign(decisions)
        else:
            d, inc, wc, cf = _pass(drivers, opening, conventions)
        if conventions.discount and "cost_of_equity" in drivers:
            horizon = drivers["valuation_horizon_years"]
            cf["discount_factor"] = (1.0 + drivers["cost_of_equity"]) ** (-horizon)
            cf["cost_of_equity"] = drivers["cost_of_equity"]
        val = valuation(d, inc, cf, market)
    out = xr.merge([inc, wc.drop_vars("trade_receivables"), cf, val], compat="override",
                   join="exact")
    return out.assign_attrs(conventions=conventions.name)


def report_case(company, conventions: Conventions = REPORT, extra: xr.Dataset | None = None
                ) -> xr.Dataset:
    """The engine evaluated on the report's own assumptions (the point case); ``extra``:
    drivers the correct conventions need (funding, discounting; ``costs.point_funding``)."""
    drivers = company.report_case if extra is None else company.report_case.assign(extra)
    return run_engine(drivers, company.opening, company.market, conventions)


def convention_table(company, extra: xr.Dataset) -> dict:
    """The report's own case under the report's conventions and under the correct ones, and
    the difference: ``{"lines": {line: {year: {"report", "correct", "difference"}}},
    "values": {name: {...}}, "valuation_year", "notes"}`` (currency mn; prices in the price
    currency per share). ``extra``: the correct conventions' funding and discounting drivers
    (``costs.point_funding``)."""
    from .registry import CONVENTION_LINES, CONVENTION_VALUES

    report = report_case(company, REPORT)
    correct = report_case(company, CORRECT, extra)

    def row(a, b) -> dict:
        a, b = float(a), float(b)
        return {"report": round(a, 3), "correct": round(b, 3), "difference": round(b - a, 3)}

    years = [str(y) for y in report["year"].values]
    lines = {name: {y: row(report[name].sel(year=y), correct[name].sel(year=y)) for y in years}
             for name in CONVENTION_LINES}
    values = {name: row(report[name], correct[name]) for name in CONVENTION_VALUES}
    year = company.market.valuation_year
    values["shares_outstanding"] = row(company.market.shares_outstanding_mn,
                                       correct["shares_outstanding"].sel(year=year))
    return {"lines": lines, "values": values, "valuation_year": year,
            "notes": ["correct: share-based compensation added back in operating cash flow and "
                      "paid in new shares at the path's value per share",
                      "correct: net cash = cash + term deposits + other liquid investments - debt",
                      "correct: target price per diluted share; value_today = target price "
                      "discounted at the cost of equity (prior median) over the horizon",
                      "correct: funding raises money when liquidity would fall below the floor "
                      "(none needed on the report's case when the floor is not breached)"]}
