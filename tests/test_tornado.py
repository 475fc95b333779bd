"""The tornado as analysts read it (issue 15, item 6): for each input, the outcome's median with
the input in its bottom and its top decile, in the outcome's units, labelled in words, sorted by
swing; the rank view stays available (``--rank``)."""

import json

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from stforecast import plots
from stforecast.company import load_company
from stforecast.sensitivity import (direct_growth, input_labels, rank_sensitivity,
                                    swing_sensitivity)

SHAPE = (4, 500, 100)  # chain, draw, path: 200,000 samples
DIMS = ("chain", "draw", "path")


@pytest.fixture(scope="module")
def ds():
    """revenue = 1000 + 100 x customers' z-score - 100 x shock intensity + noise; the shock
    occurs on 20% of paths."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal(SHAPE)
    occurs = rng.random(SHAPE) < 0.2
    intensity = np.where(occurs, rng.lognormal(0.0, 0.3, SHAPE), 0.0)
    noise = rng.normal(0.0, 5.0, SHAPE)
    years = ["Y1", "Y2"]
    per_year = lambda a: np.stack([a, a], axis=-1)  # noqa: E731
    return xr.Dataset({
        "revenue": (DIMS + ("year",), per_year(1000 + 100 * z - 100 * intensity + noise)),
        "biz_customers": (DIMS + ("year",), per_year(500 + 50 * z)),
        "shock_ban": (DIMS + ("year",), np.stack([intensity, 0 * intensity], axis=-1)),
        "gross_margin": (DIMS + ("year",), per_year(0.6 + 0.01 * rng.standard_normal(SHAPE))),
    }, coords={"year": years})


def test_swing_is_in_the_outcome_units(ds):
    labels = {"biz_customers": ("Business customers (count)", "Y2"),
              "shock_ban": ("GPU ban", "shock intensity, sum Y1-Y2")}
    t = swing_sensitivity(ds, "revenue", "Y2", level_drivers=("biz_customers",), labels=labels)
    assert t["statistic"] == "median" and t["band"] == 0.1
    first = t["entries"][0]
    assert first["driver"] == "biz_customers" and first["label"] == "Business customers (count)"
    # Customers' bottom decile: z <= -1.2816, whose median is -1.755 (truncated normal); the
    # shock's 20% occurrence and the noise move the band's median revenue by about -20 -> a
    # tolerance of 25 (the band holds 20,000 paths: Monte Carlo error of its median ~ 2).
    z_mid = stats.norm.ppf(0.05)  # the median of the bottom decile of a standard normal
    assert first["low"] == pytest.approx(1000 + 100 * z_mid, abs=25)
    assert first["high"] == pytest.approx(1000 - 100 * z_mid, abs=25)
    assert first["swing"] == pytest.approx(first["high"] - first["low"], rel=1e-3)
    assert first["input_low"] == pytest.approx(500 + 50 * stats.norm.ppf(0.1), abs=1)
    assert first["n_low"] == pytest.approx(20_000, abs=5) and first["n_high"] == pytest.approx(20_000, abs=5)
    ban = next(e for e in t["entries"] if e["driver"] == "shock_ban")
    # the shock is 0 on 80% of paths: the low band is those paths, the high band its top decile
    assert ban["n_low"] == pytest.approx(0.8 * 200_000, rel=0.01) and ban["input_low"] == 0.0
    assert ban["n_high"] == pytest.approx(20_000, abs=5)
    assert ban["swing"] < -90  # a top-decile occurrence (intensity >= 1) costs 100 x intensity
    swings = [abs(e["swing"]) for e in t["entries"]]
    assert swings == sorted(swings, reverse=True)
    assert t["median"] == pytest.approx(float(np.median(ds["revenue"].sel(year="Y2"))), rel=1e-3)
    ranked = rank_sensitivity(ds, "revenue", "Y2", level_drivers=("biz_customers",))
    assert ranked[0]["driver"] == "biz_customers" and ranked[0]["score"] > 0.9  # second view


def test_inputs_are_labelled_in_words_with_direct_segments_growth():
    company = load_company("sensetime")
    labels = input_labels(company, {"us_restrictions": "US restrictions tighten"})
    growth = direct_growth(company)
    direct = [s.name for s in company.segments if s.kind != "units"]
    assert direct and set(growth) == {f"{n}_revenue" for n in direct}
    for name, (label, basis) in labels.items():
        assert "_" not in label and label, name
    assert labels["smart_life_revenue"][0] == "Smart Life revenue growth"
    assert labels["smart_life_revenue"][1] == "CAGR FY20-FY23"
    assert labels["shock_us_restrictions"][0] == "US restrictions tighten"
    toy = load_company("toyco")
    assert all("_" not in label for label, _ in input_labels(toy).values())


def test_direct_growth_is_an_input(ds):
    """A direct segment's revenue CAGR from its last history value enters the tornado."""
    seg = ds.assign(revenue_life=ds["revenue"] * 0.1)
    t = swing_sensitivity(seg, "revenue", "Y2",
                          growth_segments={"life_revenue": ("revenue_life", 80.0, 2)})
    life = next(e for e in t["entries"] if e["driver"] == "life_revenue")
    assert life["input_low"] == pytest.approx(
        float(np.quantile((np.maximum(seg["revenue_life"].sel(year="Y2").values, 0) / 80.0) ** 0.5 - 1, 0.1)),
        rel=1e-3)
    assert life["swing"] > 0


def test_plot_reads_the_tornado_block(ds):
    t = swing_sensitivity(ds, "revenue", "Y2", level_drivers=("biz_customers",),
                          labels={"biz_customers": ("business customers", "Y2")})
    t = json.loads(json.dumps(t))  # as summary.json holds it
    fig = plots.swing_tornado(t, "Tornado: revenue Y2", "RMB mn")
    ax = fig.axes[0]
    top = max(ax.get_yticklabels(), key=lambda tick: tick.get_position()[1])
    assert top.get_text() == "Business customers"  # the largest swing on top
    assert "RMB mn" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "input at or below its 10th percentile", "input at or above its 90th percentile"]
    lows = [p for p in ax.patches if p.get_gid() == "bar"]
    assert len(lows) == 2 * len(t["entries"])
    first_low = min(p.get_x() + min(0.0, p.get_width()) for p in lows)  # bars start at the median
    assert first_low == pytest.approx(min(e["low"] for e in t["entries"]), rel=1e-6)
    figs = plots.figures({"variables": {"revenue": {"label": "revenue", "units": "RMB mn"}}},
                         {"revenue": {"year": "Y2", "ranking": [], "tornado": t}})
    assert figs["tornado_revenue"].axes[0].get_title() == "Tornado: Revenue Y2"


def test_summary_round_trip_keeps_the_tornado(tmp_path):
    from pathlib import Path

    from stforecast.results import Summary, Swing, Tornado

    fixture = Path(__file__).parent / "fixtures" / "summary_schema2_sensetime.json"
    data = json.loads(fixture.read_text())
    old = Summary.from_json(json.dumps(data), fixture)  # summaries without a tornado still load
    assert all(s.tornado is None for s in old.sensitivity.values())
    entry = {"driver": "x", "label": "an input", "basis": "FY23", "low": 1.0, "high": 2.0,
             "swing": 1.0, "input_low": 0.1, "input_high": 0.9, "n_low": 10, "n_high": 10}
    data["sensitivity"]["revenue"]["tornado"] = {"statistic": "median", "band": 0.1,
                                                 "median": 1.5, "entries": [entry]}
    new = Summary.from_json(json.dumps(data), fixture)
    assert new.sensitivity["revenue"].tornado == Tornado("median", 0.1, 1.5, (Swing(**entry),))
    assert json.loads(new.to_json())["sensitivity"]["revenue"]["tornado"]["entries"][0] == entry


def test_inputs_made_once_give_what_each_view_makes_alone(ds):
    """``summary_sensitivity`` makes every outcome's inputs once (``driver_values``) and hands
    them to both views; each view given them answers exactly as it does making its own."""
    from stforecast.sensitivity import driver_values

    levels = ("biz_customers",)
    drivers = driver_values(ds, levels)
    before = {k: v.copy() for k, v in drivers.items()}
    for variable, year in (("revenue", "Y2"), ("gross_margin", "Y1")):
        assert rank_sensitivity(ds, variable, year, level_drivers=levels, drivers=drivers) == \
            rank_sensitivity(ds, variable, year, level_drivers=levels)
        assert swing_sensitivity(ds, variable, year, level_drivers=levels, drivers=drivers) == \
            swing_sensitivity(ds, variable, year, level_drivers=levels)
    assert all(np.array_equal(drivers[k], v) for k, v in before.items())  # left as they were
