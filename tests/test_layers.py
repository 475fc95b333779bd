"""The package's layers and its one rule about data: what each module may import, no company in
code, one base class for user errors, and shared constants defined once (in the registry).

* Simulation, the engine, summaries, shocks and queries never load PyMC; the registry and the
  errors load no numpy (the command line and queries start fast).
* No company in code: no segment name or folder name of a shipped company, no fiscal-year
  label, none of the report's prices or share count in ``src/stforecast/**/*.py``.
* Every exception class of the package derives from ``errors.StforecastError``.
* ``SAMPLE_DIMS``, the quality bar (R-hat 1.01, ESS 400) and the headline scenario's name are
  defined in ``registry.py`` only.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import stforecast
from stforecast.errors import StforecastError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(stforecast.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], "stforecast."))


def _rel(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


# --- (a) layers -----------------------------------------------------------------------------------
def _loaded_after_import(module: str, watch: tuple[str, ...]) -> list[str]:
    """Which of ``watch`` a fresh interpreter has in ``sys.modules`` after ``import module``."""
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            f"print(json.dumps([m for m in {list(watch)!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["stforecast.simulate", "stforecast.engine",
                                    "stforecast.summary", "stforecast.shocks",
                                    "stforecast.query", "stforecast.registry",
                                    "stforecast.resimulation", "stforecast.observations"])
def test_module_does_not_load_pymc(module):
    assert _loaded_after_import(module, ("pymc", "pytensor", "nutpie")) == []


@pytest.mark.parametrize("module", ["stforecast.registry", "stforecast.errors"])
def test_module_loads_no_numpy(module):
    assert _loaded_after_import(module, ("numpy",)) == []


# --- (b) no company in code -----------------------------------------------------------------------
def _shipped_companies() -> dict[str, list[str]]:
    """Shipped company folder name -> its segment names (from every priors/*/company.toml)."""
    out = {}
    for path in sorted((ROOT / "priors").glob("*/company.toml")):
        segments = tomllib.loads(path.read_text()).get("segments", {})
        out[path.parent.name] = list(segments)
    return out


COMPANIES = _shipped_companies()


def _company_patterns() -> dict[str, re.Pattern]:
    """What may not appear in code -> a pattern for it."""
    patterns = {
        # FY21, FY21E, fy21, _fy21_fy23 (not part of a longer word such as "copy21")
        "fiscal-year label": re.compile(r"(?<![A-Za-z])[Ff][Yy]\d{2}(?!\d)"),
        "price 6.73": re.compile(r"(?<![\d.])6\.73(?!\d)"),
        "target price 8.08": re.compile(r"(?<![\d.])8\.08(?!\d)"),
        "share count 33,507": re.compile(r"(?<![\d.,])33,?507(?!\d)"),
    }
    for company, segments in COMPANIES.items():
        patterns[f"company {company}"] = re.compile(re.escape(company), re.IGNORECASE)
        for segment in segments:
            # a segment name as a name or a name's prefix/suffix (smart_city, smart_city_cities)
            patterns[f"segment {segment} of {company}"] = re.compile(
                rf"(?<![A-Za-z0-9]){re.escape(segment)}(?![A-Za-z0-9])")
    patterns["company sensetime"] = re.compile("sensetime", re.IGNORECASE)
    return patterns


PATTERNS = _company_patterns()


def test_shipped_companies_are_found():
    assert "sensetime" in COMPANIES and COMPANIES["sensetime"]


def test_scan_finds_what_it_looks_for():
    """The patterns catch the forms that used to be in code, and spare ordinary words."""
    caught = ["cash_burn_fy21_fy23", "FY22E", '"FY23"', "target_price_hkd=8.08",
              "price 6.73", "33,507", "33507", "SenseTime", "smart_city_cities",
              "COMPOSITE = {'smart_business': 1}"]
    spared = ["copy21", "16.735", "8.085", "133,5070", "smart_cityscape", "FY2", "fy2024"]
    for text in caught:
        assert any(p.search(text) for p in PATTERNS.values()), text
    for text in spared:
        assert not any(p.search(text) for p in PATTERNS.values()), text


@pytest.mark.parametrize("source", SOURCES, ids=_rel)
def test_no_company_in_code(source):
    offenders = []
    for number, line in enumerate(source.read_text().splitlines(), 1):
        for what, pattern in PATTERNS.items():
            if pattern.search(line):
                offenders.append(f"{_rel(source)}:{number}: {what}: {line.strip()}")
    print("\n".join(offenders))
    assert not offenders, f"{len(offenders)} line(s) name a company:\n" + "\n".join(offenders)


# --- (c) one base class for user errors -----------------------------------------------------------
@pytest.mark.parametrize("module", MODULES)
def test_every_error_class_is_a_stforecast_error(module):
    mod = importlib.import_module(module)
    own = [cls for _, cls in inspect.getmembers(mod, inspect.isclass)
           if cls.__module__ == module and issubclass(cls, Exception)
           and not issubclass(cls, Warning)]
    bad = [cls.__name__ for cls in own if not issubclass(cls, StforecastError)]
    assert not bad, f"{module}: {bad} do not derive from errors.StforecastError"


def test_known_errors_derive_from_the_base():
    from stforecast.errors import DataFileError, ResultsError
    from stforecast.priors import PriorsError
    from stforecast.scenarios import ScenariosError
    for cls in (DataFileError, ResultsError, PriorsError, ScenariosError):
        assert issubclass(cls, StforecastError) and issubclass(cls, ValueError)


# --- (d) shared constants defined once ------------------------------------------------------------
REGISTRY_NAMES = {"SAMPLE_DIMS", "RHAT_MAX", "ESS_MIN", "DIVERGENCES_MAX", "HEADLINE_SCENARIO",
                  "SAMPLERS", "VALUATION_METHODS", "QUANTILES", "SCHEMA_VERSION"}


def registry_redefinitions(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every local copy of a registry constant in a module's syntax tree."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name) and name.id in REGISTRY_NAMES:
                        found.append((node.lineno, f"defines {name.id}"))
        elif isinstance(node, ast.Constant):
            if node.value == "risk-weighted":
                found.append((node.lineno, 'the literal "risk-weighted"'))
            elif isinstance(node.value, float) and node.value == 1.01:
                found.append((node.lineno, "the R-hat bar 1.01"))
        elif isinstance(node, ast.Tuple) and [getattr(e, "value", None) for e in node.elts] \
                == ["chain", "draw", "path"]:
            found.append((node.lineno, "the sample dimensions as a literal"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Constant) and s.value == 400 for s in sides):
                found.append((node.lineno, "the ESS bar 400 in a comparison"))
    return found


def test_redefinition_scan_finds_copies():
    code = ('SAMPLE_DIMS = ("chain", "draw", "path")\nRHAT_MAX, ESS_MIN = 1.01, 400\n'
            'x = "risk-weighted"\nok = ess >= 400\ndims = ("chain", "draw", "path")\n'
            'draws: int = 400\n')
    found = [what for _, what in registry_redefinitions(ast.parse(code))]
    assert found.count("defines SAMPLE_DIMS") == 1 and "defines RHAT_MAX" in found
    assert "defines ESS_MIN" in found and "the R-hat bar 1.01" in found
    assert 'the literal "risk-weighted"' in found and "the ESS bar 400 in a comparison" in found
    assert found.count("the sample dimensions as a literal") == 2
    assert len(found) == 8  # "draws: int = 400" is not the bar


@pytest.mark.parametrize("source", [s for s in SOURCES if s.name != "registry.py"], ids=_rel)
def test_shared_constants_live_in_the_registry(source):
    found = registry_redefinitions(ast.parse(source.read_text()))
    offenders = [f"{_rel(source)}:{line}: {what}" for line, what in sorted(found)]
    assert not offenders, "use stforecast.registry:\n" + "\n".join(offenders)


def test_registry_defines_them():
    from stforecast import registry
    assert registry.SAMPLE_DIMS == ("chain", "draw", "path")
    assert (registry.RHAT_MAX, registry.ESS_MIN) == (1.01, 400)
    assert registry.HEADLINE_SCENARIO == "risk-weighted"
