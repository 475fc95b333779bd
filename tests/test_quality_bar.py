"""The quality bar at any seed (DESIGN.md): the peer regression and the driver model, each fitted
at ten seeds with the default run's settings, meet R-hat <= 1.01, bulk and tail ESS >= 400 and
zero divergences. Slow lane: ten peer fits (one nutpie compilation, ~20 s, then ~2 s a fit) and
ten driver fits on the run's compiled driver model (``stforecast.compiled``: a few seconds a fit,
plus its compilation when no process has stored it). The driver model misses the zero-divergence
bar at some seeds (a known defect, marked ``xfail(strict=True)`` below).

Each test prints the worst R-hat and the lowest bulk/tail ESS over its seeds (``pytest -s``).
"""

from __future__ import annotations

import warnings

import pytest

from stforecast.fit import FitSettings, bar_reasons, diagnose
from stforecast.run import DEFAULT_SEED

#: The default run's seed and nine others.
SEEDS = (DEFAULT_SEED, *range(1, 10))


def _check(kind: str, rows: list[tuple[int, float, float, float, int]]) -> None:
    worst = (max(r[1] for r in rows), min(r[2] for r in rows), min(r[3] for r in rows),
             max(r[4] for r in rows))
    print(f"\n{kind} at {len(rows)} seeds: worst R-hat {worst[0]:.4f}, lowest bulk ESS "
          f"{worst[1]:.0f}, lowest tail ESS {worst[2]:.0f}, most divergences {worst[3]}")
    failed = {seed: bar_reasons(*r) for seed, *r in rows if bar_reasons(*r)}
    assert not failed, f"{kind} misses the quality bar: {failed}"


@pytest.mark.slow
def test_peer_regression_meets_the_bar_at_ten_seeds(company):
    from stforecast.peers import fit_peer_model, load_peers

    peers = load_peers(company.peers_path)
    rows = []
    for seed in SEEDS:
        with warnings.catch_warnings():  # a miss is asserted below, with every seed's reasons
            warnings.simplefilter("ignore", UserWarning)
            a = fit_peer_model(peers, seed=seed).attrs  # as run.fit_models fits it
        rows.append((seed, a["rhat_max"], a["ess_bulk_min"], a["ess_tail_min"], a["divergences"]))
    _check("peer regression", rows)


@pytest.fixture(scope="module")
def driver_rows(company):
    """The driver model fitted at the ten seeds as the default run fits it (``run._driver_fit``:
    the compiled model of ``stforecast.compiled``, the default fit settings): one row per seed
    (seed, R-hat max, bulk ESS min, tail ESS min, divergences)."""
    from stforecast.compiled import driver_key
    from stforecast.fit import sample_posterior
    from stforecast.model import build_model, observations_from_company
    from stforecast.preflight import trial_logp
    from stforecast.priors import load_priors

    spec = load_priors(company.priors_path, company.growth_drivers())
    obs = observations_from_company(company)
    model = build_model(spec, obs, company)
    key, reference = driver_key(company, obs, spec), trial_logp(model)
    rows = []
    for seed in SEEDS:
        d = sample_posterior(model, FitSettings(), seed, model_key=key,
                             reference=reference).diagnostics
        rows.append((seed, d.rhat_max, d.ess_bulk_min, d.ess_tail_min, d.divergences))
    return rows


@pytest.mark.slow
def test_driver_model_mixes_at_ten_seeds(driver_rows):
    """R-hat and ESS at every seed (the divergences: next test)."""
    _check("driver model", [(*r[:4], 0) for r in driver_rows])


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "known defect, not yet fixed: a funnel at small smart_city revenue-per-city volatility "
    "(the latent units path, non-centred, is pinned by the per-unit process when its volatility "
    "is small) gives 1-15 divergent transitions at about 5% of seeds, with the compiled model "
    "of 2026-11-26 and with the code before it alike (seeds 4 and 6 here: 1 each). strict: "
    "when the model is fixed this passes, and the marker must go"))
def test_driver_model_has_no_divergences_at_ten_seeds(driver_rows):
    _check("driver model", driver_rows)
