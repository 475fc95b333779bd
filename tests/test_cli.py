"""Tests for the `stforecast` command line (run as a real subprocess: the console script of the
venv, or ``python -m stforecast.cli``)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).parent / "stforecast"
# `python -m` so that PYTHONPATH (a worktree's src) wins over the venv's editable install.
CLI = [sys.executable, "-m", "stforecast.cli"]
SRC = Path(__file__).resolve().parents[1] / "src" / "stforecast"
SUBCOMMANDS = ("companies", "run", "replicate", "check-priors", "check-scenarios", "report",
               "query", "scenarios", "sensitivity", "score")

#: ``stforecast replicate --json`` before the company-as-data refactor, measured on the
#: pre-refactor checkout (commit 843e876) with
#: ``python -c "from stforecast.cli import main; main(['replicate', '--json'])"``; only the key
#: ``target_price_hkd`` is now ``target_price``.
REPLICATE_SENSETIME = {
    "revenue": {"FY21": 4679.0, "FY22": 6398.0, "FY23": 8826.0},
    "revenue_smart_business": {"FY21": 1977.0, "FY22": 2500.0, "FY23": 3307.0},
    "revenue_smart_city": {"FY21": 2139.0, "FY22": 3131.0, "FY23": 4141.0},
    "revenue_smart_life": {"FY21": 396.0, "FY22": 572.0, "FY23": 1068.0},
    "revenue_smart_auto": {"FY21": 167.0, "FY22": 195.0, "FY23": 310.0},
    "gross_profit": {"FY21": 3134.0, "FY22": 4258.0, "FY23": 5818.0},
    "operating_income": {"FY21": -3817.0, "FY22": -2584.0, "FY23": -2393.0},
    "net_income": {"FY21": -32488.0, "FY22": -1813.0, "FY23": -1547.9},
    "adjusted_net_income": {"FY21": -2071.0, "FY22": -1306.0, "FY23": -974.9},
    "operating_cash_flow": {"FY21": -3487.0, "FY22": -1086.0, "FY23": -349.9},
    "capex": {"FY21": 2503.0, "FY22": 1484.0, "FY23": 1497.0},
    "free_cash_flow": {"FY21": -5990.0, "FY22": -2570.0, "FY23": -1847.0},
    "cash": {"FY21": 10997.0, "FY22": 8486.0, "FY23": 6677.0},
    "net_cash": {"FY21": 9612.0, "FY22": 7192.0, "FY23": 5460.0},
    "target_price": 8.08,
}


def _stforecast(*args, timeout=120):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def _one_error_line(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_replicate_json_equals_the_pre_refactor_numbers():
    proc = _stforecast("replicate", "--json", "--company", "sensetime")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == REPLICATE_SENSETIME
    assert list(result) == list(REPLICATE_SENSETIME)  # the same lines, in the same order


def test_replicate_default_company_is_sensetime():
    proc = _stforecast("replicate", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == REPLICATE_SENSETIME


def test_replicate_table():
    proc = _stforecast("replicate", "--company", "sensetime")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SenseTime Group Inc. (RMB mn)" in out
    for line in REPLICATE_SENSETIME:
        assert line in out, line
    assert "target_price (HKD)" in out and "8.080" in out and "8.08" in out
    # the conventions table: the report's case under the report's and the correct conventions
    conventions = out[out.index("Conventions:"):]
    for line in ("operating_cash_flow", "liquidity", "net_cash", "value_today (HKD/share)"):
        assert line in conventions, line
    assert "1,502" in conventions  # FY21 OCF difference = FY21 share-based compensation
    # engine vs report on one row, e.g. revenue FY23: 8,826 vs the report's 8,825
    row = next(r for r in out.splitlines() if r.startswith("revenue "))
    assert row.split()[1:] == ["4,679", "4,678", "6,398", "6,399", "8,826", "8,825"]


def test_companies_lists_sensetime():
    proc = _stforecast("companies")
    assert proc.returncode == 0, proc.stderr
    assert "sensetime" in proc.stdout and "smart_city" in proc.stdout
    proc = _stforecast("companies", "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["sensetime"]["ticker"] == "0020 HK"
    assert rows["sensetime"]["forecast"] == ["FY21", "FY22", "FY23"]
    assert rows["sensetime"]["segments"] == ["smart_business", "smart_city", "smart_life",
                                             "smart_auto"]


def test_unknown_company_is_one_line_exit_2(tmp_path):
    _one_error_line(_stforecast("replicate", "--company", "no-such-company"), "no-such-company")
    _one_error_line(_stforecast("check-priors", "--company", str(tmp_path)), str(tmp_path))


def test_check_priors_uses_the_company():
    proc = _stforecast("check-priors", "--company", "sensetime")
    assert proc.returncode == 0, proc.stderr
    assert "priors.toml: valid" in proc.stdout


def test_check_priors_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "priors.toml"
    bad.write_text("[growth.x\n")
    _one_error_line(_stforecast("check-priors", str(bad)), str(bad))


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_has_example(command, capsys):
    from stforecast.cli import main

    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr()
    assert "example" in out.out.lower()
    assert out.err == ""


def test_help_names_no_company():
    proc = _stforecast("--help")
    assert proc.returncode == 0, proc.stderr
    assert "example" in proc.stdout.lower()
    for command in SUBCOMMANDS:
        assert command in proc.stdout
    for word in ("SenseTime", "HK$", "6.73", "8.08", "FY2"):
        assert word not in proc.stdout, word


@pytest.mark.parametrize("command", ["query", "scenarios", "sensitivity", "report"])
def test_commands_without_results_exit_2(command, tmp_path):
    args = [command] + (["P(x > 1)"] if command == "query" else []) + ["--results", str(tmp_path)]
    proc = _stforecast(*args)
    _one_error_line(proc, str(tmp_path), "run `stforecast run` first")
    assert proc.stdout == ""


def test_results_default_to_results_of_the_company(tmp_path):
    proc = subprocess.run(CLI + ["query", "P(x > 1)", "--company", "some-company"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    _one_error_line(proc, str(Path("results") / "some-company" / "summary.json"))


def test_light_commands_do_not_import_pymc(tmp_path):
    """DESIGN.md: a query on saved results must not import PyMC; the cli docstring: PyMC is
    imported only by the commands that fit (building the parser must not import it either)."""
    code = (
        "import sys, contextlib, io\n"
        "from stforecast.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    main(['query', 'P(x > 1)', '--results', {str(tmp_path)!r}])\n"
        "    main(['replicate', '--json'])\n"
        "    main(['companies'])\n"
        "print(sorted(m for m in ('pymc', 'pytensor', 'arviz') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_sampler_choices_match_fit():
    """cli takes the sampler names from the registry (no PyMC import); fit must agree."""
    from stforecast.cli import build_parser
    from stforecast.fit import SAMPLERS
    from stforecast.registry import SAMPLERS as REGISTRY_SAMPLERS

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    sampler = next(a for a in run._actions if a.dest == "sampler")
    assert tuple(sampler.choices) == REGISTRY_SAMPLERS == tuple(SAMPLERS)


def test_console_script_is_installed():
    assert _SCRIPT.exists()


def test_leave_runs_exit_handlers_flushes_and_waits_for_threads(tmp_path):
    """``cli.leave`` (how the stforecast command ends): the status is the process's, buffered
    output and atexit handlers are not lost, and a running (non-daemon) thread is waited for."""
    script = (
        "import atexit, sys, threading, time\n"
        "from pathlib import Path\n"
        "from stforecast import cli\n"
        "out = Path(sys.argv[1])\n"
        "atexit.register(lambda: (out / 'atexit').write_text('ran'))\n"
        "if sys.argv[2] == 'thread':\n"
        "    threading.Thread(target=lambda: (time.sleep(0.5), (out / 'thread').write_text('done'))"
        ").start()\n"
        "print('buffered line')\n"
        "cli.leave(3)\n")
    for mode in ("plain", "thread"):
        folder = tmp_path / mode
        folder.mkdir()
        done = subprocess.run([sys.executable, "-c", script, str(folder), mode],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stderr
        assert done.stdout == "buffered line\n"
        assert (folder / "atexit").read_text() == "ran"
        assert (folder / "thread").exists() == (mode == "thread")
