"""The README's set-up command finds Python >= 3.12 on a machine without pyenv, under whatever
name it has, and says in one line what is missing when there is none (``setup.sh --find-python``
runs the same search and stops before making the venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "setup.sh"
BASH = shutil.which("bash")


def find(bin_dir: Path, **env) -> subprocess.CompletedProcess:
    """``setup.sh --find-python`` with PATH = ``bin_dir`` alone (no pyenv, no uv, no system
    Python) and HOME elsewhere."""
    dirname = shutil.which("dirname")
    (bin_dir / "dirname").symlink_to(dirname)
    return subprocess.run([BASH, str(SETUP), "--find-python"], capture_output=True, text=True,
                          timeout=60, env={"PATH": str(bin_dir), "HOME": str(bin_dir), **env})


def too_old(path: Path) -> Path:
    """A stand-in for a Python 3.11 interpreter: prints its version, fails the version check."""
    path.write_text("#!/bin/sh\necho 3.11.9\nexit 1\n")
    path.chmod(0o755)
    return path


pytestmark = pytest.mark.skipif(BASH is None or shutil.which("dirname") is None,
                                reason="needs bash and dirname")


def test_a_python_312_under_another_name_is_found_without_pyenv(tmp_path):
    (tmp_path / "python3.12").symlink_to(Path(sys.executable).resolve())
    too_old(tmp_path / "python3")
    res = find(tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "python3.12"


def test_only_python_311_gives_one_line_naming_the_requirement(tmp_path):
    too_old(tmp_path / "python3")
    res = find(tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "needs Python >= 3.12" in res.stderr and "python3 3.11.9" in res.stderr


def test_python_env_var_naming_an_old_interpreter_is_refused(tmp_path):
    old = too_old(tmp_path / "py311")
    (tmp_path / "python3.12").symlink_to(Path(sys.executable).resolve())
    res = find(tmp_path, PYTHON=str(old))  # $PYTHON and nothing else
    assert res.returncode == 2 and "needs Python >= 3.12" in res.stderr
