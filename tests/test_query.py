"""Tests for stforecast.query: parsing, evaluation against numpy, errors and fuzzing."""

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stforecast import mcse
from stforecast.query import (
    BinOp,
    Compare,
    Number,
    Query,
    QueryError,
    QueryResult,
    Ref,
    evaluate,
    evaluate_file,
    parse,
)
from stforecast.errors import ResultsError
from stforecast.results import load_results

from results_folder import write_results_folder

YEARS = ["FY21", "FY22", "FY23"]


def make_dataset(seed=0, chain=4, draw=200, path=25, scenarios=None):
    rng = np.random.default_rng(seed)
    lead = (chain, draw, path) if scenarios is None else (len(scenarios), chain, draw, path)
    lead_dims = ("chain", "draw", "path") if scenarios is None else ("scenario", "chain", "draw", "path")
    revenue = rng.normal([4700.0, 5900.0, 7200.0], [300.0, 900.0, 1600.0], lead + (3,))
    cash = rng.normal(4000.0, 1200.0, lead + (3,))
    coords = {"year": YEARS}
    if scenarios is not None:
        coords["scenario"] = scenarios
        revenue = revenue + 500.0 * np.arange(len(scenarios))[:, None, None, None, None]
    return xr.Dataset(
        {
            "revenue": (lead_dims + ("year",), revenue),
            "cash": (lead_dims + ("year",), cash),
            "revenue_smart_city": (lead_dims + ("year",), 0.3 * revenue),
            "target_price": (lead_dims, rng.lognormal(1.8, 0.3, lead)),
            "cash_burn": (lead_dims, rng.normal(2500.0, 400.0, lead)),
            "growth": (("chain", "draw"), rng.normal(0.2, 0.05, (chain, draw))),  # per-draw
        },
        coords=coords,
    )


@pytest.fixture(scope="module")
def ds():
    return make_dataset()


def np_var(ds, name, year=None):
    da = ds[name] if year is None else ds[name].sel(year=year)
    return da.transpose("chain", "draw", "path").values


# ------------------------------------------------------------- numeric agreement
def test_examples_agree_with_numpy(ds):
    rev = {y: np_var(ds, "revenue", y) for y in YEARS}
    cash23 = np_var(ds, "cash", "FY23")
    tp = np_var(ds, "target_price")
    burn = np_var(ds, "cash_burn")
    cases = {
        "P(target_price > 6.73)": ("p", tp > 6.73),
        "P(revenue[FY23] > 8825)": ("p", rev["FY23"] > 8825),
        "P(cash[FY23] < 3000)": ("p", cash23 < 3000),
        "P(revenue[FY23] < 6000 and cash[FY23] < 3000)": ("p", (rev["FY23"] < 6000) & (cash23 < 3000)),
        "P(revenue[FY23] > 1.2 * revenue[FY22])": ("p", rev["FY23"] > 1.2 * rev["FY22"]),
        "P(not revenue[FY23] > 7000 or cash[FY23] >= 5_000)": ("p", (rev["FY23"] <= 7000) | (cash23 >= 5000)),
        "P((revenue[FY23] - revenue[FY22]) / revenue[FY22] > 0.25)": (
            "p", (rev["FY23"] - rev["FY22"]) / rev["FY22"] > 0.25),
        "mean(cash_burn)": ("mean", burn),
        "mean(revenue[FY23] - revenue[FY21])": ("mean", rev["FY23"] - rev["FY21"]),
        "mean(-revenue[FY21] * 1e-3 + 2)": ("mean", -rev["FY21"] * 1e-3 + 2),
        "sd(revenue[FY23])": ("sd", rev["FY23"]),
    }
    for expression, (kind, arr) in cases.items():
        result = evaluate(expression, ds)
        assert result.n == arr.size == 4 * 200 * 25
        if kind == "p":
            assert result.value == pytest.approx(arr.mean(), abs=1e-12), expression
            assert result.mcse == pytest.approx(mcse.mcse_mean(arr.astype(float))), expression
        elif kind == "mean":
            assert result.value == pytest.approx(arr.mean(), rel=1e-12), expression
            assert result.mcse == pytest.approx(mcse.mcse_mean(arr)), expression
        else:
            assert result.value == pytest.approx(arr.std(), rel=1e-12)
            assert result.mcse == pytest.approx(mcse.mcse_sd(arr))
        assert 0 < result.mcse < np.inf


def test_quantile_and_median(ds):
    tp = np_var(ds, "target_price")
    r = evaluate("quantile(target_price, 0.05)", ds)
    assert r.value == pytest.approx(np.quantile(tp, 0.05))
    assert r.mcse == pytest.approx(mcse.mcse_quantile(tp, 0.05)[1])
    assert 0 < r.mcse < 0.1 * tp.std()
    m = evaluate("median(revenue[FY22])", ds)
    assert m.value == pytest.approx(np.median(np_var(ds, "revenue", "FY22")))


def test_per_draw_variable_broadcasts(ds):
    g = ds["growth"].values
    r = evaluate("P(growth > 0.2)", ds)
    assert r.value == pytest.approx((g > 0.2).mean()) and r.n == 4 * 200 * 25
    r = evaluate("mean(revenue[FY22] * (1 + growth))", ds)
    expected = np_var(ds, "revenue", "FY22") * (1 + g[:, :, None])
    assert r.value == pytest.approx(expected.mean())


def test_parse_ast():
    q = parse("P(revenue[FY23] > 1.2 * revenue[FY22])")
    assert isinstance(q, Query) and q.func == "P" and q.q is None
    assert isinstance(q.arg, Compare) and q.arg.op == ">"
    assert q.arg.left == Ref("revenue", "FY23", 3)
    assert isinstance(q.arg.right, BinOp) and q.arg.right.left == Number(1.2, 19)
    assert parse("quantile(x, 0.05)").q == 0.05 and parse("median(x)").q == 0.5
    # precedence: * over +, and over or; numbers with _ and exponents
    q = parse("mean(1 + 2 * 3_000)")
    assert q.arg.op == "+" and q.arg.right.op == "*" and q.arg.right.right.value == 3000
    assert parse("mean(3e3)").arg.value == 3000.0
    q = parse("P(a > 1 or b > 1 and c > 1)")
    assert q.arg.op == "or" and q.arg.right.op == "and"


def test_result_str_and_dict(ds):
    r = QueryResult("P(target_price > 6.73)", 0.31234, 0.0041, 100000)
    assert str(r) == "P(target_price > 6.73) = 0.312 ± 0.004  (n = 100,000)"
    assert r.to_dict() == {"expression": "P(target_price > 6.73)", "scenario": None,
                           "value": 0.31234, "mcse": 0.0041, "n": 100000}
    named = QueryResult("P(x > 1)", 0.5, 0.01, 10, "base")
    assert str(named) == "P(x > 1) = 0.50 ± 0.01  (scenario base, n = 10)"
    assert str(QueryResult("mean(x)", 8825.4, 12.3, 5000)) == "mean(x) = 8,825 ± 12  (n = 5,000)"
    assert json.loads(json.dumps(QueryResult("x", 1.0, float("nan"), 3).to_dict()))["mcse"] is None
    live = evaluate("P(cash[FY23]  <\n 3000)", ds)
    assert str(live).startswith("P(cash[FY23] < 3000) = ") and "\n" not in str(live)
    with pytest.raises(Exception):
        live.value = 1.0  # frozen


def test_query_speed_100k_paths():
    big = make_dataset(seed=1, chain=4, draw=1000, path=25)  # 100,000 paths x 3 years
    for expression in ("P(revenue[FY23] > 1.2 * revenue[FY22])",
                       "P(revenue[FY23] < 6000 and cash[FY23] < 3000)",
                       "quantile(target_price, 0.05)",
                       "mean(revenue[FY23] - revenue[FY21])"):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = evaluate(expression, big)
            times.append(time.perf_counter() - t0)
        assert result.n == 100_000
        assert min(times) < 0.1, (expression, times)


# --------------------------------------------------------------------- scenarios
@pytest.fixture(scope="module")
def ds_scen():
    return make_dataset(chain=2, draw=20, path=5, scenarios=["bear", "base", "risk-weighted"])


def test_scenarios(ds_scen):
    rev = ds_scen["revenue"].sel(year="FY23")
    default = evaluate("mean(revenue[FY23])", ds_scen)
    assert default.value == pytest.approx(float(rev.sel(scenario="risk-weighted").mean()))
    assert default.n == 2 * 20 * 5
    bear = evaluate("mean(revenue[FY23])", ds_scen, scenario="bear")
    assert bear.value == pytest.approx(float(rev.sel(scenario="bear").mean()))
    with pytest.raises(QueryError, match=r"unknown scenario 'bull'; valid scenarios: bear, base, risk-weighted"):
        evaluate("mean(revenue[FY23])", ds_scen, scenario="bull")
    no_default = ds_scen.isel(scenario=[0, 1])
    with pytest.raises(QueryError, match=r"no 'risk-weighted' scenario; choose one of: bear, base"):
        evaluate("mean(revenue[FY23])", no_default)
    with pytest.raises(QueryError, match="no scenario dimension"):
        evaluate("mean(cash[FY21])", ds_scen.isel(scenario=0, drop=True), scenario="base")


# ------------------------------------------------------------------------ errors
ERRORS = [
    ("P(revenu[FY23] > 1)", ["unknown variable 'revenu'", "did you mean 'revenue'",
                             "valid names: cash, cash_burn, growth, revenue"]),
    ("P(revenue[FY24] > 1)", ["unknown year 'FY24'", "valid years: FY21, FY22, FY23"]),
    ("avg(revenue[FY23])", ["unknown function 'avg'", "valid functions: P, mean, median, sd, quantile"]),
    ("p(revenue[FY23] > 1)", ["unknown function 'p'", "valid functions: P, mean"]),
    ("P(revenue > 8825)", ["'revenue' has a year dimension", "FY21, FY22, FY23"]),
    ("P(target_price[FY23] > 6)", ["'target_price' has no year dimension"]),
    ("P(revenue[FY23] > )", ["syntax error at character 19", "expected a number, a variable name or '('"]),
    ("P(revenue[FY23] > 1", ["syntax error at character 20", "expected ')'", "end of query"]),
    ("P(revenue[FY23] = 1)", ["syntax error at character 17", "'='", "<, <=, >, >="]),
    ("P(1 < 2 < 3)", ["syntax error at character 9", "expected ')'"]),
    ("mean(cash[FY23]) extra", ["syntax error at character 18", "expected end of query"]),
    ("", ["syntax error at character 1", "expected a function"]),
    ("revenue[FY23] > 1", ["syntax error at character 1", "expected a function"]),
    ("quantile(target_price, 1.5)", ["quantile level must be strictly between 0 and 1", "1.5"]),
    ("quantile(target_price, 0)", ["strictly between 0 and 1"]),
    ("quantile(target_price, -0.2)", ["strictly between 0 and 1"]),
    ("quantile(target_price)", ["expected ','"]),
    ("P(revenue[FY23])", ["P(...) needs a condition"]),
    ("mean(cash[FY23] > 1)", ["mean(...) needs a number, not a condition"]),
    ("P(cash[FY23] > 1 and 3)", ["'and' needs a condition"]),
    ("P((cash[FY23] > 1) + 1 > 2)", ["'+' needs a number, not a condition"]),
    ("P(mean(cash[FY23]) > 1)", ["functions can only be used as the whole query"]),
    ("mean(1e999)", ["number too large"]),
    ("mean(cash[FY23] / 0 * 0)", ["not finite"]),
    ("P(0 / 0 < 1)", ["undefined (NaN)"]),
    ("P(" + "(" * 60 + "cash[FY23] > 1" + ")" * 61, ["nested too deeply"]),
    ("mean(" + "-" * 100 + "1)", ["nested too deeply"]),
    ("P(" + "not " * 100 + "cash[FY23] > 1)", ["nested too deeply"]),
    ("mean(" + "+".join(["1"] * 300) + ")", ["too long"]),
    ("(" * 100_000, ["too long"]),
]


@pytest.mark.parametrize("expression, fragments", ERRORS)
def test_errors(ds, expression, fragments):
    with pytest.raises(QueryError) as info:
        evaluate(expression, ds)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(info.value, ValueError)


def test_unsupported_variable():
    odd = make_dataset(chain=2, draw=10, path=2)
    odd["segments"] = (("chain", "draw", "segment"), np.zeros((2, 10, 3)))
    with pytest.raises(QueryError, match="'segments'.*cannot be queried.*chain, draw, path"):
        evaluate("mean(segments)", odd)


def test_load_results_missing(tmp_path):
    with pytest.raises(ResultsError, match=r"summary\.json.*run `stforecast run` first"):
        load_results(tmp_path)
    write_results_folder(make_dataset(chain=2, draw=4, path=2), tmp_path)
    (tmp_path / "forecast.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(ResultsError, match=r"forecast\.nc: expected a netCDF-4 \(HDF5\)"):
        load_results(tmp_path)  # refused when loaded, before any draws are read
    (tmp_path / "forecast.nc").unlink()
    with pytest.raises(ResultsError, match=r"forecast\.nc.*run `stforecast run` first"):
        load_results(tmp_path)


def test_load_results_round_trip(tmp_path, ds):
    write_results_folder(ds, tmp_path)
    loaded = load_results(tmp_path).draws()
    for expression in ("P(revenue[FY23] > 1.2 * revenue[FY22])", "quantile(target_price, 0.05)"):
        assert evaluate(expression, loaded) == evaluate(expression, ds)
    loaded.close()


def test_price_currency_alias(tmp_path, ds):
    """``target_price_<price currency>`` (from the results' company block) is ``target_price``."""
    import stforecast as st

    write_results_folder(ds, tmp_path)
    results = load_results(tmp_path)
    assert results.summary.company.price_currency == "HKD"
    plain = evaluate("P(target_price > 6)", ds)
    for value in (evaluate("P(target_price_hkd > 6)", results.draws()),  # attrs of the draws
                  evaluate_file("P(target_price_hkd > 6)", tmp_path),
                  st.evaluate("P(target_price_hkd > 6)", results),
                  st.evaluate("P(target_price_hkd > 6)", tmp_path)):
        assert (value.value, value.mcse, value.n) == (plain.value, plain.mcse, plain.n)
    assert value.expression == "P(target_price_hkd > 6)"
    with pytest.raises(QueryError, match="unknown variable 'target_price_usd'"):
        evaluate_file("P(target_price_usd > 6)", tmp_path)
    with pytest.raises(QueryError, match="unknown variable 'target_price_hkd'"):
        evaluate("P(target_price_hkd > 6)", ds)  # no company, no alias


# ------------------------------------------------------------------------ fuzzing
@pytest.fixture(scope="module")
def ds_fuzz():
    fuzz = make_dataset(seed=3, chain=2, draw=8, path=3, scenarios=["base", "risk-weighted"])
    zeros = np.zeros((2, 2, 8, 3))
    zeros[..., 0] = 1.0
    missing = np.where(zeros > 0, np.nan, 2.0)
    fuzz["zero"] = (("scenario", "chain", "draw", "path"), zeros)  # division by zero
    fuzz["missing"] = (("scenario", "chain", "draw", "path"), missing)  # NaN data
    return fuzz


def check_total(expression, ds, scenario=None):
    try:
        result = evaluate(expression, ds, scenario=scenario)
    except QueryError as exc:
        assert "\n" not in str(exc)
        return None
    assert isinstance(result, QueryResult)
    assert isinstance(result.n, int) and result.n > 0
    assert np.isfinite(result.value)
    json.dumps(result.to_dict(), allow_nan=False)
    str(result)
    return result


NAMES = ["revenue", "cash", "target_price", "cash_burn", "growth", "zero",
         "missing", "nope", "P", "mean"]
TOKENS = NAMES + ["FY21", "FY23", "FY99", "[", "]", "(", ")", ",", "<", "<=", ">", ">=", "+", "-",
                  "*", "/", "and", "or", "not", "median", "sd", "quantile", "0", "0.5", "1e308",
                  "1e999", "6.73", "1_000", "3e3", "=", ".", "_", "1.", "∞", "\n", "٣"]
SCENARIOS = st.sampled_from([None, "base", "bull"])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(text=st.text(max_size=60), scenario=SCENARIOS)
def test_fuzz_arbitrary_text(ds_fuzz, text, scenario):
    check_total(text, ds_fuzz, scenario)
    check_total(f"P({text})", ds_fuzz, scenario)


@FUZZ
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=25), sep=st.sampled_from(["", " "]),
       scenario=SCENARIOS)
def test_fuzz_token_soup(ds_fuzz, tokens, sep, scenario):
    check_total(sep.join(tokens), ds_fuzz, scenario)
    check_total("P(" + sep.join(tokens) + ")", ds_fuzz, scenario)


refs = st.sampled_from(["revenue[FY23]", "cash[FY21]", "target_price", "growth", "zero",
                        "missing", "revenue", "cash_burn[FY22]", "revenue[FY99]"])
numbers = st.one_of(st.integers(0, 10**6).map(str), st.sampled_from(["0.5", "1e308", "6.73", "0"]))
exprs = st.recursive(
    st.one_of(refs, numbers),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(" ".join),
        inner.map(lambda e: f"-{e}"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=8,
)
comparisons = st.tuples(exprs, st.sampled_from(["<", "<=", ">", ">="]), exprs).map(" ".join)
conds = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join),
        inner.map(lambda c: f"not {c}"),
        inner.map(lambda c: f"({c})"),
    ),
    max_leaves=5,
)
queries = st.one_of(
    conds.map(lambda c: f"P({c})"),
    st.tuples(st.sampled_from(["mean", "median", "sd"]), exprs).map(lambda t: f"{t[0]}({t[1]})"),
    st.tuples(exprs, st.sampled_from(["0.05", "0.5", "0.999", "1", "0"])).map(
        lambda t: f"quantile({t[0]}, {t[1]})"),
)


@FUZZ
@given(expression=queries, scenario=SCENARIOS)
def test_fuzz_grammar(ds_fuzz, expression, scenario):
    result = check_total(expression, ds_fuzz, scenario)
    if result is not None and expression.startswith("P("):
        assert 0.0 <= result.value <= 1.0 and result.n == 2 * 8 * 3


def test_no_eval_in_source():
    """The module never calls eval/exec/compile/literal_eval (checked on its own source)."""
    import ast
    import inspect

    import stforecast.query as q

    for node in ast.walk(ast.parse(inspect.getsource(q))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            owner = getattr(getattr(func, "value", None), "id", "")
            assert name not in ("eval", "exec", "literal_eval"), ast.unparse(node)
            assert not (name == "compile" and owner != "re"), ast.unparse(node)


# --------------------------------------------------------------- import hygiene
def test_import_does_not_pull_heavy_modules(tmp_path, ds):
    write_results_folder(ds, tmp_path)
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        "from stforecast.query import evaluate\n"
        "from stforecast.results import load_results\n"
        "heavy = ('pymc', 'pytensor', 'arviz')\n"
        "after_import = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        f"ds = load_results({str(tmp_path)!r}).draws()\n"
        "result = evaluate('P(revenue[FY23] > 8825)', ds)\n"
        "after_query = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(json.dumps([after_import, after_query, result.n, time.perf_counter() - t0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True,
                         text=True, check=True)
    after_import, after_query, n, seconds = json.loads(out.stdout)
    assert after_import == [] and after_query == [], (after_import, after_query)
    assert n == 4 * 200 * 25
    print(f"fresh process: import + load + query took {seconds:.3f} s")


# ------------------------------------------------- the command line's file-backed path
def test_evaluate_file_agrees_with_evaluate(tmp_path, ds_scen):
    """``evaluate_file`` (h5py only, what ``stforecast query`` runs) == ``evaluate``."""
    write_results_folder(ds_scen, tmp_path)
    names = [str(s) for s in ds_scen["scenario"].values]
    for scenario in (None, names[0], names[-1]):
        for expression in ("P(revenue[FY23] > 1.2 * revenue[FY22])",
                           "quantile(target_price, 0.05)", "mean(cash[FY23])", "mean(growth)",
                           "P(revenue[FY23] < 6000 and cash[FY23] < 3000)"):
            assert evaluate_file(expression, tmp_path, scenario) == \
                evaluate(expression, ds_scen, scenario), (expression, scenario)
    for bad, fragment in (("P(revenu[FY23] > 1)", "did you mean 'revenue'"),
                          ("P(revenue[FY29] > 1)", "valid years"),
                          ("P(revenue > 1)", "has a year dimension")):
        with pytest.raises(QueryError, match=re.escape(fragment)):
            evaluate_file(bad, tmp_path)
    with pytest.raises(QueryError, match="valid scenarios"):
        evaluate_file("P(target_price > 1)", tmp_path, "no-such-scenario")
    with pytest.raises(ResultsError, match="run `stforecast run` first"):
        evaluate_file("P(target_price > 1)", tmp_path / "missing")
    write_results_folder(ds_scen, tmp_path / "junk")
    (tmp_path / "junk" / "forecast.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(ResultsError, match="cannot open it"):
        evaluate_file("P(target_price > 1)", tmp_path / "junk")


def test_evaluate_file_reads_the_store_like_xarray(tmp_path, ds_scen):
    """The h5py store finds every variable's dimensions and the coordinates' labels."""
    import h5py

    from stforecast.query import _H5Store, _XrStore

    write_results_folder(ds_scen, tmp_path)
    with h5py.File(tmp_path / "forecast.nc", "r") as f:
        h5 = _H5Store(f["posterior_predictive"])
        xs = _XrStore(ds_scen)
        assert h5.variables == xs.variables and h5.sizes == xs.sizes
        for dim in ("scenario", "year", "chain", "path"):
            assert h5.labels(dim) == xs.labels(dim), dim


def test_cli_query_does_not_import_xarray(tmp_path, ds_scen):
    write_results_folder(ds_scen, tmp_path)
    code = ("import sys, json\nfrom stforecast.cli import main\n"
            f"rc = main(['query', 'P(target_price_hkd > 6.73)', '--results', {str(tmp_path)!r}])\n"
            f"rc += main(['query', '--list', '--results', {str(tmp_path)!r}])\n"
            f"rc += main(['query', 'quantile(revenue[FY23] / revenue[FY20], 0.1, 0.9)', "
            f"'--scenario', 'all', '--results', {str(tmp_path)!r}])\n"
            "print(json.dumps([rc, sorted(m for m in ('xarray', 'scipy', 'pymc', 'pytensor', "
            "'arviz') if m in sys.modules)]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "P(target_price_hkd > 6.73) = " in out.stdout
    rc, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 0 and heavy == []


# ------------------------------------------------ discoverability (issue 15, item 4)
def test_quantile_with_several_levels(ds):
    tp = np_var(ds, "target_price")
    answers = evaluate("quantile(target_price, 0.05, 0.5, 0.95)", ds)
    assert [a.expression for a in answers] == ["quantile(target_price, 0.05)",
                                               "quantile(target_price, 0.5)",
                                               "quantile(target_price, 0.95)"]
    for a, q in zip(answers, (0.05, 0.5, 0.95)):
        assert a.value == pytest.approx(np.quantile(tp, q))
        assert a.mcse == pytest.approx(mcse.mcse_quantile(tp, q)[1])
    assert str(answers).count("\n") == 2 and len(answers.to_dict()) == 3
    assert parse("quantile(x, 0.1, 0.9)").levels == (0.1, 0.9)
    with pytest.raises(QueryError, match="strictly between 0 and 1"):
        parse("quantile(x, 0.1, 1.5)")


def test_thousands_separator_gets_a_hint(ds):
    with pytest.raises(QueryError, match=r"write 8825 or 8_825, not 8,825"):
        evaluate("P(revenue[FY23] > 8,825)", ds)
    assert evaluate("P(revenue[FY23] > 8_825)", ds).value == evaluate("P(revenue[FY23] > 8825)", ds).value


def test_every_answer_names_its_scenario_and_all_answers_each(ds_scen):
    names = [str(s) for s in ds_scen["scenario"].values]
    default = evaluate("mean(revenue[FY23])", ds_scen)
    assert default.scenario == "risk-weighted" and "(scenario risk-weighted, n = " in str(default)
    every = evaluate("mean(revenue[FY23])", ds_scen, scenario="all")
    assert [a.scenario for a in every] == names
    for a in every:
        assert a == evaluate("mean(revenue[FY23])", ds_scen, scenario=a.scenario)
    both = evaluate("quantile(cash[FY23], 0.1, 0.9)", ds_scen, scenario="all")
    assert len(both) == 2 * len(names)


def test_history_years_are_addressable(tmp_path, ds):
    """revenue[FY20] is the actual in the stored company file (SenseTime: 3,446), the same on
    every path; the error for an unknown year lists history and forecast years."""
    write_results_folder(ds, tmp_path)
    rev23 = np_var(ds, "revenue", "FY23")
    r = evaluate_file("P(revenue[FY23] > 2 * revenue[FY20])", tmp_path)
    assert r.value == pytest.approx((rev23 > 2 * 3446.0).mean(), abs=1e-12)
    actual = evaluate_file("mean(revenue[FY18])", tmp_path)
    assert actual.value == 1853.0 and actual.mcse == 0.0
    assert evaluate_file("quantile(cash[FY19], 0.1, 0.9)", tmp_path)[1].value == 6673.0
    with pytest.raises(QueryError, match="valid years: FY18, FY19, FY20, FY21, FY22, FY23"):
        evaluate_file("P(revenue[FY17] > 1)", tmp_path)
    with pytest.raises(QueryError, match="valid years: FY21, FY22, FY23$"):  # no history given
        evaluate("P(revenue[FY20] > 1)", ds)


def test_cli_query_list_and_help(tmp_path, ds_scen, capsys):
    from stforecast.cli import main

    write_results_folder(ds_scen, tmp_path)
    assert main(["query", "--list", "--results", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"revenue +revenue \[RMB mn\]; years FY18-FY23 \(history FY18-FY20\)", text)
    assert re.search(r"target_price +target price \[HKD per share\]; one value per path", text)
    assert "target_price_hkd" in text and "functions: P, mean, median, sd, quantile" in text
    assert "bear, base, risk-weighted (default)" in text and "quantile(x, q1, q2, ...)" in text
    assert main(["query", "--list", "--json", "--results", str(tmp_path)]) == 0
    listing = json.loads(capsys.readouterr().out)
    revenue = next(v for v in listing["variables"] if v["name"] == "revenue")
    assert revenue["history_years"] == ["FY18", "FY19", "FY20"] and revenue["years"] == YEARS
    assert listing["scenarios"] == ["bear", "base", "risk-weighted"]
    assert main(["query", "P(target_price > 6)", "--scenario", "all", "--json",
                 "--results", str(tmp_path)]) == 0
    assert [a["scenario"] for a in json.loads(capsys.readouterr().out)] == listing["scenarios"]
    with pytest.raises(SystemExit):
        main(["query", "--help"])
    help_text = capsys.readouterr().out
    assert "grammar:" in help_text and "quantile(x, q1, q2, ...)" in help_text
    assert "--list" in help_text and "8,825" in help_text
