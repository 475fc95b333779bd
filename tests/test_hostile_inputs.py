"""Hostile inputs: every bad input is refused in ONE line on stderr, exit status 2, no traceback,
before any fit, and existing results stay byte-identical.

Cases cover priors, scenarios, company and peers files, actuals, command-line options and
queries. Each runs ``stforecast.cli.main`` in this process (a subprocess costs about a second of
imports) with stderr captured; a handful run the real console script to show no traceback
reaches a terminal. Nothing here fits: ``stforecast.run.fit_models`` and ``run_forecast`` are
replaced by functions that fail the test, so an input that slipped through validation would be
caught rather than fitted. The trial evaluation of the model (it builds PyTensor graphs, a few
seconds) is tested in the slow lane at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from results_folder import write_results_folder
from test_score import make_predictive

from stforecast import cli
from stforecast.registry import MAX_INPUT_BYTES, MAX_SCENARIOS, MAX_SHOCKS

ROOT = Path(__file__).resolve().parents[1]
TOYCO = ROOT / "priors" / "toyco"
PRIORS = (TOYCO / "priors.toml").read_text()
SCENARIOS = (TOYCO / "scenarios.toml").read_text()
COMPANY = (TOYCO / "company.toml").read_text()
PEERS = (TOYCO / "peers.toml").read_text()
BIG = "1" + "0" * 400      # OverflowError in float() before
HUGE = "1" + "0" * 4999    # beyond Python's int conversion limit before
LONG = "x" * 100_000       # echoed back in full before


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    """Internal-error logs go to the test's folder, never the user's."""
    monkeypatch.setenv("STFORECAST_STATE", str(tmp_path / "state"))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """An existing results folder (synthetic draws, a real summary.json)."""
    return write_results_folder(make_predictive(scenarios=["base", "risk-weighted", "bear"]),
                                tmp_path_factory.mktemp("existing") / "results")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def no_fit():
    """Fitting fails the test: validation must refuse every case before a fit."""
    import stforecast.run as run

    def refuse(*args, **kwargs):
        raise AssertionError("a hostile input reached the fit")
    saved = run.fit_models, run.run_forecast
    run.fit_models = run.run_forecast = refuse
    yield
    run.fit_models, run.run_forecast = saved


def special(tmp_path: Path, kind: str) -> str:
    """The path of a special or unusual file of ``kind``."""
    if kind == "fifo":
        path = tmp_path / "pipe.toml"
        os.mkfifo(path)
        return str(path)
    if kind == "folder":
        (tmp_path / "folder.toml").mkdir()
        return str(tmp_path / "folder.toml")
    if kind == "symlink-zero":
        (tmp_path / "zero.toml").symlink_to("/dev/zero")
        return str(tmp_path / "zero.toml")
    if kind == "too-big":
        path = tmp_path / "big.toml"
        path.write_text("# padding\n" * (MAX_INPUT_BYTES // 10 + 10))
        return str(path)
    if kind == "binary":
        path = tmp_path / "binary.toml"
        path.write_bytes(b"\xff\xfe\x00garbage\x80")
        return str(path)
    if kind == "newline-name":
        path = tmp_path / "bad\nname.toml"
        path.write_text("= broken")
        return str(path)
    if kind == "escape-name":
        path = tmp_path / "\x1b[31mred\x07.toml"
        path.write_text("= broken")
        return str(path)
    if kind == "missing":
        return str(tmp_path / "no-such-file.toml")
    if kind == "nul-name":
        return "bad\x00name.toml"
    return {"dev-zero": "/dev/zero", "dev-null": "/dev/null", "dev-urandom": "/dev/urandom",
            "root-folder": "/"}[kind]


SPECIAL = ["fifo", "folder", "symlink-zero", "too-big", "binary", "newline-name", "escape-name",
           "missing", "nul-name", "dev-zero", "dev-null", "dev-urandom", "root-folder"]


def call(argv: list[str], capsys) -> tuple[int, str]:
    """``cli.main(argv)`` in this process: (exit status, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    return code, capsys.readouterr().err


def assert_refused(argv, capsys, results: Path, expect: str | None = None) -> str:
    before = snapshot(results)
    code, err = call(argv, capsys)
    lines = err.splitlines()
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err
    assert len(err) <= 1400, len(err)
    assert lines[0].startswith("error: ")
    if expect is not None:
        assert expect in lines[0], lines[0]
    assert snapshot(results) == before
    return lines[0]


def replaced(text: str, old: str, new: str) -> str:
    """``text`` with the first ``old`` replaced; a section header (``[name]``) is matched at the
    start of a line only (comments may name a section too)."""
    if old.startswith("["):
        at = ("\n" + text).find("\n" + old)
        assert at >= 0, old
        return text[:at] + new + text[at + len(old):]
    assert old in text, old
    return text.replace(old, new, 1)


def write(tmp_path: Path, text: str | bytes, name: str) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# --- priors ----------------------------------------------------------------------------------------
LR = 'long_run = { dist = "Normal", range = [-0.06, 0.14] }'
POOL_MU, POOL_SIGMA = "mu = 0.0", "sigma = 0.04"
MARGIN = 'long_run = { dist = "Beta", range = [0.64, 0.76] }'
VOL = 'volatility = { dist = "LogNormal", range = [0.03, 0.20] }'
PERS = 'persistence = { dist = "Beta", alpha = 2, beta = 5 }'
EV = "range = [4.0, 8.5]"
PREMIUM = "range = [-0.20, 0.20]"

PRIOR_EDITS = {  # id -> (old, new, words the message must contain)
    "dist-list": (LR, LR.replace('"Normal"', '["Normal"]'), "growth.licences_revenue.long_run.dist"),
    "dist-number": (LR, LR.replace('"Normal"', "1"), "dist"),
    "dist-lowercase": (LR, LR.replace('"Normal"', '"normal"'), "one of"),
    "dist-unknown": (LR, LR.replace('"Normal"', '"Cauchy"'), "one of"),
    "dist-100kb": (LR, LR.replace('"Normal"', f'"{LONG}"'), "dist"),
    "int-401-digits": (POOL_MU, f"mu = {BIG}", "digits"),
    "int-5000-digits": (POOL_MU, f"mu = {HUGE}", "digits"),
    "int-20-digits": (POOL_MU, "mu = 12345678901234567890", "digits"),
    "mu-1e300": (POOL_MU, "mu = 1e300", "pooling.company_growth_effect"),
    "mu-nan": (POOL_MU, "mu = nan", "finite"),
    "mu-inf": (POOL_MU, "mu = inf", "finite"),
    "mu-minus-inf": (POOL_MU, "mu = -inf", "finite"),
    "mu-bool": (POOL_MU, "mu = true", "finite"),
    "mu-string": (POOL_MU, 'mu = "0.0"', "finite"),
    "mu-list": (POOL_MU, "mu = [0.0]", "finite"),
    "mu-table": (POOL_MU, "mu = { a = 1 }", "finite"),
    "mu-date": (POOL_MU, "mu = 1979-05-27", "finite"),
    "sigma-zero": (POOL_SIGMA, "sigma = 0", "sigma"),
    "sigma-negative": (POOL_SIGMA, "sigma = -1", "sigma"),
    "sigma-1e-300": (POOL_SIGMA, "sigma = 1e-300", "sigma"),
    "sigma-1e6": (POOL_SIGMA, "sigma = 1e6", "plausible range"),
    "sigma-1e7": (POOL_SIGMA, "sigma = 1e7", "magnitude"),
    "growth-sd-1e6": (LR, 'long_run = { dist = "Normal", mu = 0.05, sigma = 1e6 }',
                      "plausible range [-2, 2]"),
    "growth-mu-1e300": (LR, 'long_run = { dist = "Normal", mu = 1e300, sigma = 0.05 }',
                        "magnitude"),
    "growth-mu-50": (LR, 'long_run = { dist = "Normal", mu = 50, sigma = 0.05 }',
                     "plausible range"),
    "beta-range-unstartable": (MARGIN, MARGIN.replace("[0.64, 0.76]", "[1e-9, 2e-9]"),
                               "ratio.gross_margin.long_run"),
    "beta-range-reversed": (MARGIN, MARGIN.replace("[0.64, 0.76]", "[0.76, 0.64]"), "low < high"),
    "beta-range-one": (MARGIN, MARGIN.replace("[0.64, 0.76]", "[0.64]"), "two numbers"),
    "beta-range-three": (MARGIN, MARGIN.replace("[0.64, 0.76]", "[0.6, 0.7, 0.8]"), "two numbers"),
    "beta-range-string": (MARGIN, MARGIN.replace("[0.64, 0.76]", '"0.64-0.76"'), "two numbers"),
    "beta-range-nan": (MARGIN, MARGIN.replace("[0.64, 0.76]", "[nan, 0.76]"), "finite"),
    "beta-range-outside": (MARGIN, MARGIN.replace("[0.64, 0.76]", "[0.5, 1.5]"), "support"),
    "beta-range-nested": (MARGIN, MARGIN.replace("[0.64, 0.76]", "[[0.64], [0.76]]"), "finite"),
    "mass-above-one": (MARGIN, MARGIN.replace("] }", "], mass = 1.5 }"), "mass"),
    "mass-zero": (MARGIN, MARGIN.replace("] }", "], mass = 0 }"), "mass"),
    "mass-without-range": (PERS, PERS.replace(" }", ", mass = 0.9 }"), "mass"),
    "range-and-params": (MARGIN, MARGIN.replace("] }", "], alpha = 2 }"), "not both"),
    "extra-parameter": (LR, LR.replace("] }", "], foo = 1 }"), "foo"),
    "lognormal-negative-range": (VOL, VOL.replace("[0.03, 0.20]", "[-0.03, 0.20]"), "support"),
    "volatility-1e6": (VOL, VOL.replace("[0.03, 0.20]", "[0.03, 1e6]"), "volatility"),
    "volatility-normal": (VOL, 'volatility = { dist = "Normal", mu = 0.1, sigma = 0.01 }',
                          "positive"),
    "persistence-near-one": (PERS, 'persistence = { dist = "Beta", alpha = 100000, beta = 1 }',
                             "plausible range"),
    "persistence-alpha-1e7": (PERS, 'persistence = { dist = "Beta", alpha = 1e7, beta = 5 }',
                              "magnitude"),
    "persistence-normal": (PERS, 'persistence = { dist = "Normal", mu = 0.5, sigma = 0.1 }',
                           "(0, 1)"),
    "persistence-table-string": (PERS, 'persistence = "Beta(2, 5)"', "a table"),
    "ev-multiple-1e9": (EV, "range = [1e9, 2e9]", "plausible range [0.01, 500]"),
    "ev-multiple-tiny": (EV, "range = [1e-5, 2e-5]", "plausible range"),
    "peer-premium-wide": (PREMIUM, "range = [-100, 100]", "peer_premium"),
    "upper-1e300": ("upper = 0.13", "upper = 1e300", "ceiling"),
    "upper-negative": ("upper = 0.13", "upper = -1", "ceiling"),
    "upper-string": ("upper = 0.13", 'upper = "high"', "finite"),
    "upper-bool": ("upper = 0.13", "upper = true", "finite"),
    "mass-bool": (MARGIN, MARGIN.replace("] }", "], mass = true }"), "finite"),
    "method-list": ('method = "peer-regression"', 'method = ["report"]', "valuation.method"),
    "method-unknown": ('method = "peer-regression"', 'method = "magic"', "valuation.method"),
    "unknown-driver": ("[growth.licences_revenue]", "[growth.licences_revenue_x]", "known driver"),
    "driver-name-100kb": ("[growth.licences_revenue]", f"[growth.{LONG}]", "known driver"),
    "unknown-section": ("[meta]", "[magic]", "known section"),
    "observation-section": ("[meta]", "[observation]", "observation"),
    "source-number": ('[pooling.company_growth_effect]\ndist = "Normal"',
                      '[pooling.company_growth_effect]\ndist = "Normal"\nsource = 5', "source"),
    "uniform-reversed": (LR, 'long_run = { dist = "Uniform", lower = 0.2, upper = 0.1 }',
                         "upper"),
    "studentt-nu-zero": (LR, 'long_run = { dist = "StudentT", nu = 0, mu = 0, sigma = 0.1 }',
                         "nu"),
    "studentt-nu-tiny": (LR, 'long_run = { dist = "StudentT", nu = 0.01, mu = 0, sigma = 0.1 }',
                         "plausible range"),
    "syntax-error": ("[meta]", "[meta", "TOML syntax error"),
    "nesting-100": ("[meta]", "[meta]\ndeep = " + "[" * 100 + "]" * 100, "nested"),
    "nesting-5000": ("[meta]", "[meta]\ndeep = " + "[" * 5000 + "]" * 5000, "nested"),
}


@pytest.mark.parametrize("case", list(PRIOR_EDITS))
def test_priors_file(case, tmp_path, capsys, results, no_fit):
    old, new, expect = PRIOR_EDITS[case]
    path = write(tmp_path, replaced(PRIORS, old, new), "priors.toml")
    line = assert_refused(["run", "--company", "toyco", "--priors", path, "--out", results],
                          capsys, results, expect)
    assert str(path) in line or "priors.toml" in line


@pytest.mark.parametrize("kind", SPECIAL)
def test_priors_special_file(kind, tmp_path, capsys, results, no_fit):
    assert_refused(["run", "--company", "toyco", "--priors", special(tmp_path, kind),
                    "--out", results], capsys, results)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-big", "newline-name"])
def test_check_priors_special_file(kind, tmp_path, capsys, results):
    assert_refused(["check-priors", special(tmp_path, kind), "--company", "toyco"], capsys,
                   results)


def test_check_priors_empty_file(tmp_path, capsys, results):
    path = write(tmp_path, "", "priors.toml")
    assert_refused(["check-priors", path, "--company", "toyco", "--no-trial"], capsys, results,
                   "missing")


# --- scenarios -------------------------------------------------------------------------------------
DOWNTURN = "[shocks.manufacturing_downturn]"
DOWNTURN_SETTING = 'shocks = { manufacturing_downturn = "FY26" }'


def many(section: str, n: int) -> str:
    if section == "scenarios":
        return "".join(f'\n[scenarios.s{i}]\ndescription = "x"\n' for i in range(n))
    return "".join(f'\n[shocks.k{i}]\nsource = "x"\nprobability = {{ dist = "Beta", alpha = 2, '
                   f'beta = 20 }}\nseverity = {{ dist = "LogNormal", mu = 0, sigma = 0.3 }}\n'
                   f'persistence = 0.5\nchannels = {{ revenue = -0.1 }}\n' for i in range(n))


SCENARIO_EDITS = {
    "persistence-401-digits": ("persistence = 0.5", f"persistence = {BIG}", "digits"),
    "persistence-5000-digits": ("persistence = 0.5", f"persistence = {HUGE}", "digits"),
    "persistence-above-one": ("persistence = 0.5", "persistence = 1.5", "persistence"),
    "persistence-string": ("persistence = 0.5", 'persistence = "high"', "finite"),
    "persistence-nan": ("persistence = 0.5", "persistence = nan", "finite"),
    "persistence-bool": ("persistence = 0.5", "persistence = true", "finite"),
    "persistence-list": ("persistence = 0.5", "persistence = [0.5]", "finite"),
    "channel-1e300": ("licences_revenue = -0.25", "licences_revenue = 1e300", "plausible range"),
    "channel-401-digits": ("licences_revenue = -0.25", f"licences_revenue = -{BIG}", "digits"),
    "channel-below-minus-one": ("licences_revenue = -0.25", "licences_revenue = -3",
                                "plausible range"),
    "channel-days-1e6": ("trade_receivable_days = 15", "trade_receivable_days = 1e6",
                         "plausible range"),
    "channel-margin-5": ("gross_margin = -0.01", "gross_margin = 5", "plausible range"),
    "channel-nan": ("licences_revenue = -0.25", "licences_revenue = nan", "finite"),
    "channel-inf": ("licences_revenue = -0.25", "licences_revenue = -inf", "finite"),
    "channel-string": ("licences_revenue = -0.25", 'licences_revenue = "-25%"', "finite"),
    "channel-unknown": ("licences_revenue = -0.25", "magic_revenue = -0.25", "known channel"),
    "shock-slash": ("[shocks.tariffs]", '[shocks."a/b"]', "a/b"),
    "shock-space": ("[shocks.tariffs]", '[shocks."a b"]', "letter"),
    "shock-digit-first": ("[shocks.tariffs]", '[shocks."1tariffs"]', "letter"),
    "shock-hyphen": ("[shocks.tariffs]", '[shocks.tar-iffs]', "underscores"),
    "shock-unicode": ("[shocks.tariffs]", '[shocks."tarïffs"]', "letter"),
    "shock-dots": ("[shocks.tariffs]", '[shocks."../../etc"]', "letter"),
    "shock-100kb": ("[shocks.tariffs]", f"[shocks.{LONG}]", "at most 48"),
    "shock-case-duplicate": (DOWNTURN, DOWNTURN + '\n', None),  # replaced below
    "scenario-case-duplicate": ("[scenarios.base]", '[scenarios.Base]\ndescription = "x"\n'
                                "[scenarios.base]", "differ in more than case"),
    "scenario-headline-case": ("[scenarios.base]", '[scenarios.RISK-WEIGHTED]\n'
                               'description = "x"\n[scenarios.base]', "differ in more than case"),
    "scenario-slash": ("[scenarios.base]", '[scenarios."a/b"]\n[scenarios.base]', "a/b"),
    "scenario-newline": ("[scenarios.base]", '[scenarios."a\\nb"]\n[scenarios.base]', "letter"),
    "scenario-too-many": ("[scenarios.base]", many("scenarios", MAX_SCENARIOS) +
                          "\n[scenarios.base]", f"at most {MAX_SCENARIOS} scenarios"),
    "scenario-1000": ("[scenarios.base]", many("scenarios", 1000) + "\n[scenarios.base]",
                      "at most"),
    "shock-too-many": ("[shocks.tariffs]", many("shocks", MAX_SHOCKS) + "\n[shocks.tariffs]",
                       f"at most {MAX_SHOCKS} shocks"),
    "probability-above-one": ("probability = { dist = \"Beta\", range = [0.05, 0.25] }",
                              "probability = { dist = \"Beta\", range = [0.5, 1.5] }", "support"),
    "probability-normal": ("probability = { dist = \"Beta\", range = [0.05, 0.25] }",
                           "probability = { dist = \"Normal\", mu = 0.1, sigma = 0.1 }", "(0, 1)"),
    "probability-list-dist": ("probability = { dist = \"Beta\", range = [0.05, 0.25] }",
                              "probability = { dist = [\"Beta\"], range = [0.05, 0.25] }",
                              "dist"),
    "severity-1e6": ("severity = { dist = \"LogNormal\", range = [0.5, 1.5] }",
                     "severity = { dist = \"LogNormal\", range = [1e6, 2e6] }",
                     "plausible range"),
    "setting-severity-1e300": (DOWNTURN_SETTING, 'shocks = { manufacturing_downturn = { year = '
                               '"FY26", severity = 1e300 } }', "severity"),
    "setting-severity-digits": (DOWNTURN_SETTING, 'shocks = { manufacturing_downturn = { year = '
                                f'"FY26", severity = {BIG} }} }}', "digits"),
    "setting-probability-2": (DOWNTURN_SETTING, "shocks = { manufacturing_downturn = 2 }",
                              "[0, 1]"),
    "setting-year-unknown": (DOWNTURN_SETTING, 'shocks = { manufacturing_downturn = "FY99" }',
                             "FY99"),
    "setting-year-list": (DOWNTURN_SETTING, 'shocks = { manufacturing_downturn = { year = '
                          '["FY26"] } }', "year"),
    "setting-word": (DOWNTURN_SETTING, 'shocks = { manufacturing_downturn = "sometimes" }',
                     "sometimes"),
    "setting-list": (DOWNTURN_SETTING, "shocks = { manufacturing_downturn = [1, 2] }", "a list"),
    "setting-100kb": (DOWNTURN_SETTING, f'shocks = {{ manufacturing_downturn = "{LONG}" }}',
                      "..."),
    "setting-unknown-shock": (DOWNTURN_SETTING, 'shocks = { meteor = "FY26" }', "meteor"),
    "setting-shocks-number": (DOWNTURN_SETTING, "shocks = 5", "shock = setting"),
    "default-list": ('default = "prior"', 'default = ["prior"]', "default"),
    "channels-empty": ("[shocks.tariffs.channels]\nexport_revenue = -0.20\n"
                       "gross_margin = -0.01", "[shocks.tariffs.channels]", "channel = effect"),
    "source-empty": ('source = "synthetic example: 35% of FY24 revenue billed outside the euro '
                     'area"', 'source = ""', "source"),
    "label-number": ('label = "Tariffs on software exports"', "label = 5", "label"),
    "unknown-key": ('label = "Tariffs on software exports"', 'labels = "x"', "labels"),
    "unknown-section": ("[meta]", "[metadata]", "known section"),
    "no-headline": ("[scenarios.risk-weighted]", "[scenarios.riskweighted]", "headline"),
    "syntax-error": ("[meta]", "[meta]]", "TOML syntax error"),
}
SCENARIO_EDITS["shock-case-duplicate"] = (
    "[shocks.tariffs]", '[shocks.Tariffs]\nsource = "x"\nprobability = { dist = "Beta", alpha = 2,'
    ' beta = 20 }\nseverity = { dist = "LogNormal", mu = 0, sigma = 0.3 }\npersistence = 0.5\n'
    "channels = { revenue = -0.1 }\n\n[shocks.tariffs]", "differ in more than case")


@pytest.mark.parametrize("case", list(SCENARIO_EDITS))
def test_scenarios_file(case, tmp_path, capsys, results, no_fit):
    old, new, expect = SCENARIO_EDITS[case]
    path = write(tmp_path, replaced(SCENARIOS, old, new), "scenarios.toml")
    assert_refused(["run", "--company", "toyco", "--scenarios", path, "--out", results], capsys,
                   results, expect)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-big", "binary", "folder",
                                  "newline-name", "missing"])
def test_scenarios_special_file(kind, tmp_path, capsys, results, no_fit):
    assert_refused(["run", "--company", "toyco", "--scenarios", special(tmp_path, kind),
                    "--out", results], capsys, results)


def test_scenarios_whatif_file_is_checked_before_simulating(tmp_path, capsys, results):
    path = write(tmp_path, replaced(SCENARIOS, "licences_revenue = -0.25",
                                    "licences_revenue = 1e300"), "scenarios.toml")
    assert_refused(["scenarios", "--results", results, "--scenarios", path], capsys, results)


# --- a company folder (company.toml, peers.toml) ------------------------------------------------------
REV = "revenue = { values = ["
COMPANY_EDITS = {
    "history-revenue-zero": ("history", None, "history.revenue"),
    "history-segment-negative": ("history", None, "history.revenue_licences"),
    "history-inventories-zero": ("history", None, "history.inventories"),
    "history-gross-profit-above-revenue": ("history", None, "gross_profit"),
    "history-401-digits": ("history", None, "digits"),
    "history-nan": ("history", None, "finite"),
    "history-1e300": ("history", None, "magnitude"),
    "history-wrong-length": ("history", None, "a list of 3"),
    "observation-sd-1e-300": ("sd = ", "sd = 1e-300", "sd"),
    "observation-sd-zero": ("sd = ", "sd = 0", "sd"),
    "observation-sd-huge": ("sd = ", "sd = 1e6", "sd"),
    "observation-segment-list": ('segment = "subscriptions"', 'segment = ["subscriptions"]',
                                 "segment"),
    "observation-quantity-list": ('quantity = "units"', 'quantity = ["units"]', "quantity"),
    "segment-name-spaces": ("[segments.licences]", '[segments."Licence Sales"]', "snake_case"),
    "segment-kind-unknown": ('kind = "direct"', 'kind = "magic"', "kind"),
    "market-price-negative": ("price = { value = ", "price = { value = -1, x = ", "price"),
    "market-price-1e300": ("price = { value = ", "price = { value = 1e300, x = ", "magnitude"),
    "exposure-share-2": ("export_revenue_share = { value = ",
                         "export_revenue_share = { value = 2, x = ", "[0, 1]"),
    "unknown-section": ("[company]", "[company]\n[magic]\n[company2]", "known section"),
    "valuation-year-unknown": ('valuation_year = { value = "FY26"',
                               'valuation_year = { value = "FY99", source = "x" }',
                               "valuation_year"),
}


def _company_text(case: str) -> str:
    old, new, _ = COMPANY_EDITS[case]
    if old != "history":
        if new.endswith("x = "):  # drop the original value: "value = <new>, x = <old>, ..."
            return replaced(COMPANY, old, new)
        line = next(line for line in COMPANY.splitlines() if line.strip().startswith(old))
        return replaced(COMPANY, line, new)
    history = COMPANY[COMPANY.index("[history]"):]
    def edit(key, values):
        line = next(line for line in history.splitlines() if line.startswith(f"{key} = "))
        start = line.index("[") + 1
        return replaced(COMPANY, line, line[:start] + values + line[line.index("]"):])
    return {"history-revenue-zero": lambda: edit("revenue", "0, 310, 330"),
            "history-segment-negative": lambda: edit("revenue_licences", "-120, 132, 140"),
            "history-inventories-zero": lambda: edit("inventories", "0, 0, 0"),
            "history-gross-profit-above-revenue": lambda: edit("gross_profit", "1e6, 1e6, 1e6"),
            "history-401-digits": lambda: edit("revenue", f"{BIG}, 310, 330"),
            "history-nan": lambda: edit("revenue", "nan, 310, 330"),
            "history-1e300": lambda: edit("revenue", "1e300, 310, 330"),
            "history-wrong-length": lambda: edit("revenue", "300, 310"),
            }[case]()


@pytest.mark.parametrize("case", list(COMPANY_EDITS))
def test_company_file(case, tmp_path, capsys, results, no_fit):
    folder = tmp_path / "acme"
    shutil.copytree(TOYCO, folder)
    (folder / "company.toml").write_text(_company_text(case))
    assert_refused(["run", "--company", folder, "--out", results], capsys, results,
                   COMPANY_EDITS[case][2])


PEER_EDITS = {
    "groups-nested": ("groups = [", "groups = [[\"a\"], ", "regression.groups"),
    "residual-sigma-1e300": ("residual_sigma = ", "residual_sigma = 1e300 #", "residual_sigma"),
    "response-list": ("response = ", "response = [\"x\"] #", "regression.response"),
    "column-kind-list": ('kind = "positive"', 'kind = ["positive"]', "kind"),
    "peer-401-digits": ("market_cap_eur_mn = 3200.0", f"market_cap_eur_mn = {BIG}", "digits"),
}


@pytest.mark.parametrize("case", list(PEER_EDITS) + ["fifo", "dev-zero", "too-big"])
def test_peers_file(case, tmp_path, capsys, results, no_fit):
    folder = tmp_path / "acme"
    shutil.copytree(TOYCO, folder)
    peers = folder / "peers.toml"
    if case in PEER_EDITS:
        old, new, _ = PEER_EDITS[case]
        peers.write_text(replaced(PEERS, old, new))
    else:
        peers.unlink()
        target = special(tmp_path, case)
        if case == "fifo":
            os.rename(target, peers)
        else:
            peers.symlink_to(Path(target).resolve())
    expect = PEER_EDITS[case][2] if case in PEER_EDITS else "peers.toml"
    assert_refused(["run", "--company", folder, "--out", results], capsys, results, expect)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-big"])
def test_company_file_special(kind, tmp_path, capsys, results, no_fit):
    folder = tmp_path / "acme"
    shutil.copytree(TOYCO, folder)
    (folder / "company.toml").unlink()
    target = special(tmp_path, kind)
    if kind == "fifo":
        os.rename(target, folder / "company.toml")
    else:
        (folder / "company.toml").symlink_to(Path(target).resolve())
    assert_refused(["run", "--company", folder, "--out", results], capsys, results)


# --- actuals -----------------------------------------------------------------------------------------
ACTUALS = {
    "int-401-digits": (f"[revenue]\nFY21 = {BIG}\n", "digits"),
    "int-5000-digits": (f"[revenue]\nFY21 = {HUGE}\n", "digits"),
    "revenue-negative": ("[revenue]\nFY21 = -5\n", "> 0"),
    "revenue-zero": ("[revenue]\nFY21 = 0\n", "> 0"),
    "target-price-negative": ("target_price = -1\n", "> 0"),
    "target-price-currency-zero": ("target_price_hkd = 0\n", "> 0"),
    "nan": ("[revenue]\nFY21 = nan\n", "finite"),
    "inf": ("[revenue]\nFY21 = inf\n", "finite"),
    "string": ('[revenue]\nFY21 = "3809"\n', "number"),
    "list": ("[revenue]\nFY21 = [1, 2]\n", "number"),
    "bool": ("[revenue]\nFY21 = true\n", "number"),
    "date": ("[revenue]\nFY21 = 2021-12-31\n", "number"),
    "unknown-variable": ("[revenu]\nFY21 = 3809\n", "unknown variable"),
    "unknown-year": ("[revenue]\nFY99 = 3809\n", "unknown year"),
    "variable-100kb": (f"[{LONG}]\nFY21 = 3809\n", "unknown variable"),
    "empty": ("", "empty"),
    "empty-table": ("[revenue]\n", "empty table"),
    "scalar-as-table": ("[target_price]\nFY21 = 5\n", "no year"),
    "line-without-year": ("revenue = 3809\n", "year dimension"),
    "nested": ("[revenue]\nFY21 = { a = 1 }\n", "number"),
    "syntax": ("[revenue\nFY21 = 1\n", "TOML"),
    "nesting-5000": ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
}


@pytest.mark.parametrize("case", list(ACTUALS))
def test_actuals_file(case, tmp_path, capsys, results):
    text, expect = ACTUALS[case]
    path = write(tmp_path, text, "actuals.toml")
    assert_refused(["score", path, "--results", results], capsys, results, expect)


@pytest.mark.parametrize("kind", SPECIAL)
def test_actuals_special_file(kind, tmp_path, capsys, results):
    assert_refused(["score", special(tmp_path, kind), "--results", results], capsys, results)


# --- options -----------------------------------------------------------------------------------------
OPTIONS = {
    "paths-zero": (["--paths", "0"], "--paths"),
    "paths-negative": (["--paths", "-5"], "--paths"),
    "paths-float": (["--paths", "1e9"], "--paths"),
    "paths-power": (["--paths", "10**30"], "--paths"),
    "paths-30-digits": (["--paths", "1" + "0" * 30], "--paths"),
    "paths-5000-digits": (["--paths", HUGE], "--paths"),
    "paths-billion": (["--paths", "1000000000"], "--paths"),
    "paths-word": (["--paths", "many"], "--paths"),
    "paths-empty": (["--paths", ""], "--paths"),
    "paths-decimal": (["--paths", "1.5"], "--paths"),
    "paths-memory": (["--paths", "100000000"], "paths would fit"),
    "seed-negative": (["--seed", "-1"], "--seed"),
    "seed-2-64": (["--seed", str(2**64)], "--seed"),
    "seed-2-32": (["--seed", str(2**32)], "--seed"),
    "seed-word": (["--seed", "abc"], "--seed"),
    "draws-zero": (["--draws", "0"], "--draws"),
    "draws-negative": (["--draws", "-1"], "--draws"),
    "draws-huge": (["--draws", "10000000"], "--draws"),
    "chains-zero": (["--chains", "0"], "--chains"),
    "chains-65": (["--chains", "65"], "--chains"),
    "tune-negative": (["--tune", "-1"], "--tune"),
    "tune-zero": (["--tune", "0"], "--tune"),
    "sampler-unknown": (["--sampler", "gibbs"], "--sampler"),
    "priors-empty-name": (["--priors", ""], "empty"),
    "scenarios-empty-name": (["--scenarios", ""], "empty"),
    "unknown-option": (["--magic"], "unrecognized"),
    "company-unknown": (["--company", "no-such-company"], "no-such-company"),
    "company-empty": (["--company", ""], "company"),
    "company-dev-zero": (["--company", "/dev/zero"], "company"),
    "company-newline": (["--company", "a\nb"], "company"),
    "company-100kb": (["--company", LONG], "company"),
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_run_option(case, capsys, results, no_fit):
    argv, expect = OPTIONS[case]
    line = assert_refused(["run", "--company", "toyco", "--out", results] + argv, capsys,
                          results, expect)
    assert len(line) < 400


OUT_CASES = ["empty", "file", "under-a-file", "proc", "sys", "dev-null", "nul"]


@pytest.mark.parametrize("case", OUT_CASES)
def test_run_out(case, tmp_path, capsys, results, no_fit):
    file = write(tmp_path, "not a folder", "file.txt")
    out = {"empty": "", "file": file, "under-a-file": file / "results",
           "proc": "/proc/stforecast-results", "sys": "/sys/stforecast/results",
           "dev-null": "/dev/null", "nul": "bad\x00folder"}[case]
    assert_refused(["run", "--company", "toyco", "--out", out], capsys, results, "--out")
    assert file.read_text() == "not a folder"


OTHER_OPTIONS = {
    "top-zero": ["sensitivity", "--results", "{results}", "--top", "0"],
    "top-negative": ["sensitivity", "--results", "{results}", "--top", "-1"],
    "top-huge": ["sensitivity", "--results", "{results}", "--top", "1" + "0" * 30],
    "scenarios-paths-zero": ["scenarios", "--results", "{results}", "--paths", "0"],
    "calibrate-fits-zero": ["calibrate", "--fits", "0", "--serial"],
    "calibrate-chains-zero": ["calibrate", "--chains", "0", "--serial"],
    "calibrate-thin-to-zero": ["calibrate", "--thin-to", "0", "--serial"],
    "calibrate-workers-zero": ["calibrate", "--workers", "0"],
    "calibrate-out-folder": ["calibrate", "--out", "{results}", "--serial", "--fits", "1"],
    "sweep-per-task-zero": ["sweep", "x.toml", "--per-task", "0"],
    "sweep-paths-negative": ["sweep", "x.toml", "--paths", "-1"],
    "sweep-file-fifo": ["sweep", "{fifo}", "--results", "{results}"],
    "run-many-seed-negative": ["run-many", "toyco", "--seed", "-1"],
    "run-many-out-empty": ["run-many", "toyco", "--out", ""],
    "run-many-universe-dev-zero": ["run-many", "--universe", "/dev/zero"],
    "run-many-universe-fifo": ["run-many", "--universe", "{fifo}"],
    "calibrate-priors-fifo": ["calibrate", "--company", "toyco", "--priors", "{fifo}",
                              "--serial"],
    "calibrate-priors-dev-zero": ["calibrate", "--company", "toyco", "--priors", "/dev/zero",
                                  "--serial"],
    "sensitivity-outcome-100kb": ["sensitivity", "x" * 100_000, "--results", "{results}"],
    "sensitivity-outcome-unknown-year": ["sensitivity", "revenue[FY99]", "--results",
                                         "{results}"],
    "sensitivity-scenario-100kb": ["sensitivity", "--scenario", "x" * 100_000, "--results",
                                   "{results}"],
    "score-scenario-100kb": ["score", "{actuals}", "--scenario", "x" * 100_000, "--results",
                             "{results}"],
    "no-command": [],
    "unknown-command": ["magic"],
    "query-without-expression": ["query", "--results", "{results}"],
    "check-priors-unknown-company": ["check-priors", "--company", "no-such-company"],
}


@pytest.mark.parametrize("case", list(OTHER_OPTIONS))
def test_other_options(case, tmp_path, capsys, results, no_fit):
    fifo = special(tmp_path, "fifo")
    actuals = write(tmp_path, "[revenue]\nFY21 = 4700\n", "actuals.toml")
    argv = [a.format(results=results, fifo=fifo, actuals=actuals) for a in OTHER_OPTIONS[case]]
    assert_refused(argv, capsys, results)


# --- queries -----------------------------------------------------------------------------------------
QUERIES = {
    "identifier-100kb": f"P({LONG} > 1)",
    "tokens-100kb": "P(revenue[FY23] > 1" + " + 1" * 25_000 + ")",
    "number-100kb": "P(target_price > " + "9" * 100_000 + ")",
    "year-100kb": f"P(revenue[{LONG}] > 1)",
    "nested-parens": "P(" + "(" * 1000 + "target_price > 1" + ")" * 1001,
    "unbalanced": "P(target_price > 1",
    "empty": "",
    "blank": "   ",
    "python": "__import__('os').system('echo hi')",
    "attribute": "P(target_price.__class__ > 1)",
    "lambda": "(lambda: 1)()",
    "unknown-variable": "P(magic > 1)",
    "unknown-year": "P(revenue[FY99] > 1)",
    "unknown-function": "exp(target_price)",
    "quantile-level-2": "quantile(target_price, 2)",
    "quantile-level-nan": "quantile(target_price, nan)",
    "number-1e400": "P(target_price > 1e400)",
    "newline": "P(target_price\n> 1)\nsecond line",
    "nul": "P(target_price > 1)\x00",
    "escape": "P(target_price > \x1b[31m1)",
    "unicode": "P(target_price > ١)",
    "semicolon": "P(target_price > 1); P(cash > 1)",
    "condition-in-mean": "mean(target_price > 1)",
    "number-in-P": "P(target_price)",
    "year-on-scalar": "P(target_price[FY23] > 1)",
    "no-year-on-line": "P(revenue > 1)",
}


@pytest.mark.parametrize("case", list(QUERIES))
def test_query(case, capsys, results):
    line = assert_refused(["query", QUERIES[case], "--results", results], capsys, results)
    assert len(line) <= 1300


def test_query_unknown_scenario(capsys, results):
    assert_refused(["query", "P(target_price > 1)", "--results", results, "--scenario", LONG],
                   capsys, results)


# --- the command line's last line of defence --------------------------------------------------------
def test_internal_error_is_one_line_with_a_log(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("STFORECAST_STATE", str(tmp_path / "state"))

    def broken(args):
        raise RuntimeError("boom\nsecond line " + "y" * 10_000)
    monkeypatch.setattr(cli, "cmd_companies", broken)
    code, err = call(["companies"], capsys)
    assert code == cli.EXIT_INTERNAL
    (line,) = err.splitlines()
    assert line.startswith("internal error: RuntimeError: boom second line")
    assert len(line) < 600
    log = Path(line.rsplit("details in ", 1)[1].rstrip(")"))
    assert log.parent == tmp_path / "state" / "logs"
    assert "Traceback" in log.read_text() and "boom" in log.read_text()


def test_interrupt_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "cmd_companies", interrupted)
    code, err = call(["companies"], capsys)
    assert code == cli.EXIT_INTERRUPTED and len(err.splitlines()) == 1


def test_memory_estimate_says_how_many_paths_fit():
    from stforecast.errors import OptionError
    from stforecast.preflight import BASE_BYTES, check_memory, estimate_bytes
    from stforecast.registry import MEMORY_FRACTION
    check_memory(100_000, 3, 47, 5, available=4e9)  # the default run fits in 4 GB
    with pytest.raises(OptionError) as err:
        check_memory(10_000_000, 3, 47, 5, available=16e9)
    fit = int(str(err.value).split("at most about ")[1].split(" paths")[0].replace(",", ""))
    budget = 16e9 * MEMORY_FRACTION
    assert estimate_bytes(fit, 3, 47, 5) <= budget < estimate_bytes(fit * 1.2, 3, 47, 5)
    assert fit > (budget - BASE_BYTES) / (estimate_bytes(1, 3, 47, 5) - BASE_BYTES) * 0.9


# --- real processes: nothing reaches a terminal but one line ----------------------------------------
@pytest.mark.parametrize("argv", [
    ["run", "--company", "toyco", "--priors", "/dev/zero", "--out", "{results}"],
    ["query", "P(" + "x" * 100_000 + " > 1)", "--results", "{results}"],
], ids=["priors-dev-zero", "query-100kb"])
def test_console_script(argv, results):
    before = snapshot(results)
    exe = Path(sys.executable).with_name("stforecast")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "stforecast.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd + [a.format(results=results) for a in argv], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert snapshot(results) == before


# --- the trial evaluation of the model (builds PyTensor graphs: slow lane) ---------------------------
@pytest.mark.slow
def test_trial_logp_accepts_the_shipped_priors_and_refuses_impossible_history():
    import numpy as np

    from dataclasses import replace

    from stforecast.company import load_company
    from stforecast.model import build_model, observations_from_company
    from stforecast.preflight import ModelCheckError, trial_logp
    from stforecast.priors import load_priors

    company = load_company("toyco")
    spec = load_priors(company.priors_path, company.growth_drivers())
    obs = observations_from_company(company)
    ok = trial_logp(build_model(spec, obs, company))
    assert np.isfinite(ok["logp"])
    ratios = dict(obs.ratios)
    ratios["inventory_days"] = np.array([1e200, *ratios["inventory_days"][1:]])  # (x-mu)^2 = inf
    with pytest.raises(ModelCheckError, match="inventory_days"):
        trial_logp(build_model(spec, replace(obs, ratios=ratios), company))
