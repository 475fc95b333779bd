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
year's statements), vectorised over paths. The lines no decision can move (revenue, gross
profit, costs before cuts, working capital, D&A ...: ``_fixed_lines``) are computed once; after
a year whose decisions moved anything, only the lines the decisions move (costs after cuts,
finance expense, PBT, cash flows, cash: ``_moving_lines``) are computed again. Inside, the
drivers are ``stforecast.named`` arrays (numpy with dimension names, one layout), converted
to and from xarray at this module's boundary; each line has the dimensions of the drivers it
depends on (sample dimensions as they first appear in the drivers, ``year`` last).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .company import Market
from .costs import cost_plan, operating_costs, uses_cost_model
from .named import Frame, Named, where, without_attrs
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


class _Drivers(Mapping):
    """The drivers as ``Named`` arrays on one frame (converted on first use)."""

    def __init__(self, ds: xr.Dataset, frame: Frame):
        self.ds, self.frame, self._cache = ds, frame, {}

    def __getitem__(self, name: str) -> Named:
        if name not in self._cache:
            self._cache[name] = self.frame.named(self.ds[name])
        return self._cache[name]

    def to_xarray(self, x: Named, coords: bool = False) -> xr.DataArray:
        """A line as a DataArray (with the drivers' coordinates along its dimensions when
        ``coords``); a driver passed through unchanged is the driver itself."""
        for name, named in self._cache.items():
            if named is x:
                return self.ds[name]
        return self.frame.to_xarray(x, coords)

    def __contains__(self, name) -> bool:
        return name in self.ds

    def __iter__(self):
        return iter(self.ds.data_vars)

    def __len__(self) -> int:
        return len(self.ds.data_vars)


@dataclass(frozen=True)
class _Decisions:
    """Funding and management decisions so far, per path and year: the cost-cut factor
    (multiplies cuttable costs), equity and debt raised (currency mn)."""

    cut: Named
    equity: Named
    debt: Named


def _previous(balance, opening: float):
    """Last year's closing balance along ``year``; the first year's is the opening balance."""
    return balance.shift(year=1).fillna(opening)


def _financing(d, decisions: _Decisions | None):
    """Equity financing, total debt and finance expense with the funding decisions folded in
    (raised debt bears interest at ``debt_interest_rate`` from the next year)."""
    if decisions is None:
        return d["equity_financing"], d["total_debt"], d["finance_expense"]
    debt = decisions.debt.cumsum("year")
    interest = (debt.shift(year=1).fillna(0.0)) * d["debt_interest_rate"]
    return (d["equity_financing"] + decisions.equity, d["total_debt"] + debt,
            d["finance_expense"] + interest)


def _fixed_lines(d, revenue: Named, opening: Mapping[str, float]) -> dict[str, Named]:
    """The lines no funding or management decision moves: revenue, gross profit, costs before
    cuts, receivables and impairments, other income, working capital, D&A, term deposits."""
    gross_profit = revenue * d["gross_margin"]
    cogs = revenue - gross_profit
    trade_receivables = revenue * d["trade_receivable_days"] / DAYS_PER_YEAR
    impairment = trade_receivables * d["impairment_rate"]
    other_income = revenue * d["other_income_ratio"]
    lines = {"revenue": revenue, "cost_of_sales": cogs, "gross_profit": gross_profit,
             "impairment_losses": impairment, "other_income": other_income,
             "trade_receivables": trade_receivables,
             # the part of non-operating income before finance expense (which debt raises)
             "other_and_finance_income": other_income + d["other_gains"] + d["finance_income"]}
    if uses_cost_model(d):
        lines["cost_plan"] = cost_plan(d, revenue)
        lines["sbc"] = d["sbc_amount"] + 0.0 * revenue
    else:
        lines.update(selling_marketing_expense=revenue * d["selling_marketing_ratio"],
                     admin_expense=revenue * d["admin_ratio"], rnd_expense=revenue * d["rnd_ratio"])
        lines["sbc"] = revenue * d["sbc_ratio"]
    lines.update(working_capital(d, revenue, cogs, trade_receivables, opening))
    da = revenue * d["da_ratio"]
    lines["depreciation_amortisation"] = da
    if uses_cost_model(d):  # capex: the plan, never below maintenance
        lines["maintenance_capex"] = d["maintenance_capex_share"] * da
    else:
        lines["capex"] = revenue * d["capex_ratio"]
    lines["term_deposits"] = opening.get("term_deposits", 0.0) + d["term_deposit_change"].cumsum("year")
    return lines


def working_capital(d, revenue, cogs, trade_receivables, opening: Mapping[str, float]) -> dict:
    """Balances from days and ratios; the cash-flow change in working capital.

    Working capital = trade, other receivables and prepayments + inventories
    - trade and other payables - contract liabilities (Figures 59, 66, 67).
    """
    per_day_rev, per_day_cogs = revenue / DAYS_PER_YEAR, cogs / DAYS_PER_YEAR
    bal = {
        "trade_receivables": trade_receivables,
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
    return {**bal, "working_capital": wc,
            "change_in_working_capital": -(wc - _previous(wc, wc_open))}


def _moving_lines(d, fixed: dict, opening: Mapping[str, float], conventions: Conventions,
                  decisions: _Decisions | None = None) -> dict[str, Named]:
    """The lines the decisions move, given the decisions so far: operating costs after cuts ->
    operating income -> PBT -> operating, investing and financing cash flows -> cash,
    liquidity, net cash, free cash flow (``decisions`` None: none taken)."""
    lines = {}
    if "cost_plan" in fixed:
        cut = 1.0 if decisions is None else decisions.cut
        lines.update(operating_costs(fixed["cost_plan"], d["sbc_amount"], cut))
        lines["capex"] = np.maximum(lines["capex_build"], fixed["maintenance_capex"])
    else:
        lines.update({k: fixed[k] for k in ("selling_marketing_expense", "admin_expense",
                                             "rnd_expense", "capex")})
    opex = lines["selling_marketing_expense"] + lines["admin_expense"] + lines["rnd_expense"]
    equity_financing, total_debt, finance_expense = _financing(d, decisions)
    non_operating = (fixed["other_and_finance_income"] - finance_expense - d["share_of_losses"]
                     - fixed["impairment_losses"] - d["fv_loss_preferred_shares"])
    operating_income = fixed["gross_profit"] - opex
    pbt = operating_income + non_operating
    income_tax = -d["tax_credit_rate"] * (pbt + d["fv_loss_preferred_shares"])
    capex = lines["capex"]
    ocf = (pbt + finance_expense + fixed["depreciation_amortisation"]
           + fixed["change_in_working_capital"] + income_tax + d["fv_loss_preferred_shares"]
           - d["finance_income"])
    if conventions.sbc_add_back:
        ocf = ocf + fixed["sbc"]
    icf = -capex - d["term_deposit_change"] + d["finance_income"]
    net_borrowing = total_debt - _previous(total_debt, opening["total_debt"])
    fcf_fin = equity_financing + net_borrowing - finance_expense
    net_change = ocf + icf + fcf_fin
    cash = opening["cash"] + net_change.cumsum("year", skipna=False)
    term_deposits = fixed["term_deposits"]
    if conventions.redeem_deposits:
        cash, term_deposits = _redeem_deposits(cash, term_deposits)
    liquidity = cash + term_deposits + opening.get("other_liquid_investments", 0.0)
    net_cash = (liquidity if conventions.liquid_investments_in_net_cash else cash) - total_debt
    lines.update(opex=opex, operating_income=operating_income,
                 non_operating_income=non_operating, profit_before_tax=pbt,
                 income_tax=income_tax, operating_cash_flow=ocf, investing_cash_flow=icf,
                 financing_cash_flow=fcf_fin, net_change_in_cash=net_change, cash=cash,
                 term_deposits=term_deposits, liquidity=liquidity, total_debt=total_debt,
                 net_cash=net_cash, free_cash_flow=ocf - capex)
    return lines


def _redeem_deposits(cash, term_deposits):
    """Cash that the plan would take below zero is met by redeeming term deposits (as far as
    they go): the redeemed amount is the deepest shortfall so far, a stock carried into later
    years. Liquidity (their sum) is unchanged; only its split moves. (``Named`` arrays, or
    DataArrays over the same dimensions.)"""
    if isinstance(cash, xr.DataArray):
        frame = Frame(cash.dims, cash.sizes)
        cash, term_deposits = _redeem_deposits(frame.named(cash), frame.named(term_deposits))
        return frame.to_xarray(cash), frame.to_xarray(term_deposits)
    deepest = (-cash).clip(min=0).cummax("year")
    redeemed = np.minimum(deepest, term_deposits.clip(min=0))
    return cash + redeemed, term_deposits - redeemed


def valuation(d: xr.Dataset, inc: xr.Dataset, cf: xr.Dataset, market: Market) -> xr.Dataset:
    """EV/sales valuation (Figure 68): EV -> + net cash - minorities -> equity -> per share.

    Per diluted share when ``cf`` carries ``shares_outstanding`` (the correct conventions), per
    basic share otherwise; ``value_today`` is the target price times ``cf["discount_factor"]``
    when present (else undiscounted).
    """
    year = market.valuation_year
    ev = without_attrs(d["ev_sales_multiple"] * inc["revenue"].sel(year=year, drop=True))
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


def _fund(d, fixed: dict, opening, conventions: Conventions):
    """Funding and management cuts, year by year; returns the moving lines after the decisions,
    the decisions and, per year, what the new shares of that year depend on (the net cash
    before that year's raise and the equity raised; ``_dilute``).

    Each year's decision reads that year's statements given the decisions of the years before:
    after a year whose decisions moved anything on any path, the moving lines are computed
    again (the fixed lines never are). Nothing here depends on the EV/sales multiple.
    """
    frame = d.frame
    n_years = frame.sizes["year"]
    lines = _moving_lines(d, fixed, opening, conventions)
    zero = lines["cash"] * 0.0
    cut, equity, debt, cut_flag = zero + 1.0, zero, zero, zero
    funding = conventions.funding and "liquidity_floor" in d
    respond = conventions.management_response and "cut_runway_years" in d
    steps = []  # per year: (net cash before the year's raise, equity raised that year)
    dirty = False  # a decision changed the drivers since the lines were computed
    for i in range(n_years):
        here = frame.equals("year", i)
        if dirty:
            del lines  # the superseded lines are freed before their successors are computed
            lines = _moving_lines(d, fixed, opening, conventions, _Decisions(cut, equity, debt))
            dirty = False
        liquidity = lines["liquidity"].at("year", i)
        burn = -lines["free_cash_flow"].at("year", i)
        raised = 0.0
        as_equity = None
        if funding:
            short = d["liquidity_floor"] - liquidity
            raised = where(short > 0, short + d["raise_buffer_years"] * np.maximum(burn, 0.0), 0.0)
            dirty = dirty or (short > 0).any()
            as_debt = raised * d["raise_with_debt"]
            as_equity = raised - as_debt
            equity = equity + here * as_equity
            debt = debt + here * as_debt
        steps.append((lines["net_cash"].at("year", i), as_equity))
        if respond and i + 1 < n_years:
            runway = where(burn > 0, (liquidity + raised) / burn.where(burn > 0), np.inf)
            trigger = runway < d["cut_runway_years"]
            dirty = dirty or trigger.any()
            cut = cut * where(trigger & frame.after("year", i), 1.0 - d["cut_size"], 1.0)
            cut_flag = cut_flag + frame.equals("year", i + 1) * trigger
    if dirty:
        del lines
        lines = _moving_lines(d, fixed, opening, conventions, _Decisions(cut, equity, debt))
    decisions = {"equity_raised": equity, "debt_raised": debt, "funding_raised": equity + debt,
                 "management_cut": cut_flag, "cost_cut_factor": cut}
    return lines, decisions, steps, zero


def _dilute(d, multiple: Named, revenue: Named, sbc: Named, steps: list, zero: Named,
            market: Market, conventions: Conventions) -> dict[str, Named]:
    """New shares, year by year: equity raised (``steps``, from ``_fund``) is issued at
    ``equity_discount`` below the path's value per share before that year's new shares, vested
    share-based compensation (``sbc_dilutes``) at that value; the value is the EV/sales
    ``multiple`` x that year's revenue + net cash before the year's raise - minorities."""
    frame = d.frame
    n_years = frame.sizes["year"]
    dilutes = d["sbc_dilutes"] if "sbc_dilutes" in d else frame.zeros("year")
    shares = market.shares_outstanding_mn
    min_price = MIN_ISSUE_PRICE_FRACTION * market.price * market.fx
    shares_new, sbc_shares = zero, zero
    for i, (net_cash, as_equity) in enumerate(steps):
        here = frame.equals("year", i)
        value = multiple * revenue.at("year", i) + net_cash - market.minority_interest
        price = np.maximum(value / shares, min_price)  # currency per share, before new shares
        new = 0.0
        if as_equity is not None:
            new = as_equity / (price * (1.0 - d["equity_discount"]))
        if conventions.dilution:
            vested = sbc.at("year", i) * dilutes.at("year", i) / price
            sbc_shares = sbc_shares + here * vested
            new = new + vested
        shares = shares + new
        shares_new = shares_new + here * new
    base = market.shares_outstanding_mn
    shares_path = base + shares_new.cumsum("year")
    return {"shares_outstanding": shares_path, "new_shares": shares_new,
            "sbc_shares": sbc_shares,
            "dilution": shares_path.at("year", n_years - 1) / base - 1.0}


#: The output's lines in order: income statement, working capital, cash flow (the decisions,
#: discounting and valuation follow).
INCOME_LINES = ("revenue", "cost_of_sales", "gross_profit", "gross_margin",
                "selling_marketing_expense", "admin_expense", "rnd_expense", "opex", "opex_ratio",
                "operating_income", "impairment_losses", "other_income", "non_operating_income",
                "profit_before_tax", "income_tax", "net_income", "sbc", "adjusted_net_income",
                "trade_receivables")
WORKING_CAPITAL_LINES = ("other_receivables", "prepayments", "receivables_other", "inventories",
                         "trade_payables", "other_payables", "payables_other",
                         "contract_liabilities", "working_capital", "change_in_working_capital")
CASH_FLOW_LINES = ("depreciation_amortisation", "capex", "operating_cash_flow",
                   "investing_cash_flow", "financing_cash_flow", "net_change_in_cash", "cash",
                   "term_deposits", "liquidity", "total_debt", "net_cash", "free_cash_flow",
                   "cash_burn")
#: The decisions' lines, in order.
DECISION_LINES = ("shares_outstanding", "new_shares", "sbc_shares", "equity_raised",
                  "debt_raised", "funding_raised", "management_cut", "cost_cut_factor", "dilution")


class Accounts(Mapping):
    """The statements and the funding and management decisions of driver paths: everything but
    the new shares and the valuation, which need the EV/sales multiple (``value``).
    ``accounts[line]`` is a line as a DataArray (e.g. the free cash flow that a multiple read
    from the statements up to the valuation date depends on)."""

    def __init__(self, drivers: _Drivers, lines: dict, steps: list, zero, market: Market,
                 conventions: Conventions):
        self.drivers, self.lines, self.steps, self.zero = drivers, lines, steps, zero
        self.market, self.conventions = market, conventions

    def __getitem__(self, name: str) -> xr.DataArray:
        return self.drivers.to_xarray(self.lines[name], coords=True)

    def __iter__(self):
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)


def accounts(drivers: xr.Dataset, opening: Mapping[str, float], market: Market,
             conventions: Conventions = REPORT) -> Accounts:
    """The accounting identities on driver paths, with the funding and management decisions
    (``conventions``); the valuation follows in ``value``."""
    frame = Frame.of(drivers, skip=("segment",))
    d = _Drivers(drivers, frame)
    revenue = frame.named(drivers["segment_revenue"].sum("segment", skipna=False))  # NaN stays
    fixed = _fixed_lines(d, revenue, opening)
    steps, zero = [], None
    if conventions.iterative:
        lines, decisions, steps, zero = _fund(d, fixed, opening, conventions)
    else:
        lines, decisions = _moving_lines(d, fixed, opening, conventions), {}
    lines = {**fixed, **lines, **decisions}
    pbt, sbc, fcf = lines["profit_before_tax"], lines["sbc"], lines["free_cash_flow"]
    net_income = pbt + lines["income_tax"] - d["minorities"]
    lines.update(
        gross_margin=d["gross_margin"], opex_ratio=lines["opex"] / lines["revenue"],
        net_income=net_income,
        adjusted_net_income=(net_income + d["fv_loss_preferred_shares"] + sbc
                             - d["fv_gains_financial_assets"]),
        # Cash burn: cumulative negative free cash flow over the forecast years (> 0 = burn)
        cash_burn=-fcf.sum("year", skipna=False))
    return Accounts(d, lines, steps, zero, market, conventions)


#: The lines the valuation reads (``value`` returns them whatever it is asked for).
VALUATION_LINES = ("revenue", "net_cash", "shares_outstanding")


def value(acc: Accounts, ev_sales_multiple: xr.DataArray | None = None,
          lines: Collection[str] | None = None) -> xr.Dataset:
    """Every line item: ``acc``'s statements and decisions, the new shares and the valuation
    at ``ev_sales_multiple`` (default the drivers' own). ``lines``: only these line items (and
    ``VALUATION_LINES``; the valuation's own results are always there); None for all."""
    d, drivers, market = acc.drivers, acc.drivers.ds, acc.market
    multiple = drivers["ev_sales_multiple"] if ev_sales_multiple is None else ev_sales_multiple
    computed = dict(acc.lines)
    if acc.conventions.iterative:
        computed.update(_dilute(d, d.frame.named(multiple), computed["revenue"],
                                computed["sbc"], acc.steps, acc.zero, market, acc.conventions))

    def wanted(name: str) -> bool:
        return lines is None or name in lines or name in VALUATION_LINES

    out = {name: d.to_xarray(computed[name]) for name in (*INCOME_LINES, "capex_build")
           if name in computed and wanted(name)}
    segment_revenue = drivers["segment_revenue"]
    for segment in segment_revenue["segment"].values:
        if wanted(f"revenue_{segment}"):
            out[f"revenue_{segment}"] = segment_revenue.sel(segment=segment, drop=True)
    out.update({name: d.to_xarray(computed[name])
                for name in (*WORKING_CAPITAL_LINES, *CASH_FLOW_LINES, *DECISION_LINES)
                if name in computed and wanted(name)})
    years = [str(y) for y in drivers["year"].values]
    if "cash_burn" in out:
        out["cash_burn"].attrs["period"] = f"{years[0]}-{years[-1]}"
    cf = xr.Dataset(out, coords=d.frame.coords)
    if acc.conventions.discount and "cost_of_equity" in drivers:
        horizon = drivers["valuation_horizon_years"]
        cf["discount_factor"] = without_attrs((1.0 + drivers["cost_of_equity"]) ** (-horizon))
        cf["cost_of_equity"] = drivers["cost_of_equity"]
    val = valuation(xr.Dataset({"ev_sales_multiple": multiple}), cf, cf, market)
    return cf.merge(val, compat="override", join="exact").assign_attrs(
        conventions=acc.conventions.name)


def run_engine(drivers: xr.Dataset, opening: Mapping[str, float], market: Market,
               conventions: Conventions = REPORT) -> xr.Dataset:
    """Evaluate the accounting identities on driver paths; returns every line item.

    Each line has the dimensions of the drivers it depends on (in the order of the drivers'
    frame: sample dimensions as they first appear, ``year`` last). The same as
    ``value(accounts(drivers, ...))``; a multiple that depends on the statements is set
    between the two (``simulate.statements``).
    """
    return value(accounts(drivers, opening, market, conventions))


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
