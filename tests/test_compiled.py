"""The driver model compiled once and kept on disk (``stforecast.compiled``): one compiled model
serves every process and every value of the priors, gives the fit a fresh compilation gives,
and a damaged or mismatched entry is never used."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from stforecast import compiled as C
from stforecast.fit import FitSettings, sample_posterior
from stforecast.model import PRIOR_VALUES, build_model, prior_layout, prior_value_vector

SMALL = FitSettings(draws=60, tune=60, chains=2)


def _with_sigma(spec, factor: float):
    """``spec`` with the pooled growth prior's sigma scaled by ``factor`` (a value, not the
    model's structure)."""
    old = spec.pooling["company_growth_effect"]
    prior = dataclasses.replace(old, params={**old.params, "sigma": old.params["sigma"] * factor},
                                elicited=None)
    return dataclasses.replace(spec, pooling={**spec.pooling, "company_growth_effect": prior})


@pytest.fixture
def fresh_store(monkeypatch):
    """An empty store of compiled models in this process (the test's own)."""
    monkeypatch.setattr(C, "_PROCESS", {})


def _posterior(model, key, seed=3):
    fit = sample_posterior(model, SMALL, seed, model_key=key)
    return fit.idata["posterior"].to_dataset()


def test_prior_values_are_data_and_the_key_ignores_them(company, obs, spec):
    """The priors' parameters are one data vector of the model; a change of a value keeps the
    compiled model's key, a change of a family does not."""
    model = build_model(spec, obs, company)
    assert np.array_equal(model[PRIOR_VALUES].get_value(), prior_value_vector(spec))
    assert len(prior_layout(spec)) == len(prior_value_vector(spec))
    changed = _with_sigma(spec, 1.1)
    assert not np.array_equal(prior_value_vector(changed), prior_value_vector(spec))
    assert C.driver_key(company, obs, changed) == C.driver_key(company, obs, spec)
    old = spec.pooling["company_growth_effect"]
    other_family = dataclasses.replace(spec, pooling={**spec.pooling, "company_growth_effect":
                                                      dataclasses.replace(old, dist="StudentT",
                                                      params={"nu": 5.0, **old.params})})
    assert C.driver_key(company, obs, other_family) != C.driver_key(company, obs, spec)


@pytest.mark.slow  # compiles a small model and samples it often, once in a fresh process
def test_one_compiled_model_serves_processes_and_prior_values(tmp_path, monkeypatch,
                                                              fresh_store):
    """Built once into an empty cache; read back from disk (another process's view) it gives the
    same fit bit for bit, in this process and in a fresh one; a changed prior value samples on
    it without compiling; a truncated entry is compiled again, never used; a model it does not
    belong to is refused. On a small model built as the driver model is (its prior values one
    data vector, ``tests/small_models.py``): the same code compiles the driver model (~15-45 s),
    which other tests read and fit (tests/test_cache.py, the runs)."""
    from small_models import small_key, small_model

    monkeypatch.setenv("STFORECAST_CACHE", str(tmp_path))
    built = C._build
    builds = []
    monkeypatch.setattr(C, "_build", lambda *a: builds.append(1) or built(*a))
    model, key = small_model(), small_key()
    first = _posterior(model, key)
    assert C._PROCESS[key].source == "built" and builds == [1, 1]  # its two parts
    entries = [tmp_path / "compiled" / C.part_key(key, part) for part in C.PARTS]
    for entry in entries:
        assert {p.name for p in entry.iterdir()} >= {"functions.pkl", "meta.json", "wrappers.py"}

    def forget():  # as a new process finds them: on disk, their functions not loaded
        C._PROCESS.clear()
        for part in C.PARTS:
            C._INNER.pop(C.part_key(key, part), None)

    forget()
    again = _posterior(model, key)
    assert C._PROCESS[key].source == "disk" and builds == [1, 1]
    assert C._PROCESS[key].logp_fn is None  # numba's cache served the C entry points
    assert first.equals(again)

    # numba's cache of the entry points gone: they are compiled again, from the PyTensor
    # functions unpickled for it
    import numba
    caches = [folder for entry in entries for folder in
              [entry / "__pycache__"] + ([*Path(numba.config.CACHE_DIR).glob(f"{entry.name}_*")]
                                         if numba.config.CACHE_DIR else [])]
    removed = [f for folder in caches for f in folder.glob("wrappers.*.nb[ic]")]
    assert len(removed) >= 4  # an index and a function of each part
    for f in removed:
        f.unlink()
    forget()
    recompiled = _posterior(model, key)
    assert C._PROCESS[key].source == "disk" and C._PROCESS[key].logp_fn is not None
    assert C._PROCESS[key].expand_fn is not None
    assert builds == [1, 1] and first.equals(recompiled)

    # a fresh process, reading the entry: the same draws (no state of this process helps it)
    script = (
        "import json\n"
        "from small_models import small_key, small_model\n"
        "from stforecast.fit import FitSettings, sample_posterior\n"
        "from stforecast import compiled as C\n"
        "f = sample_posterior(small_model(), FitSettings(draws=60, tune=60, chains=2), 3,\n"
        "                     model_key=small_key())\n"
        "p = f.idata['posterior']['location'].values\n"
        "e = C._PROCESS[small_key()]\n"
        "print(json.dumps({'source': e.source, 'unpickled': e.logp_fn is not None,\n"
        "                  'draws': [float(v).hex() for v in p.ravel()]}))\n")
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [here, *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, env=env)
    other = json.loads(proc.stdout.strip().splitlines()[-1])
    assert other["source"] == "disk" and not other["unpickled"]
    assert other["draws"] == [float(v).hex() for v in first["location"].values.ravel()]

    changed = small_model(scale=0.05)
    moved = _posterior(changed, key)
    assert C._PROCESS[key].source == "process" and builds == [1, 1]
    assert not moved["location"].equals(first["location"])

    with pytest.raises(C.ModelMismatch, match="log-density"):
        C.check(C._PROCESS[key], small_model(scale=0.05),
                expected=-1.0)  # the model's own log-density is not -1 at its centre

    # a truncated entry is compiled again: here "compiling" copies the entry as first built
    # (a second real compilation would prove nothing more)
    good = tmp_path / "as-built"
    shutil.copytree(entries[0], good, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(C, "_build", lambda m, k, folder, data, part: builds.append(part)
                        or shutil.copytree(good, folder) and None)  # function: unpickled
    functions = entries[0] / "functions.pkl"  # the log-density's
    functions.write_bytes(functions.read_bytes()[:-500])
    C._PROCESS.clear()
    repaired = _posterior(model, key)
    assert builds == [1, 1, "logp"] and C._PROCESS[key].source == "built"
    assert C._PROCESS[key].parts["expand"].source == "disk"
    assert first.equals(repaired)


def test_a_damaged_entry_is_refused_in_one_line(tmp_path):
    """Unreadable, checksum-failing or foreign entries raise ``ModelMismatch`` naming the file."""
    entry = tmp_path / "k"
    entry.mkdir()
    with pytest.raises(C.ModelMismatch, match="unreadable"):
        C._load(entry, "k", (PRIOR_VALUES,), "logp")
    (entry / "meta.json").write_text(json.dumps({"format": C.FORMAT, "key": "other",
                                                 "part": "logp"}))
    (entry / "functions.pkl").write_bytes(b"x")
    (entry / "wrappers.py").write_text("")
    with pytest.raises(C.ModelMismatch, match="not an entry of this format, key and part"):
        C._load(entry, "k", (PRIOR_VALUES,), "logp")
    (entry / "meta.json").write_text(json.dumps({"format": C.FORMAT, "key": "k",
                                                 "part": "expand"}))
    with pytest.raises(C.ModelMismatch, match="not an entry of this format, key and part"):
        C._load(entry, "k", (PRIOR_VALUES,), "logp")  # the other part's entry
    (entry / "meta.json").write_text(json.dumps({"format": C.FORMAT, "key": "k", "part": "logp",
                                                 "sha256": "0" * 64}))
    with pytest.raises(C.ModelMismatch, match="checksum mismatch") as err:
        C._load(entry, "k", (PRIOR_VALUES,), "logp")
    assert "\n" not in str(err.value) and "functions.pkl" in str(err.value)


def test_a_gradient_not_finite_at_the_centre_is_refused_in_one_line(company, obs, spec):
    """The run leaves the gradient at the prior's centre to the compiled model's check
    (``trial_logp(..., gradient=False)``): a compiled log-density that agrees with the model's
    but whose gradient is not finite there is refused as the trial evaluation would refuse it,
    one line naming the priors file."""
    from types import SimpleNamespace

    from stforecast.preflight import ModelCheckError, trial_logp

    model = build_model(spec, obs, company)
    trial = trial_logp(model, "my/priors.toml", gradient=False)
    n = sum(int(np.size(v)) for v in trial["point"].values())
    names = list(trial["point"])
    slices, start = [], 0
    for name in names:
        size = int(np.size(trial["point"][name]))
        slices.append((start, start + size))
        start += size

    def logp(gradient_value):
        def entry(n_dim, x, grad, out, values):
            out[0] = trial["logp"]
            for i in range(n_dim):
                grad[i] = gradient_value
            return 0
        return SimpleNamespace(ctypes=entry)

    meta = {"n_dim": n, "names": names, "slices": slices,
            "shapes": [list(np.shape(trial["point"][k])) for k in names],
            "data": C.data_layout(model, (PRIOR_VALUES,))}
    good = SimpleNamespace(meta=meta, key="k" * 16, wrappers=SimpleNamespace(logp=logp(0.5)))
    assert C.check(good, model, trial["logp"], trial["point"], "my/priors.toml") == trial["logp"]
    bad = SimpleNamespace(meta=meta, key="k" * 16, wrappers=SimpleNamespace(logp=logp(np.nan)))
    with pytest.raises(ModelCheckError, match="my/priors.toml: .*its gradient is not finite"
                       ) as err:
        C.check(bad, model, trial["logp"], trial["point"], "my/priors.toml")
    assert "\n" not in str(err.value)


@pytest.mark.slow  # the refitter's model compiled (or read) once per worker
def test_a_refitter_reads_each_history_from_its_data(refitter, company, spec):
    """The model compiled with its observations as data (``calibration.Refitter``) evaluates
    the log-density of the history it is given, not the one it was compiled with: on a
    simulated history it agrees with a model built on that history; other shapes are refused."""
    from stforecast.model import observed_data_values
    from stforecast.preflight import trial_logp

    entry, _ = refitter.compiled
    assert [e["name"] for e in entry.meta["data"]][0] == PRIOR_VALUES
    assert len(entry.meta["data"]) == len(refitter.model.data_vars) > 1
    truth = refitter.prior_draws(1, seed=7)[0]
    history = refitter.simulate(truth, np.random.default_rng(5))
    other = build_model(spec, history, company)
    expected = trial_logp(other)["logp"]
    assert C.check(entry, other, expected) == pytest.approx(expected, rel=C.RTOL)
    with pytest.raises(C.ModelMismatch, match="log-density"):
        C.check(entry, refitter.model, expected)  # its own history: another log-density
    values = observed_data_values(history, company)
    name = next(iter(values))
    with pytest.raises(ValueError, match=f"data '{name}': expected shape"):
        C.data_vector(entry, other, {name: np.zeros(99)})


@pytest.mark.slow  # the refitter's model, and a fresh process
def test_a_process_waits_for_another_compiling_the_same_model_then_reads_it(
        refitter, tmp_path, monkeypatch, fresh_store):
    """Processes that need one model at once compile it once: the lock of its key is held by
    the compiling process (``_key_lock``: a second holder waits), and the process that waited
    reads the entry stored meanwhile instead of compiling."""
    script = ("import sys, pathlib\n"
              "from stforecast.compiled import _key_lock\n"
              "base = pathlib.Path(sys.argv[1])\n"
              "with _key_lock(base, 'k'):\n"
              "    print('held', flush=True)\n"
              "    sys.stdin.readline()\n"
              "    (base / 'released').write_text('')\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    seen = []

    def take():
        with C._key_lock(tmp_path, "k"):
            seen.append((tmp_path / "released").exists())
    waiter = threading.Thread(target=take)
    waiter.start()
    proc.stdin.write("go\n")
    proc.stdin.close()
    waiter.join(timeout=60)
    assert proc.wait(timeout=60) == 0 and seen == [True]

    # the waiting process finds the entry the other stored while it waited
    entry, _ = refitter.compiled
    key = entry.key
    stored = Path(C.cache_dir()) / "compiled"
    root = tmp_path / "cache"
    lock = C._key_lock

    @contextlib.contextmanager
    def while_another_stores(base, k):  # k: each part's entry in turn
        with lock(base, k):
            shutil.copytree(stored / k, base / k, ignore=shutil.ignore_patterns("__pycache__"))
            yield
    monkeypatch.setattr(C, "_key_lock", while_another_stores)
    monkeypatch.setattr(C, "_build", lambda *a: pytest.fail("compiled although stored"))
    got = C.load_or_build(refitter.model, key, root=root, observations_as_data=True)
    assert got.source == "disk" and got.meta == entry.meta
