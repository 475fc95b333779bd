"""``stforecast run``: reproducible with a seed, atomic, and a summary with every promised key."""

import json

import pytest
import xarray as xr

from stforecast import run as run_module
from stforecast.engine import REPORTED_LINES
from stforecast.fit import FitSettings
from stforecast.priors import PriorsError, default_priors_path
from stforecast.run import RunSettings, run_forecast

SMALL = RunSettings(seed=5, paths=2000, report=False,
                    fit=FitSettings(draws=150, tune=200, chains=2, prior_draws=100))
STATS = {"mean", "q05", "q25", "q50", "q75", "q95"}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "results"
    run_forecast(out, default_priors_path(), SMALL, log=lambda m: None)
    return out


def test_summary_has_every_promised_key(small_run):
    s = json.loads((small_run / "summary.json").read_text())
    for name in REPORTED_LINES:
        assert set(s[name]) == {"FY21", "FY22", "FY23"}, name
        assert all(set(v) == STATS for v in s[name].values())
    for name in ("cash_burn_fy21_fy23", "target_price_hkd"):
        assert set(s[name]) >= STATS
    assert set(s["p_upside"]) >= {"value", "mcse"} and 0 <= s["p_upside"]["value"] <= 1
    assert set(s["diagnostics"]) >= {"rhat_max", "ess_bulk_min", "ess_tail_min", "divergences"}
    assert s["seed"] == 5 and len(s["priors_sha256"]) == 64 and "pymc" in s["versions"]
    assert s["headline_scenario"] == "risk-weighted" and len(s["scenarios_sha256"]) == 64
    for name, block in s["scenarios"].items():
        assert set(block["revenue"]["FY23"]) == STATS and "p_upside" in block, name
    # the headline keys are the risk-weighted scenario's
    assert s["scenarios"]["risk-weighted"]["target_price_hkd"] == s["target_price_hkd"]
    assert {e["shock"] for e in s["shocks"]} >= {"us_restrictions", "public_sector_squeeze"}
    for key in ("revenue_fy23", "target_price_hkd"):
        drivers = [e["driver"] for e in s["sensitivity"][key]]
        assert "shock_us_restrictions" in drivers and "gross_margin" in drivers
    # a tiny fit misses the ESS bar: it must say so, not hide it
    assert s["ok"] is False and any("ESS" in r for r in s["reasons"])


def test_forecast_nc_loads_with_xarray_alone(small_run):
    pp = xr.open_dataset(small_run / "forecast.nc", group="posterior_predictive",
                         engine="h5netcdf")
    assert set(pp["revenue"].dims) == {"scenario", "chain", "draw", "path", "year"}
    assert list(pp["scenario"].values) == ["base", "risk-weighted", "us-restrictions",
                                           "public-sector-squeeze", "combined-stress"]
    assert "shock_us_restrictions" in pp and "scenario" not in xr.open_dataset(
        small_run / "forecast.nc", group="prior_predictive", engine="h5netcdf").dims
    assert pp["revenue"].dtype == "float32"
    assert pp.sizes["chain"] * pp.sizes["draw"] * pp.sizes["path"] >= 2000
    for group in ("posterior", "prior", "sample_stats", "observed_data", "prior_predictive"):
        xr.open_dataset(small_run / "forecast.nc", group=group, engine="h5netcdf")


def test_same_seed_same_summary(small_run, tmp_path):
    again = tmp_path / "again"
    run_forecast(again, default_priors_path(), SMALL, log=lambda m: None)
    assert (again / "summary.json").read_text() == (small_run / "summary.json").read_text()


def test_failed_run_leaves_previous_results_intact(tmp_path, monkeypatch):
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text('{"previous": true}')
    bad = tmp_path / "bad.toml"
    bad.write_text(default_priors_path().read_text().replace('dist = "Beta"', 'dist = "Bta"', 1))
    with pytest.raises(PriorsError):
        run_forecast(out, bad, SMALL, log=lambda m: None)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("interrupted while writing")

    monkeypatch.setattr(run_module, "write_forecast_nc", boom)
    with pytest.raises(KeyboardInterrupt):
        run_forecast(out, default_priors_path(), SMALL, log=lambda m: None)
    assert (out / "summary.json").read_text() == '{"previous": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "results"]


def test_bad_scenarios_file_fails_before_fitting_and_keeps_results(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text('{"previous": true}')
    bad = tmp_path / "scenarios.toml"
    bad.write_text("[shocks.x]\nprobability = 0.1\n[scenarios.risk-weighted]\n")
    from stforecast.shocks import ScenariosError
    with pytest.raises(ScenariosError, match="shocks.x.severity"):
        run_forecast(out, default_priors_path(), SMALL, log=lambda m: None, scenarios_path=bad)
    assert (out / "summary.json").read_text() == '{"previous": true}'


def test_scenarios_and_sensitivity_commands(small_run, capsys):
    from stforecast.cli import main
    assert main(["scenarios", "--results", str(small_run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["scenario"] for r in rows][:2] == ["base", "risk-weighted"]
    assert set(rows[0]) == {"scenario", "revenue_fy23", "cash_burn_fy21_fy23", "cash_fy23",
                            "target_price_hkd", "p_upside"}
    assert main(["scenarios", "--results", str(small_run)]) == 0
    assert "combined-stress" in capsys.readouterr().out
    assert main(["sensitivity", "revenue[FY23]", "--results", str(small_run), "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    scores = [abs(e["score"]) for e in ranked]
    assert scores == sorted(scores, reverse=True) and len(ranked) == 15
    assert main(["sensitivity", "revenu[FY23]", "--results", str(small_run)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["scenarios", "--results", str(small_run / "nowhere")]) == 2
