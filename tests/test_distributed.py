"""Dask as the engine: the same results serially and on a real LocalCluster, resume, a worker
killed mid-task, and the command line against a scheduler address in a subprocess.

The sweep tests simulate on prior draws used as a "posterior" (no fit: seconds); the
calibration tests fit (the first fit on each worker compiles the model, ~25-60 s on 2 cores:
marked slow). The cluster is shared by the module, so its workers compile once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stforecast.distributed import ModelInputs, map_tasks
from stforecast.sweep import SweepBase, SweepError, load_sweep, run_sweep

SWEEP = """
[sweep]
design = "grid"
seed = 5
default = "prior"

[shocks.us_restrictions]
probability = [0.0, 0.2, 0.5]
severity = [0.5, 1.5]

[shocks.public_sector_squeeze]
probability = [0.1, 0.4]
"""


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as c, Client(c) as client:
        yield c, client


@pytest.fixture(scope="module")
def sweep_base(company, spec, obs):
    """Prior draws (200) standing in for a posterior; 10 paths per draw = 2,000 paths."""
    from stforecast.fit import sample_prior
    from stforecast.model import build_model
    from stforecast.multiples import Valuation
    from stforecast.scenarios import load_scenarios
    prior = sample_prior(build_model(spec, obs, company), 200, seed=3)
    return SweepBase(company, obs, load_scenarios(company.scenarios_path, company),
                     prior.astype("float64"), Valuation("report"), spec.ceilings(),
                     per_draw=10, seed=11)


@pytest.fixture(scope="module")
def sweep_spec(tmp_path_factory, sweep_base):
    path = tmp_path_factory.mktemp("sweep") / "sweep.toml"
    path.write_text(SWEEP)
    return load_sweep(path, sweep_base.shocks.shocks)


@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory, sweep_base, sweep_spec):
    return run_sweep(sweep_base, sweep_spec, tmp_path_factory.mktemp("serial"), per_task=3)


def test_sweep_settings_and_summaries(serial_sweep, sweep_spec, sweep_base):
    assert len(serial_sweep) == 3 * 2 * 2 == len(sweep_spec.settings())
    p = {tuple(r["setting"].values()): r["summary"]["p_upside"]["value"] for r in serial_sweep}
    # common random numbers: a more likely, more severe US shock never raises P(upside)
    for sev in (0.5, 1.5):
        for squeeze in (0.1, 0.4):
            assert p[(0.0, sev, squeeze)] >= p[(0.2, sev, squeeze)] >= p[(0.5, sev, squeeze)]
    assert p[(0.5, 0.5, 0.1)] > p[(0.5, 1.5, 0.1)]
    first = serial_sweep[0]["summary"]
    assert first["p_upside"]["n"] == sweep_base.n_paths == 2000
    assert first["revenue"]["q05"] < first["revenue"]["q50"] < first["revenue"]["q95"]


def test_sweep_identical_serially_on_the_cluster_and_in_any_chunking(
        cluster, tmp_path, sweep_base, sweep_spec, serial_sweep):
    _, client = cluster
    on_cluster = run_sweep(sweep_base, sweep_spec, tmp_path / "c", client, per_task=2)
    assert on_cluster == serial_sweep  # exact: every float of every summary
    one_each = run_sweep(sweep_base, sweep_spec, tmp_path / "one", per_task=1)
    assert one_each == serial_sweep
    assert (tmp_path / "c" / "sweep.csv").read_text().count("\n") == 1 + len(serial_sweep)


def test_sweep_resumes_without_redoing_finished_settings(tmp_path, sweep_base, sweep_spec,
                                                         serial_sweep):
    out = tmp_path / "s"
    run_sweep(sweep_base, sweep_spec, out, per_task=4)
    for i in (1, 7):
        (out / "settings" / f"{i:05d}.json").unlink()
    calls = []
    rows = run_sweep(sweep_base, sweep_spec, out, per_task=1,
                     on_result=lambda done, total: calls.append(total))
    assert calls == [2, 2]  # two tasks, one per missing setting
    assert rows == serial_sweep
    other = load_sweep(_write(tmp_path / "other.toml", SWEEP.replace("0.4", "0.3")),
                       sweep_base.shocks.shocks)
    with pytest.raises(SweepError, match="plan.json: key 'sweep_sha256'"):
        run_sweep(sweep_base, other, out)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, match", [
    ('[shocks.no_such_shock]\nprobability = [0.1]', "key 'shocks.no_such_shock': expected a shock"),
    ('[shocks.us_restrictions]\nprobability = [1.5]', "shocks.us_restrictions.probability"),
    ('[sweep]\ndesign = "latin-hypercube"\n[shocks.us_restrictions]\nprobability = [0.1]',
     "sweep.samples"),
    ('[sweep]\ndesign = "random"\n[shocks.us_restrictions]\nprobability = [0.1]',
     "sweep.design"),
])
def test_sweep_file_errors_are_one_line(tmp_path, sweep_base, text, match):
    with pytest.raises(SweepError, match=match) as err:
        load_sweep(_write(tmp_path / "s.toml", text), sweep_base.shocks.shocks)
    assert "\n" not in str(err.value)


def test_latin_hypercube_is_deterministic_and_stratified(tmp_path, sweep_base):
    text = ('[sweep]\ndesign = "latin-hypercube"\nsamples = 20\nseed = 4\n'
            '[shocks.us_restrictions]\nprobability = [0.0, 0.4]\nseverity = [0.5, 2.0]')
    spec = load_sweep(_write(tmp_path / "l.toml", text), sweep_base.shocks.shocks)
    a, b = spec.settings(), spec.settings()
    assert a == b and len(a) == 20
    p = np.array([s["us_restrictions.probability"] for s in a])
    # one point in each of the 20 strata of [0, 0.4]
    assert sorted((p / 0.02).astype(int)) == list(range(20))


# --- calibration (fits) --------------------------------------------------------------------------
CAL = {"draws": 100, "tune": 100, "chains": 2, "seed": 3}


@pytest.fixture(scope="module")
def inputs(company):
    return ModelInputs.from_company(company)


@pytest.fixture(scope="module")
def serial_fits(inputs):
    from stforecast.calibration_runs import CalibrationSettings, calibration_fit
    settings = CalibrationSettings(**CAL)
    return dict(map_tasks(None, calibration_fit, range(3), args=(inputs, settings)))


@pytest.mark.slow
def test_calibration_fits_identical_serially_and_on_the_cluster(cluster, inputs, serial_fits):
    from stforecast.calibration_runs import CalibrationSettings, calibration_fit
    _, client = cluster
    on_cluster = dict(map_tasks(client, calibration_fit, range(3),
                                args=(inputs, CalibrationSettings(**CAL))))
    assert on_cluster == serial_fits
    assert len(serial_fits[0]["ranks"]) > 50
    assert all(0 <= r <= 99 for f in serial_fits.values() for r in f["ranks"].values())
    assert serial_fits[0]["ranks"] != serial_fits[1]["ranks"]  # each fit its own seeds


@pytest.mark.slow
def test_cli_calibrate_on_a_scheduler_address_in_a_subprocess(cluster, tmp_path, serial_fits):
    _, client = cluster
    out = tmp_path / "cal.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "stforecast.cli_scale", "calibrate", "--fits", "3",
         "--draws", "100", "--tune", "100", "--chains", "2", "--seed", "3", "--out", str(out),
         "--scheduler", client.scheduler.address],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["n_fits"] == 3
    for label, ranks in report["ranks"].items():
        assert ranks == [serial_fits[i]["ranks"][label] for i in range(3)]
    assert "50% intervals cover" in proc.stdout
    # the tasks ran on the cluster's workers, not in the subprocess
    cached = client.run(lambda: len(__import__("stforecast.distributed").distributed._CACHE))
    assert all(n > 0 for n in cached.values())


# --- failure ---------------------------------------------------------------------------------------
def test_a_worker_killed_mid_sweep_loses_nothing(cluster, tmp_path, sweep_base, sweep_spec,
                                                 serial_sweep):
    _, client = cluster
    killed = []

    def kill_a_busy_worker(done, total):
        if killed:
            return
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            killed.append(busy[0])
            try:
                client.run(os._exit, 1, workers=[busy[0]])
            except Exception:  # the worker's connection dies with it
                pass

    rows = run_sweep(sweep_base, sweep_spec, tmp_path / "k", client, per_task=1,
                     on_result=kill_a_busy_worker)
    assert killed, "no worker was busy after the first result"
    assert rows == serial_sweep
    assert len(list((tmp_path / "k" / "settings").glob("*.json"))) == len(serial_sweep)


def test_the_scale_commands_are_stforecast_commands(capsys):
    from stforecast.cli import build_parser
    parser = build_parser()
    for command in ("calibrate", "sweep", "run-many"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        assert "--scheduler ADDRESS" in capsys.readouterr().out
    args = parser.parse_args(["sweep", "s.toml", "--scheduler", "tcp://127.0.0.1:8786"])
    assert args.scheduler == "tcp://127.0.0.1:8786" and args.func.__name__ == "cmd_sweep"


def test_scheduler_address_from_the_environment(monkeypatch):
    from stforecast.distributed import scheduler_address
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address() is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9999")
    assert scheduler_address() == "tcp://127.0.0.1:9999"
    assert scheduler_address("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"
