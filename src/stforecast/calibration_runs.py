"""``stforecast calibrate``: simulation-based calibration and parameter recovery as tasks.

One task per fit (``calibration_fit``): a draw of every free parameter from the prior, a
history simulated from the model at that draw (``calibration.simulate_observations``), a fit
on it with the worker's compiled model (``distributed.refitter``), and per parameter component
the rank of the true value among ``thin_to`` thinned posterior draws (SBC, Talts et al. 2018)
and whether the central 50% and 90% intervals cover it (recovery). A result is a few hundred
numbers. Fit ``i`` takes its seeds from ``SeedSequence([seed, i])``, so it is the same fit
whichever worker runs it, and the first ``N`` fits of a larger run are the fits of a run of N.

``calibration_report`` reduces the fits: per parameter, the chi-square p-value of rank
uniformity and the coverage of the 50% and 90% intervals; overall, the pooled coverage, the
number of p-values below 1% against the number expected by chance, and the divergences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .distributed import ModelInputs, prior_sampler, refitter

#: Central interval levels whose coverage is checked.
LEVELS = (0.5, 0.9)
#: A parameter's rank-uniformity p-value below this is flagged.
P_FLAG = 0.01


@dataclass(frozen=True)
class CalibrationSettings:
    """Per fit: NUTS ``draws``/``tune``/``chains``; ``thin_to`` posterior draws the true value
    is ranked among (ranks 0..thin_to); ``seed`` of the whole calibration."""

    draws: int = 400
    tune: int = 400
    chains: int = 2
    thin_to: int = 99
    seed: int = 20220131


def fit_seeds(seed: int, index: int) -> tuple[int, int, int]:
    """(prior draw, simulated data, NUTS) seeds of fit ``index``."""
    a, b, c = np.random.SeedSequence([seed, index]).generate_state(3)
    return int(a), int(b), int(c)


def calibration_fit(index: int, inputs: ModelInputs, settings: CalibrationSettings) -> dict:
    """Fit ``index`` (see the module docstring): ``{index, ranks, covered_50, covered_90,
    divergences}``; ranks and coverage per parameter component (``name`` or ``name[i]``)."""
    from .calibration import _component, _scalar_names, _true

    model = refitter(inputs)
    prior_seed, data_seed, fit_seed = fit_seeds(settings.seed, index)
    truth = prior_sampler(inputs)(prior_seed)
    obs = model.simulate(truth, np.random.default_rng(data_seed))
    idata = model.sample(obs, fit_seed, draws=settings.draws, tune=settings.tune,
                         chains=settings.chains)
    post = idata["posterior"].to_dataset()
    out = {"index": index, "ranks": {}, "divergences": int(idata["sample_stats"]["diverging"].sum())}
    for level in LEVELS:
        out[f"covered_{level * 100:.0f}"] = {}
    for label in _scalar_names(truth):
        draws = _component(post, label)
        true = _true(truth, label)
        keep = draws[np.linspace(0, draws.size - 1, settings.thin_to).round().astype(int)]
        out["ranks"][label] = int((keep < true).sum())
        for level in LEVELS:
            lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
            out[f"covered_{level * 100:.0f}"][label] = bool(lo <= true <= hi)
    return out


def calibration_report(fits: list[dict], settings: CalibrationSettings,
                       inputs: ModelInputs) -> dict:
    """Per-parameter rank-uniformity p-values and interval coverage over ``fits``."""
    from .calibration import rank_uniformity_pvalue

    fits = sorted(fits, key=lambda f: f["index"])
    labels = list(fits[0]["ranks"])
    n = len(fits)
    bins = max(2, min(20, n // 5))
    parameters = {}
    for label in labels:
        ranks = np.array([f["ranks"][label] for f in fits])
        row = {"p_value": round(rank_uniformity_pvalue(ranks, settings.thin_to + 1, bins), 5),
               "mean_rank": round(float(ranks.mean()) / settings.thin_to, 4)}
        for level in LEVELS:
            key = f"covered_{level * 100:.0f}"
            row[f"coverage_{level * 100:.0f}"] = round(float(np.mean([f[key][label]
                                                                      for f in fits])), 4)
        parameters[label] = row
    pooled = {f"coverage_{level * 100:.0f}": round(float(np.mean(
        [f[f"covered_{level * 100:.0f}"][label] for f in fits for label in labels])), 4)
        for level in LEVELS}
    flagged = [k for k, v in parameters.items() if v["p_value"] < P_FLAG]
    return {
        "company": inputs.key, "inputs_sha256": inputs.sha256, "n_fits": n,
        "settings": asdict(settings), "rank_bins": bins,
        "overall": {**pooled, "nominal": {f"coverage_{lv * 100:.0f}": lv for lv in LEVELS},
                    "divergences": sum(f["divergences"] for f in fits),
                    "n_parameters": len(labels), "p_below_0.01": len(flagged),
                    "p_below_0.01_expected": round(P_FLAG * len(labels), 2),
                    "min_p_value": min(v["p_value"] for v in parameters.values())},
        "parameters": parameters,
        "ranks": {label: [f["ranks"][label] for f in fits] for label in labels},
    }


def calibration_table(report: dict, rows: int = 10) -> str:
    """A short text table: the overall line and the ``rows`` parameters with the lowest
    rank-uniformity p-values."""
    o = report["overall"]
    lines = [f"{report['n_fits']} fits of {report['company']}: 50% intervals cover "
             f"{o['coverage_50']:.1%}, 90% cover {o['coverage_90']:.1%} "
             f"({o['n_parameters']} parameters); rank p < 0.01 for {o['p_below_0.01']} "
             f"(expected by chance {o['p_below_0.01_expected']:g}); divergences "
             f"{o['divergences']}",
             f"{'parameter':<52}{'p-value':>9}{'cover50':>9}{'cover90':>9}{'mean rank':>11}"]
    worst = sorted(report["parameters"].items(), key=lambda kv: kv[1]["p_value"])[:rows]
    for label, v in worst:
        lines.append(f"{label:<52}{v['p_value']:>9.3f}{v['coverage_50']:>9.2f}"
                     f"{v['coverage_90']:>9.2f}{v['mean_rank']:>11.2f}")
    return "\n".join(lines)
