#!/usr/bin/env bash
# Set up stforecast (from any directory): find a Python >= 3.12, make .venv with it, and install
# the package with its test extras. `PYTHON=/path/to/python3.12 ./setup.sh` picks the interpreter.
set -eu
cd "$(dirname "$0")"

found=""  # interpreters that ran but are too old, for the error message

# good CMD [LABEL]: CMD runs and is Python >= 3.12. A command that fails (e.g. a pyenv shim for a
# version that is not selected) counts as absent; a too-old one is noted as "LABEL VERSION".
good() {
  local v
  v=$("$1" -c 'import sys; print(sys.version.split()[0]); sys.exit(sys.version_info < (3, 12))' \
      2>/dev/null) && return 0
  if [ -n "$v" ] && [ -n "${2:-}" ]; then found="$found${found:+, }$2 $v"; fi
  return 1
}
base() { "$1" -c 'import sys; print(sys.base_prefix)' 2>/dev/null; }

# Sets py: $PYTHON if set (and nothing else); else the first good one on PATH, in pyenv, in uv.
find_python() {
  py=""
  if [ -n "${PYTHON:-}" ]; then
    if good "$PYTHON" "$PYTHON"; then py=$PYTHON; fi
    found=${found:-"$PYTHON (does not run)"}
  else
    for c in python3.14 python3.13 python3.12 python3 python; do
      if command -v "$c" >/dev/null 2>&1 && good "$c" "$c"; then py=$c; break; fi
    done
    if [ -z "$py" ] && command -v pyenv >/dev/null 2>&1; then
      for c in "$(pyenv root)"/versions/*/bin/python; do
        if good "$c"; then py=$c; break; fi
      done
    fi
    if [ -z "$py" ] && command -v uv >/dev/null 2>&1; then
      c=$(uv python find '>=3.12' 2>/dev/null) || c=""
      if [ -n "$c" ] && good "$c"; then py=$c; fi
    fi
  fi
  if [ -z "$py" ]; then
    echo "setup.sh: needs Python >= 3.12 (found: ${found:-none}); install it or set PYTHON=/path/to/python3.12" >&2
    exit 2
  fi
}

# `./setup.sh --find-python`: print the interpreter it would use (or the one-line error) and stop.
if [ "${1:-}" = "--find-python" ]; then
  find_python
  echo "$py"
  exit 0
fi

# Re-use .venv if its Python is >= 3.12 (and, when PYTHON is set, made from that interpreter).
if good .venv/bin/python && { [ -z "${PYTHON:-}" ] || [ "$(base .venv/bin/python)" = "$(base "$PYTHON")" ]; }; then
  echo "setup.sh: re-using .venv ($(.venv/bin/python --version))"
else
  find_python
  echo "setup.sh: making .venv with $py ($("$py" --version))"
  rm -rf .venv
  "$py" -m venv .venv || { rm -rf .venv; echo "setup.sh: '$py -m venv' failed (Debian/Ubuntu: apt install python3-venv)" >&2; exit 1; }
fi
.venv/bin/pip install -q -e ".[test]"
# Byte-compile the package, as a non-editable install does: where PYTHONDONTWRITEBYTECODE is set
# (containers, CI), every command and test process would otherwise compile its modules again.
.venv/bin/python -m compileall -q src/stforecast >/dev/null
echo "setup.sh: done; next: .venv/bin/stforecast run"
