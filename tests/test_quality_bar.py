"""The quality bar at any seed (DESIGN.md): the peer regression and the driver model, each fitted
at ten seeds with the default run's settings, meet R-hat <= 1.01, bulk and tail ESS >= 400 and
zero divergences. Slow lane: ten peer fits (one nutpie compilation, ~20 s, then ~2 s a fit) and
ten driver fits on the session's compiled driver model (``refitter``: ~10-20 s a fit on 2 shared
cores, plus its one compilation).

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


@pytest.mark.slow
def test_driver_model_meets_the_bar_at_ten_seeds(refitter, obs):
    fs = FitSettings()
    assert (fs.sampler, fs.target_accept) == ("nutpie", 0.99)  # what refitter.sample uses
    rows = []
    for seed in SEEDS:
        idata = refitter.sample(obs, seed, draws=fs.draws, tune=fs.tune, chains=fs.chains)
        d = diagnose(idata["posterior"].to_dataset(), idata["sample_stats"].to_dataset(),
                     refitter.free)
        rows.append((seed, d.rhat_max, d.ess_bulk_min, d.ess_tail_min, d.divergences))
    _check("driver model", rows)
