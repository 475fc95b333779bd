"""Scenario overlays (issue 15, item 5): a user's file with only new scenarios (and shocks)
extends the company's; same name replaces, new names add; `default` takes any setting;
`check-scenarios`; `check-priors` on a scenarios file points at `check-scenarios`."""

import pytest

from stforecast.cli import main
from stforecast.company import company_from_text, load_company
from stforecast.results import Provenance, Settings
from stforecast.scenarios import (ScenariosError, load_scenarios, load_user_scenarios,
                                  run_scenarios)

NEW_SHOCK = """
[shocks.gpu_ban]
label = "GPU export ban"
source = "a test shock"
probability_basis = "judgement (a test shock)"
severity_basis = "judgement (a test shock)"
probability = { dist = "Beta", range = [0.05, 0.20] }
severity = { dist = "LogNormal", range = [0.5, 1.5] }
persistence = 0.9
[shocks.gpu_ban.channels]
gross_margin = -0.05
"""
NEW_SCENARIO = """
[scenarios.gpu-ban]
description = "the ban in the second forecast year, every other shock at 0.3 a year"
default = 0.3
shocks = { gpu_ban = "%s" }
"""


@pytest.fixture(scope="module")
def company():
    return load_company("sensetime")


def _write(tmp_path, text, name="mine.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_only_a_new_scenario_extends_the_shipped_ones(tmp_path, company):
    year = company.forecast_years[1]
    shipped = load_scenarios(company.scenarios_path, company)
    path = _write(tmp_path, NEW_SHOCK + NEW_SCENARIO % year)
    with pytest.raises(ScenariosError, match="expected a non-empty table|headline"):
        load_scenarios(path, company)  # alone, the file is not a complete scenarios file
    spec = load_user_scenarios(path, company)
    assert list(spec.shocks) == list(shipped.shocks) + ["gpu_ban"]
    assert list(spec.scenarios) == list(shipped.scenarios) + ["gpu-ban"]
    new = spec.scenarios["gpu-ban"].settings
    assert new["gpu_ban"].year == year
    assert {s.probability for k, s in new.items() if k != "gpu_ban"} == {0.3}  # default = 0.3
    for name, sc in shipped.scenarios.items():  # kept; the new shock follows their default
        for shock, setting in sc.settings.items():
            assert spec.scenarios[name].settings[shock] == setting
    assert spec.scenarios["risk-weighted"].settings["gpu_ban"].probability == "prior"
    assert spec.scenarios["base"].settings["gpu_ban"].probability == 0.0


def test_a_scenario_of_the_same_name_replaces_and_a_scenario_without_shocks(tmp_path, company):
    only_scenario = '[scenarios.base]\ndescription = "mine"\ndefault = "prior"\n'
    spec = load_user_scenarios(_write(tmp_path, only_scenario), company)
    shipped = load_scenarios(company.scenarios_path, company)
    assert list(spec.scenarios) == list(shipped.scenarios)
    assert spec.scenarios["base"].description == "mine"
    assert {s.probability for s in spec.scenarios["base"].settings.values()} == {"prior"}
    assert spec.scenarios["risk-weighted"] == shipped.scenarios["risk-weighted"]


def test_standalone_file_and_the_shipped_file_itself(tmp_path, company):
    standalone = "[meta]\noverlay = false\n" + NEW_SHOCK + NEW_SCENARIO % "FY22"
    with pytest.raises(ScenariosError, match="risk-weighted"):
        load_user_scenarios(_write(tmp_path, standalone), company)
    with pytest.raises(ScenariosError, match=r"meta.overlay': expected true .* or false"):
        load_user_scenarios(_write(tmp_path, '[meta]\noverlay = "no"\n'), company)
    own = load_user_scenarios(company.scenarios_path, company)
    assert own == load_scenarios(company.scenarios_path, company)


def test_bad_default_names_the_forms(tmp_path, company):
    bad = '[scenarios.x]\ndefault = "sometimes"\n'
    with pytest.raises(ScenariosError, match=r"mine.toml: key 'scenarios.x.default': expected "
                                             r"\"off\", \"prior\", a year"):
        load_user_scenarios(_write(tmp_path, bad), company)


def test_a_run_with_an_overlay_stores_what_it_read(tmp_path, company):
    """The results keep the user's file and the company's own (``scenarios_base``), so a
    re-simulation reads exactly the run's scenarios without the company folder."""
    path = _write(tmp_path, NEW_SHOCK + NEW_SCENARIO % "FY22")
    settings = Settings(paths=10, draws=1, tune=1, chains=1, target_accept=0.9, sampler="pymc",
                        prior_draws=1)
    provenance = Provenance.for_run(company, 1, settings, scenarios_path=path)
    assert provenance.inputs["scenarios"].path == str(path)
    assert provenance.inputs["scenarios_base"].text == company.scenarios_path.read_text()
    c = provenance.inputs["company"]
    stored = company_from_text(c.text, c.path, str(tmp_path / "elsewhere"),
                               files={k: (f.path, f.text) for k, f in provenance.inputs.items()})
    assert run_scenarios(stored) == load_user_scenarios(path, company)
    plain = Provenance.for_run(company, 1, settings)
    assert "scenarios_base" not in plain.inputs


def test_check_scenarios_command(tmp_path, capsys):
    path = _write(tmp_path, NEW_SHOCK + NEW_SCENARIO % "FY22")
    assert main(["check-scenarios", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid scenarios file" in out and "laid over" in out
    assert "gpu_ban (added): GPU export ban" in out
    assert "gpu-ban (added): gpu_ban occurs in FY22; the others probability 0.3 a year" in out
    assert "  risk-weighted: every shock at its prior probability" in out
    assert main(["check-scenarios", "--company", "toyco"]) == 0
    assert "risk-weighted" in capsys.readouterr().out
    bad = _write(tmp_path, '[scenarios.x]\nshocks = { nope = "off" }\n', "bad.toml")
    assert main(["check-scenarios", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.toml: key 'scenarios.x.shocks.nope'" in err


def test_check_priors_on_a_scenarios_file_points_at_check_scenarios(tmp_path, company, capsys):
    assert main(["check-priors", str(company.scenarios_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a scenarios file" in err and "check-scenarios" in err
    assert main(["check-scenarios", str(company.priors_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "check-priors" in err
