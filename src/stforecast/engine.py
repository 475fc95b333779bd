"""The financial engine: one implementation of the accounting identities.

``run_engine(drivers, opening, market)`` maps driver paths to financial statements. It is pure
array code over named dimensions: ``drivers`` is an ``xarray.Dataset`` whose variables carry a
``year`` dimension (the forecast years), ``segment_revenue`` also a ``segment``
dimension, and any number of sample dimensions (``chain``, ``draw``, ``path``, ``scenario`` ...)
that simply broadcast. The same code evaluates the report's point case and a million draws.

Units: money in the company's currency, millions; ratios are fractions of revenue (``impairment_rate`` of year-end trade
receivables; ``tax_credit_rate`` of the pre-tax loss before preferred-share fair-value losses);
days are days on year-end balances (receivables on revenue, inventory and payables on cost of
sales); ``target_price`` in the price currency per share (``market.fx``: reporting currency
per unit of the price currency). Sign conventions follow the report: expenses and
losses are positive amounts that are subtracted; ``income_tax`` is a credit (positive = gain).

Cash-flow conventions, replicating Figure 67 as published:
* operating cash flow = PBT + finance expense + D&A + change in working capital + tax
  + preferred-share FV losses - finance income (finance income is shown under investing);
  share-based compensation and impairments are NOT added back (the report does not);
* investing cash flow = - capex - increase in term deposits + finance income;
* financing cash flow = equity raised + net borrowing - finance expense;
* free cash flow = operating cash flow - capex; ``cash`` is cash and cash equivalents;
* net cash = cash and cash equivalents - total debt (Figure 68: term deposits and restricted
  cash are excluded); EV = EV/sales multiple x valuation-year revenue.
"""

from __future__ import annotations

from collections.abc import Mapping

import xarray as xr

from .company import Market
from .registry import DAYS_PER_YEAR


def _previous(balance: xr.DataArray, opening: float) -> xr.DataArray:
    """Last year's closing balance along ``year``; the first year's is the opening balance."""
    return balance.shift(year=1).fillna(opening)


def income_statement(d: xr.Dataset) -> xr.Dataset:
    """Segment revenue -> gross profit -> operating income -> PBT -> net income."""
    segment_revenue = d["segment_revenue"]
    revenue = segment_revenue.sum("segment", skipna=False)  # NaN stays NaN (and is faster)
    gross_profit = revenue * d["gross_margin"]
    opex = revenue * (d["selling_marketing_ratio"] + d["admin_ratio"] + d["rnd_ratio"])
    operating_income = gross_profit - opex
    trade_receivables = revenue * d["trade_receivable_days"] / DAYS_PER_YEAR
    impairment = trade_receivables * d["impairment_rate"]
    other_income = revenue * d["other_income_ratio"]
    non_operating = (other_income + d["other_gains"] + d["finance_income"] - d["finance_expense"]
                     - d["share_of_losses"] - impairment - d["fv_loss_preferred_shares"])
    pbt = operating_income + non_operating
    income_tax = -d["tax_credit_rate"] * (pbt + d["fv_loss_preferred_shares"])
    net_income = pbt + income_tax - d["minorities"]
    sbc = revenue * d["sbc_ratio"]
    adjusted = net_income + d["fv_loss_preferred_shares"] + sbc - d["fv_gains_financial_assets"]
    out = {
        "revenue": revenue,
        "cost_of_sales": revenue - gross_profit,
        "gross_profit": gross_profit,
        "gross_margin": d["gross_margin"],
        "selling_marketing_expense": revenue * d["selling_marketing_ratio"],
        "admin_expense": revenue * d["admin_ratio"],
        "rnd_expense": revenue * d["rnd_ratio"],
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
              opening: Mapping[str, float]) -> xr.Dataset:
    """Operating, investing and financing cash flows; cash roll-forward; free cash flow."""
    revenue = inc["revenue"]
    da = revenue * d["da_ratio"]
    capex = revenue * d["capex_ratio"]
    ocf = (inc["profit_before_tax"] + d["finance_expense"] + da + wc["change_in_working_capital"]
           + inc["income_tax"] + d["fv_loss_preferred_shares"] - d["finance_income"])
    icf = -capex - d["term_deposit_change"] + d["finance_income"]
    net_borrowing = d["total_debt"] - _previous(d["total_debt"], opening["total_debt"])
    fcf_fin = d["equity_financing"] + net_borrowing - d["finance_expense"]
    net_change = ocf + icf + fcf_fin
    years = [str(y) for y in revenue["year"].values]
    cash = opening["cash"] + net_change.cumsum("year", skipna=False)
    free_cash_flow = ocf - capex
    return xr.Dataset({
        "depreciation_amortisation": da,
        "capex": capex,
        "operating_cash_flow": ocf,
        "investing_cash_flow": icf,
        "financing_cash_flow": fcf_fin,
        "net_change_in_cash": net_change,
        "cash": cash,
        "total_debt": d["total_debt"],
        "net_cash": cash - d["total_debt"],
        "free_cash_flow": free_cash_flow,
        # Cash burn: cumulative negative free cash flow over the forecast years (> 0 = burn).
        "cash_burn": (-free_cash_flow.sum("year", skipna=False)).assign_attrs(
            period=f"{years[0]}-{years[-1]}"),
    })


def valuation(d: xr.Dataset, inc: xr.Dataset, cf: xr.Dataset, market: Market) -> xr.Dataset:
    """EV/sales valuation (Figure 68): EV -> + net cash - minorities -> equity -> HK$ per share."""
    year = market.valuation_year
    ev = d["ev_sales_multiple"] * inc["revenue"].sel(year=year, drop=True)
    equity = ev + cf["net_cash"].sel(year=year, drop=True) - market.minority_interest
    per_share = equity / market.shares_outstanding_mn  # reporting currency per share
    return xr.Dataset({
        "ev_sales_multiple": d["ev_sales_multiple"],
        "enterprise_value": ev,
        "equity_value": equity,
        "target_price": xr.DataArray(per_share / market.fx,
                                     attrs={"units": "price currency per share"}),
    })


def run_engine(drivers: xr.Dataset, opening: Mapping[str, float], market: Market) -> xr.Dataset:
    """Evaluate the accounting identities on driver paths; returns every line item."""
    with xr.set_options(keep_attrs=False):  # a driver's "source" is not the line item's
        inc = income_statement(drivers)
        wc = working_capital(drivers, inc, opening)
        cf = cash_flow(drivers, inc, wc, opening)
        val = valuation(drivers, inc, cf, market)
    return xr.merge([inc, wc.drop_vars("trade_receivables"), cf, val], compat="override",
                    join="exact")


def report_case(company) -> xr.Dataset:
    """The engine evaluated on the report's own assumptions (the point case)."""
    return run_engine(company.report_case, company.opening, company.market)
