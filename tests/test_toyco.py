"""ToyCo, the synthetic second company: it loads, replicates its published figures, runs end to end,
and still runs when a segment is renamed and every year shifted (generality is tested, not claimed).
"""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from stforecast.company import default_company, list_companies, load_company
from stforecast.engine import report_case
from stforecast.fit import FitSettings
from stforecast.run import RunSettings, run_forecast

FOLDER = Path(__file__).resolve().parents[1] / "priors" / "toyco"
FILES = ("company.toml", "priors.toml", "scenarios.toml", "peers.toml")
#: Small settings: the pipeline runs, its statistics are not meant to be good.
SMALL = RunSettings(paths=500, report=False,
                    fit=FitSettings(draws=100, tune=100, chains=2, prior_draws=100))


# --- the files ------------------------------------------------------------------------------------
def test_toyco_loads_with_its_own_structure():
    company = load_company("toyco")
    assert company.key == "toyco" and "toyco" in list_companies()
    assert default_company() == "sensetime"  # ToyCo ships but is not the default
    assert "default" not in tomllib.loads((FOLDER / "company.toml").read_text())["company"]
    assert company.currency == company.price_currency == "EUR" and company.market.fx == 1.0
    assert company.history_years == ("FY22", "FY23", "FY24")
    assert company.forecast_years == ("FY25", "FY26", "FY27")
    assert company.market.valuation_year == "FY26"
    assert [(s.name, s.kind) for s in company.segments] == [
        ("licences", "direct"), ("services", "direct"), ("subscriptions", "units")]
    subs = company.segment("subscriptions")
    assert (subs.unit_driver, subs.per_unit_driver) == (
        "subscriptions_subscribers", "subscriptions_revenue_per_subscriber")
    assert {o.quantity for o in company.observations} == {"units", "revenue_share"}
    assert all(o.year == "FY25" for o in company.observations)
    assert company.peers_path == company.folder / "peers.toml"


def test_toyco_history_is_internally_consistent():
    company = load_company("toyco")
    h = company.history
    segments = sum(h[s.revenue] for s in company.segments)
    np.testing.assert_allclose(segments.values, h["revenue"].values)
    np.testing.assert_allclose((h["revenue"] - h["cost_of_sales"]).values, h["gross_profit"].values)
    opex = h["selling_marketing_expense"] + h["admin_expense"] + h["rnd_expense"]
    np.testing.assert_allclose((h["gross_profit"] - opex).values, h["operating_income"].values)
    last = company.last_history_year
    for name in ("cash", "total_debt", "trade_receivables", "other_receivables", "inventories",
                 "trade_payables", "other_payables"):
        assert company.opening[name] == float(h[name].sel(year=last)), name
    subs = company.segment("subscriptions")  # units x revenue per unit in the last year
    assert subs.report_units_final * subs.report_per_unit_final == pytest.approx(float(
        company.report_case["segment_revenue"].sel(segment="subscriptions").isel(year=-1)))
    # the peers file's target is the report case's growth and valuation-year margin
    peers = tomllib.loads((FOLDER / "peers.toml").read_text())["target"]
    case = report_case(company)
    cagr = (float(case["revenue"].isel(year=-1)) / company.last_history_revenue()) ** (1 / 3) - 1
    assert peers["sales_cagr"] == pytest.approx(cagr, abs=5e-5)
    assert peers["gross_margin"] == pytest.approx(
        float(case["gross_margin"].sel(year=company.market.valuation_year)))


def test_toyco_report_case_reproduces_its_published_figures_to_rounding():
    company = load_company("toyco")
    case = report_case(company)
    assert len(company.published.data_vars) >= 20
    for name, published in company.published.data_vars.items():
        decimals = 2 if name == "target_price" else 1
        np.testing.assert_array_equal(np.round(case[name].values, decimals), published.values,
                                      err_msg=name)
    assert round(float(case["target_price"]), 2) == company.market.target_price_published


def _sources(node, where=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "source":
                yield where, value
            else:
                yield from _sources(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _sources(value, f"{where}[{i}]")


@pytest.mark.parametrize("name", FILES)
def test_every_toyco_number_is_marked_synthetic(name):
    raw = tomllib.loads((FOLDER / name).read_text())
    sources = list(_sources(raw))
    assert sources
    for where, text in sources:
        assert "synthetic example" in text, f"{name}{where}: {text!r}"
    if name == "peers.toml":
        assert all("Synthetic" in p["company"] for p in raw["peer"])


# --- the pipeline ---------------------------------------------------------------------------------
def _check_summary(summary: dict, segments: list[str], years: list[str], missing: str = ""):
    for line in ("revenue", *(f"revenue_{s}" for s in segments), "cash", "free_cash_flow"):
        assert list(summary[line]) == years, line
    if missing:
        assert missing not in summary
    assert 0.0 <= summary["p_upside"]["value"] <= 1.0
    assert {"base", "risk-weighted"} <= set(summary["scenarios"])
    assert summary["report_percentiles"]["revenue"]["year"] == years[-1]
    assert summary["periods"]["cash_burn"] == f"{years[0]}-{years[-1]}"
    assert summary["valuation_method"] == "peer-regression"
    assert "ev_sales_multiple" in summary["valuation_methods"]["peer-regression"]


def _shift_years(text: str, by: int = 1) -> str:
    """Every fiscal-year label (FY22, fy24 in column names ...) moved by ``by`` years."""
    return re.sub(r"(?<![A-Za-z])(FY|fy)(\d\d)",
                  lambda m: f"{m.group(1)}{int(m.group(2)) + by:02d}", text)


def _rename(text: str, old: str, new: str) -> str:
    """A segment name renamed wherever it stands as a word or a part of a snake_case name
    (``segments.licences``, ``revenue_licences``, ``licences_revenue``, ``"licences"``)."""
    return re.sub(rf"(?<![A-Za-z0-9]){old}(?![A-Za-z0-9])", new, text)


def copy_shifted(folder: Path) -> Path:
    """ToyCo's folder with segment ``licences`` renamed ``seats`` and every year one later."""
    folder.mkdir()
    for name in FILES:
        text = _shift_years(_rename((FOLDER / name).read_text(), "licences", "seats"))
        (folder / name).write_text(text)
    return folder


def test_the_shift_and_rename_transform_gives_a_valid_company(tmp_path):
    company = load_company(copy_shifted(tmp_path / "shifted"))
    assert company.key == "shifted"
    assert company.history_years == ("FY23", "FY24", "FY25")
    assert company.forecast_years == ("FY26", "FY27", "FY28")
    assert company.market.valuation_year == "FY27"
    assert company.segment_names == ["seats", "services", "subscriptions"]
    assert "seats_revenue" in company.growth_drivers()
    assert [o.year for o in company.observations] == ["FY26", "FY26"]
    original = load_company("toyco")
    np.testing.assert_array_equal(report_case(company)["revenue"].values,
                                  report_case(original)["revenue"].values)
    assert float(report_case(company)["target_price"]) == float(
        report_case(original)["target_price"])
    text = (tmp_path / "shifted" / "scenarios.toml").read_text()
    assert "seats_revenue = -0.25" in text and 'manufacturing_downturn = "FY27"' in text
    shutil.rmtree(tmp_path / "shifted")


@pytest.mark.slow
def test_renamed_and_shifted_copy_runs_and_summarises(tmp_path):
    company = load_company(copy_shifted(tmp_path / "toyco_next"))
    summary = run_forecast(tmp_path / "out", company, SMALL).to_dict()
    _check_summary(summary, ["seats", "services", "subscriptions"], ["FY26", "FY27", "FY28"],
                   missing="revenue_licences")
    assert summary["periods"]["sales_cagr"] == "FY25-FY28"
    assert summary["company"]["key"] == "toyco_next"
    assert "seats_revenue" in {a["driver"] for a in summary["assumptions"]}


# --- the command line, end to end ----------------------------------------------------------------
@pytest.mark.slow
def test_toyco_end_to_end_on_the_command_line(tmp_path):
    """run (with its report), scenarios, query, sensitivity, score and report, from the data
    files alone, through the installed command line in subprocesses."""
    import json
    import subprocess
    import sys

    out = tmp_path / "toyco"

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "stforecast.cli", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "MPLBACKEND": "Agg"})
        assert done.returncode in (0, 3), done.stderr[-2000:]  # 3: tiny fit misses the bar
        return done.stdout

    printed = cli("run", "--company", "toyco", "--out", str(out), "--draws", "100", "--tune",
                  "100", "--chains", "2", "--paths", "500")
    assert (out / "report.html").exists() and (out / "fan_revenue.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    _check_summary(summary, ["licences", "services", "subscriptions"], ["FY25", "FY26", "FY27"])
    assert summary["company"]["key"] == "toyco" and summary["company"]["currency"] == "EUR"
    assert summary["periods"]["sales_cagr"] == "FY24-FY27"
    assert "EUR" in (out / "report.html").read_text() and "FY27" in printed
    scenarios = json.loads(cli("scenarios", "--results", str(out), "--json"))
    assert {"base", "risk-weighted", "downturn"} <= set(_names(scenarios))
    q = cli("query", "P(revenue_subscriptions[FY27] > 0) ", "--results", str(out))
    assert re.search(r"= 1(\.0+)? ± 0", q), q
    # the tornado labels the company's unit drivers in words (its JSON keeps the names)
    tornado = json.loads(cli("sensitivity", "revenue[FY27]", "--results", str(out), "--json"))
    assert "subscriptions_revenue_per_subscriber" in [e["driver"] for e in tornado["entries"]]
    actuals = tmp_path / "actuals.toml"
    actuals.write_text("target_price = 25.0\n[revenue]\nFY25 = 300\n")
    scored = json.loads(cli("score", str(actuals), "--results", str(out), "--json"))
    assert {row["variable"] for row in scored} == {"target_price", "revenue"}
    (out / "report.html").unlink()
    cli("report", "--results", str(out))
    assert (out / "report.html").exists()


def _names(scenarios) -> list[str]:
    """Scenario names from ``stforecast scenarios --json`` (a list of rows or a mapping)."""
    if isinstance(scenarios, dict):
        return list(scenarios.get("scenarios", scenarios))
    return [row.get("scenario") for row in scenarios]
