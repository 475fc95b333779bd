"""A run into a folder that already holds the same run's results does nothing
(``run.up_to_date``, ``run.run_key``): the stored summary.json is the one a full run writes;
any change of the inputs, the settings or the stored files, and ``refit``, runs in full."""

import dataclasses
import logging
import shutil

import pytest

from log_capture import Messages
from stforecast.fit import FitSettings
from stforecast.results import load_results
from stforecast.run import RunSettings, prepare, run_forecast, run_key

#: Tiny fits: the diagnostics miss the bar, which does not matter for equality.
TINY = RunSettings(seed=11, paths=400, report=False,
                   fit=FitSettings(draws=60, tune=60, chains=2, prior_draws=40))
UP_TO_DATE = "up to date"


def _files(folder):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``run(name, settings, folder)``: a run of the default company (fit cache of its own, with
    a copy of the session's compiled models: none is compiled again) with the log messages it
    wrote; returns ``(summary, messages)``."""
    from shared_fits import compiled_store
    root = tmp_path_factory.mktemp("up-to-date")
    shutil.copytree(compiled_store(), root / "cache" / "compiled",
                    ignore=shutil.ignore_patterns("*.lock"))
    handler = Messages()
    log = logging.getLogger("stforecast")
    log.addHandler(handler)
    level, log.level = log.level, logging.INFO
    mp = pytest.MonkeyPatch()
    mp.setenv("STFORECAST_CACHE", str(root / "cache"))

    def run(folder, settings=TINY):
        handler.messages.clear()
        summary = run_forecast(root / folder, "sensetime", settings)
        return summary, list(handler.messages)

    try:
        yield root, run
    finally:
        mp.undo()
        log.removeHandler(handler)
        log.setLevel(level)


def test_the_key_follows_what_the_results_depend_on():
    inputs = prepare("sensetime")
    key = run_key(inputs, TINY)
    assert key == run_key(prepare("sensetime"), TINY)
    assert key == run_key(inputs, dataclasses.replace(TINY, progress=True))  # no effect on results
    for changed in (dataclasses.replace(TINY, seed=12), dataclasses.replace(TINY, paths=480),
                    dataclasses.replace(TINY, fit=dataclasses.replace(TINY.fit, draws=61))):
        assert run_key(inputs, changed) != key
    company = inputs.company
    text = company.files["scenarios"][1] + "\n# a comment\n"
    other = dataclasses.replace(company, files={**company.files, "scenarios": (
        company.files["scenarios"][0], text)})
    assert run_key(dataclasses.replace(inputs, company=other), TINY) != key


@pytest.fixture(scope="module")
def first_run(runs):
    """The module's one full ``TINY`` run into the empty folder ``res``, with its log, and a
    byte-for-byte copy of that folder (``pristine``) made before any test touches ``res``."""
    root, run = runs
    summary, log = run("res")
    shutil.copytree(root / "res", root / "pristine", copy_function=shutil.copy2)
    return summary, log


@pytest.mark.slow  # one tiny fit of the driver model and a handful of tiny runs
def test_the_same_run_again_does_nothing_and_gives_the_same_summary(runs, first_run):
    root, run = runs
    first, log1 = first_run
    assert not any(UP_TO_DATE in m for m in log1)
    before = _files(root / "res")
    again, log2 = run("res")
    assert any(UP_TO_DATE in m for m in log2)
    assert not any(m.startswith("simulating") for m in log2)
    assert _files(root / "res") == before  # not rewritten: same files, inodes and times
    assert again == first  # the stored summary is the run's (timings aside)
    assert "up_to_date" in again.timings_s and "predictive" not in again.timings_s
    load_results(root / "res")  # still a valid results folder
    # --refit runs in full (fits again) and writes the same summary.json
    refit, log3 = run("res", dataclasses.replace(TINY, refit=True))
    assert any(m.startswith("fitting") for m in log3) and not any(UP_TO_DATE in m for m in log3)
    assert (root / "res" / "summary.json").read_bytes() == before["summary.json"][2]
    assert refit == first
    # a run from the fit cache into another folder writes the same summary.json
    other, log4 = run("res2")
    assert any("read from the cache" in m for m in log4)
    assert (root / "res2" / "summary.json").read_bytes() == before["summary.json"][2]


@pytest.mark.slow
def test_anything_changed_runs_in_full(runs, first_run):
    root, run = runs
    # a folder holding the TINY run's results: a copy of the module's first run (the run key
    # does not name the results folder, so the copy is up to date for TINY, checked here)
    shutil.copytree(root / "pristine", root / "res3", copy_function=shutil.copy2)
    _, log = run("res3")
    assert any(UP_TO_DATE in m for m in log)
    _, log = run("res3", dataclasses.replace(TINY, paths=480))  # another setting
    assert any(m.startswith("simulating") for m in log)
    _, log = run("res3", dataclasses.replace(TINY, paths=480))
    assert any(UP_TO_DATE in m for m in log)
    # an altered summary.json is not trusted: the run is made again and restores it
    path = root / "res3" / "summary.json"
    good = path.read_bytes()
    path.write_bytes(good.replace(b'"seed": 11', b'"seed":  11', 1))
    _, log = run("res3", dataclasses.replace(TINY, paths=480))
    assert not any(UP_TO_DATE in m for m in log) and path.read_bytes() == good
    # damaged draws are not trusted either (same settings as the folder's: only the damage
    # can make this run in full); the run writes whole draws again
    draws = root / "res3" / "forecast.nc"
    draws.write_bytes(draws.read_bytes()[: draws.stat().st_size // 2])
    _, log = run("res3", dataclasses.replace(TINY, paths=480))
    assert not any(UP_TO_DATE in m for m in log) and path.read_bytes() == good
    load_results(root / "res3")
    _, log = run("res3", dataclasses.replace(TINY, paths=480))
    assert any(UP_TO_DATE in m for m in log)  # the repaired folder is up to date again
    # a report asked for where there is none
    _, log = run("res3", dataclasses.replace(TINY, paths=480, report=True))
    assert not any(UP_TO_DATE in m for m in log) and (root / "res3" / "report.html").is_file()
    load_results(root / "res3")
