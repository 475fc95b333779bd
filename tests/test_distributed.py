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


def test_no_second_process_for_the_peer_fit_on_a_cluster(cluster):
    """A run on a Dask worker fits its peer regression in its own process
    (``run._fit_beside`` is for a machine's idle core, and a cluster's are busy)."""
    from stforecast import run
    _, client = cluster
    assert client.submit(run._in_dask_worker, pure=False).result() is True
    assert run._in_dask_worker() is False


def test_scheduler_address_from_the_environment(monkeypatch):
    from stforecast.distributed import scheduler_address
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address() is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9999")
    assert scheduler_address() == "tcp://127.0.0.1:9999"
    assert scheduler_address("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"


# --- the sweep's chart, table and draws store (fast: prior draws as the posterior) --------------
def test_sweep_chart_data_is_the_mean_over_the_other_parameters(serial_sweep, sweep_spec, company):
    from stforecast.sweep import effects_table, sweep_chart
    chart = sweep_chart(serial_sweep, sweep_spec, company)
    assert [p["name"] for p in chart["parameters"]] == list(sweep_spec.parameters)
    assert chart["year"] == company.last_forecast_year
    us = chart["parameters"][0]
    assert us["effect"]["x"] == [0.0, 0.2, 0.5]
    # main effect at probability 0.5: the mean P(upside) of the 4 settings with that value
    at = [r["summary"]["p_upside"]["value"] for r in serial_sweep
          if r["setting"]["us_restrictions.probability"] == 0.5]
    assert len(at) == 4 and us["effect"]["p_upside"][2] == pytest.approx(np.mean(at), abs=1e-6)
    assert us["rank_correlation"]["p_upside"] < 0  # a likelier US shock, lower odds
    table = effects_table(chart)
    assert "us_restrictions: probability" in table and f"revenue {chart['year']} q50" in table


def test_sweep_response_plot_places_the_chart_data(serial_sweep, sweep_spec, company):
    from stforecast.plots import sweep_response
    from stforecast.sweep import sweep_chart
    chart = sweep_chart(serial_sweep, sweep_spec, company)
    fig = sweep_response(chart)
    axes = fig.axes
    assert len(axes) == 2 * len(chart["parameters"])
    effect = [a for a in axes[0].get_lines() if a.get_gid() == "effect"]
    assert list(effect[0].get_ydata()) == chart["parameters"][0]["effect"]["p_upside"]
    assert any(line.get_gid() == "ref-report" for line in axes[len(chart["parameters"])].get_lines())


def test_draws_store_is_written_by_region_identically_serially_and_on_the_cluster(
        cluster, tmp_path, sweep_base, sweep_spec, serial_sweep):
    import dataclasses

    import xarray as xr
    from stforecast.run import stored_names
    _, client = cluster
    # variables a run stores, among them some (a multiple, a shock's intensity) that vary by
    # path only in settings where a shock moves them
    stored = stored_names(sweep_base.company, sweep_base.shocks)
    every = ("revenue", "target_price", "ev_sales_multiple_report", "shock_us_restrictions",
             "cash")
    assert set(every) <= set(stored)
    spec = dataclasses.replace(sweep_spec, draws_variables=every)
    serial = run_sweep(sweep_base, spec, tmp_path / "s", per_task=5,
                       draws_store=tmp_path / "s.zarr", chart=False)
    on_cluster = run_sweep(sweep_base, spec, tmp_path / "c", client, per_task=2,
                           draws_store=tmp_path / "c.zarr")
    assert serial == on_cluster == serial_sweep  # a store changes no summary
    a, b = xr.open_zarr(tmp_path / "s.zarr").load(), xr.open_zarr(tmp_path / "c.zarr").load()
    xr.testing.assert_identical(a.drop_attrs(deep=False), b.drop_attrs(deep=False))
    assert a.attrs["draws_store"] != b.attrs["draws_store"]  # attributes: the plan, the path
    n = len(serial_sweep)
    assert a["revenue"].dims == ("setting", "chain", "draw", "path", "year")
    assert a.sizes["setting"] == n and a.sizes["path"] == sweep_base.per_draw
    assert a["revenue"].dtype == np.float32
    assert set(a.data_vars) == set(every)
    assert all(a[v].dims[:4] == ("setting", "chain", "draw", "path") for v in every)
    price, final = sweep_base.company.market.price, sweep_base.company.last_forecast_year
    for row in serial_sweep:  # each slice is its own setting's draws
        one = a.isel(setting=row["index"])
        assert float(one["us_restrictions.probability"]) == row["setting"][
            "us_restrictions.probability"]
        assert float((one["target_price"] > price).mean()) == pytest.approx(
            row["summary"]["p_upside"]["value"], abs=1 / row["summary"]["p_upside"]["n"])
        assert float(np.median(one["revenue"].sel(year=final))) == pytest.approx(
            row["summary"]["revenue"]["q50"], rel=1e-4)  # float32 storage
    assert (tmp_path / "c" / "sweep.png").stat().st_size > 10_000
    with pytest.raises(SweepError, match="key 'draws_variables'.*'no_such_line'"):
        run_sweep(sweep_base, dataclasses.replace(spec, draws_variables=("no_such_line",)),
                  tmp_path / "x", draws_store=tmp_path / "x.zarr")


# --- prior settings (validation fast; refits slow) -------------------------------------------------
@pytest.mark.parametrize("text, match", [
    ('[priors."pooling.company_growth_effect"]\nrho = [0.1]', "one of mu, sigma"),
    ('[priors."pooling.company_growth_effect"]\nsigma = [-0.1]', "sigma > 0"),
    ('[priors."pooling.no_such"]\nsigma = [0.1]', "a pooling prior"),
    ('[priors."valuation.peer_premium"]\nmu = [0.1]', "acts in the simulation"),
    ('[priors.growth.nothing.long_run]\nmu = [0.1]', "a growth driver of the priors file"),
    ('[priors.scenery.x]\nmu = [0.1]', "a section of the priors file"),
])
def test_prior_sweep_errors_are_one_line(tmp_path, sweep_base, spec, text, match):
    with pytest.raises(SweepError, match=match) as err:
        load_sweep(_write(tmp_path / "p.toml", text), sweep_base.shocks.shocks, spec)
    assert "\n" not in str(err.value) and "p.toml: key 'priors." in str(err.value)


def test_prior_values_replace_one_parameter_only(tmp_path, sweep_base, spec):
    from stforecast.sweep_refit import with_prior_values
    growth = next(iter(spec.growth))
    text = (f'[priors.growth.{growth}.volatility]\nsigma = [0.2, 0.4]\n'
            f'[priors."pooling.company_growth_effect"]\nmu = [0.0, 0.05]\n')
    sweep = load_sweep(_write(tmp_path / "p.toml", text), sweep_base.shocks.shocks, spec)
    assert sweep.prior_parameters == [f"priors.growth.{growth}.volatility.sigma",
                                      "priors.pooling.company_growth_effect.mu"]
    assert len(sweep.settings()) == 4
    new = with_prior_values(spec, sweep.settings()[3])
    assert new.growth[growth].volatility.params["sigma"] == 0.4
    assert new.pooling["company_growth_effect"].params["mu"] == 0.05
    assert new.growth[growth].long_run == spec.growth[growth].long_run
    assert new.pooling["company_growth_effect"].params["sigma"] == \
        spec.pooling["company_growth_effect"].params["sigma"]
    with pytest.raises(SweepError, match="expected a sweep on a run's results"):
        run_sweep(sweep_base, sweep, tmp_path / "out")  # a base without a run's fit


# --- run-many and a prior sweep on a real run (slow: ToyCo fits) -----------------------------------
#: Tiny settings: the pipeline runs; the fits are not meant to pass the bar.
def _small_run():
    from stforecast.fit import FitSettings
    from stforecast.run import RunSettings
    return RunSettings(paths=2000, report=False,
                       fit=FitSettings(draws=300, tune=300, chains=2, prior_draws=100))


@pytest.fixture(scope="module")
def universe(cluster, tmp_path_factory):
    """ToyCo and a copy of it under another name, run as two tasks on the cluster."""
    import shutil
    from stforecast.company import load_company
    from stforecast.universe import run_many
    _, client = cluster
    root = tmp_path_factory.mktemp("universe")
    shutil.copytree(Path(__file__).parents[1] / "priors" / "toyco", root / "toyco_b")
    companies = [load_company("toyco"), load_company(root / "toyco_b")]
    rows = run_many(companies, root / "out", _small_run(), client)
    return companies, rows, root / "out"


@pytest.mark.slow
def test_run_many_on_the_cluster_writes_each_company_and_the_universe_table(universe):
    from stforecast.universe import COLUMNS, universe_row
    companies, rows, out = universe
    assert [r["company"] for r in rows] == ["toyco", "toyco_b"]
    for company, row in zip(companies, rows):
        folder = out / company.key
        assert (folder / "forecast.nc").is_file() and (folder / "summary.json").is_file()
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["company"]["key"] == company.key
        assert row == universe_row(summary)
        assert row["revenue_year"] == company.last_forecast_year
        assert row["revenue_q05"] < row["revenue_q50"] < row["revenue_q95"]
        assert row["target_price_q05"] < row["target_price_q50"] < row["target_price_q95"]
        assert 0 < row["p_upside"] < 1 and 0 < row["p_upside_mcse"] < 0.05
        assert row["ok"] is (not summary["reasons"]) and row["ok"] is summary["ok"]
    # same inputs, same seed, different workers: the same forecast
    strip = [{k: v for k, v in r.items() if k != "company"} for r in rows]
    assert strip[0] == strip[1]
    csv = (out / "universe.csv").read_text().splitlines()
    assert csv[0] == ",".join(COLUMNS) and len(csv) == 3
    assert json.loads((out / "universe.json").read_text()) == rows


@pytest.mark.slow
def test_run_many_resumes_without_redoing_finished_companies(cluster, universe):
    import shutil
    from stforecast.universe import run_many
    _, client = cluster
    companies, rows, out = universe
    kept = (out / "toyco" / "summary.json").stat().st_mtime_ns
    shutil.rmtree(out / "toyco_b")
    tasks = []
    again = run_many(companies, out, _small_run(), client,
                     on_result=lambda done, total: tasks.append(total))
    assert tasks == [1]  # only the missing company ran
    assert (out / "toyco" / "summary.json").stat().st_mtime_ns == kept
    assert again == rows
    tasks.clear()
    assert run_many(companies, out, _small_run(), client,
                    on_result=lambda d, t: tasks.append(t)) == rows
    assert tasks == []  # nothing left to do


PRIOR_SWEEP = """
[sweep]
seed = 3
paths = 2000
draws_store = "draws.zarr"

[shocks.manufacturing_downturn]
probability = [0.0, 0.3]

[priors."pooling.company_growth_effect"]
sigma = [{file_sigma}, 0.12]
"""


@pytest.mark.slow
def test_prior_sweep_refits_once_per_worker_and_matches_serially(cluster, universe, tmp_path):
    """Two prior settings x two shock settings on ToyCo's saved run: every prior setting is
    refitted on the cluster (one compiled model for both settings' values), the results equal
    the serial reference exactly, the file's own values reproduce the run exactly, the draws
    land in one store, and resuming redoes only what is missing."""
    import xarray as xr
    from stforecast.results import load_results
    from stforecast.sweep import base_from_results
    _, client = cluster
    _, _, out = universe
    results = load_results(out / "toyco")
    base = base_from_results(results)
    file_sigma = base.priors.pooling["company_growth_effect"].params["sigma"]
    path = _write(tmp_path / "prior.toml", PRIOR_SWEEP.format(file_sigma=file_sigma))
    spec = load_sweep(path, base.shocks.shocks, base.priors)
    base = base_from_results(results, spec)
    on_cluster = run_sweep(base, spec, tmp_path / "c", client, per_task=1)
    # compiled driver models held per worker (the calibration's refitter, its observations as
    # data, may be there too): one for both prior settings
    models = client.run(lambda: sum(len(c.meta["data"]) == 1 for c in
                                    __import__("stforecast.compiled").compiled._PROCESS.values()))
    assert all(n <= 1 for n in models.values()) and sum(models.values()) >= 1
    serial = run_sweep(base, spec, tmp_path / "s", per_task=3, chart=False)
    assert serial == on_cluster  # exact: every float of every summary and diagnostic
    assert all("fit" in r["summary"] and "rhat_max" in r["summary"]["fit"] for r in serial)
    by = {tuple(r["setting"].values()): r["summary"] for r in serial}
    # the prior matters: a wider pooled-growth prior moves the forecast
    assert by[(0.0, file_sigma)]["revenue"] != by[(0.0, 0.12)]["revenue"]
    # common random numbers within a prior setting: the shock lowers the odds
    for sigma in (file_sigma, 0.12):
        assert by[(0.3, sigma)]["p_upside"]["value"] < by[(0.0, sigma)]["p_upside"]["value"]
    # the file's own value refits the run's model (the same compiled model, the same values
    # and seed): the run's posterior bit for bit, so the same summary
    shock_only = load_sweep(_write(tmp_path / "shock.toml", PRIOR_SWEEP.split("[priors")[0]
                                   .replace('draws_store = "draws.zarr"', "")),
                            base.shocks.shocks, base.priors)
    run_rows = run_sweep(base_from_results(results, shock_only), shock_only, tmp_path / "r",
                         chart=False)
    for r in run_rows:
        p = r["setting"]["manufacturing_downturn.probability"]
        assert by[(p, file_sigma)]["p_upside"] == r["summary"]["p_upside"]
    store = xr.open_zarr(tmp_path / "c" / "draws.zarr").load()
    assert store.sizes["setting"] == 4
    assert list(store["priors.pooling.company_growth_effect.sigma"].values) == [
        s["priors.pooling.company_growth_effect.sigma"] for s in spec.settings()]
    xr.testing.assert_identical(xr.open_zarr(tmp_path / "s" / "draws.zarr").load()
                                .drop_attrs(deep=False), store.drop_attrs(deep=False))
    assert "fit_ok" in (tmp_path / "c" / "sweep.csv").read_text().splitlines()[0]
    # resume: one setting missing -> one task, the other settings untouched
    (tmp_path / "c" / "settings" / "00001.json").unlink()
    tasks = []
    again = run_sweep(base, spec, tmp_path / "c", client, per_task=1,
                      on_result=lambda d, t: tasks.append(t))
    assert tasks == [1] and again == on_cluster
