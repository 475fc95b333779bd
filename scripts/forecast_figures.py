"""The figures an analyst checks a forecast's structure and tails by, from a results folder.

Prints, for the headline scenario (each probability with its Monte Carlo error from
``stforecast.mcse``): the left tail of final-year revenue against the last actual year and the
first forecast year of the report case, the width of each year's revenue band, opex over revenue,
the rank correlation of final-year revenue with cash burn (and with the burn before working
capital), the liquidity floor, funding and dilution, P(upside) under each definition, the share of
paths whose peer-regression inputs lie outside the peers' range, and each shock's probability of
occurring by the final year (and of the first two together).

Run: .venv/bin/python scripts/forecast_figures.py [RESULTS_DIR]   (default results/sensetime)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from stforecast.mcse import probability
from stforecast.registry import HEADLINE_SCENARIO
from stforecast.results import load_results


def flat(da) -> np.ndarray:
    return np.asarray(da.transpose("chain", "draw", "path", ...).values, float)


def prob(event: np.ndarray) -> str:
    """``p ± mcse`` of a per-path event, dims (chain, draw, path)."""
    p, se, _ = probability(np.asarray(event, bool))
    return f"{p:.3f} ± {se:.3f}"


def main(folder: str) -> None:
    results = load_results(folder)
    summary = results.summary
    c = summary.company
    ds = results.draws(scenario=HEADLINE_SCENARIO)
    years = [str(y) for y in ds["year"].values]
    first, final = years[0], years[-1]
    history = results.company.history
    last_actual = float(history["revenue"].values[-1])
    report_first = float(results.company.report_case["segment_revenue"].sel(year=first).sum())
    revenue = flat(ds["revenue"])
    print(f"{c.name}: scenario {HEADLINE_SCENARIO}, {summary.n_paths:,} paths")
    print(f"P(revenue {final} < last actual {last_actual:,.0f}) = "
          f"{prob(revenue[..., -1] < last_actual)}")
    print(f"P(revenue {final} < report {first}E {report_first:,.0f}) = "
          f"{prob(revenue[..., -1] < report_first)}")
    for i, y in enumerate(years):
        q05, q50, q95 = np.quantile(revenue[..., i], [0.05, 0.5, 0.95])
        print(f"revenue {y}: median {q50:,.0f}, 90% band {q05:,.0f}-{q95:,.0f} "
              f"(±{50 * (q95 - q05) / q50:.0f}% of the median)")
    opex = flat(ds["opex_ratio"])[..., -1]
    print(f"opex/revenue {final}: q05/q25/q50/q75/q95 "
          + "/".join(f"{v:.3f}" for v in np.quantile(opex, [0.05, 0.25, 0.5, 0.75, 0.95])))
    burn = flat(ds["cash_burn"]).reshape(-1)
    print(f"Spearman(revenue {final}, cash burn) = "
          f"{stats.spearmanr(revenue[..., -1].reshape(-1), burn).statistic:+.3f}")
    if "change_in_working_capital" in ds:
        wc = flat(ds["change_in_working_capital"]).sum(axis=-1).reshape(-1)
        print(f"Spearman(revenue {final}, cash burn before working capital) = "
              f"{stats.spearmanr(revenue[..., -1].reshape(-1), burn + wc).statistic:+.3f}")
    print(f"cash burn: median {np.median(burn):,.0f}, 90% band "
          f"{np.quantile(burn, 0.05):,.0f}-{np.quantile(burn, 0.95):,.0f}")
    floor = float(ds.attrs.get("liquidity_floor", np.nan))
    liquidity = flat(ds["liquidity"])
    print(f"min over paths and years of liquidity - floor ({floor:,.0f}) = "
          f"{np.min(liquidity - floor):,.1f}; P(cash {final} < 0) = "
          f"{prob(flat(ds['cash'])[..., -1] < 0)}")
    funding = json.loads((Path(folder) / "summary.json").read_text()).get("funding") or {}
    for y, p in (funding.get("p_raise_by") or {}).items():
        print(f"P(raise by {y}) = {p['value']:.4f} ± {p['mcse']:.4f}")
    if "dilution" in funding:
        d = funding["dilution"]
        print(f"dilution: median {d['q50']:.2%}, q95 {d['q95']:.2%}, mean {d['mean']:.2%}")
    for name in ("value_today", "target_price"):
        if name in ds:
            print(f"P({name} > {c.price:g}) = {prob(flat(ds[name]) > c.price)}")
    if "peer_outside_range" in ds:
        print(f"share of paths with peer-regression inputs outside the peers' range = "
              f"{float(ds['peer_outside_range'].mean()):.3f}")
    shocks = [v for v in ds.data_vars if v.startswith("shock_")]
    occurred = {v: (flat(ds[v]) > 0).any(axis=-1) for v in shocks}
    for v, ev in occurred.items():
        print(f"P({v[len('shock_'):]} by {final}) = {prob(ev)}")
    if len(shocks) >= 2:
        a, b = shocks[:2]
        print(f"P({a[6:]} and {b[6:]} by {final}) = {prob(occurred[a] & occurred[b])}; "
              f"if independent {occurred[a].mean() * occurred[b].mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path("results") / "sensetime"))
