"""The README's figures are generated from the committed results (issue 15, item 7): its
headline and scenarios blocks equal what ``scripts/readme_figures.py`` writes from
``results/sensetime/summary.json``, and the README states no test counts or times."""

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "readme_figures.py"


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("readme_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def summary():
    return json.loads((ROOT / "results" / "sensetime" / "summary.json").read_text())


def test_readme_headline_agrees_with_summary_json(figures, summary):
    written = figures.read_blocks((ROOT / "README.md").read_text())
    expected = figures.blocks(summary)
    assert set(written) == set(expected) == {"headline", "scenarios"}
    for name in expected:
        assert written[name] == expected[name], (
            f"README block {name!r} differs from results/sensetime/summary.json: run "
            f"scripts/readme_figures.py")
    # the table's cells are the summary's numbers
    final = summary["company"]["forecast_years"][-1]
    row = next(line for line in written["headline"].splitlines()
               if line.startswith(f"| {final}E revenue"))
    q = summary["revenue"][final]
    assert row.split("|")[3].strip() == f"{q['q50']:,.0f}"
    assert f"{summary['p_upside']['value']:.3f} ± {summary['p_upside']['mcse']:.3f}" in \
        written["headline"]


def test_a_changed_summary_changes_the_readme(figures, summary):
    changed = copy.deepcopy(summary)
    changed["p_upside"]["value"] += 0.1
    changed["scenarios"]["base"]["target_price"]["q50"] += 1.0
    text = (ROOT / "README.md").read_text()
    new = figures.rewrite(text, figures.blocks(changed))
    assert new != text
    assert figures.read_blocks(new) == figures.blocks(changed)
    assert new.replace(figures.read_blocks(new)["headline"], "").replace(
        figures.read_blocks(new)["scenarios"], "") == text.replace(
        figures.read_blocks(text)["headline"], "").replace(figures.read_blocks(text)["scenarios"], "")


def test_readme_states_no_test_counts_or_times():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Test"):text.index("## Python API")]
    assert not re.search(r"\d+\s*(passed|tests\b)", section), section
    assert not re.search(r"\d+(\.\d+)?\s*(s|min|minutes|seconds)\b|½", section), section
