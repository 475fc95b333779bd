"""Tests for stforecast.priors and the company file: the real priors file, elicited ranges, and
one-line errors for bad priors files (from the library and from `stforecast check-priors`) and
for bad company folders."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stforecast.company import load_company
from stforecast.errors import DataFileError, StforecastError
from stforecast.priors import PriorsError, load_priors, parse_prior
from stforecast.processes import RATIO_DRIVERS

FOLDER = Path(__file__).resolve().parents[1] / "priors" / "sensetime"
REAL = FOLDER / "priors.toml"
COMPANY = load_company(FOLDER)
DRIVERS = COMPANY.growth_drivers()
_SCRIPT = Path(sys.executable).parent / "stforecast"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stforecast.cli"]


def _quantiles_match(prior, low, high, mass):
    q = np.asarray(prior.frozen().ppf(np.array([0.5 - mass / 2, 0.5 + mass / 2])), float)
    target = np.array([low, high])
    # relative to each end; an end at 0 is judged relative to the width of the range
    scale = np.maximum(np.abs(target), high - low)
    assert np.all(np.abs(q - target) <= 1e-3 * scale), (prior.describe(), q, target)


# --- the real file ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec():
    return load_priors(REAL, DRIVERS)


def test_real_file_loads(spec):
    assert len(spec.growth) == 6 and set(spec.growth) == set(DRIVERS)
    # opex and capex left the ratio processes for the currency cost model ([costs])
    assert len(spec.ratios) == 7 and set(spec.ratios) == set(RATIO_DRIVERS)
    assert spec.costs and spec.funding and spec.discounting
    assert spec.settings["liquidity_floor"] == 3000
    assert "ev_sales_multiple" in spec.valuation
    assert "company_growth_effect" in spec.pooling
    assert all(p.source for p in spec.processes().values())
    assert spec.ratios["gross_margin"].transform == "logit"
    assert len(spec.sha256) == 64
    assert "\n" not in spec.summary()
    assert COMPANY.priors_path.resolve() == REAL
    assert all(spec.growth[name].units for name in DRIVERS)


def test_without_a_company_the_file_names_the_growth_drivers():
    assert set(load_priors(REAL).growth) == set(DRIVERS)


def test_real_file_elicited_ranges_match(spec):
    priors = [getattr(p, part) for p in spec.processes().values()
              for part in ("long_run", "persistence", "volatility")]
    priors += list(spec.valuation.values()) + list(spec.pooling.values())
    priors += [*spec.costs.values(), *spec.funding.values(), *spec.discounting.values()]
    elicited = [p for p in priors if p.elicited is not None]
    assert {p.dist for p in elicited} >= {"Normal", "LogNormal", "Beta"}
    assert len(elicited) >= 30
    for prior in elicited:
        _quantiles_match(prior, *prior.elicited)


def test_real_file_with_mass_08(tmp_path):
    text = _edit(REAL.read_text(), 'long_run = { dist = "Beta", range = [0.55, 0.75] }',
                 'long_run = { dist = "Beta", range = [0.55, 0.75], mass = 0.8 }')
    path = tmp_path / "mass.toml"
    path.write_text(text)
    prior = load_priors(path, DRIVERS).ratios["gross_margin"].long_run
    assert prior.elicited == (0.55, 0.75, 0.8)
    _quantiles_match(prior, 0.55, 0.75, 0.8)


@pytest.mark.parametrize("mass", [0.9, 0.8, 0.5])
@pytest.mark.parametrize("dist, low, high", [
    ("Normal", -0.02, 0.18), ("Normal", 120.0, 280.0),
    ("LogNormal", 18.0, 50.0), ("LogNormal", 0.04, 0.25),
    ("LogitNormal", 0.55, 0.75), ("LogitNormal", 0.02, 0.30),
    ("Beta", 0.55, 0.75), ("Beta", 0.10, 0.40), ("Beta", 0.02, 0.10),
    ("Gamma", 0.04, 0.25), ("Gamma", 18.0, 50.0), ("Gamma", 200.0, 440.0),
])
def test_elicited_range_gives_matching_quantiles(dist, low, high, mass):
    entry = {"dist": dist, "range": [low, high]}
    if mass != 0.9:
        entry["mass"] = mass
    prior = parse_prior("f.toml", "k", entry)
    assert prior.dist == dist and prior.elicited == (low, high, mass)
    assert all(np.isfinite(v) for v in prior.params.values())
    _quantiles_match(prior, low, high, mass)


# --- bad files ----------------------------------------------------------------------------------
def _edit(text, old, new):
    assert text.count(old) == 1, f"the real priors file changed: {old!r} not found exactly once"
    return text.replace(old, new)


def _drop_line(text, startswith):
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(startswith)]
    assert len(hits) == 1, f"the real priors file changed: {startswith!r}"
    del lines[hits[0]]
    return "".join(lines)


SBC_LONG_RUN = 'long_run = { dist = "Normal", range = [-0.02, 0.18] }'
SBC_PERSISTENCE = SBC_LONG_RUN + '\npersistence = { dist = "Beta", alpha = 2, beta = 5 }'
GM_LONG_RUN = 'long_run = { dist = "Beta", range = [0.55, 0.75] }'
POOL = "mu = 0.0\nsigma = 0.05\n"
NEW_DRIVER = """
[growth.smart_home_revenue]
source = "made up"
long_run = { dist = "Normal", mu = 0.1, sigma = 0.05 }
persistence = { dist = "Beta", alpha = 2, beta = 5 }
volatility = { dist = "LogNormal", mu = -2.0, sigma = 0.5 }
"""

# id -> (edit of the real file's text, offending key or None, a fragment the message must contain)
BAD = {
    "toml_syntax": (lambda t: _edit(t, "version = 1\n", "version 1\n"), None, "line"),
    "unknown_distribution": (
        lambda t: _edit(t, SBC_LONG_RUN, SBC_LONG_RUN.replace('"Normal"', '"Cauchy"')),
        "growth.smart_business_customers.long_run.dist", "Cauchy"),
    "missing_parameter": (lambda t: _edit(t, POOL, "mu = 0.0\n"),
                          "pooling.company_growth_effect.sigma", "missing"),
    "extra_parameter": (lambda t: _edit(t, POOL, POOL + "nu = 3\n"),
                        "pooling.company_growth_effect.nu", "only parameters"),
    "negative_sigma": (lambda t: _edit(t, POOL, "mu = 0.0\nsigma = -0.05\n"),
                       "pooling.company_growth_effect.sigma", "sigma > 0"),
    "persistence_not_unit_support": (
        lambda t: _edit(t, SBC_PERSISTENCE, SBC_LONG_RUN
                        + '\npersistence = { dist = "Normal", mu = 0.3, sigma = 0.1 }'),
        "growth.smart_business_customers.persistence.dist", "(0, 1)"),
    "mass_above_one": (
        lambda t: _edit(t, GM_LONG_RUN, GM_LONG_RUN.replace(" }", ", mass = 1.5 }")),
        "ratio.gross_margin.long_run.mass", "probability"),
    "beta_range_above_one": (
        lambda t: _edit(t, GM_LONG_RUN, GM_LONG_RUN.replace("[0.55, 0.75]", "[0.5, 1.2]")),
        "ratio.gross_margin.long_run.range", "support"),
    "unknown_driver": (lambda t: t + NEW_DRIVER, "growth.smart_home_revenue", "known driver"),
    "wrong_type": (lambda t: _edit(t, POOL, 'mu = 0.0\nsigma = "big"\n'),
                   "pooling.company_growth_effect.sigma", "number"),
    "range_reversed": (
        lambda t: _edit(t, SBC_LONG_RUN, SBC_LONG_RUN.replace("[-0.02, 0.18]", "[0.18, -0.02]")),
        "growth.smart_business_customers.long_run.range", "low < high"),
    "range_empty": (
        lambda t: _edit(t, SBC_LONG_RUN, SBC_LONG_RUN.replace("[-0.02, 0.18]", "[0.1, 0.1]")),
        "growth.smart_business_customers.long_run.range", "low < high"),
    "missing_source": (lambda t: _drop_line(t, 'source = "Revenue (i): customers'),
                       "growth.smart_business_customers.source", "source"),
    "unknown_section": (lambda t: t + "\n[forecast]\nhorizon = 3\n", "forecast", "known section"),
}


@pytest.fixture
def bad_file(request, tmp_path):
    make, key, fragment = BAD[request.param]
    path = tmp_path / f"{request.param}.toml"
    path.write_text(make(REAL.read_text()))
    return path, key, fragment


@pytest.mark.parametrize("bad_file", list(BAD), indirect=True)
def test_bad_file_raises_one_line(bad_file):
    path, key, fragment = bad_file
    with pytest.raises(PriorsError) as info:
        load_priors(path, DRIVERS)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    if key is not None:
        assert f"'{key}'" in msg, msg
    assert fragment in msg, msg


def _assert_one_line_error(rc, stdout, stderr, path, key, fragment):
    assert rc == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert str(path) in lines[0]
    if key is not None:
        assert f"'{key}'" in lines[0]
    assert fragment in lines[0]


@pytest.mark.parametrize("bad_file", list(BAD), indirect=True)
def test_check_priors_command_bad_file_exits_2(bad_file, capsys):
    """`stforecast check-priors BAD` in-process (the console script is ``sys.exit(main())``):
    status 2, one line on stderr, no exception escapes (so no traceback)."""
    from stforecast.cli import main

    path, key, fragment = bad_file
    rc = main(["check-priors", str(path)])
    out = capsys.readouterr()
    _assert_one_line_error(rc, out.out, out.err, path, key, fragment)


# The console script itself, for a few cases (each run costs ~1 s of imports).
@pytest.mark.parametrize("bad_file", ["toml_syntax", "wrong_type", "unknown_section"],
                         indirect=True)
def test_check_priors_console_script_bad_file_exits_2(bad_file):
    path, key, fragment = bad_file
    proc = subprocess.run(CLI + ["check-priors", str(path)], capture_output=True, text=True,
                          timeout=60)
    _assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, path, key, fragment)


def test_unreadable_file_is_one_line(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(PriorsError, match="cannot read") as info:
        load_priors(path, DRIVERS)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_check_priors_cli_valid_file():
    proc = subprocess.run(CLI + ["check-priors", str(REAL), "--no-trial"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert str(REAL) in lines[0] and "valid" in lines[0]
    assert "6 growth" in lines[0] and "7 ratio" in lines[0]


def test_observation_section_points_to_the_company_file(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text(REAL.read_text() + "\n[observation]\ncity_count_noise = 0.05\n")
    with pytest.raises(PriorsError) as info:
        load_priors(path, DRIVERS)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "'observation'" in msg
    assert "company.toml" in msg and "sd" in msg


def test_company_growth_driver_missing_from_the_priors_file(tmp_path):
    text = REAL.read_text()
    start = text.index("[growth.smart_auto_revenue]")
    end = text.index("\n[", start + 1)
    path = tmp_path / "short.toml"
    path.write_text(text[:start] + text[end + 1:])
    with pytest.raises(PriorsError, match="'growth.smart_auto_revenue'.*missing"):
        load_priors(path, DRIVERS)
    assert "smart_auto_revenue" not in load_priors(path).growth  # no company: the file decides


# --- the company file ---------------------------------------------------------------------------
COMPANY_TEXT = (FOLDER / "company.toml").read_text()
OBS_YEAR = 'segment = "smart_city"\nyear = "FY21"\nfraction = 0.5'
OBS_SD = 'value = 119\nsd = 0.15'
LIFE = '[segments.smart_life]\nlabel = "Smart Life"\nkind = "direct"'
CITY_UNITS_LAST = "units_last = { value = 94,"


def _drop_company_line(text, startswith):
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.startswith(startswith)]
    assert len(hits) == 1, f"the company file changed: {startswith!r}"
    del lines[hits[0]]
    return "".join(lines)


# id -> (edit of the real company.toml, offending key, a fragment the message must contain)
BAD_COMPANY = {
    "segment_without_kind": (lambda t: _edit(t, LIFE, LIFE.replace('\nkind = "direct"', "")),
                             "segments.smart_life.kind", "got None"),
    "unknown_segment_kind": (lambda t: _edit(t, LIFE, LIFE.replace('"direct"', '"ratio"')),
                             "segments.smart_life.kind", "'units'"),
    "units_segment_without_units_last": (lambda t: _drop_company_line(t, CITY_UNITS_LAST),
                                         "segments.smart_city.units_last", "unit count"),
    "observation_not_in_the_first_year": (
        lambda t: _edit(t, OBS_YEAR, OBS_YEAR.replace('"FY21"', '"FY22"')),
        "observations[0].year", "first forecast year"),
    "observation_sd_zero": (lambda t: _edit(t, OBS_SD, OBS_SD.replace("0.15", "0.0")),
                            "observations[0].sd", "noise sd"),
    "observation_sd_negative": (lambda t: _edit(t, OBS_SD, OBS_SD.replace("0.15", "-0.15")),
                                "observations[0].sd", "noise sd"),
    "observation_of_unknown_segment": (
        lambda t: _edit(t, OBS_YEAR, OBS_YEAR.replace('"smart_city"', '"smart_home"')),
        "observations[0].segment", "smart_home"),
    "units_observation_of_a_direct_segment": (
        lambda t: _edit(t, OBS_YEAR, OBS_YEAR.replace('"smart_city"', '"smart_life"')),
        "observations[0].segment", "'units' segment"),
    "history_series_too_short": (
        lambda t: _edit(t, "revenue_smart_life = { values = [330, 414, 434]",
                        "revenue_smart_life = { values = [330, 414]"),
        "history.revenue_smart_life.values", "3 finite numbers"),
    "valuation_year_not_a_forecast_year": (
        lambda t: _edit(t, 'valuation_year = { value = "FY22"',
                        'valuation_year = { value = "FY20"'),
        "market.valuation_year", "forecast years"),
    "market_value_missing": (lambda t: _drop_company_line(t, "price = { value = 6.73"),
                             "market.price", "missing"),
    "unknown_section": (lambda t: t + "\n[forecast]\nhorizon = 3\n", "forecast", "known section"),
}


def _company_folder(tmp_path, text: str | bytes) -> Path:
    folder = tmp_path / "co"
    shutil.copytree(FOLDER, folder)
    target = folder / "company.toml"
    target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.mark.parametrize("case", list(BAD_COMPANY))
def test_bad_company_file_raises_one_line(tmp_path, case):
    make, key, fragment = BAD_COMPANY[case]
    text = make(COMPANY_TEXT)
    assert text != COMPANY_TEXT
    folder = _company_folder(tmp_path, text)
    with pytest.raises(DataFileError) as info:
        load_company(folder)
    msg = str(info.value)
    assert "\n" not in msg and str(folder / "company.toml") in msg, msg
    assert f"'{key}'" in msg and fragment in msg, msg
    assert isinstance(info.value, StforecastError)


def test_non_utf8_company_file(tmp_path):
    folder = _company_folder(tmp_path, COMPANY_TEXT.encode() + b"\n# \xff\xfe\n")
    with pytest.raises(DataFileError) as info:
        load_company(folder)
    msg = str(info.value)
    assert "\n" not in msg and str(folder / "company.toml") in msg and "UTF-8" in msg


def test_folder_without_company_file(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataFileError) as info:
        load_company(folder)
    msg = str(info.value)
    assert "\n" not in msg and str(folder) in msg and "company.toml" in msg


def test_unknown_company_name():
    with pytest.raises(DataFileError) as info:
        load_company("no_such_company")
    msg = str(info.value)
    assert "\n" not in msg and "no_such_company" in msg and "sensetime" in msg


def test_shipped_company_loads_by_name_and_by_folder():
    by_name = load_company("sensetime")
    assert by_name.key == COMPANY.key == "sensetime"
    assert by_name.segment_names == COMPANY.segment_names
    assert [o.name for o in by_name.observations] == [o.name for o in COMPANY.observations]


#: One member of every family a priors or scenarios file may name (and a U-shaped Beta).
FAMILY_MEMBERS = [("Normal", {"mu": 0.3, "sigma": 0.7}),
                  ("StudentT", {"nu": 3.5, "mu": -0.2, "sigma": 0.4}),
                  ("LogNormal", {"mu": -0.3, "sigma": 0.6}),
                  ("Gamma", {"alpha": 2.3, "beta": 4.1}), ("HalfNormal", {"sigma": 0.2}),
                  ("Exponential", {"lam": 3.0}), ("Beta", {"alpha": 2.5, "beta": 7.0}),
                  ("Beta", {"alpha": 0.7, "beta": 0.4}),
                  ("LogitNormal", {"mu": -1.0, "sigma": 0.5}),
                  ("Uniform", {"lower": -0.5, "upper": 2.0})]


@pytest.mark.parametrize("dist,params", FAMILY_MEMBERS)
def test_quantiles_and_draws_are_scipy_stats_own(dist, params):
    """``Prior.quantile`` and ``Prior.draw`` (no scipy.stats import: re-simulation loads faster)
    give bit for bit the frozen scipy.stats distribution's ``ppf`` and ``rvs`` (the same random
    numbers consumed: the simulation's streams do not change)."""
    from stforecast.priors import Prior

    prior = Prior(dist, params)
    frozen = prior.frozen()
    q = np.concatenate([[0.0, 1.0, -0.1, 1.1, np.nan, 0.5], np.random.default_rng(0).random(500)])
    assert frozen.ppf(q).tobytes() == prior.quantile(q).tobytes()
    assert all(type(frozen.ppf(x)) is type(prior.quantile(x)) and
               np.array_equal(frozen.ppf(x), prior.quantile(x), equal_nan=True)
               for x in (0.0, 0.05, 0.5, 1.0))
    for shape in [(4, 100, 25), (7,)]:
        assert frozen.rvs(size=shape, random_state=np.random.default_rng(5)).tobytes() == \
            prior.draw(shape, np.random.default_rng(5)).tobytes()
    if dist == "LogitNormal":  # no scipy.stats family: against the integral
        from scipy import integrate, special
        expected = integrate.quad(lambda z: special.expit(params["mu"] + params["sigma"] * z)
                                  * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -np.inf, np.inf)[0]
        assert prior.mean() == pytest.approx(expected, abs=1e-10)
    else:
        assert prior.mean() == float(frozen.mean())  # closed form or scipy's: the same float


@pytest.mark.parametrize("dist", ["Normal", "StudentT", "Beta", "Gamma", "Exponential", "Uniform"])
def test_closed_form_means_are_scipy_stats_own(dist):
    """``distributions.mean`` (the summary's shock probabilities, without importing scipy.stats)
    is scipy.stats' mean, bit for bit, over many parameter values."""
    from stforecast.distributions import mean
    from stforecast.priors import Prior

    rng = np.random.default_rng(3)
    for _ in range(300):
        params = {"Normal": {"mu": rng.normal(), "sigma": rng.uniform(0.1, 3)},
                  "StudentT": {"nu": rng.uniform(1.1, 30), "mu": rng.normal(),
                               "sigma": rng.uniform(0.1, 3)},
                  "Beta": {"alpha": rng.uniform(0.2, 40), "beta": rng.uniform(0.2, 40)},
                  "Gamma": {"alpha": rng.uniform(0.2, 30), "beta": rng.uniform(0.1, 10)},
                  "Exponential": {"lam": rng.uniform(0.05, 20)},
                  "Uniform": {"lower": rng.normal(), "upper": rng.normal() + 4}}[dist]
        assert mean(dist, params) == float(Prior(dist, params).frozen().mean()), params


def test_truncated_log_t_draws_are_scipy_stats_own():
    """A LogStudentT severity's draws: exp of scipy.stats.t's quantile at a uniform times the
    mass below the truncation, bit for bit."""
    from scipy import stats

    from stforecast.scenarios import LogStudentT

    t = stats.t(3.0, -0.2877, 0.55)
    u = np.random.default_rng(2).random((50, 3))
    expected = np.exp(t.ppf(u * float(t.cdf(np.log(4.0)))))
    heavy = LogStudentT({"nu": 3.0, "mu": -0.2877, "sigma": 0.55, "upper": 4.0})
    assert heavy.draw((50, 3), np.random.default_rng(2)).tobytes() == expected.tobytes()


def test_elicited_parameters_are_kept_between_processes(tmp_path, monkeypatch):
    """A Beta or Gamma range is solved once: the parameters are kept in the cache folder (a
    later process reads them instead of importing scipy.optimize), exactly as solved; a damaged
    memo file is ignored."""
    from stforecast import priors

    monkeypatch.setenv("STFORECAST_CACHE", str(tmp_path))
    for stale in (priors._solve, priors._solved):
        stale.cache_clear()
    monkeypatch.setattr(priors, "_solve", priors._solve.__wrapped__)  # no in-process cache
    entry = {"dist": "Beta", "range": [0.11, 0.37]}
    solved = parse_prior("p.toml", "k", entry).params
    assert (tmp_path / "elicited_priors.json").is_file()

    def unavailable(*args):
        raise AssertionError("solved again")

    monkeypatch.setattr(priors, "_solve_numerically", unavailable)
    priors._solved.cache_clear()  # a new process
    assert parse_prior("p.toml", "k", entry).params == solved
    (tmp_path / "elicited_priors.json").write_text("{not json")
    priors._solved.cache_clear()
    monkeypatch.undo()
    monkeypatch.setenv("STFORECAST_CACHE", str(tmp_path))
    assert parse_prior("p.toml", "k", entry).params == solved
    priors._solved.cache_clear()
