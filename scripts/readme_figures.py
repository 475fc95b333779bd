"""Write the README's figures from a results folder's summary.json.

The README holds generated blocks between marker lines (``<!-- headline:begin -->`` ...
``<!-- headline:end -->``, the same for ``scenarios``); this script rewrites them from the
summary, so the README's figures are the committed results' and nothing else. Run it after
regenerating the results (``stforecast run``)::

    .venv/bin/python scripts/readme_figures.py                 # rewrite README.md
    .venv/bin/python scripts/readme_figures.py --check         # exit 1 if README.md is stale

``tests/test_readme.py`` checks that the README agrees with ``results/sensetime/summary.json``.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "results" / "sensetime" / "summary.json"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- (?P<name>[a-z]+):begin -->\n)(?P<body>.*?)(<!-- (?P=name):end -->)",
                   re.S)


def _money(x: float) -> str:
    return f"{x:,.0f}".replace("-", "−")


def _price(x: float) -> str:
    return f"{x:,.2f}".replace("-", "−")


def _ordinal(p: float) -> str:
    n = int(round(100 * p))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _p(block: dict) -> str:
    return f"{block['value']:.3f} ± {block['mcse']:.3f}"


def headline(s: dict) -> str:
    """The headline table, P(upside), the report's percentiles and the diagnostics."""
    c = s["company"]
    final, cur, pcur = c["forecast_years"][-1], c["currency"], c["price_currency"]
    burn_period = s["periods"]["cash_burn"]
    published = s["charts"]["published"]["lines"]
    report_burn = -sum(published["free_cash_flow"][y] for y in c["forecast_years"])
    rp = s["report_percentiles"]
    rows = [(f"{final}E revenue ({cur} mn)", _money(rp["revenue"]["report"]),
             s["revenue"][final], _money),
            (f"cash burn {burn_period} (−ΣFCF, {cur} mn)", _money(report_burn), s["cash_burn"],
             _money),
            (f"target price ({pcur})", _price(c["target_price_published"]), s["target_price"],
             _price)]
    methods = s["valuation_methods"]
    other = [m for m in methods if m != s["valuation_method"]]
    d = s["diagnostics"]
    lines = [f"Default run: seed {s['seed']}, {s['n_paths']:,} paths. The headline is the "
             f"**{s['headline_scenario']}** scenario (every risk factor at its prior "
             f"probability), with the EV/sales multiple from the **{s['valuation_method']}** "
             f"method (see \"Valuation method\").", "",
             "| | report | stforecast median | 90% interval |", "|---|---:|---:|---:|"]
    for label, report, stats, fmt in rows:
        lines.append(f"| {label} | {report} | {fmt(stats['q50'])} | {fmt(stats['q05'])} – "
                     f"{fmt(stats['q95'])} |")
    upside = _upside_words(s)
    lines += ["", f"**P({upside} > {pcur} {c['price']:g}) = {_p(s['p_upside'])}** "
                  f"({s['p_upside']['n']:,} paths)"
              + "".join(f"; {_p(methods[m]['p_upside'])} with the {m} multiple" for m in other)
              + f". The report's {_money(rp['revenue']['report'])} sits at the "
                f"{_ordinal(rp['revenue']['percentile'])} percentile of {final} revenue, its "
                f"{_price(rp['target_price']['report'])} at the "
                f"{_ordinal(rp['target_price']['percentile'])} percentile of the target price. "
                f"Driver model: R-hat ≤ {d['rhat_max']:.3f}, bulk ESS ≥ {d['ess_bulk_min']:,.0f}, "
                f"tail ESS ≥ {d['ess_tail_min']:,.0f}, {d['divergences']} divergences."]
    peer = (s.get("peer_fit") or {}).get("diagnostics")
    if peer:
        lines[-1] += (f" Peer regression: R-hat ≤ {peer['rhat_max']:.4f}, bulk ESS ≥ "
                      f"{peer['ess_bulk_min']:,.0f}, tail ESS ≥ {peer['ess_tail_min']:,.0f}, "
                      f"{peer['divergences']} divergences.")
    if s["ok"]:
        lines[-1] += " Every fit meets the quality bar."
    else:
        lines[-1] += (" **The run misses the quality bar** (" + "; ".join(s["reasons"])
                      + "), so the report's banner is red.")
    return "\n".join(lines) + "\n"


def _upside_words(s: dict) -> str:
    """What ``p_upside`` compares with the price, in words (``summary.upside``)."""
    variable = (s.get("upside") or {}).get("variable", "target_price")
    if variable == "value_today":
        horizon = s["upside"].get("horizon_years", 0)
        return f"value per diluted share discounted {horizon:g} year to today"
    return "target price"


def scenarios(s: dict) -> str:
    """One row per scenario: medians of final-year revenue, cash burn, final-year cash, the
    target price, and P(upside)."""
    c = s["company"]
    final, pcur = c["forecast_years"][-1], c["price_currency"]
    lines = [f"| scenario | {final} revenue | cash burn {s['periods']['cash_burn']} | {final} "
             f"cash | target price | P(upside) |", "|---|---:|---:|---:|---:|---:|"]
    for name, block in s["scenarios"].items():
        label = f"**{name}**" if name == s["headline_scenario"] else name
        lines.append(f"| {label} | {_money(block['revenue'][final]['q50'])} | "
                     f"{_money(block['cash_burn']['q50'])} | {_money(block['cash'][final]['q50'])} | "
                     f"{_price(block['target_price']['q50'])} | {_p(block['p_upside'])} |")
    lines += ["", f"Medians; {c['currency']} mn and {pcur} per share. P(upside) = "
                  f"P({_upside_words(s)} > {c['price']:g})."]
    return "\n".join(lines) + "\n"


GENERATORS = {"headline": headline, "scenarios": scenarios}
WIDTH = 100  # the README's line width (tables are left whole)


def _wrap(text: str) -> str:
    return "\n".join(line if line.startswith("|") or not line else
                     textwrap.fill(line, WIDTH, break_on_hyphens=False)
                     for line in text.splitlines()) + "\n"


def blocks(summary: dict) -> dict[str, str]:
    """The README's generated blocks, name -> text, from ``summary`` (summary.json's data)."""
    return {name: _wrap(make(summary)) for name, make in GENERATORS.items()}


def read_blocks(text: str) -> dict[str, str]:
    """The README's generated blocks, name -> body."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def rewrite(text: str, new: dict[str, str]) -> str:
    missing = set(new) - set(read_blocks(text))
    if missing:
        raise SystemExit(f"README: no block {', '.join(sorted(missing))} "
                         f"(<!-- NAME:begin --> ... <!-- NAME:end -->)")
    return BLOCK.sub(lambda m: m.group(1) + new.get(m["name"], m["body"]) + m.group(4), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", default=str(SUMMARY),
                        help=f"summary.json (default: {SUMMARY.relative_to(ROOT)})")
    parser.add_argument("--readme", default=str(README), help="README file (default: README.md)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the README's blocks are stale")
    args = parser.parse_args(argv)
    summary = json.loads(Path(args.summary).read_text())
    readme = Path(args.readme)
    text = readme.read_text()
    updated = rewrite(text, blocks(summary))
    if args.check:
        if updated != text:
            print(f"{readme}: figures differ from {args.summary}; run scripts/readme_figures.py",
                  file=sys.stderr)
            return 1
        return 0
    if updated != text:
        readme.write_text(updated)
        print(f"{readme}: figures rewritten from {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
