"""Shared test options and fixtures.

Lanes: ``pytest -m "not slow"`` for quick iteration; ``slow`` marks SBC, parameter recovery,
notebooks and default-size fits. ``--full-sbc`` runs the full simulation-based calibration
(250 fits) instead of the reduced one.

Fixtures (session-scoped, built on first use): the shipped default ``company``, its priors
``spec`` and model observations ``obs``; ``refitter``, one driver model compiled once (nutpie,
~25 s at the first fit) and re-used by every test that fits; ``small_fit``, one small fit of
the company's own history on it.
"""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
#: The tests' fit cache (never the user's). It is content-addressed (a changed model, data,
#: prior value, sampler setting, seed or package version is a new key) and kept between sessions
#: in .pytest_cache, so that a second run of the suite re-fits only what changed; the xdist
#: workers of one session share it. STFORECAST_TEST_CACHE=fresh gives the session an empty one
#: of its own (removed at the end). Tests of the fitting itself ask for a refit.
_FRESH = os.environ.get("STFORECAST_TEST_CACHE") == "fresh"
if _FRESH:
    os.environ["STFORECAST_CACHE"] = tempfile.mkdtemp(prefix="stforecast-test-fit-cache-")
else:
    os.environ["STFORECAST_CACHE"] = str(Path(__file__).resolve().parents[1] / ".pytest_cache"
                                         / "stforecast-fits")

#: Settings of the shared small fit: enough draws for posterior means and sds, not for the bar.
SMALL_FIT = {"draws": 300, "tune": 300, "chains": 2}
SMALL_FIT_SEED = 20220131


def pytest_unconfigure(config):
    import shutil
    if _FRESH:
        shutil.rmtree(os.environ["STFORECAST_CACHE"], ignore_errors=True)


#: Test files by cost, most expensive first (measured, full lane, 2 workers: fits in fresh
#: processes, dask clusters, default-size runs). The files are handed to the xdist workers in
#: this order (then every other file in collection order), so that the long ones start first and
#: the quick files fill the end: with xdist's own order (files with the most tests first) the
#: files of a few long tests came last and one worker waited minutes for the other.
COSTLIEST_FIRST = ("test_distributed.py", "test_api.py", "test_up_to_date.py",
                   "test_results_integrity.py", "test_cache.py", "test_toyco.py",
                   "test_notebooks.py", "test_run.py", "test_report.py", "test_model.py",
                   "test_outside_view.py", "test_peers.py", "test_default_run_reproduces.py",
                   "test_quality_bar.py", "test_engine.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def pytest_addoption(parser):
    parser.addoption("--full-sbc", action="store_true", default=False,
                     help="run the full SBC (250 fits, a few minutes) instead of the reduced one")


@pytest.fixture(scope="session")
def company():
    from stforecast.company import load_company
    return load_company()


@pytest.fixture(scope="session")
def spec(company):
    from stforecast.priors import load_priors
    return load_priors(company.priors_path, company.growth_drivers())


@pytest.fixture(scope="session")
def obs(company):
    from stforecast.model import observations_from_company
    return observations_from_company(company)


@pytest.fixture(scope="session")
def refitter(company):
    """The company's driver model, compiled at its first fit and shared by every fitting test.

    It is the process's own ``stforecast.distributed.refitter`` of the company (a ``Refitter``
    of the same priors and observations, kept per process): the serial calibration fits of
    tests/test_distributed.py compile that one, so a worker that ran them does not compile the
    same model a second time for the model's tests."""
    from stforecast.distributed import ModelInputs
    from stforecast.distributed import refitter as process_refitter
    return process_refitter(ModelInputs.from_company(company))


@pytest.fixture
def keep_compiled_models(monkeypatch, tmp_path):
    """The compiled models of the test stay out of the session's stores: the process's
    (``stforecast.compiled._PROCESS``, at most ``_PROCESS_MAX``, the oldest dropped first) is as
    it was before the test, and the disk's is the test's own folder (the session's keeps at most
    ``MAX_ENTRIES``): for a test that compiles many one-off models (synthetic data), which would
    push out the models later tests fit again (a recompile of the driver model, ~15-40 s)."""
    from stforecast import compiled
    monkeypatch.setattr(compiled, "_PROCESS", dict(compiled._PROCESS))
    monkeypatch.setenv("STFORECAST_CACHE", str(tmp_path / "cache"))
    yield


@pytest.fixture(scope="session")
def small_fit(refitter, obs):
    """A small fit (``SMALL_FIT``) of the company's own history: the nutpie DataTree."""
    return refitter.sample(obs, SMALL_FIT_SEED, **SMALL_FIT)
