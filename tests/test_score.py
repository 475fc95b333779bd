"""Tests for stforecast.score: CRPS/PIT/coverage maths, actuals files, errors and run_score."""

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from stforecast.company import load_company
from stforecast.score import (
    Actual,
    ActualsError,
    crps_samples,
    format_table,
    interval_flags,
    load_actuals,
    pit,
    run_score,
    score,
)

from results_folder import write_results_folder

YEARS = ["FY21", "FY22", "FY23"]
REQUIRED_KEYS = {"variable", "year", "actual", "pit", "in_50", "in_80", "in_95", "crps",
                 "crps_point"}


def make_predictive(seed=0, chain=2, draw=50, path=20, scenarios=None, dtype=np.float32):
    rng = np.random.default_rng(seed)
    lead = (chain, draw, path)
    dims = ("chain", "draw", "path")
    if scenarios is not None:
        lead, dims = (len(scenarios),) + lead, ("scenario",) + dims
    revenue = rng.normal([4700.0, 5900.0, 7200.0], [300.0, 900.0, 1600.0], lead + (3,))
    price = rng.lognormal(1.8, 0.3, lead)
    coords = {"year": YEARS}
    if scenarios is not None:
        coords["scenario"] = scenarios
        shift = 1000.0 * np.arange(len(scenarios))  # scenario k is k * 1000 higher
        revenue = revenue + shift[:, None, None, None, None]
        price = price + shift[:, None, None, None] / 1000.0
    return xr.Dataset(
        {
            "revenue": (dims + ("year",), revenue.astype(dtype)),
            "cash": (dims + ("year",), rng.normal(4000.0, 1200.0, lead + (3,)).astype(dtype)),
            "target_price": (dims, price.astype(dtype)),
            "cash_burn": (dims, rng.normal(2500.0, 400.0, lead).astype(dtype)),
        },
        coords=coords,
    )


def make_published():
    return xr.Dataset(
        {"revenue": (("year",), [4678.0, 6399.0, 8825.0]), "target_price": 8.08},
        coords={"year": YEARS},
    )


def constant_predictive(values, name="x", year=None):
    """A predictive dataset whose (chain, draw, path) samples are exactly ``values``."""
    values = np.asarray(values, dtype=float).reshape(1, 1, -1)
    if year is None:
        return xr.Dataset({name: (("chain", "draw", "path"), values)})
    return xr.Dataset({name: (("chain", "draw", "path", "year"), values[..., None])},
                      coords={"year": [year]})


def brute_force_crps(x, y):
    x = np.asarray(x, dtype=float)
    return np.mean(np.abs(x - y)) - 0.5 * np.mean(np.abs(x[:, None] - x[None, :]))


def normal_crps(mu, sigma, y):
    z = (y - mu) / sigma
    cdf = 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return sigma * (z * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    return write_results_folder(make_predictive(scenarios=["base", "risk-weighted", "bear"]),
                                tmp_path_factory.mktemp("results"))


def write(tmp_path, text, name="actuals.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ CRPS
@pytest.mark.parametrize("y", [-3.0, 0.1, 0.7, 2.5, 10.0])
def test_crps_matches_brute_force(y):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.gamma(2.0, 0.5, 297), [0.7, 0.7, 0.7]])  # includes ties with y
    assert crps_samples(np.sort(x), y) == pytest.approx(brute_force_crps(x, y), rel=1e-9)


def test_crps_large_level_keeps_precision():
    rng = np.random.default_rng(2)
    x = 1e12 + rng.normal(0.0, 1.0, 300)
    y = 1e12 + 0.3
    # x - 1e12 and y - 1e12 are exact, so the shifted brute force is the true value
    assert crps_samples(np.sort(x), y) == pytest.approx(
        brute_force_crps(x - 1e12, y - 1e12), rel=1e-8)


def test_crps_normal_closed_form():
    rng = np.random.default_rng(3)
    x = np.sort(rng.normal(10.0, 2.0, 400_000))
    for y in (10.0, 11.3, 4.0):
        assert crps_samples(x, y) == pytest.approx(normal_crps(10.0, 2.0, y), rel=0.01)


def test_crps_degenerate_sample_is_absolute_error():
    x = np.full(50, 5.0)
    assert crps_samples(x, 7.5) == pytest.approx(2.5, abs=1e-12)
    row = score([Actual("x", None, 7.5)], constant_predictive(x), make_published(),
                {"x": 5.0})[0]
    assert row["crps"] == pytest.approx(2.5) and row["crps_point"] == pytest.approx(2.5)


def test_crps_spread_rewarded_over_wrong_point():
    x = np.sort(np.random.default_rng(4).normal(0.0, 1.0, 5000))
    assert crps_samples(x, 0.0) < abs(1.0 - 0.0)  # a spread-out forecast centred right
    assert crps_samples(x, 0.0) > crps_samples(x * 0.1, 0.0)  # sharper and right is better


# ------------------------------------------------------------------------------------- PIT
def test_pit_extremes_median_and_ties():
    x = np.arange(1.0, 102.0)  # 1..101, median 51
    assert pit(x, 0.5) == 0.0
    assert pit(x, 101.5) == 1.0
    assert pit(x, 51.0) == pytest.approx(0.5)
    assert pit(np.array([1.0, 2.0, 2.0, 3.0]), 2.0) == pytest.approx(0.5)
    assert pit(np.array([1.0, 2.0, 3.0, 3.0]), 3.0) == pytest.approx(0.75)
    assert pit(np.array([1.0, 1.0, 1.0, 4.0]), 1.0) == pytest.approx(0.375)


# --------------------------------------------------------------------------- interval flags
@pytest.mark.parametrize("y, expected", [
    (250.0, [False, True, True]), (251.0, [True, True, True]),
    (750.0, [True, True, True]), (751.0, [False, True, True]),
    (100.0, [False, False, True]), (101.0, [False, True, True]),
    (900.0, [False, True, True]), (901.0, [False, False, True]),
    (25.0, [False, False, False]), (26.0, [False, False, True]),
    (975.0, [False, False, True]), (976.0, [False, False, False]),
    (500.5, [True, True, True]),
])
def test_interval_edges_on_1_to_1000(y, expected):
    # linear quantiles of 1..1000: 50% [250.75, 750.25], 80% [100.9, 900.1], 95% [25.975, 975.025]
    x = np.arange(1.0, 1001.0)
    assert interval_flags(x, y) == expected
    ds = xr.Dataset({"x": (("chain", "draw", "path"), x.reshape(2, 50, 10))})
    row = score([Actual("x", None, y)], ds, make_published(), {})[0]
    assert [row["in_50"], row["in_80"], row["in_95"]] == expected


def test_interval_ends_are_inclusive():
    x = np.arange(1.0, 1002.0)  # 1..1001: the 25% and 75% quantiles are exactly 251 and 751
    assert interval_flags(x, 251.0)[0] and interval_flags(x, 751.0)[0]
    assert not interval_flags(x, 250.999)[0] and not interval_flags(x, 751.001)[0]


# ----------------------------------------------------------------------------- calibration
def _calibration_rows(sigma_forecast):
    rng = np.random.default_rng(5)
    ds = xr.Dataset({"x": (("chain", "draw", "path"), rng.normal(0.0, sigma_forecast,
                                                                 (2, 100, 20)))})
    actuals = [Actual("x", None, float(y)) for y in rng.normal(0.0, 1.0, 2000)]
    return score(actuals, ds, make_published(), {})


def test_calibrated_forecast_has_uniform_pit_and_nominal_coverage():
    rows = _calibration_rows(1.0)
    pits = np.array([r["pit"] for r in rows])
    counts = np.histogram(pits, bins=10, range=(0.0, 1.0))[0] / len(pits)
    assert np.all(np.abs(counts - 0.1) < 0.035), counts
    for level, key in ((0.5, "in_50"), (0.8, "in_80"), (0.95, "in_95")):
        rate = np.mean([r[key] for r in rows])
        assert abs(rate - level) < 0.035, (key, rate)


def test_overconfident_forecast_is_detected():
    rows = _calibration_rows(0.4)  # bands far too narrow
    assert np.mean([r["in_80"] for r in rows]) < 0.5
    pits = np.array([r["pit"] for r in rows])
    assert np.mean((pits < 0.05) | (pits > 0.95)) > 0.4


# ------------------------------------------------------------------------------ score rows
def test_score_row_contents_and_types():
    ds = make_predictive()
    actuals = [Actual("revenue", "FY22", 3809.0), Actual("target_price", None, 2.1),
               Actual("cash_burn", None, 2600.0)]
    rows = score(actuals, ds, make_published(), {})
    assert [r["variable"] for r in rows] == ["revenue", "target_price",
                                             "cash_burn"]
    rev = rows[0]
    assert REQUIRED_KEYS <= set(rev) and rev["year"] == "FY22" and rev["n"] == 2 * 50 * 20
    samples = np.sort(ds["revenue"].sel(year="FY22").values.astype(float), axis=None)
    assert rev["pit"] == pytest.approx(np.mean(samples < 3809.0), rel=1e-5)
    assert rev["crps"] == pytest.approx(brute_force_crps(samples, 3809.0), rel=1e-5)
    assert rev["point"] == 6399.0 and rev["crps_point"] == pytest.approx(6399.0 - 3809.0)
    for key in ("actual", "pit", "crps", "crps_point"):
        assert type(rev[key]) is float
    for key in ("in_50", "in_80", "in_95"):
        assert type(rev[key]) is bool
    assert rows[1]["year"] is None and rows[1]["crps_point"] == pytest.approx(8.08 - 2.1)
    # no report point for this variable: crps_point is None
    assert rows[2]["point"] is None and rows[2]["crps_point"] is None
    json.dumps(rows)  # plain Python types


def test_point_scalars_override_and_add():
    rows = score([Actual("target_price", None, 2.1), Actual("cash_burn", None, 1.0)],
                 make_predictive(), make_published(),
                 {"target_price": 6.73, "cash_burn": 3.0})
    assert rows[0]["point"] == 6.73 and rows[0]["crps_point"] == pytest.approx(4.63)
    assert rows[1]["crps_point"] == pytest.approx(2.0)


def test_non_finite_samples_are_an_error():
    x = np.arange(10.0)
    x[[2, 5, 7]] = [np.nan, np.inf, np.nan]
    with pytest.raises(ActualsError, match=r"key 'x'.*3 non-finite samples"):
        score([Actual("x", None, 1.0)], constant_predictive(x), make_published(), {})


def test_large_float32_variable_is_scored():
    rng = np.random.default_rng(6)
    ds = xr.Dataset({"x": (("chain", "draw", "path"),
                           rng.normal(100.0, 10.0, (4, 250, 500)).astype(np.float32))})
    row = score([Actual("x", None, 100.0)], ds, make_published(), {})[0]
    assert row["n"] == 500_000 and row["pit"] == pytest.approx(0.5, abs=0.01)
    assert row["crps"] == pytest.approx(normal_crps(100.0, 10.0, 100.0), rel=0.02)


# ------------------------------------------------------------------------------- scenarios
def test_scenario_default_named_and_unknown():
    ds = make_predictive(scenarios=["base", "risk-weighted", "bear"])
    actual = [Actual("revenue", "FY21", 5700.0)]  # the median of "risk-weighted" (+1000)
    default = score(actual, ds, make_published(), {})[0]
    assert default["pit"] == pytest.approx(0.5, abs=0.1)
    assert score(actual, ds, make_published(), {}, scenario="risk-weighted") == [default]
    assert score(actual, ds, make_published(), {}, scenario="base")[0]["pit"] > 0.99
    assert score(actual, ds, make_published(), {}, scenario="bear")[0]["pit"] < 0.01
    with pytest.raises(ActualsError, match="unknown scenario 'bull'.*base, risk-weighted, bear"):
        score(actual, ds, make_published(), {}, scenario="bull")


def test_scenario_requested_without_scenario_dim():
    with pytest.raises(ActualsError, match="no scenario dimension"):
        score([Actual("revenue", "FY21", 1.0)], make_predictive(), make_published(), {},
              scenario="base")


# ---------------------------------------------------------------------------- actuals file
EXAMPLE = """\
# realised values (RMB mn unless the name says otherwise)
[revenue]
FY21 = 4700
FY22 = 3809.5
[cash]
FY22 = 11000
target_price = 2.1        # a per-path scalar, no year
"""


def test_load_actuals_tables_and_scalars(tmp_path):
    actuals = load_actuals(write(tmp_path, EXAMPLE))
    # TOML puts the trailing scalar inside [cash]; a top-level scalar must come before tables
    assert actuals[:3] == [Actual("revenue", "FY21", 4700.0), Actual("revenue", "FY22", 3809.5),
                           Actual("cash", "FY22", 11000.0)]
    text = "target_price = 2.1\n[revenue]\nFY21 = 4700\n"
    top = load_actuals(write(tmp_path, text, "b.toml"))
    assert top == [Actual("target_price", None, 2.1), Actual("revenue", "FY21", 4700.0)]
    assert all(type(a.value) is float for a in top)


def test_load_actuals_dotted_keys(tmp_path):
    dotted = load_actuals(write(tmp_path, "revenue.FY21 = 4700\nrevenue.FY22 = 3809\n"
                                          "target_price = 2.1\n"))
    assert dotted == [Actual("revenue", "FY21", 4700.0), Actual("revenue", "FY22", 3809.0),
                      Actual("target_price", None, 2.1)]


LOAD_ERRORS = [
    ('revenue.FY22 = "3809"\n', r"key 'revenue\.FY22': expected a number, got '3809'"),
    ("target_price = true\n", r"key 'target_price': expected a number.*got True"),
    ("revenue.FY22 = false\n", r"key 'revenue\.FY22': expected a number, got False"),
    ("revenue.FY22 = nan\n", r"key 'revenue\.FY22': expected a finite number"),
    ("target_price = -inf\n", r"key 'target_price': expected a finite number"),
    ("revenue.FY22 = [1, 2]\n", r"key 'revenue\.FY22': expected a number, got an array"),
    ("revenue.FY22.low = 1\n", r"key 'revenue\.FY22': expected a number, got a table"),
    ("[revenue]\n", r"key 'revenue': expected year = number"),
    ("revenue.FY22 = = 3809\n", r"TOML syntax error: .*line 1"),
    ("# nothing yet\n", r"expected at least one actual.*empty"),
]


@pytest.mark.parametrize("text, pattern", LOAD_ERRORS)
def test_load_actuals_errors(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ActualsError, match=pattern) as info:
        load_actuals(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))


def test_load_actuals_missing_file(tmp_path):
    with pytest.raises(ActualsError, match="cannot read file"):
        load_actuals(tmp_path / "nope.toml")


SCORE_ERRORS = [
    ("revnue.FY22 = 3809\n", r"key 'revnue\.FY22': unknown variable 'revnue' "
                             r"\(did you mean 'revenue'\?\); valid names: .*target_price"),
    ("revenue.FY25 = 3809\n", r"key 'revenue\.FY25': unknown year 'FY25'.*FY21, FY22, FY23"),
    ("target_price.FY22 = 2.1\n", r"key 'target_price\.FY22': .*has no year dimension"),
    ("revenue = 3809\n", r"key 'revenue': 'revenue' has a year dimension"),
]


@pytest.mark.parametrize("text, pattern", SCORE_ERRORS)
def test_score_validation_errors(tmp_path, text, pattern):
    path = write(tmp_path, text)
    with pytest.raises(ActualsError, match=pattern) as info:
        score(load_actuals(path), make_predictive(), make_published(), {}, source=str(path))
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


# ------------------------------------------------------------------------------- run_score
@pytest.mark.parametrize("text, pattern", LOAD_ERRORS + SCORE_ERRORS)
def test_run_score_errors_print_one_line(tmp_path, results_dir, capsys, text, pattern):
    path = write(tmp_path, text)
    printed = []
    assert run_score(path, results_dir, out=printed.append) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(pattern, err), err
    assert printed == []


def test_run_score_missing_inputs(tmp_path, results_dir, capsys):
    assert run_score(tmp_path / "nope.toml", results_dir) == 2
    assert "cannot read file" in capsys.readouterr().err
    path = write(tmp_path, "revenue.FY22 = 3809\n")
    assert run_score(path, tmp_path / "no-results") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no results file" in err and err.count("\n") == 1
    assert run_score(path, results_dir, scenario="bull") == 2
    assert "unknown scenario 'bull'" in capsys.readouterr().err


def test_run_score_json_end_to_end(tmp_path, results_dir, capsys):
    path = write(tmp_path, "target_price = 2.1\ncash_burn = 2600\n"
                           "[revenue]\nFY21 = 4700\nFY22 = 3809\n")
    printed = []
    assert run_score(path, results_dir, as_json=True, out=printed.append) == 0
    assert capsys.readouterr().err == ""
    rows = json.loads(printed[0])
    assert isinstance(rows, list) and len(rows) == 4
    for row in rows:
        assert REQUIRED_KEYS <= set(row) <= REQUIRED_KEYS | {"point", "n"}
        assert 0.0 <= row["pit"] <= 1.0 and row["crps"] >= 0.0
    tp, burn, fy21, fy22 = rows
    company = load_company("sensetime")  # the company stored with the results
    published = company.published
    assert tp["year"] is None
    assert tp["point"] == pytest.approx(company.market.target_price_published)
    assert burn["crps_point"] is None
    point = float(published["revenue"].sel(year="FY21"))
    assert fy21["year"] == "FY21" and fy21["crps_point"] == pytest.approx(abs(point - 4700.0),
                                                                          rel=1e-5)
    # the default scenario is "risk-weighted" (revenue FY21 ~ N(5700, 300) in the fixture)
    assert fy21["pit"] < 0.01 and fy22["n"] == 2 * 50 * 20


def test_run_score_accepts_the_price_currency_alias(tmp_path, results_dir):
    plain, alias = write(tmp_path, "target_price = 2.1\n"), write(tmp_path, "target_price_hkd = 2.1\n",
                                                                  "alias.toml")
    printed = []
    assert run_score(plain, results_dir, as_json=True, out=printed.append) == 0
    assert run_score(alias, results_dir, as_json=True, out=printed.append) == 0
    assert printed[0] == printed[1] and json.loads(printed[0])[0]["variable"] == "target_price"


def test_run_score_table(tmp_path, results_dir):
    path = write(tmp_path, "cash_burn = 2600\n[revenue]\nFY21 = 4700\nFY22 = 6900\n")
    printed = []
    assert run_score(path, results_dir, scenario="base", out=printed.append) == 0
    table = printed[0]
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["variable", "year", "actual", "report"]
    assert any(line.startswith("revenue") and "FY22" in line and "6,900" in line for line in lines)
    assert lines[-1].startswith("The distribution beat the report's point forecast on ")
    assert "of 2 actuals" in lines[-1] and "1 without a report point forecast" in lines[-1]
    assert len(list(tmp_path.iterdir())) == 1  # nothing written


def test_format_table_verdict_counts():
    rows = [
        {"variable": "revenue", "year": "FY21", "actual": 4700.0, "point": 4678.0, "pit": 0.4,
         "in_50": True, "in_80": True, "in_95": True, "crps": 10.0, "crps_point": 22.0, "n": 9},
        {"variable": "revenue", "year": "FY22", "actual": 3809.0, "point": 6399.0, "pit": 0.0,
         "in_50": False, "in_80": False, "in_95": False, "crps": 3000.0, "crps_point": 2590.0,
         "n": 9},
    ]
    text = format_table(rows)
    assert "on 1 of 2 actuals" in text and "yes" in text and "no" in text
    assert "1/2 in the 50% band" in text
    assert format_table([]) == "no actuals to score"


def test_import_is_light():
    code = ("import stforecast.score, sys; "
            "bad = [m for m in ('scipy', 'pymc', 'pytensor', 'arviz') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_scalar_after_table_gets_a_hint(tmp_path):
    # In TOML a plain key after [cash] belongs to the cash table: say so in the error.
    path = write(tmp_path, EXAMPLE)
    with pytest.raises(ActualsError, match=r"key 'cash\.target_price': unknown year "
                                           r".*put plain `target_price = \.\.\.` lines before"):
        score(load_actuals(path), make_predictive(), make_published(), {}, source=str(path))
