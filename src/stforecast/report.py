"""The HTML report: one self-contained page rendered from a results folder alone.

``build_report(results_dir)`` reads ``results_dir/summary.json`` (its statistics and the chart
data that ``stforecast.charts`` computed at run time, under ``charts``), draws the charts of
:mod:`stforecast.plots`, writes them as PNGs beside the page and embeds the same PNGs in
``report.html`` as base64 data URIs, so the page is one file that opens anywhere, with no script
and no network access. Nothing is recomputed and nothing outside the results folder is read:
the company's name, currencies, years, the report's figures and every label come from the
summary. All text is escaped with ``html.escape``. Everything is rendered in memory first; the
PNGs and then the page are written atomically (temporary file + ``os.replace``), so a failure
leaves an earlier report untouched.

Sections: a banner (OK only when every fit met the quality bar, the peer regression's included;
FAILED with the reasons otherwise); headline numbers and which scenario and valuation method
they use; fan charts; the target-price distribution; valuation by method (method table, peer
fit, two charts); the percentile table per line item and year; scenarios; risk factors (the
shocks); sensitivity; prior vs posterior; sampler diagnostics; assumptions with sources;
provenance. A section whose data are absent is left out. Nothing here imports PyMC.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .errors import ResultsError
from .registry import (DIVERGENCES_MAX, ESS_MIN, METHOD_VARIABLES, QUANTILES, REPORT_FILE,
                       RHAT_MAX, SUMMARY_FILE, VALUATION_METHODS, VARIABLES, axis_label)
from .results import Summary
from .sideprocess import SideProcess

__all__ = ["build_report", "ReportProcess", "REPORT_NAME", "chart_pngs", "write_report"]

REPORT_NAME = REPORT_FILE  # (the registry's name)
STATS = ("mean",) + tuple(QUANTILES)
STAT_HEADERS = ("Mean",) + tuple(f"{p:.0%}" if k != "q50" else "Median"
                                 for k, p in QUANTILES.items())
#: The quality bar beside the diagnostics (registry constants).
THRESHOLDS = {"rhat_max": f"≤ {RHAT_MAX:g}", "ess_bulk_min": f"≥ {ESS_MIN:,}",
              "ess_tail_min": f"≥ {ESS_MIN:,}",
              "divergences": f"≤ {DIVERGENCES_MAX:g}" if DIVERGENCES_MAX else "= 0"}
DIAGNOSTICS = (("rhat_max", "max R-hat"), ("ess_bulk_min", "min bulk ESS"),
               ("ess_tail_min", "min tail ESS"), ("divergences", "divergences"))


# --------------------------------------------------------------------------------------------
# Reading (the one loader: to be replaced by the typed results contract's)
# --------------------------------------------------------------------------------------------

def _load_results(results_dir: Path) -> dict:
    """summary.json of ``results_dir``, read and validated by the results contract
    (``results.Summary``), as a dict with its chart data; ``ResultsError`` (one line) when it is
    missing, unreadable, of another schema or written without chart data."""
    path = results_dir / SUMMARY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: results file not found (run the forecast first)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: expected a JSON summary ({type(err).__name__}: "
                           f"{str(err).splitlines()[0]})") from None
    return _checked(Summary.from_json(text, path).to_dict(), results_dir)


def _checked(summary: dict, results_dir: Path) -> dict:
    if not summary.get("charts"):
        raise ResultsError(f"{results_dir / SUMMARY_FILE}: key 'charts': expected the chart data "
                           "(results written by an older stforecast: run the forecast again)")
    return summary


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, fmt: str) -> str:
    """A number in its format (``charts.FORMATS``): money with separators, fractions in %,
    prices with 2 decimals, multiples with an x."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    if fmt == "fraction":
        return f"{v * 100:.1f}%"
    if fmt in ("price", "decimal"):
        return f"{v:,.2f}"
    if fmt == "multiple":
        return f"{v:.1f}x"
    return f"{v:,.0f}"


def _prob(p) -> str:
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


def _is_stats(obj) -> bool:
    return isinstance(obj, Mapping) and obj.get("q50") is not None


def _interval(stats: Mapping, fmt: str) -> str:
    return (f"{_num(stats.get('q50'), fmt)} <span class=muted>[{_num(stats.get('q05'), fmt)} – "
            f"{_num(stats.get('q95'), fmt)}]</span>")


def _cell(stats, fmt: str) -> str:
    return _interval(stats, fmt) if _is_stats(stats) else "–"


def _table(headers, rows, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='{_e(cls)}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _headline_tag(flag: bool) -> str:
    return " <span class=tag>headline</span>" if flag else ""


class _Words:
    """Labels, units and formats of the run's variables (from its chart data, else the
    registry with the company's currencies)."""

    def __init__(self, summary: Mapping):
        self.company = summary["company"]
        self.variables = summary["charts"].get("variables") or {}

    def entry(self, name: str) -> Mapping:
        if name in self.variables:
            return self.variables[name]
        v = VARIABLES.get(name)
        if v is None:
            return {"label": name.replace("_", " "), "units": "", "format": "decimal"}
        from .charts import number_format
        return {"label": v.label, "format": number_format(v.units),
                "units": v.unit_text(self.company.get("currency", ""),
                                     self.company.get("price_currency", ""))}

    def label(self, name: str) -> str:
        return self.entry(name)["label"]

    def fmt(self, name: str) -> str:
        return self.entry(name)["format"]

    def units(self, name: str) -> str:
        return self.entry(name)["units"]

    def titled(self, name: str) -> str:
        """``"Revenue (<currency> mn)"``: the label with its units."""
        return axis_label(_capital(self.label(name)), self.units(name))

    @property
    def price_unit(self) -> str:
        return self.company.get("price_currency", "")

    def price(self, value) -> str:
        return f"{_num(value, 'price')} {self.price_unit}".strip()

    @property
    def money(self) -> str:
        return f"{self.company.get('currency', '')} mn".strip()


def method_name(method) -> str:
    """``"Report multiple"``, ``"Peer-regression multiple"``: from the registry's label of the
    method's target price."""
    variable = METHOD_VARIABLES.get(str(method), (None,))[0]
    label = VARIABLES[variable].label if variable in VARIABLES else str(method)
    return _capital(label.split(", ", 1)[-1])


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def _img(images: Mapping[str, str], name: str, alt: str) -> str:
    if name not in images:
        return ""
    return (f"<figure><img src='data:image/png;base64,{images[name]}' alt='{_e(alt)}'>"
            f"</figure>")


def _final_year(summary: Mapping) -> str | None:
    years = (summary["charts"].get("years") or {}).get("forecast") or []
    return years[-1] if years else None


def _headline(summary: Mapping, w: _Words) -> str:
    charts = summary["charts"]
    events = charts.get("events") or {}
    published = charts.get("published") or {}
    final = _final_year(summary)
    cards = []
    rev = (summary.get("revenue") or {}).get(final)
    if _is_stats(rev):
        beat = events.get("revenue_beats_report") or {}
        report = beat.get("report")
        detail = f"90% interval {_num(rev['q05'], 'money')} – {_num(rev['q95'], 'money')}"
        if report is not None:
            detail += (f"<br>Report: {_num(report, 'money')}<br>P(beats report) = "
                       f"{_e(_prob(beat))}")
        cards.append((f"{final} revenue ({w.money})", _num(rev["q50"], "money"), detail))
    tp = summary.get("target_price")
    if _is_stats(tp):
        detail = f"90% interval {w.price(tp['q05'])} – {w.price(tp['q95'])}"
        if published.get("target_price") is not None:
            detail += f"<br>Report target: {_e(w.price(published['target_price']))}"
        if published.get("price") is not None:
            detail += f"<br>Share price: {_e(w.price(published['price']))}"
        if summary.get("valuation_method"):
            detail += f"<br>Valuation method: {_e(method_name(summary['valuation_method']))}"
        cards.append((f"Target price ({w.units('target_price')})", _num(tp["q50"], "price"),
                      detail))
    price = published.get("price", w.company.get("price"))
    upside = summary.get("upside") or {}
    words = (_e(upside["definition"]) if upside.get("definition") else
             f"P(target price &gt; {_e(w.price(price))})")
    cards.append(("P(upside)", _e(_prob(summary.get("p_upside"))),
                  f"{words} ± Monte Carlo standard error"))
    burn = summary.get("cash_burn")
    if _is_stats(burn):
        period = (summary.get("periods") or {}).get("cash_burn", "")
        detail = f"90% interval {_num(burn['q05'], 'money')} – {_num(burn['q95'], 'money')}"
        floor = events.get("cash_below_floor")
        if floor:
            detail += (f"<br>P(cash &lt; {_num(floor['floor'], 'money')} {_e(w.money)} at a "
                       f"year-end) = {_e(_prob(floor))}")
        cards.append((f"Cash burn {period} ({w.money})".replace("  ", " "),
                      _num(burn["q50"], "money"), detail))
    body = "".join(f"<div class=card><div class=card-title>{_e(t)}</div>"
                   f"<div class=big>{v}</div><div class=small>{d}</div></div>"
                   for t, v, d in cards)
    return (f"<section id=headline><h2>Headline</h2>{_headline_basis(summary, w)}"
            f"<div class=cards>{body}</div></section>")


def _headline_basis(summary: Mapping, w: _Words) -> str:
    """Which scenario and which valuation method the headline numbers are, or ''."""
    bits = []
    scenario = summary.get("headline_scenario")
    if scenario:
        desc = (summary.get("scenarios") or {}).get(scenario) or {}
        desc = desc.get("description") if isinstance(desc, Mapping) else None
        bits.append(f"scenario <b>{_e(scenario)}</b>" + (f" — {_e(desc)}" if desc else ""))
    method = summary.get("valuation_method")
    if method:
        text = f"valuation method <b>{_e(method_name(method))}</b>"
        others = summary.get("valuation_methods") or {}
        for other in VALUATION_METHODS:
            block = others.get(other)
            if other == method or not isinstance(block, Mapping):
                continue
            tp = block.get("target_price")
            if _is_stats(tp):
                text += (f"; with the {_e(method_name(other).lower())} the median target "
                         f"would be {_e(w.price(tp['q50']))}, P(upside) "
                         f"{_e(_prob(block.get('p_upside')))}")
        bits.append(text)
    if not bits:
        return ""
    return f"<p class=basis>Headline numbers: {'; '.join(bits)}.</p>"


def _percentile_table(summary: Mapping, w: _Words) -> str:
    published = summary["charts"].get("published") or {}
    lines = published.get("lines") or {}
    rows = []
    for name, entry in w.variables.items():
        data = summary.get(name)
        fmt = entry["format"]
        if entry["kind"] == "line" and isinstance(data, Mapping):
            years = [y for y, s in data.items() if _is_stats(s)]
            for i, year in enumerate(years):
                point = (lines.get(name) or {}).get(year)
                first = f"<b>{_e(_capital(entry['label']))}</b>" if i == 0 else ""
                rows.append([first, _e(year)] + [_num(data[year].get(k), fmt) for k in STATS]
                            + [_num(point, fmt) if point is not None else "–"])
        elif entry["kind"] == "scalar" and _is_stats(data):
            point = published.get("target_price") if name == "target_price" else None
            period = (summary.get("periods") or {}).get(name, "")
            rows.append([f"<b>{_e(_capital(entry['label']))}</b>", _e(period)]
                        + [_num(data.get(k), fmt) for k in STATS]
                        + [_num(point, fmt) if point is not None else "–"])
    if not rows:
        return ""
    units = sorted({f"{w.label(n)}: {w.units(n).replace('fraction', '%', 1)}" for n in w.variables
                    if w.variables[n]["kind"] in ("line", "scalar") and n in summary
                    and w.variables[n]["format"] not in ("money",)})
    return ("<section id=percentiles><h2>Percentiles by line item and year</h2>"
            f"<p class=muted>{_e(w.money)} unless stated ({_e('; '.join(units))}). ‘Report’ is "
            "the report's point forecast.</p>"
            + _table(("Line item", "Year") + STAT_HEADERS + ("Report",), rows, "num yearcol")
            + "</section>")


def _last_year(by_year) -> Mapping | None:
    """The stats of the last year of a ``{year: stats}`` mapping, or None."""
    if not isinstance(by_year, Mapping):
        return None
    years = [y for y, v in by_year.items() if _is_stats(v)]
    return by_year[years[-1]] if years else None


def _scenario_table(summary: Mapping, w: _Words) -> str:
    """One row per scenario: final-year revenue, cash burn, final-year cash, target price and
    P(upside), with the scenario's description; then the median multiple per method."""
    scenarios = summary.get("scenarios")
    if not isinstance(scenarios, Mapping) or not scenarios:
        return ""
    headline = summary.get("headline_scenario")
    final = _final_year(summary) or ""
    period = (summary.get("periods") or {}).get("cash_burn", "")
    price = (summary["charts"].get("published") or {}).get("price", w.company.get("price"))
    rows, multiples = [], []
    for name, sc in scenarios.items():
        if not isinstance(sc, Mapping):
            continue
        desc = sc.get("description")
        first = (f"<b>{_e(name)}</b>{_headline_tag(name == headline)}"
                 + (f"<div class=desc>{_e(desc)}</div>" if desc else ""))
        rows.append([first, _cell(_last_year(sc.get("revenue")), "money"),
                     _cell(sc.get("cash_burn"), "money"),
                     _cell(_last_year(sc.get("cash")), "money"),
                     _cell(sc.get("target_price"), "price"), _e(_prob(sc.get("p_upside")))])
        parts = []
        for m in VALUATION_METHODS:
            block = (sc.get("valuation_methods") or {}).get(m)
            if not isinstance(block, Mapping):
                continue
            mult, tp = block.get("ev_sales_multiple"), block.get("target_price")
            text = f"{_e(method_name(m).lower())} "
            text += _num(mult["q50"], "multiple") if _is_stats(mult) else "–"
            if _is_stats(tp):
                text += f" (target {_e(w.price(tp['q50']))})"
            parts.append(text)
        if parts:
            multiples.append(f"<li><b>{_e(name)}</b>: {' · '.join(parts)}</li>")
    if not rows:
        return ""
    table = _table(("Scenario", f"Revenue {final} ({w.money})",
                    f"Cash burn {period} ({w.money})", f"Cash {final} ({w.money})",
                    f"Target price ({w.units('target_price')})",
                    f"P(target > {w.price(price)}) ± MCSE"), rows, "num scen")
    mult = ""
    if multiples:
        year = (summary["charts"].get("years") or {}).get("valuation", "")
        mult = (f"<h3>Median EV/sales {_e(year)} multiple by valuation method</h3>"
                f"<ul class=multiples>{''.join(multiples)}</ul>")
    return ("<section id=scenarios><h2>Scenarios</h2><p class=muted>Median "
            "<span class=muted>[5% – 95%]</span> per scenario; the target price and P(upside) "
            "use the headline valuation method. All scenarios share the same random numbers, "
            "so differences between rows are the shocks, not simulation noise.</p>"
            + table + mult + "</section>")


def _funding(summary: Mapping, w: _Words) -> str:
    """The funding rule's outcome (P(raise by year), amount raised, dilution, cost cuts)."""
    f = summary.get("funding")
    if not isinstance(f, Mapping):
        return ""
    rows = []
    cuts = f.get("p_cost_cut_by") or {}
    for year, p in (f.get("p_raise_by") or {}).items():
        rows.append([_e(year), _e(_prob(p)), _e(_prob(cuts.get(year))) if year in cuts else ""])
    parts = [_table(("By the end of", "P(raise money) ± MCSE", "P(cost cut) ± MCSE"), rows,
                    "num")]
    amount, dilution = f.get("amount_raised"), f.get("dilution")
    floor = f.get("floor")
    text = []
    if floor is not None:
        text.append(f"Minimum liquidity (cash, term deposits and liquid investments): "
                    f"{_num(floor, 'money')} {_e(w.money)}; below it the company raises debt or "
                    "equity at a discount to the path's value per share.")
    if _is_stats(amount):
        text.append(f"Money raised over the forecast years: median {_num(amount['q50'], 'money')}"
                    f", 95th percentile {_num(amount['q95'], 'money')} {_e(w.money)}.")
    if _is_stats(dilution):
        text.append(f"Dilution (new shares / today's): median {_pct(dilution['q50'])} "
                    f"<span class=muted>[{_pct(dilution['q05'])} – {_pct(dilution['q95'])}]"
                    "</span>.")
    parts.append(f"<p class=small>{' '.join(text)}</p>")
    return "<section id=funding><h2>Funding and dilution</h2>" + "".join(parts) + "</section>"


def _conventions(summary: Mapping, w: _Words) -> str:
    """The report's case under the report's and the correct conventions."""
    table = (summary.get("charts") or {}).get("conventions")
    if not isinstance(table, Mapping) or not table.get("lines"):
        return ""
    lines = table["lines"]
    years = list(next(iter(lines.values())))
    headers = ["Line"] + [f"{y} {k}" for y in years for k in ("report", "correct", "diff")]
    rows = []
    for name, by_year in lines.items():
        rows.append([_e(w.label(name))] + [_num(by_year[y][k], "money") for y in years
                                           for k in ("report", "correct", "difference")])
    values = table.get("values") or {}
    vrows = [[_e(w.label(name)), _num(v["report"], "price" if name != "shares_outstanding"
                                      else "money"),
              _num(v["correct"], "price" if name != "shares_outstanding" else "money"),
              _num(v["difference"], "price" if name != "shares_outstanding" else "money")]
             for name, v in values.items()]
    notes = "".join(f"<li>{_e(n)}</li>" for n in table.get("notes") or [])
    return ("<section id=conventions><h2>The report's conventions vs the forecast's</h2>"
            f"<p class=small>The report's own case ({_e(w.money)}) computed as the report does "
            "and with the conventions the forecast uses.</p>"
            + _table(headers, rows, "num")
            + _table(("Value", "report", "correct", "difference"), vrows, "num")
            + f"<ul class=small>{notes}</ul></section>")


def _valuation(summary: Mapping, w: _Words, images: Mapping[str, str]) -> str:
    """Valuation by method: method table, peer-fit numbers and two charts."""
    methods = summary.get("valuation_methods")
    methods = methods if isinstance(methods, Mapping) else {}
    chosen = summary.get("valuation_method")
    charts = summary["charts"]
    year = (charts.get("years") or {}).get("valuation", "")
    price = (charts.get("published") or {}).get("price", w.company.get("price"))
    rows = []
    for m in VALUATION_METHODS:
        block = methods.get(m)
        if not isinstance(block, Mapping) or not (_is_stats(block.get("target_price"))
                                                   or _is_stats(block.get("ev_sales_multiple"))):
            continue
        rows.append([f"<b>{_e(method_name(m))}</b>{_headline_tag(m == chosen)}",
                     _cell(block.get("target_price"), "price"),
                     _e(_prob(block.get("p_upside"))),
                     _cell(block.get("ev_sales_multiple"), "multiple")])
    parts = []
    if rows:
        parts.append(_table(("Method", f"Target price ({w.units('target_price')})",
                             f"P(discounted value > {w.price(price)}) ± MCSE",
                             f"EV/sales {year} multiple"), rows, "num"))
    upside = _upside_range(summary)
    if upside:
        parts.append(upside)
    growth_period = (summary.get("periods") or {}).get("sales_cagr", "")
    cagr = summary.get("sales_cagr")
    if _is_stats(cagr):
        parts.append(f"<p class=small>Revenue CAGR {_e(growth_period)} the market can expect at "
                     f"the valuation date (the peer regression's growth input): median "
                     f"{_pct(cagr['q50'])} <span class=muted>[{_pct(cagr['q05'])} – "
                     f"{_pct(cagr['q95'])}]</span>.</p>")
    fit = summary.get("peer_fit")
    peers = charts.get("peers") or {}
    if isinstance(fit, Mapping):
        items = []
        for key, what in (("beta_growth_per_10pp", "sales CAGR"),
                          ("beta_margin_per_10pp", "gross margin"),
                          ("beta_fcf_margin_per_10pp", "FCF margin")):
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
            fcf = at.get("fcf_margin")
            text = (f"At the report's growth ({_pct(at.get('sales_cagr'), 0)} sales CAGR "
                    f"{_e(growth_period)}), gross margin ({_pct(at.get('gross_margin'))})"
                    + (f" and FCF margin ({_pct(fcf)})" if fcf is not None else "")
                    + f": predicted {_interval(at['multiple'], 'multiple')}")
            if _is_stats(at.get("multiple_with_premium")):
                text += (", with the premium prior "
                         + _interval(at["multiple_with_premium"], "multiple"))
            if at.get("report_multiple") is not None:
                text += f"; the report uses <b>{_num(at['report_multiple'], 'multiple')}</b>"
            items.append(text)
        loo = fit.get("loo")
        if isinstance(loo, Mapping) and loo.get("elpd") is not None:
            high = int(loo.get("n_high_k", 0))
            items.append(
                f"Leave-one-out predictive check (PSIS-LOO): elpd {float(loo['elpd']):.1f} ± "
                f"{float(loo['se']):.1f} over {int(loo['n'])} peers (log predictive density of "
                f"each peer's log multiple when it is left out), p_loo "
                f"{float(loo['p_loo']):.1f}; Pareto k max {float(loo['pareto_k_max']):.2f}, "
                f"{high} peer{'s' if high != 1 else ''} above {float(loo['k_threshold']):g}"
                + (" (its leave-one-out estimate is unreliable: that peer pulls the fit)"
                   if high else ""))
        outside = fit.get("share_outside_peer_range")
        if outside is not None:
            items.append(f"{_pct(outside, 0)} of the headline paths have a growth, gross margin "
                         f"or FCF margin outside the peers' observed range: their multiple is "
                         f"the regression's line extended, not clipped, with the slopes' "
                         f"uncertainty widening with the distance")
        diag = fit.get("diagnostics")
        if isinstance(diag, Mapping):
            items.append("Peer-fit diagnostics: " + ", ".join(
                f"{title} {_diagnostic(diag.get(key), key)}" for key, title in DIAGNOSTICS))
        if items:
            n = len(peers.get("points") or [])
            source = peers.get("source")
            heading = "Peer regression" + (f" ({n} peers)" if n else "")
            parts.append(f"<h3>{_e(heading)}</h3>"
                         + (f"<p class=muted>{_e(source)}</p>" if source else "")
                         + "<ul class=fit>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    imgs = (_img(images, "valuation_methods", "Target price under each valuation method")
            + _img(images, "peer_relation", "Peer EV/sales multiples against sales growth, "
                                            "with the fitted relation and the company"))
    if not parts and not imgs:
        return ""
    intro = ("<p class=muted>Both methods are simulated on every path. The report method "
             f"takes the EV/sales {_e(year)} multiple from a prior around the report's own, "
             "whatever the path's growth; the peer regression predicts it from what the market "
             f"can see on the path at the end of {_e(year)}: the revenue CAGR "
             f"{_e(growth_period)} it can expect then (realised years, then the model's "
             "expectation of the later ones: no look-ahead), the gross margin and the FCF "
             "margin of that year, with the regression's parameter and residual uncertainty, "
             "a premium prior and a sector re-rating prior; slower or cash-hungrier paths get "
             "lower multiples."
             + (f" The headline uses the <b>{_e(method_name(chosen).lower())}</b>." if chosen
                else "") + "</p>")
    return ("<section id=valuation><h2>Valuation by method</h2>"
            + intro + "".join(parts) + (f"<div class=stack>{imgs}</div>" if imgs else "")
            + "</section>")


def _upside_range(summary: Mapping) -> str:
    """P(upside) ± MCSE by valuation method (rows) and scenario (columns), and its range."""
    block = summary.get("p_upside_range")
    if not isinstance(block, Mapping) or not isinstance(block.get("p_upside"), Mapping):
        return ""
    table = block["p_upside"]
    scenarios = list(dict.fromkeys(s for row in table.values() if isinstance(row, Mapping)
                                   for s in row))
    headline, chosen = summary.get("headline_scenario"), summary.get("valuation_method")
    rows = [[f"<b>{_e(method_name(m))}</b>{_headline_tag(m == chosen)}"]
            + [_e(_prob(table[m].get(s))) for s in scenarios]
            for m in VALUATION_METHODS if isinstance(table.get(m), Mapping)]
    heads = ["Method"] + [f"{s} (headline)" if s == headline else s for s in scenarios]
    low, high = block.get("low"), block.get("high")
    span = (f" Across methods and scenarios it ranges from {float(low):.2f} to "
            f"{float(high):.2f}." if low is not None and high is not None else "")
    return (f"<h3>P(upside) across valuation methods and scenarios</h3>"
            f"<p class=small>{_e(_capital(str(block.get('definition', ''))))}, ± its Monte "
            f"Carlo standard error.{_e(span)}</p>" + _table(heads, rows, "num"))


def _channel(name: str, effect, channels: Mapping) -> str:
    """A shock channel's effect at intensity 1, written in its style (% / pp / days)."""
    info = channels.get(name) or {"label": name.replace("_", " "), "style": "relative"}
    try:
        v = float(effect)
    except (TypeError, ValueError):
        return f"{_e(info['label'])} {_e(effect)}"
    if info["style"] == "days":
        text = f"{v:+g} days"
    elif info["style"] == "pp":
        text = f"{v * 100:+.1f}pp"
    else:  # relative: a fraction of the driver
        text = f"{v * 100:+.0f}%"
    return f"{_e(info['label'])} {_e(text.replace('-', '−'))}"


def _risk_factors(summary: Mapping) -> str:
    shocks = summary.get("shocks")
    if not isinstance(shocks, list) or not shocks:
        return ""
    channels = summary["charts"].get("channels") or {}
    rows = []
    for s in shocks:
        prob = _e(s.get("annual_probability", "–"))
        if isinstance(s.get("annual_probability_mean"), (int, float)):
            prob += (f"<br><span class=muted>mean {_pct(s['annual_probability_mean'])} a year"
                     "</span>")
        chan = "<br>".join(f"<span class=nw>{_channel(str(k), v, channels)}</span>"
                           for k, v in (s.get("channels") or {}).items())
        persistence = s.get("persistence")
        persistence = (f"{float(persistence):.2f}" if isinstance(persistence, (int, float))
                       else "–")
        rows.append([f"<b>{_e(s.get('label', s.get('shock', '')))}</b>"
                     + (f"<br><code>{_e(s['shock'])}</code>" if s.get("shock") else ""),
                     prob, _e(s.get("severity", "–")), persistence, chan or "–",
                     _e(s.get("source", ""))])
    return ("<section id=risk-factors><h2>Risk factors</h2><p class=muted>The report's named "
            "risks as shocks. Each path draws an annual probability from its prior, then an "
            "occurrence each forecast year; severity scales one occurrence (1 = the typical "
            "effect listed under channels); persistence is the share of last year's intensity "
            "still acting. Channels: % = relative change of the driver, pp = percentage points "
            "of revenue, days = days added to the balance.</p>"
            + _table(("Risk", "Annual probability (prior)", "Severity", "Persistence",
                      "Channels (typical occurrence)", "Source"), rows, "text risks")
            + "</section>")


def _sensitivity(summary: Mapping, w: _Words, images: Mapping[str, str]) -> str:
    sens = summary.get("sensitivity")
    if not isinstance(sens, Mapping) or not sens:
        return ""
    parts = []
    band = 0.1
    for key, block in sens.items():
        ranked = block.get("ranking") or []
        title = _capital(w.label(key)) + (f" {block['year']}" if block.get("year") else "")
        tornado = block.get("tornado") or {}
        band = float(tornado.get("band", band))
        rank_of = {e["driver"]: float(e["score"]) for e in ranked}
        if tornado.get("entries"):
            fmt = w.fmt(key)
            rows = [[str(i + 1), f"{_e(_capital(str(e['label'])))}<br><span class=muted>"
                     f"{_e(e['basis'])}: {float(e['input_low']):,.4g} .. "
                     f"{float(e['input_high']):,.4g}</span>",
                     _num(e["low"], fmt), _num(e["high"], fmt),
                     ("+" if float(e["swing"]) >= 0 else "") + _num(e["swing"], fmt),
                     f"{rank_of[e['driver']]:+.2f}" if e["driver"] in rank_of else "–"]
                    for i, e in enumerate(tornado["entries"][:15])]
            table = _table(("#", "Input (its 10th .. 90th percentile)", "Low", "High", "Swing",
                            "Rank corr."), rows, "num sens")
            note = (f"<p class=muted>{_e(w.titled(key))}: median over all paths "
                    f"{_num(tornado['median'], fmt)}.</p>")
        else:  # a summary written before the tornado in units
            rows = [[str(i + 1), f"{_e(_capital(w.label(e['driver'])))}",
                     f"{float(e['score']):+.3f}"] for i, e in enumerate(ranked)]
            table, note = _table(("Rank", "Driver", "Score"), rows, "num sens"), ""
        parts.append(f"<div><h3>{_e(title)}</h3>"
                     + _img(images, f"tornado_{key}", f"Sensitivity tornado for {title}")
                     + note + table + "</div>")
    lo, hi = f"{100 * band:.0f}th", f"{100 * (1 - band):.0f}th"
    return ("<section id=sensitivity><h2>Sensitivity: the tornado</h2><p class=muted>For each "
            f"input, the outcome's median over the headline scenario's paths with the input at "
            f"or below its {lo} percentile (Low) and at or above its {hi} percentile (High), in "
            "the outcome's units; inputs sorted by the swing (High − Low). These are "
            "conditional medians of the joint simulation (inputs that move together share "
            "credit), not re-simulations with one input pinned. Shocks: Low is the paths where "
            "the shock did not occur. Rank corr.: Spearman rank correlation of the input with "
            "the outcome, the second view.</p>"
            "<div class=grid2>" + "".join(parts) + "</div></section>")


def _ok(summary: Mapping) -> bool:
    return summary.get("ok") is True


def _reasons(summary: Mapping) -> list[str]:
    reasons = [str(r) for r in summary.get("reasons") or []]
    if not reasons and not _ok(summary):
        reasons = [f"{SUMMARY_FILE} has no quality verdict ('ok')"]
    return reasons


def _banner(summary: Mapping) -> str:
    """OK only when the summary's ``ok`` is true (every fit, the peer regression's included);
    FAILED with the reasons otherwise."""
    if _ok(summary):
        return ("<div class=banner-ok role=status><b>OK</b>: every fit meets the quality bar "
                f"(R-hat {THRESHOLDS['rhat_max']}, bulk and tail ESS {THRESHOLDS['ess_bulk_min']}"
                f", divergences {THRESHOLDS['divergences']}), the peer regression's "
                "included.</div>")
    reasons = "".join(f"<li>{_e(r)}</li>" for r in _reasons(summary))
    return ("<div class=warning role=alert><b>FAILED: the quality bar is not met.</b> "
            "The draws may not represent the posterior; treat every number below with caution."
            f"<ul>{reasons}</ul></div>")


def _diagnostic(value, key: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    return f"{value:.3f}" if key == "rhat_max" else f"{value:,.0f}"


def _diagnostics(summary: Mapping) -> str:
    fits = [("Driver model", summary.get("diagnostics")),
            ("Peer regression", (summary.get("peer_fit") or {}).get("diagnostics"))]
    fits = [(name, d) for name, d in fits if isinstance(d, Mapping)]
    if not fits:
        return ""
    rows = [[_e(title)] + [_diagnostic(d.get(key), key) for _, d in fits]
            + [_e(THRESHOLDS[key])] for key, title in DIAGNOSTICS]
    status = ("<span class=ok>OK</span>" if _ok(summary) else "<span class=bad>FAILED</span>")
    reasons = "".join(f"<li>{_e(r)}</li>" for r in _reasons(summary))
    return ("<section id=diagnostics><h2>Sampler diagnostics</h2>"
            f"<p>Status: {status}</p>"
            + _table(("Diagnostic",) + tuple(n for n, _ in fits) + ("Target",), rows,
                     "num narrow")
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
    company = summary["company"]
    if company.get("key"):
        bits.append(f"company <code>{_e(company['key'])}</code>")
    if "seed" in summary:
        bits.append(f"seed <code>{_e(summary['seed'])}</code>")
    if "n_paths" in summary:
        bits.append(f"{int(summary['n_paths']):,} paths")
    for key, name in (("priors_sha256", "priors_file"), ("scenarios_sha256", "scenarios_file")):
        if summary.get(key):
            bits.append(f"{_e(summary.get(name) or key)} sha256 "
                        f"<code>{_e(str(summary[key])[:16])}…</code>")
    for name, digest in (company.get("files") or {}).items():
        if name not in ("priors", "scenarios"):
            bits.append(f"{_e(name)} sha256 <code>{_e(str(digest)[:16])}…</code>")
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
table.num td:first-child,table.num th:first-child,table.yearcol td:nth-child(2),
table.yearcol th:nth-child(2),table.sens td:nth-child(2),table.sens th:nth-child(2){text-align:left}
tbody tr:nth-child(even){background:#fafafa}
.warning{background:#fdecea;border:2px solid #c0392b;color:#7b1d13;padding:12px 16px;
border-radius:6px;margin:12px 0}
.banner-ok{background:#e9f6ec;border:2px solid #1e7b34;color:#145524;padding:10px 16px;
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
table.sens code{color:#888;font-size:11px}
ul.multiples,ul.fit{font-size:13px;margin:6px 0;padding-left:20px}
ul.multiples li,ul.fit li{margin:2px 0}
"""


def _render(summary: Mapping, images: Mapping[str, str]) -> str:
    w = _Words(summary)
    charts = summary["charts"]
    company = w.company
    name = company.get("name") or company.get("key", "")
    ticker = company.get("ticker")
    title = f"{name} ({ticker})" if ticker else name
    scenario = charts.get("scenario")
    scenario_note = (f" Charts and probabilities show the “{scenario}” scenario." if scenario
                     else "")
    years = charts.get("years") or {}
    history = years.get("history") or []
    actuals = f" {history[0]}A–{history[-1]}A" if history else ""
    fans = "".join(_img(images, f"fan_{v}", f"Fan chart of {w.label(v)}")
                   for v in charts.get("fans") or {})
    scen_imgs = "".join(_img(images, n, f"Scenario comparison: {n}")
                        for n in ("scenarios_target_price", "scenarios_revenue"))
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width,initial-scale=1'>",
        f"<title>{_e(title)}: probabilistic forecast</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{_e(title)} — probabilistic forecast</h1>",
        f"<p class=sub>Distributions around the report's point forecasts"
        + (f" ({_e(company['report'])})" if company.get("report") else "")
        + f". Money in {_e(w.money)} unless stated.{_e(scenario_note)}</p>",
        _banner(summary),
        _headline(summary, w),
    ]
    if fans:
        parts.append("<section id=fans><h2>Fan charts</h2><p class=muted>Shaded: 50/80/95% "
                     "intervals of the simulated paths; solid blue: median; black: actuals"
                     f"{_e(actuals)}; dashed red: the report's forecast.</p>"
                     f"<div class=grid2>{fans}</div></section>")
    if "target_price" in images:
        parts.append("<section id=target-price><h2>Target price distribution</h2>"
                     + _img(images, "target_price", "Target price distribution") + "</section>")
    parts.append(_outside_view(summary, images))
    parts.append(_valuation(summary, w, images))
    parts.append(_funding(summary, w))
    parts.append(_conventions(summary, w))
    parts.append(_percentile_table(summary, w))
    scen = _scenario_table(summary, w)
    if scen or scen_imgs:
        scen = scen or "<section id=scenarios><h2>Scenarios</h2></section>"
        parts.append(scen.replace("</section>", f"<div class=grid2>{scen_imgs}</div></section>"))
    parts.append(_risk_factors(summary))
    parts.append(_sensitivity(summary, w, images))
    if "prior_posterior" in images:
        parts.append("<section id=prior-posterior><h2>Prior vs posterior</h2>"
                     + _img(images, "prior_posterior", "Prior and posterior densities")
                     + "</section>")
    parts += [_diagnostics(summary), _assumptions(summary), _provenance(summary),
              "</main></body></html>"]
    return "\n".join(p for p in parts if p)


def _outside_view(summary: Mapping, images: Mapping[str, str]) -> str:
    """The outside-view section: the reference class, the weight, the 3-year CAGR table
    (reference class / inside view alone / final forecast) and the two charts."""
    ov = summary.get("outside_view")
    if not ov:
        return ""
    rc = ov.get("reference_class") or {}
    names = {"reference_class": "Reference class (base rates)",
             "inside_view": "Inside view alone (weight 0)", "final": "This forecast"}
    rows = []
    for key, row in (ov.get("cagr_3y") or {}).items():
        q = row["quartiles"]
        rows.append([_e(names.get(key, key)),
                     *(f"{row[k]['p']:.3f} ± {row[k]['mcse']:.3f}"
                       for k in ("p_cagr_below_0", "p_cagr_below_10pct")),
                     " / ".join(_pct(v) for v in q)])
    cls = rc.get("name") or rc.get("description", "")
    text = (f"<p>Reference class: <b>{_e(cls)}</b> ({_e(rc.get('description', ''))}; "
            f"{_e(rc.get('by', ''))} = {_e(rc.get('value'))}). Weight on the outside view: "
            f"<b>{_e(ov.get('weight'))}</b> — {_e(ov.get('weight_source', ''))}</p>")
    if ov.get("note"):
        text += f"<p class=muted>{_e(ov['note'])}</p>"
    table = _table(["", "P(CAGR < 0)", "P(CAGR < 10%)", "CAGR quartiles (25th / 50th / 75th)"],
                   rows)
    imgs = "".join(_img(images, n, a) for n, a in (
        ("outside_view_cagr", "Base-rate histogram of 3-year sales CAGR beside this forecast"),
        ("outside_view_inside_vs_final", "Inside view alone and blended: revenue and target price")))
    return (f"<section id=outside-view><h2>Outside view</h2>{text}"
            f"<p class=muted>3-year sales CAGR {_e(ov.get('period', ''))}; probabilities ± "
            f"Monte Carlo error.</p>{table}<div class=grid2>{imgs}</div></section>")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the page is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def chart_pngs(summary: Mapping, part: int = 0, parts: int = 1) -> list[tuple[int, str, bytes]]:
    """The report's charts as PNGs, ``(position, file name, bytes)``: every ``parts``-th one from
    the ``part``-th (all by default), so that processes can share the drawing."""
    from . import plots  # matplotlib: only where charts are drawn

    method_names = {m: method_name(m) for m in VALUATION_METHODS}
    builders = plots.chart_builders(summary["charts"], summary.get("sensitivity"), method_names)
    return [(i, name, plots.png_bytes(build()))
            for i, (name, build) in enumerate(builders.items()) if i % parts == part]


def write_report(results_dir: Path, summary: Mapping, pngs: list[tuple[int, str, bytes]]
                 ) -> Path:
    """Write the charts ``pngs`` (``chart_pngs``'s, of every part) beside the page and the page
    that embeds them; returns the page's path."""
    pngs = {name: data for _, name, data in sorted(pngs)}
    images = {name: base64.b64encode(data).decode("ascii") for name, data in pngs.items()}
    page = _render(summary, images).encode("utf-8")
    for name, data in pngs.items():
        _write_atomic(results_dir / f"{name}.png", data)
    out = results_dir / REPORT_NAME
    _write_atomic(out, page)
    return out


def build_report(results_dir: Path | str, summary: Summary | None = None) -> Path:
    """Write ``results_dir/report.html`` (and its PNGs beside it) from the results folder
    alone; returns the page's path. ``ResultsError`` (one line) when the folder has no usable
    summary; an earlier report is left as it was on any failure. ``summary``: the run's
    ``Summary`` in memory (what ``summary.json`` holds), so that a run does not read back
    what it has just written."""
    results_dir = Path(results_dir)
    summary = _load_results(results_dir) if summary is None else _checked(summary.to_dict(),
                                                                          results_dir)
    return write_report(results_dir, summary, chart_pngs(summary))


#: Processes that draw a run's charts at once (``ReportProcess``), each a share of them.
CHART_PROCESSES = 2


class ReportProcess:
    """The report of a run, drawn beside it: ``CHART_PROCESSES`` second processes
    (``stforecast.sideprocess``: fresh interpreters, so a user's script needs no ``__main__``
    guard) load matplotlib and draw one empty figure at once, then wait; ``build(results_dir,
    summary)`` checks the summary here and sends each its share of the charts; ``result()``
    waits for them, writes the PNGs and the page here, and returns the page's path, or raises
    a process's error (``StforecastError`` naming the exit status when one died). The run
    writes its draws meanwhile; the drawing, measured on the default run, took ~3.4 s in one
    process. Use it as a context manager (``SideProcess``'s: a process given no job, or whose
    caller leaves on an error, is ended)."""

    def __init__(self):
        self._parts = []
        try:
            for _ in range(CHART_PROCESSES):
                self._parts.append(SideProcess("report"))
        except BaseException:
            self.close(kill=True)
            raise
        self._job = None

    def build(self, results_dir: Path | str, summary: Summary) -> ReportProcess:
        """Send the jobs (each process draws its share of the charts); returns self."""
        results_dir = Path(results_dir)
        checked = _checked(summary.to_dict(), results_dir)
        for i, part in enumerate(self._parts):
            part.send(checked, i, len(self._parts))
        self._job = (results_dir, checked)
        return self

    def wait(self) -> None:
        """Wait until every process has ended (its share drawn, or failed)."""
        for part in self._parts:
            part.wait()

    def result(self) -> Path:
        """The page's path, written from every process's charts; a process's error otherwise."""
        pngs = [png for part in self._parts for png in part.result()]
        return write_report(*self._job, pngs)

    def close(self, kill: bool = False) -> None:
        for part in self._parts:
            part.close(kill)

    def __enter__(self) -> ReportProcess:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(kill=exc_type is not None)


def _warm_up() -> None:
    """A chart process's warm-up: matplotlib's fonts and renderer, loaded while waiting."""
    from matplotlib.figure import Figure

    from . import plots

    fig = Figure(figsize=(1.0, 1.0))
    fig.text(0.5, 0.5, "0")
    plots.png_bytes(fig, dpi=10)


def _report_job(summary: Mapping, part: int, parts: int) -> list[tuple[int, str, bytes]]:
    """A chart process's job (``ReportProcess.build``): its share of the charts."""
    return chart_pngs(summary, part, parts)


def rebuild_report(results_dir: Path | str) -> Path:
    """``stforecast report``: rebuild ``report.html`` and the PNGs of a results folder as a
    whole. The folder is validated (``results.load_results``: summary, draws and chart data)
    before anything is written, then again under the folder's lock; the page and charts are
    built in a staging folder beside it (holding links to the folder's other files) and swapped
    in only when complete (``stforecast.publish``), so bad inputs, a failure or a kill leave
    the earlier report, byte for byte, and no chart of an earlier report survives."""
    from . import publish
    from .results import load_results

    results_dir = Path(results_dir)
    _checked(load_results(results_dir).summary.to_dict(), results_dir)  # nothing locked yet
    with publish.folder_lock(results_dir, "report"):
        summary = load_results(results_dir).summary  # as it is now, under the lock
        with publish.replacing(results_dir, "report") as tmp:
            for entry in sorted(results_dir.iterdir()):
                if entry.name == REPORT_NAME or entry.suffix == ".png" or \
                        entry.name.startswith("."):
                    continue
                try:
                    os.link(entry, tmp / entry.name)
                except OSError:  # a file system without hard links
                    shutil.copy2(entry, tmp / entry.name)
            build_report(tmp, summary)
    return results_dir / REPORT_NAME
