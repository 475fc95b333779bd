"""build_report on the results of one small run: rendered from the results folder alone.

One module-scoped run of the default company with small settings writes forecast.nc,
summary.json (with its chart data) and the report; the tests read the page, and rebuild it
from copies of the folder with the company's files out of reach. A headless-Chromium check
renders the page when /usr/bin/chromium exists.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stforecast import company as company_module
from stforecast import report
from stforecast.errors import ResultsError, StforecastError
from stforecast.fit import FitSettings
from stforecast.report import build_report
from stforecast.run import RunSettings, run_forecast

#: The same fit as tests/test_run.py's small run (seed, draws, ...), so one of the two is a hit of
#: the session's fit cache rather than a second compile and fit.
SETTINGS = RunSettings(seed=5, paths=2000, report=True,
                       fit=FitSettings(draws=200, tune=200, chains=2, prior_draws=100))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A small run of the default company, with its report."""
    out = tmp_path_factory.mktemp("run") / "results"
    run_forecast(out, None, SETTINGS)
    return out


@pytest.fixture(scope="session")
def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="session")
def page(run_dir):
    return (run_dir / "report.html").read_text(encoding="utf-8")


#: A 1x1 PNG: what ``plots.png_bytes`` returns in tests of the page's words (banner, escaping,
#: atomicity), whose figures the other tests already draw (~4 s a report saved per test).
_TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                          "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


@pytest.fixture
def words_only(monkeypatch):
    """Figures are laid out but not rendered to PNG (the page's words are what is tested)."""
    from stforecast import plots
    monkeypatch.setattr(plots, "png_bytes", lambda fig, *a, **k: _TINY_PNG)


def _copy(run_dir: Path, dest: Path, edit=None) -> Path:
    """summary.json alone (no draws) in ``dest``, optionally edited."""
    dest.mkdir(parents=True, exist_ok=True)
    data = json.loads((run_dir / "summary.json").read_text())
    if edit is not None:
        edit(data)
    (dest / "summary.json").write_text(json.dumps(data))
    return dest


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)]


def _decode(png: bytes) -> np.ndarray:
    from matplotlib.image import imread
    return imread(io.BytesIO(png), format="png")


def _section(text: str, sid: str) -> str:
    start = text.index(f"<section id={sid}>")
    return text[start:text.index("</section>", start)]


def _rows(text: str) -> list[str]:
    return re.findall(r"<tr>(.*?)</tr>", text.split("<tbody>", 1)[1])


def _cells(row: str) -> list[str]:
    return re.findall(r"<td>(.*?)</td>", row)


def _interval(stats: dict, fmt: str, suffix: str = "") -> str:
    return (f"{format(stats['q50'], fmt)}{suffix} <span class=muted>[{format(stats['q05'], fmt)}"
            f"{suffix} – {format(stats['q95'], fmt)}{suffix}]</span>")


# --------------------------------------------------------------------------------------------

def test_report_is_one_self_contained_file(run_dir, summary, page):
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    charts = summary["charts"]
    expected = ([f"fan_{v}.png" for v in charts["fans"]]
                + [f"tornado_{k}.png" for k in summary["sensitivity"]]
                + ["target_price.png", "valuation_methods.png", "peer_relation.png",
                   "prior_posterior.png", "scenarios_target_price.png", "scenarios_revenue.png"]
                + (["outside_view_cagr.png", "outside_view_inside_vs_final.png"]
                   if charts.get("outside_view") else []))
    assert pngs == sorted(expected)
    images = _images(page)
    assert page.count("data:image/png;base64,") == len(images) == len(pngs)
    assert sorted(images) == sorted((run_dir / p).read_bytes() for p in pngs)
    for png in images:
        assert _decode(png).shape[0] > 100
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=['"]?(https?:|file:|//)""", page)
    assert not list(run_dir.glob(".*tmp")), "temporary files left behind"
    for p in pngs:
        assert (run_dir / p).stat().st_size < 150_000, p


def test_title_and_headline_from_the_summary(summary, page):
    company = summary["company"]
    assert f"<title>{company['name']} ({company['ticker']}): probabilistic forecast</title>" in page
    charts = summary["charts"]
    final = charts["years"]["forecast"][-1]
    headline = _section(page, "headline")
    rev, tp, pu = summary["revenue"][final], summary["target_price"], summary["p_upside"]
    published = charts["published"]
    for text in (f"{final} revenue ({company['currency']} mn)", f"{rev['q50']:,.0f}",
                 f"{rev['q05']:,.0f}", f"{rev['q95']:,.0f}",
                 f"{published['lines']['revenue'][final]:,.0f}", f"{tp['q50']:.2f}",
                 f"Report target: {published['target_price']:.2f} {company['price_currency']}",
                 f"Share price: {company['price']:.2f} {company['price_currency']}",
                 f"{pu['value']:.2f} ± {pu['mcse']:.3f}",
                 f"Cash burn {summary['periods']['cash_burn']}"):
        assert text in headline, text
    beat = charts["events"]["revenue_beats_report"]
    assert f"P(beats report) = {beat['value']:.2f} ± {beat['mcse']:.3f}" in headline
    floor = charts["events"]["cash_below_floor"]
    assert f"P(cash &lt; {floor['floor']:,.0f}" in headline
    assert f"scenario <b>{summary['headline_scenario']}</b>" in headline
    assert "valuation method <b>" in headline


def test_percentile_table(summary, page):
    section = _section(page, "percentiles")
    charts = summary["charts"]
    gm = summary["gross_margin"][charts["years"]["forecast"][1]]
    assert f"{gm['q25'] * 100:.1f}%" in section
    rows = _rows(section)
    final = charts["years"]["forecast"][-1]
    n_years = len(charts["years"]["forecast"])
    assert _cells(rows[0])[0] == "<b>Revenue</b>"
    cells = _cells(rows[n_years - 1])
    assert cells[:2] == ["", final]
    assert cells[-1] == f"{charts['published']['lines']['revenue'][final]:,.0f}"
    for seg in (v for k, v in charts["variables"].items() if k.startswith("revenue_")):
        assert f"<b>{seg['label']}</b>" in section
    tp_row = [r for r in rows if "<b>Target price</b>" in r][0]
    assert _cells(tp_row)[-1] == f"{charts['published']['target_price']:.2f}"


def test_valuation_section(summary, page):
    section = _section(page, "valuation")
    rows = _rows(section.split("<h3>P(upside) across")[0])  # the method table
    assert len(rows) == 2
    for row, method in zip(rows, ("report", "peer-regression")):
        block = summary["valuation_methods"][method]
        assert ("<span class=tag>headline</span>" in row) == (method == summary["valuation_method"])
        assert _interval(block["target_price"], ".2f") in row
        pu = block["p_upside"]
        assert f"{pu['value']:.2f} ± {pu['mcse']:.3f}" in row
        assert _interval(block["ev_sales_multiple"], ".1f", "x") in row
    at = summary["peer_fit"]["at_report_growth_and_margin"]
    assert _interval(at["multiple"], ".1f", "x") in section
    assert f"the report uses <b>{at['report_multiple']:.1f}x</b>" in section
    assert f"Peer regression ({len(summary['charts']['peers']['points'])} peers)" in section
    assert len(_images(section)) == 2
    assert page.index("id=target-price") < page.index("id=valuation") < page.index(
        "id=percentiles")


def test_scenario_table(summary, page):
    section = _section(page, "scenarios")
    rows = _rows(section)
    assert len(rows) == len(summary["scenarios"])
    final = summary["charts"]["years"]["forecast"][-1]
    for row, (name, sc) in zip(rows, summary["scenarios"].items()):
        cells = _cells(row)
        assert cells[0].startswith(f"<b>{name}</b>")
        assert ("<span class=tag>headline</span>" in cells[0]) == (
            name == summary["headline_scenario"])
        assert cells[1] == _interval(sc["revenue"][final], ",.0f")
        assert cells[2] == _interval(sc["cash_burn"], ",.0f")
        assert cells[4] == _interval(sc["target_price"], ".2f")
        assert cells[5] == f"{sc['p_upside']['value']:.2f} ± {sc['p_upside']['mcse']:.3f}"
    assert len(re.findall(r"<li>", section.split("<ul class=multiples>")[1])) == len(rows)


def test_risk_factors_and_sensitivity(summary, page):
    section = _section(page, "risk-factors")
    assert len(_rows(section)) == len(summary["shocks"])
    first = _cells(_rows(section)[0])
    shock = summary["shocks"][0]
    assert first[0].startswith(f"<b>{shock['label']}</b>")
    channels = summary["charts"]["channels"]
    for name, effect in shock["channels"].items():
        style = channels[name]["style"]
        text = {"relative": f"{effect * 100:+.0f}%", "pp": f"{effect * 100:+.1f}pp",
                "days": f"{effect:+g} days"}[style].replace("-", "−")
        assert f"{channels[name]['label']} {text}" in first[4]
    sens = _section(page, "sensitivity")
    for key, block in summary["sensitivity"].items():
        top = block["tornado"]["entries"][0]
        assert top["label"][:1].upper() + top["label"][1:] in sens
        assert "_" not in top["label"]  # in words, not snake_case
    assert "<code>" not in sens and "at or below its 10th percentile" in sens
    assert page.index("id=scenarios") < page.index("id=risk-factors") < page.index(
        "id=sensitivity")


def test_banner_follows_ok_and_reasons(run_dir, tmp_path, words_only):
    def ok(data):
        data.update(ok=True, reasons=[])

    good = build_report(_copy(run_dir, tmp_path / "ok", ok)).read_text(encoding="utf-8")
    assert "<div class=banner-ok role=status><b>OK</b>" in good
    assert "FAILED" not in good and "Status: <span class=ok>OK" in good
    silent = json.loads((run_dir / "summary.json").read_text())
    silent.pop("ok")
    silent["reasons"] = []
    assert "FAILED" in report._banner(silent) and "no quality verdict" in report._banner(silent)


def test_failed_banner_and_escaping(run_dir, tmp_path, words_only):
    def edit(data):
        data["diagnostics"]["ok"] = True  # the driver model passes; the peer fit does not
        data.update(ok=False, reasons=["peer regression: R-hat 1.030 > 1.01 <after tuning>"])
        data["company"]["name"] = "Acme <Corp> & Co"
        data["assumptions"][0]["source"] = "Figure 1: <history> & more"
        data["shocks"][0]["source"] = "<script>alert(1)</script>"
        first = next(iter(data["scenarios"]))
        data["scenarios"][first]["description"] = "a <b>bold</b> & shocked scenario"

    bad = build_report(_copy(run_dir, tmp_path / "bad", edit)).read_text(encoding="utf-8")
    assert "<b>FAILED: the quality bar is not met.</b>" in bad and "class=banner-ok" not in bad
    assert "peer regression: R-hat 1.030 &gt; 1.01 &lt;after tuning&gt;" in bad
    assert bad.index("FAILED") < bad.index("id=headline")
    assert "Status: <span class=bad>FAILED" in bad
    assert "Acme &lt;Corp&gt; &amp; Co" in bad and "<Corp>" not in bad
    assert "Figure 1: &lt;history&gt; &amp; more" in bad
    assert "<script" not in bad.lower() and "&lt;script&gt;" in bad
    assert "a &lt;b&gt;bold&lt;/b&gt; &amp; shocked scenario" in bad


def test_builds_from_a_copied_folder_alone(run_dir, page, tmp_path, monkeypatch):
    """summary.json alone (no forecast.nc), the company folders out of reach, cwd elsewhere:
    the same page as the run's, which the run built from its Summary in memory (so the written
    summary.json renders exactly what the run rendered)."""
    copy = _copy(run_dir, tmp_path / "copy")
    empty = tmp_path / "no-companies"
    empty.mkdir()
    monkeypatch.setenv("STFORECAST_COMPANIES", str(empty))
    monkeypatch.setattr(company_module, "company_roots", lambda: [empty])

    def unreachable(*_args, **_kwargs):
        raise AssertionError("the report read a company folder")

    monkeypatch.setattr(company_module, "load_company", unreachable)
    monkeypatch.setattr(company_module, "_parse_company", unreachable)
    monkeypatch.chdir(empty)
    rebuilt = build_report(copy).read_text(encoding="utf-8")
    assert rebuilt == page
    assert sorted(p.name for p in copy.glob("*.png")) == sorted(
        p.name for p in run_dir.glob("*.png"))


def test_report_process_passes_its_errors_back(run_dir, tmp_path):
    """The run's report is drawn in second processes (``ReportProcess``: each draws a share of
    the charts; the page is the one ``test_builds_from_a_copied_folder_alone`` rebuilds in this
    process, byte for byte): a summary it cannot draw is refused in one line, a process that
    dies says so in one line, one given no job is ended, and a user's script without a
    ``__main__`` guard works (nothing of it is imported there). No page is drawn here (the
    fast lane)."""
    from stforecast.results import Summary

    old = _copy(run_dir, tmp_path / "old", lambda d: d.pop("charts"))
    summary = Summary.from_json((old / "summary.json").read_text(), old / "summary.json")
    with report.ReportProcess() as reports:
        with pytest.raises(ResultsError, match="key 'charts'") as err:
            reports.build(old, summary).result()
    assert "\n" not in str(err.value) and not (old / "report.html").exists()
    good = Summary.from_json((run_dir / "summary.json").read_text(), run_dir / "summary.json")
    with report.ReportProcess() as reports:
        for part in reports._parts:
            part._proc.kill()
        with pytest.raises(StforecastError, match="report's process ended with exit status -9"
                           ) as err:
            reports.build(tmp_path / "new", good).result()
    assert "\n" not in str(err.value)
    with report.ReportProcess():
        pass  # a process given no job is ended on leaving
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\nfrom pathlib import Path\nfrom stforecast.errors import ResultsError\n"
        "from stforecast.report import ReportProcess\nfrom stforecast.results import Summary\n"
        "folder = Path(sys.argv[1])\n"
        "summary = Summary.from_json((folder / 'summary.json').read_text(), folder)\n"
        "with ReportProcess() as reports:\n    try:\n"
        "        reports.build(folder, summary).result()\n"
        "    except ResultsError as exc:\n        print('refused:', exc)\n")
    done = subprocess.run([sys.executable, str(script), str(old)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("refused: ") and \
        "key 'charts'" in done.stdout, done.stderr
    # a caller killed (no clean-up at all): its report process ends too
    done = subprocess.run([sys.executable, "-c",
                           "import os\nfrom stforecast.report import ReportProcess\n"
                           "print(ReportProcess()._parts[0]._proc.pid, flush=True)\nos._exit(9)"],
                          capture_output=True, text=True, timeout=60)
    if Path("/proc/self/stat").exists():  # where a process's state can be read
        assert _ends_within(int(done.stdout), 20.0)


def _ends_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie) within ``seconds``."""
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_one_line_errors(run_dir, tmp_path):
    with pytest.raises(ResultsError, match="summary.json: results file not found") as err:
        build_report(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ResultsError, match="summary.json: not valid JSON") as err:
        build_report(tmp_path)
    assert "\n" not in str(err.value) and isinstance(err.value, StforecastError)
    old = _copy(run_dir, tmp_path / "old", lambda d: d.pop("charts"))
    with pytest.raises(ResultsError, match="key 'charts'"):
        build_report(old)


def test_no_degraded_report_over_a_good_one(run_dir, tmp_path, words_only, monkeypatch):
    good = _copy(run_dir, tmp_path / "good")
    page = build_report(good)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    data = json.loads((good / "summary.json").read_text())
    data.pop("charts")
    (good / "summary.json").write_text(json.dumps(data))
    with pytest.raises(ResultsError):
        build_report(good)
    (good / "summary.json").write_bytes(before["summary.json"])

    def broken(*_args, **_kwargs):
        raise RuntimeError("drawing failed")

    from stforecast import plots
    monkeypatch.setattr(plots, "chart_builders", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        build_report(good)
    after = {p.name: p.read_bytes() for p in good.iterdir()}
    assert after == before and page.exists()
    assert not list(good.glob(".*"))


def test_presentation_computes_no_statistics():
    """report.py and plots.py place numbers; quantiles, densities, means and probabilities
    come from the summary layer (stforecast.charts, stforecast.summary)."""
    banned = {"quantile", "nanquantile", "percentile", "nanpercentile", "median", "nanmedian",
              "mean", "nanmean", "std", "histogram", "gaussian_kde", "kde", "probability",
              "average"}
    from stforecast import plots
    for module in (report, plots):
        source = Path(module.__file__).read_text()
        calls = {node.func.attr if isinstance(node.func, ast.Attribute) else
                 getattr(node.func, "id", "")
                 for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)}
        assert not calls & banned, (module.__name__, calls & banned)
        for text in ("np.quantile", "np.percentile", "gaussian_kde", ".mean(", "xarray",
                     "forecast.nc", "load_company", "load_peers"):
            assert text not in source, (module.__name__, text)


def test_no_company_words_in_presentation_code():
    pattern = re.compile(r"FY\d|6\.73|8\.08|33,?507|sensetime|smart_|HK\$|RMB|HKD", re.I)
    for name in ("report", "plots", "charts"):
        path = Path(report.__file__).with_name(f"{name}.py")
        hits = [line for line in path.read_text().splitlines() if pattern.search(line)]
        assert not hits, (name, hits)


def test_no_pymc_or_pyplot_import():
    code = ("import sys, stforecast.plots, stforecast.report; "
            "bad = [m for m in ('pymc', 'matplotlib.pyplot', 'xarray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_summary_growth_is_bounded(summary):
    assert len(json.dumps(summary["charts"], indent=1)) < 300_000


# --------------------------------------------------------------------------------------------
# Headless browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)


def _chromium(args: list[str], profile: Path, timeout: float = 60.0):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(run_dir, tmp_path):
    url = (run_dir / "report.html").resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    n_png = len(list(run_dir.glob("*.png")))
    assert len(re.findall(r"<img ", html)) == n_png
    assert html.count("data:image/png;base64,") == n_png
    assert "Headline" in html and "P(upside)" in html and "Valuation by method" in html
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,4000", url],
                    tmp_path / "profile-shot")
    assert res.returncode == 0, res.stderr[-2000:]
    pixels = _decode(shot.read_bytes())
    assert pixels.shape[:2] == (4000, 1280)
    assert float(pixels[..., :3].std()) > 0.05  # not a blank page


def _banner_html(page: str) -> str:
    """The red banner (a role=alert box before the headline), as rendered."""
    start = page.index("<div class=warning role=alert>")
    return page[start:page.index("</div>", start)]


def test_red_banner_lists_every_failed_check_of_every_fit(run_dir, tmp_path, words_only):
    """A summary whose driver model AND peer regression miss the bar (reasons made by the same
    functions a run uses): the page opens with the red banner and lists each reason."""
    from types import SimpleNamespace

    from stforecast.fit import bar_reasons
    from stforecast.run import _peer_reasons

    driver = bar_reasons(1.05, 120.0, 90.0, 3)
    peer = _peer_reasons(SimpleNamespace(attrs={"rhat_max": 1.02, "ess_bulk_min": 300.0,
                                                "ess_tail_min": 250.0, "divergences": 2}))
    assert len(driver) == 4 and len(peer) == 4

    def edit(data):
        data["diagnostics"].update(rhat_max=1.05, ess_bulk_min=120.0, ess_tail_min=90.0,
                                   divergences=3, ok=False, reasons=driver)
        data["peer_fit"]["diagnostics"].update(rhat_max=1.02, ess_bulk_min=300.0,
                                               ess_tail_min=250.0, divergences=2, ok=False,
                                               reasons=peer)
        data.update(ok=False, reasons=driver + peer)

    page = build_report(_copy(run_dir, tmp_path / "failed", edit)).read_text(encoding="utf-8")
    banner = _banner_html(page)
    assert "<div class=banner-ok" not in page
    assert "<b>FAILED: the quality bar is not met.</b>" in banner
    assert banner.count("<li>") == len(driver + peer)
    for reason in driver + peer:
        assert f"<li>{report._e(reason)}</li>" in banner, reason
    assert any(r.startswith("peer regression: ") for r in peer)
    assert page.index("FAILED") < page.index("id=headline")


def test_summary_and_report_show_p_upside_across_methods_and_scenarios(summary, page):
    block = summary["p_upside_range"]
    assert block["definition"].startswith("P(discounted value per diluted share > today's price)")
    assert block["price"] == summary["company"]["price"]
    table = block["p_upside"]
    assert set(table) == {"report", "peer-regression"}
    values = []
    for method, row in table.items():
        assert set(row) == set(summary["scenarios"])
        for name, p in row.items():  # the same numbers as each scenario's method summary
            assert p == summary["scenarios"][name]["valuation_methods"][method]["p_upside"]
            assert 0 < p["mcse"] < 0.05
            values.append(p["value"])
    assert (block["low"], block["high"]) == (min(values), max(values))
    section = _section(page, "valuation")
    assert "P(upside) across valuation methods and scenarios" in section
    for method, row in table.items():
        for p in row.values():
            assert report._prob(p) in section


def test_report_shows_the_peer_regression_loo_check_and_the_share_outside_the_peers(summary,
                                                                                     page):
    loo = summary["peer_fit"]["loo"]
    assert loo["n"] == 20 and loo["k_threshold"] == 0.7 and loo["p_loo"] > 0
    assert 0 <= summary["peer_fit"]["share_outside_peer_range"] <= 1
    section = _section(page, "valuation")
    assert f"elpd {loo['elpd']:.1f} ± {loo['se']:.1f} over 20 peers" in section
    assert f"Pareto k max {loo['pareto_k_max']:.2f}" in section
    assert "outside the peers' observed range" in section
    assert "Slope on FCF margin" in section
