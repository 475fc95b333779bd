"""The Python API (``stforecast.Forecast``, ``stforecast.load``) and the README's API section.

The API runs the same stages as ``stforecast run``, so with the same seed and settings it gives
the same summary; the README's "Python API" code block runs as written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import stforecast
from stforecast.errors import StforecastError
from stforecast.fit import FitSettings
from stforecast.run import RunSettings, run_forecast

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = dict(draws=100, tune=100, chains=2, prior_draws=50)
PATHS = 1_000


def readme_api_block() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README: no ```python block under '## Python API'"
    return blocks[0]


def test_import_is_cheap_and_forecast_is_lazy():
    code = ("import sys, stforecast; assert 'pymc' not in sys.modules; "
            "stforecast.load; assert 'pymc' not in sys.modules; "
            "F = stforecast.Forecast; assert F.__name__ == 'Forecast'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_steps_in_the_wrong_order_give_one_line_errors():
    fc = stforecast.Forecast.from_company()
    assert "not fitted" in repr(fc) and fc.company.key == "sensetime"
    for step in (lambda: fc.simulate(), lambda: fc.summary, lambda: fc.query("P(revenue > 0)"),
                 lambda: fc.save("nowhere")):
        with pytest.raises(StforecastError) as err:
            step()
        assert "\n" not in str(err.value) and "fit" in str(err.value)


def test_readme_api_block_is_the_one_screen_api():
    code = readme_api_block()
    for call in ("Forecast.from_company(", ".fit()", ".simulate()", ".query(", ".plot.fan(",
                 ".save(", "stforecast.load("):
        assert call in code, call
    assert len(code.splitlines()) <= 15


@pytest.mark.slow
def test_api_equals_the_command_line_run(tmp_path):
    """Same seed and settings: the API's summary is the run's, number for number."""
    fc = stforecast.Forecast.from_company("sensetime").fit(**TINY).simulate(paths=PATHS)
    settings = RunSettings(paths=PATHS, report=False, fit=FitSettings(**TINY))
    summary = run_forecast(tmp_path / "run", "sensetime", settings)
    assert fc.summary.to_dict() == summary.to_dict()
    q = fc.query("P(value_today > 6.73)")  # p_upside: the discounted value per diluted share
    assert q.value == fc.summary.headline.p_upside.value and q.mcse > 0
    assert fc.plot.fan("revenue").axes and fc.plot.tornado("target_price").axes
    with pytest.raises(StforecastError, match="plot.fan: variable 'nope'"):
        fc.plot.fan("nope")
    folder = fc.save(tmp_path / "api", report=False)
    loaded = stforecast.load(folder)
    assert loaded.summary.to_dict() == summary.to_dict()
    assert loaded.company.key == "sensetime"


@pytest.mark.slow
def test_readme_api_block_runs_as_written(tmp_path):
    """The README's block, verbatim, in a fresh interpreter (default settings: a full fit).

    The default fit is made first in this process (``shared_fits.ensure_fit``: the model this
    worker compiled for the test above, into the session's fit cache), so the interpreter reads
    it rather than compiling the model anew; the default-run test (tests/
    test_default_run_reproduces.py) reads the same entry or makes it, under the same lock."""
    from shared_fits import ensure_fit
    ensure_fit(RunSettings())
    out = subprocess.run([sys.executable, "-c", readme_api_block()], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900,
                         env={"MPLBACKEND": "Agg", **__import__("os").environ})
    assert out.returncode == 0, out.stderr[-2000:]
    assert re.search(r"P\(value_today > 6\.73\) = 0\.\d+ ± 0\.\d+", out.stdout), out.stdout
    assert (tmp_path / "results" / "sensetime" / "summary.json").exists()
