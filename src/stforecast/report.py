"""The HTML report: one self-contained page built from saved results.

``build_report(results_dir)`` reads ``results_dir/summary.json`` and ``results_dir/forecast.nc``
(groups opened one by one with ``xarray.open_dataset(..., group=..., engine="h5netcdf")``),
draws the charts of :mod:`stforecast.plots`, writes them as PNGs beside the page and embeds the
same PNGs in ``report.html`` as base64 data URIs, so the page is one file that opens anywhere,
with no script and no network access. All text is escaped with ``html.escape``; the page is
written atomically (temporary file + ``os.replace``).

Sections: a warning banner when sampler diagnostics fail; headline numbers (FY23 revenue, target
price, P(upside) with its MCSE) and which scenario and valuation method they use; fan charts; the
target-price distribution; valuation, report multiple vs peer regression (method table, peer-fit
slopes, the peer-relation and valuation-method charts); the percentile table per line item and
year; scenarios (one row per scenario, medians of the multiples by method); risk factors (the
shocks); sensitivity; prior vs posterior; sampler diagnostics; assumptions with sources;
provenance (seed, priors hash, versions). A section whose summary keys are missing (older
results) is left out. Nothing here imports PyMC.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import xarray as xr

from . import mcse, plots
from .data import DataFileError, load_report
from .engine import REPORTED_LINES
from .peers import PREDICTION_PARAMS, load_peers

__all__ = ["build_report", "FAN_VARIABLES", "REPORT_NAME"]

REPORT_NAME = "report.html"
GROUPS = ("posterior", "prior", "sample_stats", "observed_data", "posterior_predictive",
          "prior_predictive", "peer_posterior")
#: Fan charts in the report, in order.
FAN_VARIABLES = (
    "revenue", "revenue_smart_business", "revenue_smart_city", "revenue_smart_life",
    "revenue_smart_auto", "gross_margin", "cash", "trade_receivable_days", "free_cash_flow",
)
STATS = ("mean", "q05", "q25", "q50", "q75", "q95")
STAT_HEADERS = ("Mean", "5%", "25%", "Median", "75%", "95%")
#: DESIGN.md's desk question: "that cash falls below RMB 3bn before FY23 year-end" (RMB mn).
CASH_FLOOR = 3000.0
#: Parameter-name endings compared in the prior-vs-posterior panel.
PARAMETER_SUFFIXES = ("_long_run", "_persistence", "_volatility")
MAX_PARAMETERS = 12
#: Sampler thresholds shown beside the diagnostics (DESIGN.md quality bar).
THRESHOLDS = {"rhat_max": "≤ 1.01", "ess_bulk_min": "≥ 400", "ess_tail_min": "≥ 400",
              "divergences": "= 0"}
#: Valuation methods in table order (summary.json ``valuation_methods`` keys).
METHODS = ("report", "peer-regression")
METHOD_NAMES = {"report": "Report multiple", "peer-regression": "Peer regression"}


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def _open_groups(path: Path) -> dict[str, xr.Dataset]:
    """Every group of the results file that exists, loaded into memory (the file is closed)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: results file not found (run the forecast first)")
    groups = {}
    for name in GROUPS:
        try:
            with xr.open_dataset(path, group=name, engine="h5netcdf") as ds:
                groups[name] = ds.load()
        except OSError:  # h5netcdf: "group not found"
            continue
    return groups


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, variable: str) -> str:
    """A number in the variable's units: RMB mn with separators, % for fractions, HK$ 2 dp."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if not math.isfinite(v):
        return "–"
    unit = plots.units(variable)
    if unit == "%":
        return f"{v * 100:.1f}%"
    if unit == "HK$ per share":
        return f"{v:.2f}"
    if unit == "x":
        return f"{v:.1f}x"
    return f"{v:,.0f}"


def _prob(p: Mapping | None) -> str:
    if not isinstance(p, Mapping) or p.get("value") is None:
        return "–"
    text = f"{float(p['value']):.2f}"
    if p.get("mcse") is not None and math.isfinite(float(p["mcse"])):
        text += f" ± {float(p['mcse']):.3f}"
    return text


def _pct(value, digits: int = 1) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{v * 100:.{digits}f}%" if math.isfinite(v) else "–"


def _method_name(method) -> str:
    return METHOD_NAMES.get(str(method), str(method).replace("-", " "))


def _is_stats(obj) -> bool:
    return isinstance(obj, Mapping) and "q50" in obj


def _interval(stats: Mapping, variable: str) -> str:
    return (f"{_num(stats.get('q50'), variable)} "
            f"<span class=muted>[{_num(stats.get('q05'), variable)} – "
            f"{_num(stats.get('q95'), variable)}]</span>")


def _table(headers, rows, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{_e(cls)}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

def _parameter_names(prior: xr.Dataset, posterior: xr.Dataset) -> list[str]:
    names = [n for n in posterior.data_vars
             if n in prior and str(n).endswith(PARAMETER_SUFFIXES)
             and set(posterior[n].dims) == {"chain", "draw"}]
    return names[:MAX_PARAMETERS]


def _headline_scenario(summary: Mapping, pp: xr.Dataset | None) -> str | None:
    """The summary's ``headline_scenario`` when the draws have it, else None (the default)."""
    name = summary.get("headline_scenario")
    if pp is None or "scenario" not in pp.dims or "scenario" not in pp.coords:
        return None
    return str(name) if name in [str(s) for s in pp["scenario"].values] else None


def _figures(groups: Mapping[str, xr.Dataset], rep, summary: Mapping) -> dict:
    figs = {}
    pp = groups.get("posterior_predictive")
    scenario = _headline_scenario(summary, pp)
    if pp is not None:
        for variable in FAN_VARIABLES:
            if variable in pp:
                figs[f"fan_{variable}"] = plots.fan_chart(pp, rep.history, variable,
                                                          published=rep.published)
        if "target_price_hkd" in pp:
            figs["target_price"] = plots.target_price_distribution(
                pp, price_hkd=rep.market.price_hkd, report_tp=rep.market.target_price_hkd_published,
                p_upside=summary.get("p_upside"))
            if "scenario" in pp["target_price_hkd"].dims:
                figs["scenarios_target_price"] = plots.scenario_comparison(
                    pp, "target_price_hkd",
                    references={"Price": rep.market.price_hkd,
                                "Report": rep.market.target_price_hkd_published})
        if "revenue" in pp and "scenario" in pp["revenue"].dims:
            figs["scenarios_revenue"] = plots.scenario_comparison(pp, "revenue")
        if any(v in pp for v in plots.METHOD_VARIABLES.values()):
            methods = summary.get("valuation_methods")
            methods = methods if isinstance(methods, Mapping) else {}
            figs["valuation_methods"] = plots.valuation_methods(
                pp, price_hkd=rep.market.price_hkd,
                report_tp=rep.market.target_price_hkd_published,
                p_upside_by_method={m: v.get("p_upside") for m, v in methods.items()
                                    if isinstance(v, Mapping) and v.get("p_upside")},
                scenario=scenario, chosen=summary.get("valuation_method"))
    peer_post = groups.get("peer_posterior")
    if peer_post is not None and all(v in peer_post for v in PREDICTION_PARAMS):
        try:
            peers = load_peers()
        except (DataFileError, OSError):
            peers = None
        if peers is not None:
            growth = None
            if pp is not None and "sales_cagr_fy20_fy23" in pp:
                growth = plots.select_scenario(pp["sales_cagr_fy20_fy23"], scenario)
            at_report = (summary.get("peer_fit") or {}).get("at_report_growth_and_margin") or {}
            figs["peer_relation"] = plots.peer_relation(
                peers, peer_post, growth, with_premium=at_report.get("multiple_with_premium"),
                report_multiple=at_report.get("report_multiple"))
    for key, entries in (summary.get("sensitivity") or {}).items():
        if entries:
            figs[f"tornado_{key}"] = plots.tornado(entries, f"Sensitivity: {key}")
    prior, posterior = groups.get("prior"), groups.get("posterior")
    if prior is not None and posterior is not None:
        names = _parameter_names(prior, posterior)
        if names:
            figs["prior_posterior"] = plots.prior_posterior(prior, posterior, names)
    return figs


def _img(images: Mapping[str, str], name: str, alt: str) -> str:
    if name not in images:
        return ""
    return (f"<figure><img src='data:image/png;base64,{images[name]}' alt='{_e(alt)}'>"
            f"</figure>")


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def _probability_from_draws(pp: xr.Dataset | None, make_indicator) -> str:
    """``P ± MCSE`` of an event over the default scenario's paths, or '–'."""
    if pp is None:
        return "–"
    try:
        indicator = make_indicator(pp)
    except KeyError:
        return "–"
    indicator = plots.select_scenario(indicator)
    dims = [d for d in plots.SAMPLE_DIMS if d in indicator.dims]
    if set(indicator.dims) != set(dims) or len(dims) < 2:
        return "–"
    p, err, _ = mcse.probability(indicator.transpose(*dims).values)
    return _prob({"value": p, "mcse": err})


def _headline(summary: Mapping, rep, pp: xr.Dataset | None) -> str:
    report_rev = float(rep.published["revenue"].sel(year="FY23"))
    price, report_tp = rep.market.price_hkd, rep.market.target_price_hkd_published
    cards = []
    rev = (summary.get("revenue") or {}).get("FY23")
    if _is_stats(rev):
        p_beat = _probability_from_draws(
            pp, lambda d: d["revenue"].sel(year="FY23") > report_rev)
        cards.append((
            "FY23 revenue (RMB mn)", _num(rev["q50"], "revenue"),
            f"90% interval {_num(rev['q05'], 'revenue')} – {_num(rev['q95'], 'revenue')}<br>"
            f"Report: {_num(report_rev, 'revenue')}<br>"
            f"P(beats report) = {_e(p_beat)}"))
    tp = summary.get("target_price_hkd")
    if _is_stats(tp):
        cards.append((
            "Target price (HK$)", _num(tp["q50"], "target_price_hkd"),
            f"90% interval {_num(tp['q05'], 'target_price_hkd')} – "
            f"{_num(tp['q95'], 'target_price_hkd')}<br>"
            f"Report target: HK${report_tp:.2f}<br>Share price: HK${price:.2f}"
            + (f"<br>Valuation method: {_e(_method_name(summary['valuation_method']))}"
               if summary.get("valuation_method") else "")))
    cards.append(("P(upside)", _e(_prob(summary.get("p_upside"))),
                  f"P(target price &gt; HK${price:.2f}) ± Monte Carlo standard error"))
    burn = summary.get("cash_burn_fy21_fy23")
    if _is_stats(burn):
        p_floor = _probability_from_draws(
            pp, lambda d: (d["cash"] < CASH_FLOOR).any("year"))
        cards.append((
            "Cash burn FY21–FY23 (RMB mn)", _num(burn["q50"], "cash_burn_fy21_fy23"),
            f"90% interval {_num(burn['q05'], 'cash')} – {_num(burn['q95'], 'cash')}<br>"
            f"P(cash &lt; RMB {CASH_FLOOR:,.0f}mn at a year-end) = {_e(p_floor)}"))
    body = "".join(f"<div class=card><div class=card-title>{_e(t)}</div>"
                   f"<div class=big>{v}</div><div class=small>{d}</div></div>"
                   for t, v, d in cards)
    return (f"<section id=headline><h2>Headline</h2>{_headline_basis(summary)}"
            f"<div class=cards>{body}</div></section>")


def _headline_basis(summary: Mapping) -> str:
    """Which scenario and which valuation method the headline numbers are, or ''."""
    bits = []
    scenario = summary.get("headline_scenario")
    if scenario:
        desc = ((summary.get("scenarios") or {}).get(scenario) or {})
        desc = desc.get("description") if isinstance(desc, Mapping) else None
        bits.append(f"scenario <b>{_e(scenario)}</b>" + (f" — {_e(desc)}" if desc else ""))
    method = summary.get("valuation_method")
    if method:
        text = f"valuation method <b>{_e(_method_name(method))}</b>"
        others = summary.get("valuation_methods")
        for other in METHODS:
            block = others.get(other) if isinstance(others, Mapping) else None
            if other == method or not isinstance(block, Mapping):
                continue
            tp = block.get("target_price_hkd")
            if _is_stats(tp):
                text += (f"; with the {_e(_method_name(other).lower())} the median target "
                         f"would be HK${float(tp['q50']):.2f}, P(upside) "
                         f"{_e(_prob(block.get('p_upside')))}")
        bits.append(text)
    if not bits:
        return ""
    return f"<p class=basis>Headline numbers: {'; '.join(bits)}.</p>"


def _percentile_table(summary: Mapping, rep) -> str:
    rows = []
    for line in REPORTED_LINES:
        by_year = summary.get(line)
        if not isinstance(by_year, Mapping):
            continue
        years = [y for y, s in by_year.items() if _is_stats(s)]
        for i, year in enumerate(years):
            stats = by_year[year]
            published = plots._derived(rep.published, line)
            point = (float(published.sel(year=year))
                     if published is not None and year in plots._years(published) else None)
            name = f"<b>{_e(plots.label(line))}</b>" if i == 0 else ""
            rows.append([name, _e(year)] + [_num(stats.get(k), line) for k in STATS]
                        + [_num(point, line) if point is not None else "–"])
    for scalar in ("cash_burn_fy21_fy23", "target_price_hkd"):
        stats = summary.get(scalar)
        if _is_stats(stats):
            point = (rep.market.target_price_hkd_published if scalar == "target_price_hkd"
                     else None)
            rows.append([f"<b>{_e(plots.label(scalar))}</b>", "FY21–FY23" if "fy21" in scalar
                         else ""] + [_num(stats.get(k), scalar) for k in STATS]
                        + [_num(point, scalar) if point is not None else "–"])
    if not rows:
        return ""
    return ("<section id=percentiles><h2>Percentiles by line item and year</h2>"
            "<p class=muted>RMB mn unless stated; margins in % of revenue; receivable days on "
            "year-end balances; target price in HK$ per share. ‘Report’ is the initiation "
            "report's point forecast.</p>"
            + _table(("Line item", "Year") + STAT_HEADERS + ("Report",), rows, "num yearcol")
            + "</section>")


def _last_year(by_year) -> Mapping | None:
    """The stats of the last year of a ``{year: stats}`` mapping (FY23), or None."""
    if not isinstance(by_year, Mapping):
        return None
    years = [y for y, v in by_year.items() if _is_stats(v)]
    return by_year[years[-1]] if years else None


def _cell(stats, variable: str) -> str:
    return _interval(stats, variable) if _is_stats(stats) else "–"


def _headline_tag(flag: bool) -> str:
    return " <span class=tag>headline</span>" if flag else ""


def _scenario_table(summary: Mapping, price: float) -> str:
    """One row per scenario: FY23 revenue, cash burn FY21-FY23, FY23 cash, target price and
    P(upside), with the scenario's description; then the median multiple per method."""
    scenarios = summary.get("scenarios")
    if not isinstance(scenarios, Mapping) or not scenarios:
        return ""
    headline = summary.get("headline_scenario")
    last_year = "FY23"
    rows, multiples = [], []
    for name, sc in scenarios.items():
        if _is_stats(sc):  # older summaries: {name: target-price stats}
            sc = {"target_price_hkd": sc}
        if not isinstance(sc, Mapping):
            continue
        desc = sc.get("description")
        first = (f"<b>{_e(name)}</b>{_headline_tag(name == headline)}"
                 + (f"<div class=desc>{_e(desc)}</div>" if desc else ""))
        revenue = _last_year(sc.get("revenue"))
        if isinstance(sc.get("revenue"), Mapping) and revenue is not None:
            last_year = [y for y, v in sc["revenue"].items() if _is_stats(v)][-1]
        rows.append([first, _cell(revenue, "revenue"),
                     _cell(sc.get("cash_burn_fy21_fy23"), "cash_burn_fy21_fy23"),
                     _cell(_last_year(sc.get("cash")), "cash"),
                     _cell(sc.get("target_price_hkd"), "target_price_hkd"),
                     _e(_prob(sc.get("p_upside")))])
        methods = sc.get("valuation_methods")
        if isinstance(methods, Mapping):
            parts = []
            for m in METHODS:
                block = methods.get(m)
                if not isinstance(block, Mapping):
                    continue
                mult, tp = block.get("ev_sales_multiple"), block.get("target_price_hkd")
                text = f"{_e(_method_name(m).lower())} "
                text += _num(mult["q50"], "ev_sales_multiple") if _is_stats(mult) else "–"
                if _is_stats(tp):
                    text += f" (target HK${float(tp['q50']):.2f})"
                parts.append(text)
            if parts:
                multiples.append(f"<li><b>{_e(name)}</b>: {' · '.join(parts)}</li>")
    if not rows:
        return ""
    table = _table(("Scenario", f"Revenue {last_year} (RMB mn)", "Cash burn FY21–FY23 (RMB mn)",
                    f"Cash {last_year} (RMB mn)", "Target price (HK$)",
                    f"P(target > HK${float(price):.2f}) ± MCSE"), rows, "num scen")
    mult = ""
    if multiples:
        mult = ("<h3>Median EV/sales FY22E multiple by valuation method</h3>"
                f"<ul class=multiples>{''.join(multiples)}</ul>")
    return ("<section id=scenarios><h2>Scenarios</h2><p class=muted>Median "
            "<span class=muted>[5% – 95%]</span> per scenario; the target price and P(upside) "
            "use the headline valuation method. All scenarios share the same random numbers, "
            "so differences between rows are the shocks, not simulation noise.</p>"
            + table + mult + "</section>")


def _valuation(summary: Mapping, price: float, images: Mapping[str, str]) -> str:
    """Report multiple vs peer regression: method table, peer-fit numbers and two charts."""
    methods = summary.get("valuation_methods")
    methods = methods if isinstance(methods, Mapping) else {}
    chosen = summary.get("valuation_method")
    rows = []
    for m in [m for m in METHODS if m in methods] + [m for m in methods if m not in METHODS]:
        block = methods[m]
        if not isinstance(block, Mapping) or not (
                _is_stats(block.get("target_price_hkd")) or _is_stats(
                    block.get("ev_sales_multiple"))):
            continue
        rows.append([f"<b>{_e(_method_name(m))}</b>{_headline_tag(m == chosen)}",
                     _cell(block.get("target_price_hkd"), "target_price_hkd"),
                     _e(_prob(block.get("p_upside"))),
                     _cell(block.get("ev_sales_multiple"), "ev_sales_multiple")])
    parts = []
    if rows:
        parts.append(_table(("Method", "Target price (HK$)",
                             f"P(target > HK${float(price):.2f}) ± MCSE",
                             "EV/sales FY22E multiple"), rows, "num"))
    cagr = methods.get("sales_cagr_fy20_fy23")
    if _is_stats(cagr):
        parts.append(f"<p class=small>Simulated revenue CAGR FY20–FY23 (the peer regression's "
                     f"growth input): median {_pct(cagr['q50'])} "
                     f"<span class=muted>[{_pct(cagr['q05'])} – {_pct(cagr['q95'])}]</span>."
                     "</p>")
    fit = summary.get("peer_fit")
    if isinstance(fit, Mapping):
        items = []
        for key, what in (("beta_growth_per_10pp", "sales CAGR"),
                          ("beta_margin_per_10pp", "gross margin")):
            b = fit.get(key)
            if _is_stats(b):
                items.append(
                    f"Slope on {what}: {float(b['q50']):+.3f} log multiple per 10pp "
                    f"<span class=muted>[90%: {float(b['q05']):+.3f} – {float(b['q95']):+.3f}]"
                    f"</span>, i.e. the multiple ×{math.exp(float(b['q50'])):.2f} per 10pp "
                    f"<span class=muted>[×{math.exp(float(b['q05'])):.2f} – "
                    f"×{math.exp(float(b['q95'])):.2f}]</span>")
        at = fit.get("at_report_growth_and_margin")
        if isinstance(at, Mapping) and _is_stats(at.get("multiple")):
            text = (f"At the report's growth ({_pct(at.get('sales_cagr'), 0)} sales CAGR "
                    f"FY20–23E) and gross margin ({_pct(at.get('gross_margin'))}): predicted "
                    f"{_interval(at['multiple'], 'ev_sales_multiple')}")
            if _is_stats(at.get("multiple_with_premium")):
                text += (", with the premium prior "
                         + _interval(at["multiple_with_premium"], "ev_sales_multiple"))
            if at.get("report_multiple") is not None:
                text += (f"; the report uses <b>{_num(at['report_multiple'], 'ev_sales_multiple')}"
                         "</b>")
            items.append(text)
        diag = fit.get("diagnostics")
        if isinstance(diag, Mapping):
            def fmt(key, spec):
                v = diag.get(key)
                return format(float(v), spec) if isinstance(v, (int, float)) else "–"
            items.append(f"Peer-fit diagnostics: max R-hat {fmt('rhat_max', '.3f')}, min bulk "
                         f"ESS {fmt('ess_bulk_min', ',.0f')}, min tail ESS "
                         f"{fmt('ess_tail_min', ',.0f')}, divergences "
                         f"{fmt('divergences', ',.0f')}")
        if items:
            parts.append("<h3>Peer regression (report Figure 69, 20 peers)</h3><ul class=fit>"
                         + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    imgs = (_img(images, "valuation_methods", "Target price under each valuation method")
            + _img(images, "peer_relation", "Peer EV/sales multiples against sales growth, "
                                            "with the fitted relation and SenseTime"))
    if not parts and not imgs:
        return ""
    intro = ("<p class=muted>Both methods are simulated on every path. The report method "
             "takes the EV/sales FY22E multiple from a prior around the report's 34x, whatever "
             "the path's growth; the peer regression predicts it from the path's own revenue "
             "CAGR FY20–FY23 and FY22 gross margin (with the regression's parameter and residual "
             "uncertainty and a premium prior), so slower paths get lower multiples."
             + (f" The headline uses the <b>{_e(_method_name(chosen).lower())}</b>." if chosen
                else "") + "</p>")
    return ("<section id=valuation><h2>Valuation: report multiple vs peer regression</h2>"
            + intro + "".join(parts) + (f"<div class=stack>{imgs}</div>" if imgs else "")
            + "</section>")


def _channel(name: str, effect) -> str:
    """A shock channel's effect at intensity 1 in its units (shocks.CHANNELS)."""
    try:
        v = float(effect)
    except (TypeError, ValueError):
        return f"{_e(name)} {_e(effect)}"
    words = {"ev_sales_multiple": "EV/sales multiple", "rnd_ratio": "R&D ratio"}.get(
        name, name.replace("_", " "))
    if name.endswith("_days"):
        text = f"{v:+g} days"
    elif name in ("gross_margin", "impairment_rate") or name.endswith("_ratio"):
        text = f"{v * 100:+.1f}pp"
    else:  # relative channels: a fraction of the driver
        text = f"{v * 100:+.0f}%"
    return f"{_e(words)} {_e(text.replace('-', '−'))}"


def _risk_factors(summary: Mapping) -> str:
    shocks = summary.get("shocks")
    if not isinstance(shocks, list) or not shocks:
        return ""
    rows = []
    for s in shocks:
        if not isinstance(s, Mapping):
            continue
        prob = _e(s.get("annual_probability", "–"))
        if isinstance(s.get("annual_probability_mean"), (int, float)):
            prob += f"<br><span class=muted>mean {_pct(s['annual_probability_mean'])} a year</span>"
        channels = s.get("channels")
        chan = ("<br>".join(f"<span class=nw>{_channel(str(k), v)}</span>"
                            for k, v in channels.items())
                if isinstance(channels, Mapping) else _e(channels or "–"))
        persistence = s.get("persistence")
        persistence = (f"{float(persistence):.2f}" if isinstance(persistence, (int, float))
                       else _e(persistence if persistence is not None else "–"))
        rows.append([f"<b>{_e(s.get('label', s.get('shock', '')))}</b>"
                     + (f"<br><code>{_e(s['shock'])}</code>" if s.get("shock") else ""),
                     prob, _e(s.get("severity", "–")), persistence, chan,
                     _e(s.get("source", ""))])
    if not rows:
        return ""
    return ("<section id=risk-factors><h2>Risk factors</h2><p class=muted>The report's named "
            "risks as shocks. Each path draws an annual probability from its prior, then an "
            "occurrence each forecast year; severity scales one occurrence (1 = the typical "
            "effect listed under channels); persistence is the share of last year's intensity "
            "still acting. Channels: % = relative change of the driver, pp = percentage points "
            "of revenue, days = days added to the balance.</p>"
            + _table(("Risk", "Annual probability (prior)", "Severity", "Persistence",
                      "Channels (typical occurrence)", "Source"), rows, "text risks")
            + "</section>")


def _sensitivity(summary: Mapping, images: Mapping[str, str]) -> str:
    sens = summary.get("sensitivity")
    if not isinstance(sens, Mapping) or not sens:
        return ""
    parts = []
    for key, entries in sens.items():
        ranked = sorted(entries or [], key=lambda e: abs(float(e["score"])), reverse=True)
        rows = [[str(i + 1), _e(e["driver"]), f"{float(e['score']):+.3f}"]
                for i, e in enumerate(ranked)]
        parts.append(f"<div><h3>{_e(key)}</h3>"
                     + _img(images, f"tornado_{key}", f"Sensitivity tornado for {key}")
                     + _table(("Rank", "Driver", "Score"), rows, "num") + "</div>")
    return ("<section id=sensitivity><h2>Sensitivity ranking</h2><div class=grid2>"
            + "".join(parts) + "</div></section>")


def _diagnostics_ok(diag: Mapping) -> bool:
    return bool(diag.get("ok", False))


def _warning(summary: Mapping) -> str:
    diag = summary.get("diagnostics")
    if not isinstance(diag, Mapping):
        return ("<div class=warning role=alert><b>Warning:</b> no sampler diagnostics in "
                "summary.json.</div>")
    if _diagnostics_ok(diag):
        return ""
    reasons = "".join(f"<li>{_e(r)}</li>" for r in diag.get("reasons") or [])
    return ("<div class=warning role=alert><b>Warning: sampler diagnostics failed.</b> "
            "The draws may not represent the posterior; treat every number below with caution."
            + (f"<ul>{reasons}</ul>" if reasons else "") + "</div>")


def _diagnostics(summary: Mapping) -> str:
    diag = summary.get("diagnostics")
    if not isinstance(diag, Mapping):
        return ""
    ok = _diagnostics_ok(diag)
    rows = []
    for key, title in (("rhat_max", "max R-hat"), ("ess_bulk_min", "min bulk ESS"),
                       ("ess_tail_min", "min tail ESS"), ("divergences", "divergences")):
        value = diag.get(key)
        text = (f"{value:.3f}" if key == "rhat_max" and isinstance(value, (int, float))
                else f"{value:,.0f}" if isinstance(value, (int, float)) else "–")
        rows.append([_e(title), text, _e(THRESHOLDS[key])])
    status = ("<span class=ok>OK</span>" if ok else "<span class=bad>FAILED</span>")
    reasons = "".join(f"<li>{_e(r)}</li>" for r in diag.get("reasons") or [])
    return ("<section id=diagnostics><h2>Sampler diagnostics</h2>"
            f"<p>Status: {status}</p>"
            + _table(("Diagnostic", "Value", "Target"), rows, "num narrow")
            + (f"<ul class=reasons>{reasons}</ul>" if reasons else "") + "</section>")


def _assumptions(summary: Mapping) -> str:
    items = summary.get("assumptions")
    if not isinstance(items, list) or not items:
        return ""
    rows = [[f"<code>{_e(a.get('driver', ''))}</code>", _e(a.get("prior", "")),
             _e(a.get("source", ""))] for a in items if isinstance(a, Mapping)]
    return ("<section id=assumptions><h2>Assumptions and sources</h2>"
            + _table(("Driver", "Prior", "Source"), rows, "text") + "</section>")


def _provenance(summary: Mapping) -> str:
    bits = []
    if "seed" in summary:
        bits.append(f"seed <code>{_e(summary['seed'])}</code>")
    if "priors_sha256" in summary:
        bits.append(f"priors sha256 <code>{_e(str(summary['priors_sha256'])[:16])}…</code>")
    versions = summary.get("versions")
    if isinstance(versions, Mapping):
        bits.append(", ".join(f"{_e(k)} {_e(v)}" for k, v in versions.items()))
    return f"<footer>{' · '.join(bits)}</footer>" if bits else ""


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#222;
margin:0;background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px 28px 40px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;border-bottom:2px solid #1f5fa8;
padding-bottom:4px;margin-top:34px}h3{font-size:15px;margin:10px 0}
.sub{color:#666;margin:0 0 18px}.muted{color:#777;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:14px}
.card{border:1px solid #dde3ea;border-radius:8px;padding:12px 14px;background:#fafcff}
.card-title{font-size:13px;color:#555;text-transform:uppercase;letter-spacing:.03em}
.big{font-size:28px;font-weight:600;color:#1f5fa8;margin:4px 0}.small{font-size:13px;color:#444}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(500px,1fr));gap:12px}
figure{margin:0}img{max-width:100%;height:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}
table.narrow{width:auto}th,td{padding:4px 8px;border-bottom:1px solid #e5e5e5}
th{background:#eef2f7;text-align:left}table.num td,table.num th{text-align:right}
table.num td:first-child,table.num th:first-child,table.yearcol td:nth-child(2),table.yearcol th:nth-child(2){text-align:left}
tbody tr:nth-child(even){background:#fafafa}
.warning{background:#fdecea;border:2px solid #c0392b;color:#7b1d13;padding:12px 16px;
border-radius:6px;margin:12px 0}.ok{color:#1e7b34;font-weight:600}
.bad{color:#c0392b;font-weight:700}footer{margin-top:30px;font-size:12px;color:#777}
code{font-size:12px}
.basis{font-size:14px;background:#eef4fb;border-left:4px solid #1f5fa8;padding:8px 12px;
margin:8px 0 14px}
.stack figure{margin:10px 0}
.tag{display:inline-block;font-size:11px;font-weight:600;color:#fff;background:#1f5fa8;
border-radius:3px;padding:0 5px;margin-left:4px;vertical-align:1px}
.desc{font-size:12px;color:#666;font-weight:normal;margin-top:2px;max-width:330px}
table.scen td{white-space:nowrap}table.scen td:first-child{text-align:left;white-space:normal}
.nw{white-space:nowrap}
table.risks td{vertical-align:top;font-size:12px}table.risks td:nth-child(6){color:#555}
ul.multiples,ul.fit{font-size:13px;margin:6px 0;padding-left:20px}
ul.multiples li,ul.fit li{margin:2px 0}
"""


def _render(summary: Mapping, rep, pp: xr.Dataset | None, images: Mapping[str, str]) -> str:
    scenario_note = ""
    if pp is not None and "scenario" in pp.dims:
        labels = [str(s) for s in pp["scenario"].values] if "scenario" in pp.coords else []
        chosen = plots.DEFAULT_SCENARIO if plots.DEFAULT_SCENARIO in labels else (
            labels[0] if labels else "first")
        scenario_note = f" Charts and probabilities show the “{chosen}” scenario."
    fans = "".join(_img(images, f"fan_{v}", f"Fan chart of {plots.label(v)}")
                   for v in FAN_VARIABLES)
    scen_imgs = "".join(_img(images, n, f"Scenario comparison: {n}")
                        for n in ("scenarios_target_price", "scenarios_revenue"))
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        "<title>SenseTime (0020.HK): probabilistic forecast</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>SenseTime (HKEX: 0020) — probabilistic forecast</h1>",
        "<p class=sub>Distributions around the initiation report's point forecasts "
        f"(BUY, target HK${rep.market.target_price_hkd_published:.2f}). "
        f"Money in RMB mn unless stated.{_e(scenario_note)}</p>",
        _warning(summary),
        _headline(summary, rep, pp),
        "<section id=fans><h2>Fan charts</h2><p class=muted>Shaded: 50/80/95% intervals of "
        "the simulated paths; solid blue: median; black: actuals FY18A–FY20A; dashed red: "
        f"the report's forecast.</p><div class=grid2>{fans}</div></section>",
    ]
    if "target_price" in images:
        parts.append("<section id=target-price><h2>Target price distribution</h2>"
                     + _img(images, "target_price", "Target price distribution") + "</section>")
    parts.append(_valuation(summary, rep.market.price_hkd, images))
    parts.append(_percentile_table(summary, rep))
    scen = _scenario_table(summary, rep.market.price_hkd)
    if scen or scen_imgs:
        if not scen:
            scen = "<section id=scenarios><h2>Scenarios</h2></section>"
        parts.append(scen.replace("</section>", f"<div class=grid2>{scen_imgs}</div></section>"))
    parts.append(_risk_factors(summary))
    parts.append(_sensitivity(summary, images))
    if "prior_posterior" in images:
        parts.append("<section id=prior-posterior><h2>Prior vs posterior</h2>"
                     + _img(images, "prior_posterior", "Prior and posterior densities")
                     + "</section>")
    parts += [_diagnostics(summary), _assumptions(summary), _provenance(summary),
              "</main></body></html>"]
    return "\n".join(p for p in parts if p)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the page is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_report(results_dir: Path | str, report=None) -> Path:
    """Write ``results_dir/report.html`` (and its PNGs beside it); returns the page's path.

    ``report`` is the :class:`stforecast.data.Report` giving history, the published forecasts
    and market prices (default: the packaged SenseTime report).
    """
    results_dir = Path(results_dir)
    summary = json.loads((results_dir / "summary.json").read_text(encoding="utf-8"))
    groups = _open_groups(results_dir / "forecast.nc")
    rep = report if report is not None else load_report()
    figs = _figures(groups, rep, summary)
    paths = plots.save_all(figs, results_dir)
    images = {name: base64.b64encode(p.read_bytes()).decode("ascii")
              for name, p in paths.items()}
    page = _render(summary, rep, groups.get("posterior_predictive"), images)
    out = results_dir / REPORT_NAME
    _write_atomic(out, page)
    return out

