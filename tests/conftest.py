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

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
#: Every test session fits into a fit cache of its own (never the user's).
os.environ["STFORECAST_CACHE"] = tempfile.mkdtemp(prefix="stforecast-test-fit-cache-")

#: Settings of the shared small fit: enough draws for posterior means and sds, not for the bar.
SMALL_FIT = {"draws": 300, "tune": 300, "chains": 2}
SMALL_FIT_SEED = 20220131


def pytest_unconfigure(config):
    import shutil
    shutil.rmtree(os.environ["STFORECAST_CACHE"], ignore_errors=True)


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
def refitter(spec, obs, company):
    """The company's driver model, compiled at its first fit and shared by every fitting test."""
    from stforecast.calibration import Refitter
    return Refitter(spec, obs, company)


@pytest.fixture(scope="session")
def small_fit(refitter, obs):
    """A small fit (``SMALL_FIT``) of the company's own history: the nutpie DataTree."""
    return refitter.sample(obs, SMALL_FIT_SEED, **SMALL_FIT)
