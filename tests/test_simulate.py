"""Driver paths: first-year growth from the model, units x revenue per unit, ceilings on ratio
drivers (priors ``upper``) and their validation."""

import numpy as np
import pytest

from stforecast.priors import PriorsError, load_priors
from stforecast.simulate import driver_paths, statements

from test_shocks import COMPANY, OBS, PRIORS, fake_posterior


def test_first_year_revenue_follows_first_year_growth():
    """First-year revenue = last history revenue x exp(sum of the segment's first-year growth);
    a units segment's count and revenue per unit multiply to its revenue."""
    post = fake_posterior(draws=20)
    paths = driver_paths(post, COMPANY, OBS, 3, np.random.default_rng(0))
    first = COMPANY.first_forecast_year
    g1 = post["first_year_growth"]
    for s in COMPANY.segments:
        revenue = paths["segment_revenue"].sel(segment=s.name, year=first)
        growth = sum(g1.sel(growth_driver=d, drop=True) for d in s.growth_drivers)
        expected = OBS.revenue_last[s.name] * np.exp(growth)
        np.testing.assert_allclose(revenue.transpose("chain", "draw", "path").values,
                                   np.broadcast_to(expected.values[..., None], revenue.shape),
                                   rtol=1e-12)
        if s.kind == "units":
            units, per_unit = paths[s.unit_driver], paths[s.per_unit_driver]
            np.testing.assert_allclose((units * per_unit).transpose(*revenue.dims, "year").values,
                                       paths["segment_revenue"].sel(segment=s.name)
                                       .transpose(*revenue.dims, "year").values, rtol=1e-12)
            np.testing.assert_allclose(
                units.sel(year=first).transpose("chain", "draw", "path").values[..., 0],
                s.units_last * np.exp(g1.sel(growth_driver=s.unit_driver)).values, rtol=1e-12)


def test_statements_keep_the_analyst_drivers():
    post = fake_posterior(draws=10)
    out = statements(driver_paths(post, COMPANY, OBS, 2, np.random.default_rng(0)), COMPANY)
    for name in COMPANY.unit_drivers():
        assert name in out and "year" in out[name].dims
    for s in COMPANY.segments:
        assert s.revenue in out
    assert out["target_price"].dims == ("chain", "draw", "path")


def test_same_seed_same_paths():
    post = fake_posterior(draws=10)
    a = driver_paths(post, COMPANY, OBS, 4, np.random.default_rng(5))
    b = driver_paths(post, COMPANY, OBS, 4, np.random.default_rng(5))
    assert a.identical(b)


def test_ceilings_hold_and_bind_only_in_the_tail():
    post = fake_posterior(draws=100)
    post["other_receivable_days_volatility"] = post["other_receivable_days_volatility"] * 0 + 1.5
    caps = PRIORS.ceilings()
    assert caps["other_receivable_days"] == 750 and "gross_margin" not in caps
    free = driver_paths(post, COMPANY, OBS, 50, np.random.default_rng(0))
    capped = driver_paths(post, COMPANY, OBS, 50, np.random.default_rng(0), caps)
    x_free, x_cap = free["other_receivable_days"].values, capped["other_receivable_days"].values
    assert x_free.max() > 750 >= x_cap.max()
    below = x_free[..., 0] < 750  # the first year is identical wherever the cap does not bind
    np.testing.assert_allclose(x_cap[..., 0][below], x_free[..., 0][below])
    assert 0 < (x_cap >= 750 - 1e-9).mean() < 0.5


@pytest.mark.parametrize("value, expected", [("-5", "upper"), ('"high"', "upper")])
def test_bad_ceiling_is_one_line(tmp_path, value, expected):
    text = COMPANY.priors_path.read_text().replace("upper = 750", f"upper = {value}", 1)
    bad = tmp_path / "p.toml"
    bad.write_text(text)
    with pytest.raises(PriorsError, match=expected) as err:
        load_priors(bad, COMPANY.growth_drivers())
    assert "\n" not in str(err.value)


def test_ceiling_not_allowed_on_growth_drivers(tmp_path):
    driver = next(iter(COMPANY.growth_drivers()))
    text = COMPANY.priors_path.read_text()
    i = text.index(f"[growth.{driver}]")
    text = text[:i] + text[i:].replace("\n\n", "\nupper = 5\n\n", 1)
    bad = tmp_path / "p.toml"
    bad.write_text(text)
    with pytest.raises(PriorsError, match=f"growth.{driver}.upper"):
        load_priors(bad, COMPANY.growth_drivers())
