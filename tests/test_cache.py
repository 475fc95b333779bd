"""The fit cache (``stforecast.cache``): content-addressed keys, exact round trips, atomic
entries whose damage is detected (and refitted, never used), pruning; and through
``run_forecast``: a cache hit gives the same summary.json as a fresh fit."""

import dataclasses
import json
import logging
import os
import time

import numpy as np
import pytest
import xarray as xr

from log_capture import Messages
from stforecast.cache import ARRAYS, LAYOUT, FitCache, cache_dir, fit_key
from stforecast.fit import FitSettings
from stforecast.run import RunSettings, driver_fit_key, peer_fit_key, prepare, run_forecast

#: Tiny fits: the diagnostics miss the bar, which does not matter for equality.
TINY = RunSettings(seed=11, paths=400, report=False,
                   fit=FitSettings(draws=60, tune=60, chains=2, prior_draws=40))


def _groups(seed=0):
    rng = np.random.default_rng(seed)
    post = xr.Dataset({"a": (("chain", "draw"), rng.normal(size=(2, 50))),
                       "b": (("chain", "draw", "segment"), rng.normal(size=(2, 50, 3)))},
                      coords={"chain": [0, 1], "draw": np.arange(50),
                              "segment": ["x", "y", "z"]},
                      attrs={"sample_dims": ["chain", "draw"], "created_at": "now"})
    stats = xr.Dataset({"diverging": (("chain", "draw"), rng.random((2, 50)) < 0.1),
                        "depth": (("chain", "draw"), rng.integers(0, 9, (2, 50)).astype("uint64")),
                        "message": (("chain", "draw"), np.full((2, 50), None, dtype=object))},
                       coords={"chain": [0, 1], "draw": np.arange(50)})
    return {"posterior": post, "sample_stats": stats}


# --- the store ------------------------------------------------------------------------------
def test_round_trip_is_exact(tmp_path):
    cache = FitCache(tmp_path)
    groups = _groups()
    cache.store("driver", "k1", groups, {"free_parameters": ["a", "b"]})
    back, attrs = cache.load("driver", "k1")
    assert attrs == {"free_parameters": ["a", "b"]}
    for name in ("posterior", "sample_stats"):
        for var in back[name].data_vars:
            np.testing.assert_array_equal(back[name][var].values, groups[name][var].values)
            assert back[name][var].dtype == groups[name][var].dtype
    assert "message" not in back["sample_stats"]  # object variables are not stored
    assert back["posterior"]["b"].coords["segment"].values.tolist() == ["x", "y", "z"]
    assert [p.name for p in tmp_path.iterdir()] == ["driver-k1.fit"]  # no temporary files left


def _plain_groups(seed=0):
    """Groups the ``ARRAYS`` layout takes: numbers, booleans, text coordinates, attributes."""
    rng = np.random.default_rng(seed)
    paths = xr.Dataset(
        {"margin": (("chain", "draw", "path", "year"), rng.normal(size=(2, 5, 3, 3))),
         "revenue": (("chain", "draw", "path", "segment", "year"), rng.random((2, 5, 3, 2, 3)),
                     {"units": "RMB mn", "note": ["a", "b"]}),
         "raise": (("chain", "draw"), rng.random((2, 5)) < 0.5),
         "count": (("year",), np.array([1, 2, 3], dtype="int32")),
         "none": (("chain", "empty"), np.zeros((2, 0))),
         "scalar": ((), 2.5)},
        coords={"chain": [0, 1], "draw": np.arange(5), "path": np.arange(3),
                "year": ["FY21", "FY22", "FY23"], "segment": np.array(["x", "yy"], dtype=object)},
        attrs={"from": "test", "n": 3})
    return {"paths": paths, "other": paths[["count"]].assign_attrs(kind="small")}


def test_the_arrays_layout_round_trips_exactly_into_writable_arrays(tmp_path):
    cache = FitCache(tmp_path)
    groups = _plain_groups()
    cache.store("paths", "k1", groups, {"rng_after": {"state": 2**100 + 1}}, layout=ARRAYS,
                durable=False)
    back, attrs = cache.load("paths", "k1")
    assert attrs == {"rng_after": {"state": 2**100 + 1}}
    for name, ds in groups.items():
        xr.testing.assert_identical(back[name], ds)
        for var in ds.variables:
            assert back[name][var].dtype == ds[var].dtype
            if ds[var].dtype.kind in "biuf":
                assert back[name][var].values.tobytes() == ds[var].values.tobytes()
    values = back["paths"]["margin"].values
    assert values.flags.writeable and values.ctypes.data % 8 == 0
    assert [p.name for p in tmp_path.iterdir()] == ["paths-k1.fit"]


def test_the_arrays_layout_refuses_what_it_cannot_store_before_writing(tmp_path):
    cache = FitCache(tmp_path)
    bad = xr.Dataset({"objects": (("x",), np.array([None, 1], dtype=object))})
    with pytest.raises(TypeError, match="objects"):
        cache.store("paths", "k1", {"g": bad}, layout=ARRAYS)
    with pytest.raises(TypeError):  # an attribute JSON cannot hold
        cache.store("paths", "k1", {"g": bad[[]].assign_attrs(when=object())}, layout=ARRAYS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout", [LAYOUT, ARRAYS])
@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_a_damaged_entry_is_detected_deleted_and_never_used(tmp_path, damage, layout, caplog):
    cache = FitCache(tmp_path)
    groups = _groups() if layout == LAYOUT else _plain_groups()
    path = cache.store("driver", "k1", groups, {}, layout=layout)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":  # one bit deep in the payload
        i = len(raw) - 100
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:])
    elif damage == "header":
        path.write_bytes(raw.replace(b'"kind": "driver"', b'"kind": "driveR"', 1))
    else:
        path.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="stforecast.cache"):
        assert cache.load("driver", "k1") is None
    assert "damaged entry" in caplog.text and not path.exists()


def test_an_entry_answers_only_its_own_kind_and_key(tmp_path):
    cache = FitCache(tmp_path)
    path = cache.store("driver", "k1", _groups(), {})
    os.replace(path, cache.path("driver", "k2"))  # a file renamed is not the other key's entry
    assert cache.load("driver", "k2") is None
    assert cache.load("peers", "k1") is None


def test_prune_keeps_the_newest_entries(tmp_path):
    cache = FitCache(tmp_path)
    for i, key in enumerate(["old", "mid", "new"]):
        cache.store("driver", key, _groups(i), {})
        os.utime(cache.path("driver", key), (time.time() - 100 + i, time.time() - 100 + i))
    cache.load("driver", "old")  # used: the most recent now
    assert cache.prune() == []
    cache = FitCache(tmp_path, max_entries=2)
    assert cache.prune() == [cache.path("driver", "mid")]
    assert sorted(p.name for p in cache.entries()) == ["driver-new.fit", "driver-old.fit"]
    size = cache.path("driver", "new").stat().st_size
    small = FitCache(tmp_path, max_bytes=size + 1)
    small.prune()
    assert len(small.entries()) == 1


def test_prune_removes_what_a_killed_store_left(tmp_path):
    """A store killed midway leaves its temporary files (the entry's, and the netCDF file of its
    draws); pruning removes them once they are an hour old, never younger ones (another
    process may be writing them)."""
    cache = FitCache(tmp_path)
    cache.store("driver", "k", _groups(), {})
    stale = [tmp_path / ".driver-x.fit.tmp-123", tmp_path / ".driver-x.fit.tmp-123.nc"]
    fresh = tmp_path / ".driver-y.fit.tmp-124.nc"
    for p in [*stale, fresh]:
        p.write_bytes(b"partial")
    for p in stale:
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    cache.prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "driver-k.fit"]


def test_cache_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STFORECAST_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and FitCache().root == tmp_path / "c"
    monkeypatch.delenv("STFORECAST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "stforecast"


# --- the keys -------------------------------------------------------------------------------
def test_a_cache_folder_that_cannot_be_made_is_one_line(tmp_path):
    """A file where the cache folder would be: the fit cache and the compiled models' store
    refuse in one line naming the folder and STFORECAST_CACHE (not a traceback)."""
    from stforecast import compiled
    from stforecast.errors import StforecastError
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ds = xr.Dataset({"x": ("draw", np.arange(3.0))})
    with pytest.raises(StforecastError, match="a-file/cache: cannot create this cache folder .*"
                                              "STFORECAST_CACHE") as err:
        FitCache(blocker / "cache").store("driver", "k", {"posterior": ds})
    assert "\n" not in str(err.value)
    with pytest.raises(StforecastError, match="a-file/compiled: cannot create"):
        with compiled._key_lock(blocker / "compiled", "k"):
            pass


def test_keys_follow_values_not_documentation():
    inputs = prepare("sensetime")
    key = driver_fit_key(inputs, TINY)
    assert key == driver_fit_key(prepare("sensetime"), TINY)
    # one prior's value -> another fit
    name, proc = next(iter(inputs.spec.growth.items()))
    long_run = dataclasses.replace(proc.long_run, params={
        k: v * 1.01 for k, v in proc.long_run.params.items()})
    spec = dataclasses.replace(inputs.spec, growth={
        **inputs.spec.growth, name: dataclasses.replace(proc, long_run=long_run)})
    assert driver_fit_key(dataclasses.replace(inputs, spec=spec), TINY) != key
    # a source sentence, the file's path or hash -> the same fit
    spec = dataclasses.replace(inputs.spec, path="elsewhere.toml", sha256="0" * 64, growth={
        **inputs.spec.growth, name: dataclasses.replace(proc, source="another sentence")})
    assert driver_fit_key(dataclasses.replace(inputs, spec=spec), TINY) == key
    # seed and settings
    assert driver_fit_key(inputs, dataclasses.replace(TINY, seed=12)) != key
    assert driver_fit_key(inputs, dataclasses.replace(
        TINY, fit=dataclasses.replace(TINY.fit, draws=61))) != key
    # paths and the report do not enter a fit
    assert driver_fit_key(inputs, dataclasses.replace(TINY, paths=9, report=True)) == key


def _scaled(prior, factor):
    return dataclasses.replace(prior, params={k: v * factor for k, v in prior.params.items()})


def test_priors_the_model_does_not_read_do_not_refit():
    """A prior only the simulation reads (costs, funding, discounting, the growth process's
    tails, the outside view's weight) keeps the driver fit's key; every prior the model reads
    (``model.model_priors``) moves it."""
    inputs = prepare("sensetime")
    key = driver_fit_key(inputs, TINY)
    spec = inputs.spec
    cost = next(iter(spec.costs))
    funding = next(iter(spec.funding))
    simulation_only = dataclasses.replace(
        spec, costs={**spec.costs, cost: _scaled(spec.costs[cost], 1.1)},
        funding={**spec.funding, funding: _scaled(spec.funding[funding], 1.1)},
        outside_view=dataclasses.replace(spec.outside_view, weight=0.5),
        settings={**spec.settings, "liquidity_floor": spec.settings["liquidity_floor"] + 1})
    assert driver_fit_key(dataclasses.replace(inputs, spec=simulation_only), TINY) == key
    for section, name in (("pooling", "company_growth_effect"),
                          ("valuation", "ev_sales_multiple")):
        table = getattr(spec, section)
        moved = dataclasses.replace(spec, **{section: {**table, name: _scaled(table[name], 1.1)}})
        assert driver_fit_key(dataclasses.replace(inputs, spec=moved), TINY) != key, name
    ratio, proc = next(iter(spec.ratios.items()))
    moved = dataclasses.replace(spec, ratios={**spec.ratios, ratio: dataclasses.replace(
        proc, volatility=_scaled(proc.volatility, 1.1))})
    assert driver_fit_key(dataclasses.replace(inputs, spec=moved), TINY) != key


def test_peer_key_follows_the_table_and_settings():
    from stforecast.peers import load_peers
    peers = load_peers(prepare("sensetime").company.peers_path)
    key = peer_fit_key(peers, TINY)
    changed = peers.copy(deep=True)
    var = changed.attrs["regression_response"]
    changed[var].values[0] *= 1.01
    assert peer_fit_key(changed, TINY) != key
    assert peer_fit_key(peers, dataclasses.replace(TINY, seed=12)) != key
    assert peer_fit_key(peers, dataclasses.replace(TINY, paths=9)) == key


def test_package_versions_enter_the_key(monkeypatch):
    from stforecast import cache
    key = fit_key("driver", x=1.0)
    monkeypatch.setattr(cache, "package_versions", lambda: {"pymc": "0"})
    assert fit_key("driver", x=1.0) != key


# --- through run_forecast ---------------------------------------------------------------------
def _summary_text(folder):
    return (folder / "summary.json").read_text()


@pytest.fixture(scope="session")
def cached_runs(tmp_path_factory):
    """Runs of one company and settings into an empty fit cache, in a process whose store of
    compiled models is empty and whose cache folder holds only the session's compiled models
    (copied: compiling them again would test nothing more here, tests/test_compiled.py builds
    one): ``fresh`` (``refit``: a fit, stored; it reads the driver model's compiled form from
    disk, ``stforecast.compiled``),
    ``hit`` (read from the cache), ``damaged`` (after the peer regression's entry was truncated:
    that fit is made again, the driver fit read), ``seed12`` (another seed: not in the cache, a
    second fit of the same model, into a cache of its own). ``compiled``: the driver models
    compiled meanwhile."""
    import shutil

    from shared_fits import compiled_store
    from stforecast import compiled as compiled_models
    from stforecast.model import PRIOR_VALUES
    root = tmp_path_factory.mktemp("cached-runs")
    cache = FitCache(root / "cache")
    for folder in (cache.root, root / "cache12"):
        shutil.copytree(compiled_store(), folder / "compiled",
                        ignore=shutil.ignore_patterns("*.lock"))
    out, logs, compiled = {}, {}, []
    handler = Messages()
    log = logging.getLogger("stforecast")
    log.addHandler(handler)
    level, log.level = log.level, logging.INFO
    original = compiled_models._build

    def counting(model, *args, **kwargs):
        if PRIOR_VALUES in model.named_vars:  # the driver model (the peer regression's too)
            compiled.append(model)
        return original(model, *args, **kwargs)

    store = compiled_models._PROCESS
    import stforecast.run as run_module
    measured = []  # the diagnostics measured on draws, by whom
    mp = pytest.MonkeyPatch()
    for name in ("diagnose", "peer_diagnostics", "peer_loo"):
        mp.setattr(run_module, name, lambda *a, _f=getattr(run_module, name), _n=name, **k:
                   measured.append(_n) or _f(*a, **k))
    mp.setenv("STFORECAST_CACHE", str(cache.root))
    mp.setattr(compiled_models, "_PROCESS", {})
    mp.setattr(compiled_models, "_build", counting)
    try:
        for name, settings in (("fresh", dataclasses.replace(TINY, refit=True)), ("hit", TINY)):
            handler.messages.clear()
            measured.clear()
            out[name] = run_forecast(root / name, "sensetime", settings)
            logs[name] = list(handler.messages)
            logs[f"{name}_measured"] = list(measured)
        entry = next(p for p in cache.entries() if p.name.startswith("peers-"))
        entry.write_bytes(entry.read_bytes()[:-1000])
        handler.messages.clear()
        out["damaged"] = run_forecast(root / "damaged", "sensetime", TINY)
        logs["damaged"] = list(handler.messages)
        handler.messages.clear()
        mp.setenv("STFORECAST_CACHE", str(root / "cache12"))  # no fits in it: it samples
        out["seed12"] = run_forecast(root / "seed12", "sensetime",
                                     dataclasses.replace(TINY, seed=12))
        logs["seed12"] = list(handler.messages)
        made = dict(compiled_models._PROCESS)
    finally:
        mp.undo()
        log.removeHandler(handler)
        log.setLevel(level)
    for key, model in made.items():  # later tests in this process re-use the compilation
        store.setdefault(key, model)
    return root, out, logs, cache, compiled


@pytest.mark.slow  # fits of the driver model
def test_a_cache_hit_gives_the_summary_of_a_fresh_fit(cached_runs):
    root, out, logs, _, _ = cached_runs
    assert any("read from the cache" in m for m in logs["hit"])
    assert not any(m.startswith("fitting") for m in logs["hit"])
    assert any(m.startswith("fitting") for m in logs["fresh"])
    assert _summary_text(root / "hit") == _summary_text(root / "fresh")
    assert out["hit"] == out["fresh"]
    with xr.open_dataset(root / "hit" / "forecast.nc", group="posterior") as a, \
            xr.open_dataset(root / "fresh" / "forecast.nc", group="posterior") as b:
        xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    assert "fit_cache" in out["hit"].timings_s and "sampling" not in out["hit"].timings_s


@pytest.mark.slow
def test_a_truncated_entry_is_refitted_not_used(cached_runs):
    root, out, logs, cache, _ = cached_runs
    assert any("damaged entry" in m for m in logs["damaged"])
    assert any(m.startswith("fitting the peer regression") for m in logs["damaged"])
    assert any(m.startswith("driver model: fit read from the cache") for m in logs["damaged"])
    assert _summary_text(root / "damaged") == _summary_text(root / "fresh")
    assert len([p for p in cache.entries() if p.name.startswith("peers-")]) == 1  # stored again


@pytest.mark.slow
def test_the_diagnostics_kept_with_a_fit_are_checked_again_on_a_hit(cached_runs):
    """A fit's diagnostics (R-hat, ESS, divergences; the peer regression's leave-one-out check)
    are measured once, when it is fitted, and kept in its entry (under its checksum); a hit
    checks them against the bar again and does not measure them again (nor import ArviZ's
    statistics for it)."""
    _, out, logs, cache, _ = cached_runs
    assert out["hit"].diagnostics == out["fresh"].diagnostics
    assert out["hit"].reasons == out["fresh"].reasons  # tiny fits miss the bar: it says so
    assert not out["hit"].ok
    assert logs["hit_measured"] == []
    headers = {p.name.split("-")[0]: json.loads(p.read_bytes().split(b"\n", 1)[0])
               for p in cache.entries()}
    assert set(headers["driver"]["attrs"]["diagnostics"]) == {
        "rhat_max", "ess_bulk_min", "ess_tail_min", "divergences"}
    assert {"rhat_max", "loo_elpd", "loo_pareto_k_max"} <= set(headers["peers"]["attrs"]["checks"])


def test_kept_diagnostics_meet_the_bar_as_it_is_now(monkeypatch):
    from stforecast import fit
    measured = {"rhat_max": 1.008, "ess_bulk_min": 900.0, "ess_tail_min": 850.0, "divergences": 0}
    assert fit.Diagnostics.checked(measured).ok
    assert fit.Diagnostics.checked(measured).measured() == measured
    monkeypatch.setattr(fit, "RHAT_MAX", 1.005)
    assert fit.Diagnostics.checked(measured).reasons == ["R-hat 1.008 > 1.005"]


@pytest.mark.slow
def test_a_second_fit_of_the_same_model_in_one_process_compiles_once(cached_runs):
    """Two fits of the default model in one process (``fresh`` and ``seed12``: neither in the
    fit cache, so both sample; the process's store of compiled models empty before the first):
    the driver model's compiled form is read from disk once, never compiled; another seed (its
    fit cache elsewhere) samples on the same compiled model, kept in the process."""
    _, out, logs, _, compiled = cached_runs
    first, second = out["fresh"], out["seed12"]
    assert "sampling" in first.timings_s and "sampling" in second.timings_s
    assert any(m.startswith("fitting") for m in logs["seed12"])
    assert any(m.startswith("compiled model: disk") for m in logs["fresh"])
    assert any(m.startswith("compiled model: process") for m in logs["seed12"])
    assert compiled == []
    assert first.seed != second.seed
