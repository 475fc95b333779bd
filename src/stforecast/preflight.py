"""Checks made before any work starts: option ranges, the output folder, memory, a trial density.

A run spends tens of seconds compiling and sampling before it simulates and writes; everything
that can be known to fail is checked here first, each failure one line (``OptionError`` or the
loaders' errors), exit status 2, nothing written:

* ``int_option(name)``: an argparse type for a whole-number option with the range of
  ``registry.OPTION_RANGES`` (``--paths 0``, ``--seed -1``, ``--draws 1e9`` are refused);
* ``check_out(path)``: the results folder can be created and written (not empty, not a file,
  not under a read-only folder), by creating and removing a scratch folder where the results
  will go;
* ``check_memory(...)``: the predictive draws of ``--paths`` fit in the memory available
  (``estimate_bytes``; the refusal says how many paths would fit);
* ``trial_logp(model)``: the model's log-density and its gradient are finite at the prior's
  centre (the sampler's starting point), so that priors ``check-priors`` accepts cannot crash a
  fit. It builds the model's graphs and evaluates them without compiling to C: 3-4 s of CPU
  (measured on both shipped companies), against tens of seconds for the samplers' compilation.

Standard library only at import (``trial_logp`` imports numpy and PyMC's model when called).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path

from .errors import OptionError, StforecastError, show, show_path
from .registry import MEMORY_FRACTION, OPTION_RANGES


# --- option ranges -------------------------------------------------------------------------------
def parse_int(name: str, text: str) -> int:
    """``text`` as a whole number in ``OPTION_RANGES[name]``; ``OptionError`` otherwise."""
    low, high = OPTION_RANGES[name]
    flag = "--" + name.replace("_", "-")
    expected = f"a whole number in [{low:,}, {high:,}]"
    raw = str(text).strip().replace("_", "")
    if not (raw.lstrip("+-").isdigit() and len(raw) <= 20):
        raise OptionError(f"option {flag}: expected {expected}, got {show(str(text))}")
    value = int(raw)
    if not low <= value <= high:
        raise OptionError(f"option {flag}: expected {expected}, got {value:,}")
    return value


def int_option(name: str):
    """An argparse ``type=`` for the option ``name`` (see ``parse_int``)."""
    def convert(text: str) -> int:
        try:
            return parse_int(name, text)
        except OptionError as exc:  # argparse names the option itself
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None
    convert.__name__ = name  # argparse names the type in its messages
    return convert


# --- the output folder ---------------------------------------------------------------------------
def check_out(path: str | Path, what: str = "--out") -> Path:
    """A results folder that can be created and written; ``OptionError`` otherwise.

    Checked by creating (and removing) a scratch folder beside it and, when it exists, a
    scratch file inside it: permissions, read-only file systems and full disks all show.
    """
    text = str(path)
    if not text.strip():
        raise OptionError(f"option {what}: expected a folder name, got an empty one")
    if not text.isprintable():
        raise OptionError(f"option {what}: expected a folder name of printable characters, got "
                          f"{show(text)}")
    out = Path(text)
    name = show_path(text)
    if out.exists() and not out.is_dir():
        raise OptionError(f"option {what}: expected a folder, {name} is a file")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OptionError(f"option {what}: expected a folder under a folder, {show_path(parent)} "
                          "is a file")
    for where in ([out] if out.is_dir() else []) + [parent]:
        try:
            scratch = tempfile.mkdtemp(prefix=".stforecast-check-", dir=where)
        except OSError as exc:
            raise OptionError(f"option {what}: cannot write the results folder {name} "
                              f"({exc.strerror or exc} in {show_path(where)})") from None
        shutil.rmtree(scratch, ignore_errors=True)
    return out


# --- memory --------------------------------------------------------------------------------------
#: Peak bytes per path, per forecast year and per (stored variable x (scenarios + 1)). Measured:
#: the simulation alone peaks at 9-11 (tracemalloc, both shipped companies, 10,000-40,000
#: paths); a whole run of the smaller shipped company (`stforecast run --no-report`, fit cached)
#: grew from 0.51 GB of resident memory at 40,000 paths to 1.74 GB at 200,000: 16 per value.
#: 20 leaves a quarter more for the summaries and charts.
BYTES_PER_VALUE = 20.0
#: Memory a run holds besides the predictive draws (libraries, the compiled model, the
#: posterior; that run with its fit peaked at 0.66 GB with 2,400 paths).
BASE_BYTES = 1.0e9


def estimate_bytes(paths: int, n_years: int, n_stored: int, n_scenarios: int) -> float:
    """Peak memory of simulating ``paths`` paths (bytes; see ``BYTES_PER_VALUE``)."""
    return BASE_BYTES + paths * n_years * n_stored * (n_scenarios + 1) * BYTES_PER_VALUE


def available_bytes() -> float | None:
    """Memory available to this process (``MemAvailable``; else physical memory), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(paths: int, n_years: int, n_stored: int, n_scenarios: int,
                 available: float | None = None) -> None:
    """``OptionError`` when the draws of ``paths`` paths would not fit in ``MEMORY_FRACTION``
    of the memory available, saying how many paths would."""
    available = available_bytes() if available is None else available
    if available is None:
        return
    budget = available * MEMORY_FRACTION
    need = estimate_bytes(paths, n_years, n_stored, n_scenarios)
    if need <= budget:
        return
    per_path = estimate_bytes(1, n_years, n_stored, n_scenarios) - BASE_BYTES
    fit = max(0, int((budget - BASE_BYTES) / per_path))
    raise OptionError(f"option --paths: {paths:,} paths x {n_scenarios} scenarios need about "
                      f"{need / 1e9:,.1f} GB, more than {MEMORY_FRACTION:.0%} of the "
                      f"{available / 1e9:,.1f} GB available; at most about "
                      f"{_round_down(fit):,} paths would fit")


def _round_down(n: int) -> int:
    """``n`` rounded down to two significant digits."""
    if n < 100:
        return n
    step = 10 ** (int(math.log10(n)) - 1)
    return n // step * step


# --- a trial evaluation of the model ---------------------------------------------------------------
class ModelCheckError(StforecastError):
    """The model cannot be evaluated at its starting point (priors and data incompatible)."""


def trial_logp(model, where: str = "priors", gradient: bool = True) -> dict:
    """The model's log-density and its gradient at the prior's centre (PyMC's initial point,
    where the samplers start), which must be finite; ``ModelCheckError`` naming the offending
    variables otherwise. Returns ``{"logp": value, "point": the centre (PyMC's initial point,
    by value variable), "where": where, "seconds": build + evaluate}``. ``gradient=False``
    leaves the gradient to the caller (the compiled driver model's check evaluates it anyway,
    ``compiled.check``; building its graph here costs ~1 s).

    Evaluated by PyTensor's Python linker with no graph rewrites, so nothing is compiled to C
    (the C compilation the samplers do costs tens of seconds on a cold cache); the terms are
    summed pairwise because that linker takes at most 32 operands per operation.
    """
    import operator
    import time
    from functools import reduce

    import numpy as np
    import pytensor
    from pytensor.compile.mode import Mode

    t = time.perf_counter()
    try:
        point = model.initial_point()
        names = [rv.name for rv in model.basic_RVs]
        terms = [term.sum() for term in model.logp(sum=False)]
        total = reduce(operator.add, terms)
        grads = pytensor.grad(total, model.value_vars) if gradient else []
        fn = pytensor.function(model.value_vars, [total, *terms, *grads],
                               mode=Mode(linker="py", optimizer=None),
                               on_unused_input="ignore")
        with np.errstate(all="ignore"):
            out = fn(*[point[v.name] for v in model.value_vars])
    except (ArithmeticError, ValueError, TypeError) as exc:  # e.g. a shape or domain error
        raise ModelCheckError(f"{where}: expected priors the model can be evaluated with, the "
                              f"trial evaluation at the prior's centre failed "
                              f"({type(exc).__name__}: {exc})") from None
    logp = float(out[0])
    term_values = out[1:1 + len(terms)]
    grad_ok = all(np.all(np.isfinite(np.asarray(g, dtype=float))) for g in out[1 + len(terms):])
    if not (math.isfinite(logp) and grad_ok):
        bad = [n for n, v in zip(names, term_values) if not np.isfinite(float(v))][:3]
        raise impossible_history(where, logp, bad)
    return {"logp": logp, "point": point, "where": where, "seconds": time.perf_counter() - t}


def impossible_history(where: str, logp: float, bad: list[str]) -> ModelCheckError:
    """The one-line error of a model not finite at its prior's centre: its log-density is not
    finite in the terms ``bad``, or (none named) its gradient is not finite."""
    return ModelCheckError(f"{where}: expected priors under which the company's history is "
                           f"possible: at the prior's centre the log-density is {logp:g}"
                           + (f" (not finite in {', '.join(bad)})" if bad else
                              " (its gradient is not finite)")
                           + "; check the priors' ranges and the history's values")
