"""Papercuts of the command line (issue 15, item 7): --version, help and defaults for every
option of every command, one JSON style, the --paths rounding said, no BrokenPipe traceback."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from stforecast import __version__
from stforecast.cli import build_parser, dump_json, main, paths_rounding

from results_folder import write_results_folder

CLI = [sys.executable, "-m", "stforecast.cli"]


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"stforecast {__version__}"


def test_every_option_of_every_command_has_help_and_its_default():
    """Walk the argparse tree: every argument has a help text; every option whose default is a
    value (not None / False) names it in its help."""
    parser = build_parser()
    missing, no_default = [], []
    commands = dict(_subparsers(parser))
    assert {"run", "query", "scenarios", "sensitivity", "check-scenarios", "calibrate", "sweep",
            "run-many"} <= set(commands)
    for name, sub in [("stforecast", parser)] + list(commands.items()):
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                missing.append(where)
            elif (action.option_strings and action.default not in (None, False)
                  and not isinstance(action, argparse._VersionAction)
                  and "default" not in action.help):
                no_default.append(where)
    assert missing == [] and no_default == [], (missing, no_default)


def test_paths_rounding_is_exact_arithmetic(capsys):
    assert paths_rounding(2000, 4 * 200) == (3, 2400)
    assert paths_rounding(100_000, 4 * 1000) == (25, 100_000)
    assert paths_rounding(1, 4000) == (1, 4000)
    from stforecast.cli import _say_paths_rounding
    _say_paths_rounding("run", 2000, 800)
    err = capsys.readouterr().err
    assert "--paths 2,000 gives 2,400 paths (3 per posterior draw x 800" in err
    _say_paths_rounding("run", 100_000, 4000)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    rng = np.random.default_rng(0)
    shape = (5, 2, 10, 4)
    ds = xr.Dataset({"target_price": (("scenario", "chain", "draw", "path"),
                                      rng.lognormal(1.5, 0.3, shape))},
                    coords={"scenario": ["base", "risk-weighted", "a", "b", "c"]})
    return write_results_folder(ds, tmp_path_factory.mktemp("results"))


def test_one_json_style(results, capsys):
    outputs = []
    for argv in (["companies", "--json"], ["scenarios", "--json", "--results", str(results)],
                 ["query", "P(target_price > 5)", "--json", "--results", str(results)],
                 ["query", "--list", "--json", "--results", str(results)]):
        assert main(argv) == 0, argv
        outputs.append(capsys.readouterr().out)
    for text in outputs:
        assert text == dump_json(json.loads(text)) + "\n"  # indented by one space
        assert text.splitlines()[1].startswith(' "') or text.splitlines()[1].startswith(" {")


def test_closed_pipe_gives_no_traceback(results):
    """`stforecast scenarios --results DIR | head -1`, with the reader gone at once."""
    for argv in (["scenarios", "--results", str(results)], ["companies"], ["--help"]):
        proc = subprocess.Popen(CLI + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc.stdout.close()  # the reader has gone before the first line is written
        _, err = proc.communicate(timeout=60)
        err = err.decode()
        assert "Traceback" not in err and "BrokenPipe" not in err, (argv, err)
        assert proc.returncode in (0, 141), (argv, proc.returncode)
    shell = subprocess.run(" ".join(CLI + ["scenarios", "--results", str(results)])
                           + " | head -1", shell=True, capture_output=True, text=True, timeout=60)
    assert shell.stdout.startswith("median [5% - 95%]") and shell.stdout.count("\n") == 1
    assert "Traceback" not in shell.stderr
