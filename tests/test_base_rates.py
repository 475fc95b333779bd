"""The base-rates file: it loads and validates, every number says where it comes from, its
distributions agree with their own published summaries, and a malformed file gives one line."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stforecast.base_rates import (BaseRatesError, default_path, load_base_rates)
from stforecast.company import list_companies

BR = load_base_rates()
GOOD = default_path().read_text()
PAGE = re.compile(r"\bpp?\. ?\d+")
EXHIBIT = re.compile(r"\b(Exhibit|Table|abstract|chapter)\b", re.IGNORECASE)


def test_file_is_beside_the_companies_and_not_one_of_them():
    assert default_path().parent.name == "priors" and default_path().is_file()
    assert "base_rates" not in list_companies() and "base_rates.toml" not in list_companies()


def test_every_entry_has_a_source_with_exhibit_and_page_or_is_marked_unverified():
    entries = [*BR.classes.values(), *BR.findings.values(), *BR.stalls.values()]
    assert len(entries) >= 10
    for e in entries:
        assert e.source.strip(), e.name
        if e.verified:
            assert PAGE.search(e.source) and EXHIBIT.search(e.source), e.name
        else:
            assert e.note.strip(), e.name  # what the unverified number rests on
    for kind in ("growth_persistence", "analyst_optimism", "gross_margin_change"):
        assert any(f.kind == kind for f in BR.findings.values()), kind


def test_distributions_are_valid_and_agree_with_their_published_median():
    with_bins = [c for c in BR.classes.values() if c.edges is not None]
    assert with_bins
    for c in with_bins:
        assert np.all(np.diff(c.edges) > 0) and len(c.frequency) == len(c.edges) - 1
        assert abs(c.frequency.sum() - 1) <= 0.01, c.name
        if c.median is not None:
            # interpolated median within the 5-point bin that holds the published one
            assert abs(c.quantile(0.5) - c.median) < 0.025, (c.name, c.quantile(0.5), c.median)
        assert c.prob_below(-np.inf) == 0 and abs(c.prob_below(np.inf) - 1) < 1e-12
        qs = [c.quantile(q) for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
        assert qs == sorted(qs), c.name


def test_size_classes_order_growth_as_published():
    """Smaller firms grow faster and more dispersedly (the book's main size result), class by
    class, at 3 years; and 5-year growth of the same class is less dispersed than 3-year."""
    three = sorted(BR.of_kind("sales_cagr_3y"), key=lambda c: c.lower)
    three = [c for c in three if c.lower > 0 or np.isfinite(c.upper)]  # the size classes
    means = [c.mean for c in three]
    assert len(three) >= 10 and means == sorted(means, reverse=True), means
    assert three[0].sd > three[1].sd > three[-1].sd
    for c5 in BR.of_kind("sales_cagr_5y"):
        c3 = BR.reference_class("sales_cagr_3y", c5.by, c5.lower)
        assert (c3.lower, c3.upper) == (c5.lower, c5.upper) and c5.sd < c3.sd, c5.name


def test_reference_class_lookup():
    c = BR.reference_class("sales_cagr_3y", "starting_sales_usd", 533.0)
    assert (c.lower, c.upper, c.edges) == (325.0, 700.0, None)
    with_bins = BR.reference_class("sales_cagr_3y", "starting_sales_usd", 533.0, with_bins=True)
    assert with_bins.upper == np.inf and with_bins.edges is not None
    with pytest.raises(BaseRatesError):
        BR.reference_class("sales_cagr_3y", "prior_growth", 0.3)
    with pytest.raises(BaseRatesError):
        c.prob_below(0.0)  # no frequencies to read a probability from


def test_stalls_match_their_tables():
    for s in BR.stalls.values():
        assert s.probability == pytest.approx(BR.classes[s.of].prob_below(s.below), abs=0.001)


BAD = {
    "syntax": (GOOD.replace("mean = 0.081", "mean = = 0.081"), "TOML syntax error"),
    "unordered bins": (GOOD.replace("-0.20, -0.15, -0.10", "-0.15, -0.20, -0.10", 1),
                       "sales_cagr_3y[0].bins"),
    "frequencies do not sum to 1": (GOOD.replace("0.252, 0.213", "0.352, 0.213", 1),
                                    "sales_cagr_3y[0].frequency"),
    "wrong number of frequencies": (GOOD.replace("0.252, 0.213", "0.465", 1),
                                    "sales_cagr_3y[0].frequency"),
    "verified without page": (GOOD.replace("abstract, p. 507", "abstract", 1),
                              "analyst_optimism[0].source"),
    "unverified without note": (GOOD.replace(
        'note = "derived from the transcribed Exhibit 2 (see that table\'s note)"', ""),
        "stall[0].note"),
    "stall inconsistent": (GOOD.replace("probability = 0.226", "probability = 0.126"),
                           "stall[0].probability"),
    "both frequencies and frequency_missing": (GOOD.replace(
        "mean = 0.081", 'frequency_missing = "x"\nmean = 0.081'), "sales_cagr_3y[0].frequency_missing"),
    "unknown by": (GOOD.replace('by = "starting_sales_usd"', 'by = "size"', 1),
                   "sales_cagr_3y[0].by"),
    "unknown section": (GOOD + "\n[[sales_cagr_2y]]\n", "key 'sales_cagr_2y'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_file_gives_one_line_naming_the_key(tmp_path, case):
    text, key = BAD[case]
    assert text != GOOD
    path = tmp_path / "base_rates.toml"
    path.write_text(text)
    with pytest.raises(BaseRatesError) as err:
        load_base_rates(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and key in message, message
