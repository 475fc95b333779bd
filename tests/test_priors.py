"""Tests for stforecast.priors: the real priors file, elicited ranges, and one-line errors for bad
files (from the library and from `stforecast check-priors`)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stforecast.priors import (GROWTH_DRIVERS, RATIO_DRIVERS, PriorsError, default_priors_path,
                               load_priors, parse_prior)

REAL = Path(__file__).resolve().parents[1] / "priors" / "sensetime.toml"
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
    return load_priors(REAL)


def test_real_file_loads(spec):
    assert len(spec.growth) == 6 and set(spec.growth) == set(GROWTH_DRIVERS)
    assert len(spec.ratios) == 11 and set(spec.ratios) == set(RATIO_DRIVERS)
    assert "ev_sales_multiple" in spec.valuation
    assert "company_growth_effect" in spec.pooling
    assert all(p.source for p in spec.processes().values())
    assert spec.ratios["gross_margin"].transform == "logit"
    assert len(spec.sha256) == 64
    assert "\n" not in spec.summary()
    assert default_priors_path().resolve() == REAL


def test_real_file_elicited_ranges_match(spec):
    priors = [getattr(p, part) for p in spec.processes().values()
              for part in ("long_run", "persistence", "volatility")]
    priors += list(spec.valuation.values()) + list(spec.pooling.values())
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
    prior = load_priors(path).ratios["gross_margin"].long_run
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
        load_priors(path)
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
        load_priors(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_check_priors_cli_valid_file():
    proc = subprocess.run(CLI + ["check-priors", str(REAL)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert str(REAL) in lines[0] and "valid" in lines[0]
    assert "6 growth" in lines[0] and "11 ratio" in lines[0]
