"""``stforecast run``: reproducible with a seed, atomic, and results that follow the contract
(``stforecast.results``): a typed, versioned summary.json and forecast.nc root attributes that
name the company, seed and settings and carry every input file's text and hash."""

import dataclasses
import hashlib
import inspect
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from log_capture import Messages
from stforecast import run as run_module
from stforecast.company import load_company
from stforecast.errors import ResultsError, StforecastError
from stforecast.fit import FitSettings
from stforecast.priors import PriorsError
from stforecast.query import QueryError
from stforecast.registry import (HEADLINE_SCENARIO, QUANTILES, REPORTED_LINES, REPORTED_SCALARS,
                                 SCHEMA_VERSION)
from stforecast.results import Stats, Summary, load_results
from stforecast.resimulation import recompute
from stforecast.run import RunSettings, resimulate, run_forecast

SMALL = RunSettings(seed=5, paths=2000, report=False,
                    fit=FitSettings(draws=200, tune=200, chains=2, prior_draws=100))
YEARS = ["FY21", "FY22", "FY23"]


@pytest.fixture(scope="session")
def company():
    return load_company("sensetime")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, company):
    out = tmp_path_factory.mktemp("res") / "sensetime"
    log, handler = logging.getLogger("stforecast"), Messages()
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        summary = run_forecast(out, company, SMALL)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    RUN_LOG[:] = handler.messages
    return out, summary


RUN_LOG: list[str] = []


# --- summary.json ---------------------------------------------------------------------------------
def test_summary_has_every_promised_key(small_run, company):
    out, returned = small_run
    raw = json.loads((out / "summary.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION
    s = load_results(out).summary
    assert s == returned
    for name in company.reported_lines(REPORTED_LINES):
        assert set(s.headline.lines[name]) == set(YEARS), name
        assert all(v.mean is not None for v in s.headline.lines[name].values())
        assert set(raw[name]) == set(YEARS), name  # at the top level of the JSON
    for name in REPORTED_SCALARS:
        assert s.headline.scalars[name].mean is not None, name
    assert s.headline.scalars["sales_cagr"].mean is None
    assert 0 <= s.headline.p_upside.value <= 1 and s.headline.p_upside.n >= 2000
    assert s.seed == 5 and len(s.priors_sha256) == 64 and "pymc" in s.versions
    assert s.headline_scenario == HEADLINE_SCENARIO and len(s.scenarios_sha256) == 64
    assert s.settings.paths == 2000 and s.settings.draws == 200
    for name, block in s.scenarios.items():
        assert set(block.lines["revenue"]["FY23"].__dict__) == {"mean", *QUANTILES}, name
        assert block.description and set(block.valuation_methods) == {"report",
                                                                      "peer-regression"}
    # the headline is the risk-weighted scenario, written at the top level as well
    assert raw["target_price"] == raw["scenarios"]["risk-weighted"]["target_price"]
    assert {e.shock for e in s.shocks} >= {"us_restrictions", "public_sector_squeeze"}
    for key in ("revenue", "target_price"):
        drivers = [e.driver for e in s.sensitivity[key].ranking]
        assert "shock_us_restrictions" in drivers and "gross_margin" in drivers
    assert s.sensitivity["revenue"].year == "FY23" and s.sensitivity["target_price"].year is None
    assert s.report_percentiles.revenue.report == 8825 and s.report_percentiles.revenue.year == "FY23"
    assert s.periods.cash_burn == "FY21-FY23" and s.periods.sales_cagr == "FY20-FY23"
    # a tiny fit misses the ESS bar: it must say so, not hide it
    assert s.ok is False and any("ESS" in r for r in s.reasons)


def test_results_name_their_company(small_run, company):
    out, _ = small_run
    c = load_results(out).summary.company
    assert (c.key, c.name, c.ticker) == ("sensetime", company.name, company.ticker)
    assert (c.currency, c.price_currency, c.price) == ("RMB", "HKD", company.market.price)
    assert c.forecast_years == tuple(company.forecast_years) and c.final_year == "FY23"
    assert c.segments == tuple(company.segment_names)
    # the company's files, and the base-rates file its priors' outside view read
    base_rates = company.folder.parent / "base_rates.toml"
    assert c.files == {**company.file_hashes(),
                       "base_rates": hashlib.sha256(base_rates.read_bytes()).hexdigest()}
    assert c.aliases() == {"target_price_hkd": "target_price"}


def test_summary_json_round_trips_exactly(small_run):
    out, _ = small_run
    text = (out / "summary.json").read_text()
    summary = Summary.from_json(text, out / "summary.json")
    assert summary.to_json() == text
    assert Summary.from_json(summary.to_json()) == summary


def test_the_stats_dataclass_has_the_registry_quantiles():
    assert [f.name for f in dataclasses.fields(Stats)] == ["mean", *QUANTILES]


def _error_line(text, tmp_path):
    (tmp_path / "summary.json").write_text(text)
    (tmp_path / "forecast.nc").write_bytes(b"")
    with pytest.raises(ResultsError) as info:
        load_results(tmp_path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "summary.json"))
    return message


def test_another_schema_or_a_bad_key_is_one_line(small_run, tmp_path):
    raw = json.loads((small_run[0] / "summary.json").read_text())
    message = _error_line(json.dumps({**raw, "schema_version": 1}), tmp_path)
    assert "schema_version" in message and f"expected {SCHEMA_VERSION}, got 1" in message
    message = _error_line(json.dumps({k: v for k, v in raw.items() if k != "schema_version"}),
                          tmp_path)
    assert "key 'schema_version'" in message
    missing = {k: v for k, v in raw.items() if k != "seed"}
    assert "key 'seed'" in _error_line(json.dumps(missing), tmp_path)
    assert "the key is missing" in _error_line(json.dumps(missing), tmp_path)
    bad = json.loads(json.dumps(raw))
    bad["scenarios"]["base"]["revenue"]["FY23"]["q50"] = "lots"
    assert "key 'scenarios.base.revenue.FY23.q50': expected a number" in _error_line(
        json.dumps(bad), tmp_path)
    bad = json.loads(json.dumps(raw))
    del bad["company"]["price_currency"]
    assert "key 'company.price_currency'" in _error_line(json.dumps(bad), tmp_path)
    bad = json.loads(json.dumps(raw))
    bad["target_price"]["q50"] += 1  # the top level must be the headline scenario's
    assert "differ" in _error_line(json.dumps(bad), tmp_path)
    assert "not valid JSON" in _error_line("{", tmp_path)
    # the old (schema 1) summary of the fixtures is refused in one line
    from pathlib import Path
    old = Path(__file__).parent / "fixtures" / "summary_schema1_sensetime.json"
    assert "schema_version" in _error_line(old.read_text(), tmp_path)


# --- forecast.nc ----------------------------------------------------------------------------------
def test_forecast_nc_root_attrs_carry_company_seed_settings_and_inputs(small_run, company):
    out, _ = small_run
    attrs = xr.open_datatree(out / "forecast.nc", engine="h5netcdf").attrs
    assert attrs["schema_version"] == SCHEMA_VERSION
    assert attrs["company"] == "sensetime" and attrs["company_name"] == company.name
    assert attrs["price_currency"] == "HKD" and attrs["seed"] == 5
    assert json.loads(attrs["settings"]) == {"paths": 2000, **dataclasses.asdict(SMALL.fit)}
    for name in ("company", "priors", "scenarios", "peers"):
        path, text = company.files[name]
        assert attrs[f"{name}_text"] == text, name
        assert attrs[f"{name}_sha256"] == hashlib.sha256(text.encode()).hexdigest(), name
        assert attrs[f"{name}_file"] == path
    provenance = load_results(out).provenance
    assert provenance.seed == 5 and set(provenance.inputs) == {"company", "priors", "scenarios",
                                                               "peers", "base_rates"}


def test_altered_or_missing_provenance_is_one_line(tmp_path):
    """The stored texts are checked against their hashes; results without them are refused."""
    import h5netcdf

    from results_folder import write_results_folder
    folder = write_results_folder(xr.Dataset(), tmp_path / "res")
    assert load_results(folder, ()).provenance.inputs["company"].text.startswith("#")
    with h5netcdf.File(folder / "forecast.nc", "a") as f:
        f.attrs["priors_text"] = f.attrs["priors_text"] + "\n# edited\n"
    with pytest.raises(ResultsError, match=r"forecast\.nc: key 'priors_sha256': expected the "
                                           r"sha256 of priors_text") as info:
        load_results(folder).company
    assert "\n" not in str(info.value)
    with h5netcdf.File(folder / "forecast.nc", "a") as f:
        del f.attrs["schema_version"]
    with pytest.raises(ResultsError, match=f"key .schema_version.: expected {SCHEMA_VERSION} in the file.s root"):
        load_results(folder).provenance


def test_forecast_nc_loads_with_xarray_alone(small_run):
    out, _ = small_run
    pp = xr.open_dataset(out / "forecast.nc", group="posterior_predictive", engine="h5netcdf")
    assert set(pp["revenue"].dims) == {"scenario", "chain", "draw", "path", "year"}
    assert list(pp["scenario"].values) == ["risk-weighted"]  # the headline; others recomputed
    assert "shock_us_restrictions" in pp and "scenario" not in xr.open_dataset(
        out / "forecast.nc", group="prior_predictive", engine="h5netcdf").dims
    assert pp["revenue"].dtype == "float32"
    assert pp.sizes["chain"] * pp.sizes["draw"] * pp.sizes["path"] >= 2000
    for group in ("posterior", "prior", "sample_stats", "observed_data", "prior_predictive",
                  "peer_posterior"):
        xr.open_dataset(out / "forecast.nc", group=group, engine="h5netcdf")


def test_results_are_self_contained(small_run, tmp_path):
    """A copied results folder whose company folder is gone: the company, the draws and a
    re-simulation come from the folder alone."""
    out, summary = small_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    raw = json.loads((copy / "summary.json").read_text())
    raw["company"]["folder"] = str(tmp_path / "gone" / "sensetime")
    (copy / "summary.json").write_text(json.dumps(raw, indent=1) + "\n")
    results = load_results(copy)
    assert results.company.key == "sensetime" and not results.company.folder.exists()
    assert results.company.segment_names == list(summary.company.segments)
    draws = results.draws(scenario="base")
    assert "scenario" not in draws.dims and draws.attrs["price_currency"] == "HKD"
    summaries, predictive = resimulate(results)
    assert list(summaries) == list(summary.scenarios)
    assert predictive.sizes["scenario"] == len(summary.scenarios)
    for name, block in summaries.items():  # the posterior is stored exactly: the run's draws
        assert block.to_dict() == summary.scenarios[name].to_dict(), name


# --- driver paths kept in the cache (stored_paths) ---------------------------------------------
def test_a_resimulation_reads_its_driver_paths_back_with_the_same_numbers(small_run, tmp_path,
                                                                          monkeypatch):
    """Without the cache, the first re-simulation with it (which draws the driver paths and
    stores them) and the next (which reads them back, draws none, and puts the random generator
    where the drawing left it): every scenario's statistics are the run's, all three times."""
    from stforecast import stored_paths

    out, summary = small_run
    monkeypatch.setenv("STFORECAST_CACHE", str(tmp_path))
    expected = {name: block.to_dict() for name, block in summary.scenarios.items()}
    plain, _ = resimulate(out, keep_draws=False, cache=False)
    assert not (tmp_path / "paths").exists()
    drawn, _ = resimulate(out, keep_draws=False)
    assert len(list((tmp_path / "paths").glob("paths-*.fit"))) == 1

    def no_drawing(*args, **kwargs):
        raise AssertionError("the driver paths were drawn again")

    monkeypatch.setattr(stored_paths, "driver_paths", no_drawing)
    read, _ = resimulate(out, keep_draws=False)
    for got in (plain, drawn, read):
        assert {name: block.to_dict() for name, block in got.items()} == expected


def test_the_driver_paths_key_follows_what_the_paths_depend_on(small_run):
    from stforecast.observations import observations_from_company
    from stforecast.resimulation import _Saved
    from stforecast.stored_paths import paths_key

    saved = _Saved(small_run[0], cache=False)
    spec, company = saved.spec, saved.company
    base_args = dict(params=saved.posterior.astype("float64"), company=company,
                     obs=observations_from_company(company), n_paths=saved.per_draw,
                     rng=np.random.default_rng(saved.seed), ceilings=spec.ceilings(),
                     priors=spec, growth_settings=saved.growth)

    def key(**change):
        return paths_key(**{**base_args, **change})

    base = key()
    assert key() == base
    posterior = base_args["params"].copy(deep=True)
    name = next(iter(posterior.data_vars))
    posterior[name].values.flat[0] += 1e-9
    first = next(iter(spec.costs))
    other_prior = dataclasses.replace(spec.costs[first], params={
        **spec.costs[first].params, "mu": spec.costs[first].params["mu"] + 1e-6})
    text = company.files["company"]
    changed = [key(params=posterior), key(n_paths=saved.per_draw + 1),
               key(rng=np.random.default_rng(saved.seed + 1)),
               key(priors=dataclasses.replace(spec, costs={**spec.costs, first: other_prior})),
               key(growth_settings=dataclasses.replace(saved.growth,
                                                       weight=saved.growth.weight + 0.01)),
               key(company=dataclasses.replace(company, files={
                   **company.files, "company": (text[0], text[1] + "\n")}))]
    assert len({base, *changed}) == 1 + len(changed)
    # where the files are, and the priors' documentation, are not what the paths depend on
    moved = dataclasses.replace(spec, path="elsewhere/priors.toml", sha256="0" * 64,
                                outside_view=dataclasses.replace(
                                    spec.outside_view, base_rates="/elsewhere/base_rates.toml"))
    assert key(priors=moved) == base
    assert paths_key(**{**base_args, "company": dataclasses.replace(company, files={})}) is None


def test_a_run_keeps_the_driver_paths_a_resimulation_of_it_reads(small_run):
    """The run's posterior predictive stored (or read) its driver paths under the key that a
    re-simulation of its results computes."""
    from stforecast.observations import observations_from_company
    from stforecast.resimulation import _Saved
    from stforecast.stored_paths import paths_key

    saved = _Saved(small_run[0], cache=False)
    key = paths_key(saved.posterior.astype("float64"), saved.company,
                    observations_from_company(saved.company), saved.per_draw,
                    np.random.default_rng(saved.seed), saved.spec.ceilings(), saved.spec,
                    saved.growth)
    assert any(f"paths-{key}.fit" in m and "driver paths" in m for m in RUN_LOG), RUN_LOG


def test_driver_paths_that_cannot_be_stored_cost_a_warning_not_the_command(small_run, tmp_path):
    from stforecast.cache import FitCache
    from stforecast.resimulation import _Saved
    from stforecast.stored_paths import StoredPaths

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    saved = _Saved(small_run[0], cache=False)
    saved.paths = StoredPaths(FitCache(blocker / "paths"))
    log, handler = logging.getLogger("stforecast"), Messages()
    log.addHandler(handler)
    try:
        got = saved.simulate(saved.scenarios, variables=["revenue"])
    finally:
        log.removeHandler(handler)
    assert any("driver paths not stored" in m and str(blocker) in m for m in handler.messages)
    plain = _Saved(small_run[0], cache=False).simulate(saved.scenarios, variables=["revenue"])
    assert got["revenue"].values.tobytes() == plain["revenue"].values.tobytes()


def test_scenarios_not_stored_are_recomputed_exactly(small_run):
    """forecast.nc keeps the headline scenario's predictive draws; every other scenario is
    recomputed from the stored posterior, and what the headline's recomputation gives is exactly
    what the file holds (so the others are what the file would have held)."""
    out, summary = small_run
    results = load_results(out)
    stored = results.draws(scenario="risk-weighted").load()
    again = recompute(results, ["risk-weighted"]).isel(scenario=0)
    xr.testing.assert_identical(again.drop_attrs(), stored.drop_attrs().drop_encoding())
    every = results.draws()
    assert list(every["scenario"].values) == list(summary.scenarios)
    assert every["revenue"].dtype == "float32"
    xr.testing.assert_equal(every.sel(scenario="risk-weighted"), stored)
    one = results.draws(scenario="us-restrictions")
    xr.testing.assert_equal(one, every.sel(scenario="us-restrictions"))
    assert not np.array_equal(one["revenue"].values, stored["revenue"].values)
    with pytest.raises(QueryError, match="unknown scenario 'nope'; valid scenarios: base, "):
        results.draws(scenario="nope")


@pytest.mark.slow
def test_same_seed_same_summary(small_run, tmp_path, company):
    again = tmp_path / "again"
    run_forecast(again, company, dataclasses.replace(SMALL, refit=True))  # a fit, not the cache
    assert (again / "summary.json").read_text() == (small_run[0] / "summary.json").read_text()


# --- atomic writes and early checks -----------------------------------------------------------------
def test_failed_run_leaves_previous_results_intact(tmp_path, monkeypatch, company):
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text('{"previous": true}')
    bad = tmp_path / "bad.toml"
    bad.write_text(company.priors_path.read_text().replace('dist = "Beta"', 'dist = "Bta"', 1))
    with pytest.raises(PriorsError):
        run_forecast(out, company, SMALL, priors_path=bad)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing")

    monkeypatch.setattr(run_module, "write_results", boom)
    with pytest.raises(KeyboardInterrupt):
        run_forecast(out, company, SMALL)  # the small run's fit: a hit of the session's fit cache
    assert (out / "summary.json").read_text() == '{"previous": true}'
    # no staging folder left; the lock file stays (the kernel's lock died with the run)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".results.lock", "bad.toml", "results"]


def test_bad_scenarios_file_fails_before_fitting_and_keeps_results(tmp_path, company):
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text('{"previous": true}')
    bad = tmp_path / "scenarios.toml"
    bad.write_text("[shocks.x]\nprobability = 0.1\n[scenarios.risk-weighted]\n")
    with pytest.raises(StforecastError, match="shocks.x.severity"):
        run_forecast(out, company, SMALL, scenarios_path=bad)
    assert (out / "summary.json").read_text() == '{"previous": true}'


# --- the commands on saved results ------------------------------------------------------------------
def test_scenarios_and_sensitivity_commands(small_run, capsys):
    from stforecast.cli import main
    out, summary = small_run
    assert main(["scenarios", "--results", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["scenario"] for r in rows][:2] == ["base", "risk-weighted"]
    assert set(rows[0]) == {"scenario", "revenue_fy23", "cash_burn", "cash_fy23",
                            "target_price", "p_upside"}
    assert rows[1]["target_price"]["q50"] == summary.headline.scalars["target_price"].q50
    assert main(["scenarios", "--results", str(out)]) == 0
    text = capsys.readouterr().out
    assert "combined-stress" in text and "RMB mn, target price HKD" in text
    assert main(["sensitivity", "revenue[FY23]", "--results", str(out), "--json",
                 "--rank"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    scores = [abs(e["score"]) for e in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == 15
    # the command ranks as the summary does (the company's unit drivers at their level)
    saved = [(e.driver, e.score) for e in summary.sensitivity["revenue"].ranking][:15]
    # (the summary ranks the run's float64 draws, the command the stored ones, rounded to 13
    # mantissa bits: scores agree to the storage precision, not always to their 4th decimal)
    assert [e["driver"] for e in ranked] == [d for d, _ in saved]
    assert np.allclose([e["score"] for e in ranked], [s for _, s in saved], atol=5e-4)
    assert main(["sensitivity", "target_price_hkd", "--results", str(out), "--json",
                 "--rank"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["driver"] == "ev_sales_multiple"
    # the tornado (the default view) is the summary's, in the outcome's units
    assert main(["sensitivity", "revenue[FY23]", "--results", str(out), "--json"]) == 0
    tornado = json.loads(capsys.readouterr().out)
    saved = summary.sensitivity["revenue"].tornado
    # the draws are stored rounded (about 4 significant digits): medians agree to 1e-3
    assert tornado["median"] == pytest.approx(saved.median, rel=1e-3)
    assert tornado["units"] == "RMB mn"
    by_driver = {e.driver: e for e in saved.entries}
    assert len(tornado["entries"]) == 15
    # The rounding moves a few of the 200 paths of a band across its edge (ties): the bands'
    # medians agree to 2% of the outcome's median; the order may swap near-equal swings.
    for e in tornado["entries"]:
        s = by_driver[e["driver"]]
        assert (e["low"], e["high"]) == pytest.approx((s.low, s.high),
                                                      abs=0.02 * abs(saved.median)), e["driver"]
    assert all("_" not in e["label"] for e in tornado["entries"])
    assert main(["sensitivity", "--results", str(out)]) == 0
    assert "Tornado of target_price [HKD per share], scenario risk-weighted" in \
        capsys.readouterr().out
    assert main(["sensitivity", "revenu[FY23]", "--results", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["scenarios", "--results", str(out / "nowhere")]) == 2


def test_scenarios_command_does_not_import_pymc(small_run, company):
    """A what-if re-simulation on saved results (``stforecast scenarios --scenarios FILE``)
    needs no model: PyMC, PyTensor and ArviZ stay unloaded (they cost seconds to import)."""
    import subprocess
    import sys

    out, _ = small_run
    code = ("import sys, json\nfrom stforecast.cli import main\n"
            f"rc = main(['scenarios', '--scenarios', {str(company.scenarios_path)!r}, "
            f"'--results', {str(out)!r}, '--json'])\n"
            "print(json.dumps([rc, sorted(m for m in ('pymc', 'pytensor', 'arviz', 'nutpie') "
            "if m in sys.modules)]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    rc, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 0 and heavy == []


def test_scenarios_command_takes_a_file_of_only_new_scenarios(small_run, company, tmp_path,
                                                              capsys):
    """``stforecast scenarios --scenarios FILE`` with a file that holds only a new scenario (the
    README's example: laid over the company's scenarios) re-simulates the run's scenarios and
    the new one (its memory check read the file alone and refused it)."""
    from stforecast.cli import main
    from stforecast.scenarios import load_scenarios

    out, summary = small_run
    shock = next(iter(load_scenarios(company.scenarios_path, company).shocks))
    path = tmp_path / "mine.toml"
    path.write_text(f'[scenarios.mine]\ndescription = "a test"\ndefault = 0.1\n'
                    f'shocks = {{ {shock} = "{company.forecast_years[-1]}" }}\n')
    assert main(["scenarios", "--scenarios", str(path), "--results", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    rows = json.loads(printed.out)  # with --json, stdout is the JSON alone; progress on stderr
    assert [row["scenario"] for row in rows] == list(summary.scenarios) + ["mine"]
    assert "[stforecast] scenario 1/" in printed.err


def test_read_group_has_the_values_xarray_reads(small_run):
    """``Results.read_group`` (h5py, for the re-simulation) gives the variables, coordinates,
    dtypes and values bit for bit that ``draws(group).load()`` gives, for plain groups and for
    one it leaves to xarray (booleans stored as integers)."""
    out, _ = small_run
    results = load_results(out, ())
    for group in ("posterior", "peer_posterior", "sample_stats"):
        fast, slow = results.read_group(group), results.draws(group).load()
        assert list(fast.data_vars) == list(slow.data_vars)
        assert list(fast.coords) == list(slow.coords)
        for name, var in slow.variables.items():
            assert fast[name].dims == var.dims and fast[name].dtype == var.dtype
            assert fast[name].values.tobytes() == var.values.tobytes()


def test_query_command_on_a_run(small_run, capsys):
    from stforecast.cli import main
    out, summary = small_run
    # p_upside is P(value per diluted share today > price) (summary "upside")
    assert summary.upside.variable == "value_today"
    assert main(["query", "P(value_today > 6.73)", "--results", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"expression": "P(value_today > 6.73)", "scenario": "risk-weighted",
                      "value": summary.headline.p_upside.value,
                      "mcse": pytest.approx(summary.headline.p_upside.mcse, abs=1e-5),
                      "n": summary.headline.p_upside.n}


def test_run_command_exits_3_when_the_bar_is_missed(small_run, tmp_path, monkeypatch, capsys):
    """``stforecast run --strict`` prints the summary and exits 3, with the reasons on one line;
    without ``--strict`` the same line is a warning and the exit status 0."""
    from stforecast.cli import main
    out, summary = small_run
    calls = []

    def fake_run(folder, company, settings, priors_path=None, scenarios_path=None):
        calls.append((folder, company.key, settings))
        return summary

    monkeypatch.setattr(run_module, "run_forecast", fake_run)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--company", "sensetime", "--draws", "200", "--no-report",
                 "--strict"]) == 3
    folder, key, settings = calls[0]
    assert str(folder) == "results/sensetime" and key == "sensetime"
    assert settings.fit.draws == 200 and settings.seed == run_module.DEFAULT_SEED
    captured = capsys.readouterr()
    assert "P(value_today > 6.73) = " in captured.out and "FY23" in captured.out
    assert "P(raise money by) FY21" in captured.out
    assert captured.err.count("\n") == 1 and "; ".join(summary.reasons) in captured.err
    assert main(["run", "--no-report"]) == 0
    assert "WARNING: the fit misses the quality bar" in capsys.readouterr().err
    ok = dataclasses.replace(summary, ok=True, reasons=())
    monkeypatch.setattr(run_module, "run_forecast", lambda *a, **k: ok)
    assert main(["run", "--out", str(tmp_path / "x")]) == 0


def test_run_logs_through_logging(small_run):
    """Progress goes to the ``stforecast`` loggers (no print callback); the command line's
    handler adds the seconds since the start to each line."""
    # the small run's fit is fitted here, or read from the session's fit cache when the report
    # tests' identical run came first
    # (or the peer regression goes to a second process first, while the driver model compiles)
    assert RUN_LOG[0].startswith(("the model evaluates at the prior's centre",
                                  "driver model: fit read from the cache",
                                  "fitting the peer regression"))
    assert any(m.startswith("scenario 5/5: combined-stress") for m in RUN_LOG)
    assert RUN_LOG[-1].startswith(f"done: {small_run[0]}")
    assert "log" not in inspect.signature(run_forecast).parameters
    fitted = ({"trial_logp", "prior", "sampling"} if "sampling" in small_run[1].timings_s
              else {"fit_cache"})
    assert set(small_run[1].timings_s) >= fitted | {"predictive", "write", "total"}


def test_the_stored_variables_are_the_ones_a_run_writes(small_run, company):
    """``stored_names`` (what a sweep's draws store asks for) names exactly what forecast.nc
    holds: no registry entry for a variable the simulation no longer makes."""
    from stforecast.run import stored_names
    from stforecast.scenarios import load_scenarios
    out, _ = small_run
    names = set(stored_names(company, load_scenarios(company.scenarios_path, company)))
    assert names == set(load_results(out).draws().data_vars)


def test_the_fit_beside_a_driver_compile_is_this_process_s(tmp_path, monkeypatch, company):
    """While the driver model compiles its log-density, a second process (``run._fit_beside``)
    compiles its expand part, evaluates it at its prior's centre, fits the peer regression and
    draws the prior. Its evaluation and prior draws are this process's, its peer fit is the one
    this process makes, draw for draw, with the same diagnostics and leave-one-out check, and
    it lands in the fit cache. The
    second process is used only when the driver model is to be fitted and is not compiled yet,
    with nutpie, on two cores or more."""
    from stforecast.cache import FitCache
    from stforecast.compiled import PARTS, part_key
    from stforecast.model import build_model
    from stforecast.peers import load_peers
    from stforecast.preflight import trial_logp

    inputs = run_module.prepare(company)
    peers = load_peers(company.peers_path)
    settings, cache = SMALL, FitCache(tmp_path / "cache")
    monkeypatch.setattr(run_module, "is_stored", lambda key: False)
    monkeypatch.setattr(run_module, "_cores", lambda: 2)  # whatever machine runs the test
    assert run_module._fit_beside_pays(inputs, peers, settings, None)
    with run_module._fit_beside(inputs, peers, settings, cache) as beside:
        centre = beside.next_value()
        answer = beside.result()
    there, timings = answer["peers"], answer["timings"]
    assert timings["peers"] > 0 and timings["expand_beside"] > 0 and timings["prior"] > 0
    model = build_model(inputs.spec, inputs.obs, inputs.company)
    prior = run_module.sample_prior(model, settings.fit.prior_draws, settings.seed)
    for ds in (prior, answer["prior"]):
        ds.attrs.pop("created_at", None)
    xr.testing.assert_identical(answer["prior"], prior)  # this process's draws
    here_centre = trial_logp(model, str(inputs.priors_path), gradient=False)
    assert centre["logp"] == here_centre["logp"] and centre["where"] == here_centre["where"]
    assert all(np.array_equal(centre["point"][k], v) for k, v in here_centre["point"].items())
    from stforecast.cache import cache_dir
    expand = Path(cache_dir()) / "compiled" / part_key(run_module.driver_model_key(inputs),
                                                      PARTS[1])
    assert (expand / "wrappers.py").exists()  # stored, for this process to read
    here = run_module._peer_fit(peers, settings, None, {})
    for group in ("posterior", "sample_stats", "log_likelihood"):
        a, b = there[group].to_dataset(), here[group].to_dataset()
        for ds in (a, b):
            ds.attrs.pop("created_at", None)  # when each was made
        xr.testing.assert_identical(a, b)
    assert {k: v for k, v in there.attrs.items() if k != "wall_time_s"} == \
        {k: v for k, v in here.attrs.items() if k != "wall_time_s"}
    assert cache.path("peers", run_module.peer_fit_key(peers, settings)).exists()
    # not with the driver fit in the cache (unless refitting), nor with the driver model
    # compiled, nor with another sampler
    assert run_module._fit_beside_pays(inputs, peers, settings, cache)  # peers cached: still
    driver = cache.path("driver", run_module.driver_fit_key(inputs, settings))
    driver.parent.mkdir(parents=True, exist_ok=True)
    driver.write_bytes(b"")
    assert not run_module._fit_beside_pays(inputs, peers, settings, cache)
    assert run_module._fit_beside_pays(inputs, peers, dataclasses.replace(settings, refit=True),
                                       cache)
    assert not run_module._fit_beside_pays(
        inputs, peers, dataclasses.replace(settings, fit=FitSettings(sampler="pymc")), None)
    monkeypatch.setattr(run_module, "_cores", lambda: 1)  # one core: nothing to gain
    assert not run_module._fit_beside_pays(inputs, peers, settings, None)
    monkeypatch.setattr(run_module, "_cores", lambda: 2)
    monkeypatch.setattr(run_module, "is_stored", lambda key: True)
    assert not run_module._fit_beside_pays(inputs, peers, settings, None)
    with run_module._fit_beside(inputs, peers, settings, None) as beside:
        assert beside is None
    # where no process can be started, the fit is made in this one
    monkeypatch.setattr(run_module, "is_stored", lambda key: False)

    def cannot_start(job):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(run_module, "SideProcess", cannot_start)
    with run_module._fit_beside(inputs, peers, settings, None) as beside:
        assert beside is None


def test_the_second_process_s_refusal_of_the_priors_is_the_run_s(small_run, company):
    """When the second process evaluates the model at its prior's centre (``_fit_beside``) and
    finds the history impossible, the run stops with that one-line error when it checks the
    compiled model, and waits for no draws (the driver model compiled: ``small_run``)."""
    from stforecast.preflight import ModelCheckError, impossible_history

    class Beside:  # the second process's answers
        def next_value(self):
            return impossible_history("my/priors.toml", float("-inf"), ["inventory_days"])

        def result(self):
            pytest.fail("draws awaited from priors under which the history is impossible")

    inputs = run_module.prepare(company)
    with pytest.raises(ModelCheckError, match="my/priors.toml: .*inventory_days") as err:
        run_module._driver_fit(inputs, SMALL, None, {}, Beside())
    assert "\n" not in str(err.value)


def test_a_side_process_s_errors_reach_its_caller_in_one_line():
    """A job's error reaches ``next_value`` and ``result`` as raised there; a process that died
    is one line naming its exit status."""
    from stforecast.sideprocess import SideProcess

    with SideProcess("fit_beside") as side:
        side.send(None, None, None, None)  # not a run's inputs: the job fails at once
        with pytest.raises(AttributeError):
            side.next_value()
        with pytest.raises(AttributeError):
            side.result()
    with SideProcess("fit_beside") as side:
        side._proc.kill()
        side._proc.wait()
        side.send(None, None, None, None)
        with pytest.raises(StforecastError, match="process ended with exit status -9") as err:
            side.next_value()
        assert "\n" not in str(err.value)
        with pytest.raises(StforecastError, match="exit status -9"):
            side.result()


def test_a_side_process_runs_only_its_named_jobs():
    """``sideprocess.SideProcess`` runs the jobs of ``JOBS`` only; another name is refused in
    one line, before any process starts."""
    from stforecast.sideprocess import JOBS, SideProcess
    with pytest.raises(StforecastError, match=r"expected a job among \['fit_beside', "
                       r"'report'\], got 'os.system'") as err:
        SideProcess("os.system")
    assert "\n" not in str(err.value) and set(JOBS) == {"fit_beside", "report"}


def test_driver_paths_too_large_for_their_cache_are_drawn_and_not_kept(small_run, tmp_path):
    from stforecast.cache import FitCache
    from stforecast.resimulation import _Saved
    from stforecast.stored_paths import StoredPaths

    saved = _Saved(small_run[0], cache=False)
    saved.paths = StoredPaths(FitCache(tmp_path, max_bytes=1 << 20))  # paths: a few MB
    log, handler = logging.getLogger("stforecast"), Messages()
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        saved.simulate(saved.scenarios, variables=["revenue"])
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert any("driver paths not kept" in m for m in handler.messages), handler.messages
    assert list(tmp_path.iterdir()) == []
