"""Tests for the `stforecast` command line (run as a real subprocess: the console script of the
venv, or ``python -m stforecast.cli``)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).parent / "stforecast"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stforecast.cli"]
SRC = Path(__file__).resolve().parents[1] / "src" / "stforecast"
YEARS = ["FY21", "FY22", "FY23"]
LINES = (
    "revenue", "revenue_smart_business", "revenue_smart_city", "revenue_smart_life",
    "revenue_smart_auto", "gross_profit", "operating_income", "net_income", "adjusted_net_income",
    "operating_cash_flow", "capex", "free_cash_flow", "cash",
)
SUBCOMMANDS = ("run", "replicate", "check-priors", "query")


def _stforecast(*args, timeout=120):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def test_replicate_json():
    proc = _stforecast("replicate", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for line in LINES + ("net_cash",):
        assert line in result, line
        assert sorted(result[line]) == YEARS, line
        assert all(isinstance(v, (int, float)) for v in result[line].values())
    assert result["target_price_hkd"] == pytest.approx(8.08, abs=0.02)
    # A few anchors from Figures 64-67 (RMB mn).
    assert result["revenue_smart_city"]["FY23"] == 4141
    assert result["cash"]["FY23"] == pytest.approx(6674, abs=10)


def test_replicate_table():
    proc = _stforecast("replicate")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "report" in out
    assert "target_price_hkd" in out
    for line in LINES:
        assert line in out, line
    assert "8.08" in out


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_has_example(command, capsys):
    from stforecast.cli import main

    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr()
    assert "example" in out.out.lower()
    assert out.err == ""


def test_help_console_script():
    proc = _stforecast("--help")
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout.lower()
    for command in SUBCOMMANDS:
        assert command in proc.stdout


def test_query_without_results_exits_2(tmp_path):
    proc = _stforecast("query", "P(x > 1)", "--results", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(tmp_path) in lines[0]


def test_light_commands_do_not_import_pymc(tmp_path):
    """DESIGN.md: a query on saved results must not import PyMC; the cli docstring: PyMC is
    imported only by the commands that fit (building the parser must not import it either)."""
    code = (
        "import sys, contextlib, io\n"
        "from stforecast.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    main(['query', 'P(x > 1)', '--results', {str(tmp_path)!r}])\n"
        "    main(['replicate', '--json'])\n"
        "print('pymc' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_sampler_choices_match_fit():
    """cli keeps its own copy of the sampler names (so that it need not import PyMC)."""
    def samplers(path):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and getattr(node.targets[0], "id", None) == "SAMPLERS"):
                return ast.literal_eval(node.value)
        raise AssertionError(f"no SAMPLERS in {path}")

    assert samplers(SRC / "cli.py") == samplers(SRC / "fit.py")
