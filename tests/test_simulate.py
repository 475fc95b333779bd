"""Driver paths: ceilings on ratio drivers (priors ``upper``) and their validation."""

import numpy as np
import pytest

from stforecast.priors import PriorsError, default_priors_path, load_priors
from stforecast.simulate import driver_paths

from test_shocks import OBS, REPORT, fake_posterior


def test_ceilings_hold_and_bind_only_in_the_tail():
    post = fake_posterior(draws=100)
    post["other_receivable_days_volatility"] = post["other_receivable_days_volatility"] * 0 + 1.5
    caps = load_priors(default_priors_path()).ceilings()
    assert caps["other_receivable_days"] == 750 and "gross_margin" not in caps
    free = driver_paths(post, REPORT, OBS, 50, np.random.default_rng(0))
    capped = driver_paths(post, REPORT, OBS, 50, np.random.default_rng(0), caps)
    x_free, x_cap = free["other_receivable_days"].values, capped["other_receivable_days"].values
    assert x_free.max() > 750 >= x_cap.max()
    below = x_free[..., 0] < 750  # the first year is identical wherever the cap does not bind
    np.testing.assert_allclose(x_cap[..., 0][below], x_free[..., 0][below])
    assert 0 < (x_cap >= 750 - 1e-9).mean() < 0.5


@pytest.mark.parametrize("value, expected", [("-5", "upper"), ('"high"', "upper")])
def test_bad_ceiling_is_one_line(tmp_path, value, expected):
    text = default_priors_path().read_text().replace("upper = 750", f"upper = {value}", 1)
    bad = tmp_path / "p.toml"
    bad.write_text(text)
    with pytest.raises(PriorsError, match=expected) as err:
        load_priors(bad)
    assert "\n" not in str(err.value)


def test_ceiling_not_allowed_on_growth_drivers(tmp_path):
    text = default_priors_path().read_text()
    i = text.index("[growth.smart_life_revenue]")
    text = text[:i] + text[i:].replace("\n\n", "\nupper = 5\n\n", 1)
    bad = tmp_path / "p.toml"
    bad.write_text(text)
    with pytest.raises(PriorsError, match="growth.smart_life_revenue.upper"):
        load_priors(bad)
