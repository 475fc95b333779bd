"""Query saved posterior predictive draws with a small expression language.

Examples (years are labels of the results' ``year`` coordinate)::

    P(target_price > 7.5)
    P(revenue[Y3] < 6000 and cash[Y3] < 3000)
    P(revenue[Y3] > 1.2 * revenue[Y2])
    quantile(target_price, 0.05, 0.5, 0.95)
    mean(revenue[Y3] - revenue[Y1])
    P(revenue[Y3] > 2 * revenue[H3])        # H3: a history year (an actual, the same on every path)

Grammar (hand-written tokenizer and recursive-descent parser; user text is never
passed to ``eval``/``exec``/``compile``)::

    query      := "P" "(" cond ")" | "mean" "(" expr ")" | "median" "(" expr ")"
                | "sd" "(" expr ")" | "quantile" "(" expr ("," number)+ ")"
    cond       := disj ;  disj := conj ("or" conj)* ;  conj := neg ("and" neg)*
    neg        := "not" neg | "(" cond ")" | comparison
    comparison := expr ("<" | "<=" | ">" | ">=") expr
    expr       := term (("+" | "-") term)* ;  term := factor (("*" | "/") factor)*
    factor     := "-" factor | number | ref | "(" expr ")"
    ref        := NAME ("[" YEAR "]")?          e.g. revenue[Y3], target_price
    NAME       := [A-Za-z_][A-Za-z0-9_]*        a data variable of the dataset, or an alias
    YEAR       := a NAME or digits matching a label of the ``year`` coordinate, or a history
                  year of the company where the variable has history (its actual value)
    number     := digits ("." digits)? ([eE] [+-]? [0-9]+)?,  digits := [0-9] ("_"? [0-9])*
                  e.g. 7.5, 8800, 3e3, 8_825 (no leading "." and no trailing "."; no
                  thousands separator "," (a "," after a number gets a hint to write the
                  number without it); the quantile level may be written with a leading "-" only to be
                  rejected)

``and`` binds tighter than ``or``; ``and``, ``or`` and ``not`` are reserved words.
The parser uses one precedence ladder for conditions and arithmetic (so ``(`` is
never ambiguous and there is no backtracking) and checks afterwards that
conditions and numbers are used where the grammar puts them. Nesting is limited
to ``MAX_DEPTH`` levels and queries to ``MAX_TOKENS`` tokens.

Names are the draws' variables: the registry's (``stforecast.registry.VARIABLES``) and
the company's (``revenue_<segment>``, its unit drivers, ``shock_<name>``).
``target_price_<price currency>`` (e.g. ``target_price_usd``) is an alias of
``target_price``, from the results' company block.

Semantics: a query is computed over every ``(chain, draw, path)`` of the
selected scenario (default: the registry's ``HEADLINE_SCENARIO``; ``"all"``: one answer per
scenario; every answer names its scenario); values are in
the units of the variables (the company's currency, millions, for money; its
price currency per share for prices). ``P`` is the fraction of paths satisfying the condition;
``mean``/``sd`` (population sd, ddof=0)/``median``/``quantile`` (numpy linear
interpolation; several levels give one answer each) are taken over all paths. A history
year's value is the company's actual (from the results' stored company file, or the summary's
chart data for derived lines such as margins): a constant on every path. The reported MCSE comes from
:mod:`stforecast.mcse` (per-draw means over ``path``, split-chain Geyer ESS).
Comparisons with an undefined (NaN) operand and ``mean``/``sd``/``quantile`` of
non-finite values (e.g. division by zero) are errors, not silently dropped.

Every problem with the query text or its names raises :class:`QueryError`, a
``ValueError`` with a one-line message; syntax errors give the 1-based character
position and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from . import mcse as _mcse
from .errors import StforecastError
from .registry import HEADLINE_SCENARIO, SAMPLE_DIMS, variable
from .plain_netcdf import DIMENSION_ONLY, NON_COORD_PREFIX, dimension_name

if TYPE_CHECKING:  # xarray is never imported here, to keep start-up fast
    import xarray as xr

__all__ = [
    "ALL_SCENARIOS",
    "FUNCTIONS",
    "GRAMMAR",
    "QueryError",
    "QueryResult",
    "QueryResults",
    "catalogue",
    "evaluate",
    "evaluate_file",
    "check_scenario",
    "select_scenario",
    "parse",
    "wanted_scenarios",
]

FUNCTIONS = ("P", "mean", "median", "sd", "quantile")
#: ``--scenario all``: one answer per scenario of the results.
ALL_SCENARIOS = "all"
#: The grammar as a user reads it (``stforecast query --help`` and ``--list``).
GRAMMAR = """\
  query     P(condition)                  probability, with its Monte Carlo error
            mean(x)  median(x)  sd(x)     statistics over every path
            quantile(x, q1, q2, ...)      one or more levels, each strictly between 0 and 1
  condition x < y, x <= y, x > y, x >= y; combined with and, or, not and (...)
  x, y      numbers and variables with + - * / and (...)
  variable  NAME, or NAME[YEAR] for a variable with years (query --list shows them); a
            history year, e.g. revenue[<last history year>], is the company's actual (the same
            on every path)
  number    8825, 8_825, 7.5, 3e3 (no thousands separator: 8,825 is not a number)"""
MAX_DEPTH = 40  # nesting of "(", unary "-" and "not"
MAX_TOKENS = 256
_ALLOWED_DIMS = frozenset(SAMPLE_DIMS + ("year", "scenario"))


class QueryError(StforecastError):
    """A query that cannot be answered; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------- AST
@dataclass(frozen=True)
class Number:
    value: float
    pos: int = 0


@dataclass(frozen=True)
class Ref:
    name: str
    year: str | None = None
    pos: int = 0


@dataclass(frozen=True)
class Neg:
    operand: "Node"
    pos: int = 0


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * /
    left: "Node"
    right: "Node"
    pos: int = 0


@dataclass(frozen=True)
class Compare:
    op: str  # < <= > >=
    left: "Node"
    right: "Node"
    pos: int = 0


@dataclass(frozen=True)
class Not:
    operand: "Node"
    pos: int = 0


@dataclass(frozen=True)
class BoolOp:
    op: str  # and / or
    left: "Node"
    right: "Node"
    pos: int = 0


@dataclass(frozen=True)
class Query:
    func: str
    arg: "Node"
    q: float | None = None  # quantile level (0.5 for median; the first of several levels)
    levels: tuple[float, ...] = ()  # every quantile level (quantile with several levels)
    arg_text: str = ""  # the argument's source text (to name each level's answer)


Node = Union[Number, Ref, Neg, BinOp, Compare, Not, BoolOp]
_CONDITIONS = (Compare, Not, BoolOp)


# --------------------------------------------------------------------- tokenizer
_TOKEN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<num>[0-9](?:_?[0-9])*(?:\.[0-9](?:_?[0-9])*)?(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|<|>|\+|-|\*|/|\(|\)|\[|\]|,)"
)
_KEYWORDS = frozenset({"and", "or", "not"})


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, name, op, kw, end
    text: str
    pos: int  # 1-based character position


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            ch = text[i]
            hint = "; comparisons are <, <=, >, >=" if ch in "=!" else ""
            raise QueryError(f"syntax error at character {i + 1}: "
                             f"unexpected character {ch!r}{hint}")
        kind = m.lastgroup
        if kind != "ws":
            word = m.group()
            if kind == "name" and word in _KEYWORDS:
                kind = "kw"
            toks.append(_Tok(kind, word, i + 1))
            if len(toks) > MAX_TOKENS:
                raise QueryError(f"query too long: more than {MAX_TOKENS} tokens")
        i = m.end()
    toks.append(_Tok("end", "", len(text) + 1))
    return toks


# ------------------------------------------------------------------------ parser
class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "end":  # never move past the end token
            self.i += 1
        return tok

    def _fail(self, expected: str, tok: _Tok | None = None):
        tok = tok or self.tok
        got = "end of query" if tok.kind == "end" else repr(tok.text)
        index = self.toks.index(tok)
        hint = ""
        if tok.text == "," and index > 0 and self.toks[index - 1].kind == "num":
            head, after = self.toks[index - 1].text, self.toks[index + 1]
            tail = after.text if after.kind == "num" else "000"
            hint = (f"; numbers take no thousands separator: write {head}{tail} or "
                    f"{head}_{tail}, not {head},{tail}")
        raise QueryError(f"syntax error at character {tok.pos}: expected {expected}, "
                         f"got {got}{hint}")

    def _expect(self, text: str) -> _Tok:
        if self.tok.text != text or self.tok.kind not in ("op", "kw"):
            self._fail(repr(text))
        return self._next()

    def _enter(self, pos: int):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(f"query nested too deeply at character {pos} "
                             f"(at most {MAX_DEPTH} levels)")

    @staticmethod
    def _need_number(node: Node, what: str):
        if isinstance(node, _CONDITIONS):
            raise QueryError(f"{what} needs a number, not a condition (at character {node.pos})")

    @staticmethod
    def _need_condition(node: Node, what: str):
        if not isinstance(node, _CONDITIONS):
            raise QueryError(f"{what} needs a condition such as x > 1 (at character {node.pos})")

    # query := FUNC "(" ... ")"
    def query(self) -> Query:
        tok = self._next()
        is_call = self.tok.kind == "op" and self.tok.text == "("
        if tok.kind != "name" or (tok.text not in FUNCTIONS and not is_call):
            self._fail(f"a function call such as P(...) ({', '.join(FUNCTIONS)})", tok)
        if tok.text not in FUNCTIONS:
            raise QueryError(f"unknown function {tok.text!r} at character {tok.pos}; "
                             f"valid functions: {', '.join(FUNCTIONS)}")
        start = self._expect("(").pos
        arg = self.disj()
        arg_end = self.tok.pos
        q, levels = None, ()
        if tok.text == "P":
            self._need_condition(arg, "P(...)")
        else:
            self._need_number(arg, f"{tok.text}(...)")
        if tok.text == "median":
            q = 0.5
        elif tok.text == "quantile":
            self._expect(",")
            levels = [self._quantile_level()]
            while self.tok.kind == "op" and self.tok.text == ",":
                self._next()
                levels.append(self._quantile_level())
            q, levels = levels[0], tuple(levels)
        self._expect(")")
        if self.tok.kind != "end":
            self._fail("end of query")
        return Query(tok.text, arg, q, levels, self.text[start:arg_end - 1].strip())

    def _quantile_level(self) -> float:
        sign = -1.0 if self.tok.text == "-" and self.tok.kind == "op" else 1.0
        if sign < 0:
            self._next()
        tok = self.tok
        if tok.kind != "num":
            self._fail("a number (a quantile level)")
        self._next()
        q = sign * self._number(tok)
        if not 0.0 < q < 1.0:
            raise QueryError(f"quantile level must be strictly between 0 and 1, got {q:g} "
                             f"(at character {tok.pos})")
        return q

    @staticmethod
    def _number(tok: _Tok) -> float:
        value = float(tok.text.replace("_", ""))
        if not np.isfinite(value):
            raise QueryError(f"number too large at character {tok.pos}: {tok.text}")
        return value

    def disj(self) -> Node:
        node = self.conj()
        while self.tok.kind == "kw" and self.tok.text == "or":
            tok = self._next()
            right = self.conj()
            for side in (node, right):
                self._need_condition(side, "'or'")
            node = BoolOp("or", node, right, tok.pos)
        return node

    def conj(self) -> Node:
        node = self.neg()
        while self.tok.kind == "kw" and self.tok.text == "and":
            tok = self._next()
            right = self.neg()
            for side in (node, right):
                self._need_condition(side, "'and'")
            node = BoolOp("and", node, right, tok.pos)
        return node

    def neg(self) -> Node:
        if self.tok.kind == "kw" and self.tok.text == "not":
            tok = self._next()
            self._enter(tok.pos)
            operand = self.neg()
            self.depth -= 1
            self._need_condition(operand, "'not'")
            return Not(operand, tok.pos)
        return self.comparison()

    def comparison(self) -> Node:
        left = self.expr()
        if self.tok.kind == "op" and self.tok.text in ("<", "<=", ">", ">="):
            tok = self._next()
            right = self.expr()
            for side in (left, right):
                self._need_number(side, f"comparison {tok.text!r}")
            return Compare(tok.text, left, right, tok.pos)
        return left

    def expr(self) -> Node:
        node = self.term()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            tok = self._next()
            right = self.term()
            for side in (node, right):
                self._need_number(side, f"{tok.text!r}")
            node = BinOp(tok.text, node, right, tok.pos)
        return node

    def term(self) -> Node:
        node = self.factor()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            tok = self._next()
            right = self.factor()
            for side in (node, right):
                self._need_number(side, f"{tok.text!r}")
            node = BinOp(tok.text, node, right, tok.pos)
        return node

    def factor(self) -> Node:
        tok = self.tok
        if tok.kind == "op" and tok.text == "-":
            self._next()
            self._enter(tok.pos)
            operand = self.factor()
            self.depth -= 1
            self._need_number(operand, "unary '-'")
            return Neg(operand, tok.pos)
        if tok.kind == "num":
            self._next()
            return Number(self._number(tok), tok.pos)
        if tok.kind == "name":
            self._next()
            year = None
            if self.tok.kind == "op" and self.tok.text == "[":
                self._next()
                if self.tok.kind not in ("name", "num"):
                    self._fail("a year label (a label of the results' year coordinate)")
                year = self._next().text
                self._expect("]")
            elif self.tok.kind == "op" and self.tok.text == "(":
                raise QueryError(f"syntax error at character {self.tok.pos}: functions can only be "
                                 f"used as the whole query ({', '.join(FUNCTIONS)})")
            return Ref(tok.text, year, tok.pos)
        if tok.kind == "op" and tok.text == "(":
            self._next()
            self._enter(tok.pos)
            node = self.disj()
            self.depth -= 1
            self._expect(")")
            return node
        self._fail("a number, a variable name or '('")


def parse(expression: str) -> Query:
    """Parse a query into a :class:`Query` AST; raise :class:`QueryError` if invalid."""
    if not isinstance(expression, str):
        raise QueryError(f"a query must be a string, got {type(expression).__name__}")
    try:
        return _Parser(expression).query()
    except RecursionError:  # pragma: no cover - MAX_DEPTH/MAX_TOKENS prevent this
        raise QueryError("query nested too deeply") from None


# -------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class QueryResult:
    """A query's estimate, its Monte Carlo standard error, the number of paths used and the
    scenario it was computed on (``None``: draws without a scenario dimension)."""

    expression: str
    value: float
    mcse: float
    n: int
    scenario: str | None = None

    def __str__(self) -> str:
        where = f"scenario {self.scenario}, " if self.scenario is not None else ""
        return f"{self.expression} = {_format(self.value, self.mcse)}  ({where}n = {self.n:,})"

    def to_dict(self) -> dict:
        """``{"expression", "scenario", "value", "mcse", "n"}``; non-finite floats become
        ``None`` (valid JSON)."""
        def clean(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None
        return {"expression": self.expression, "scenario": self.scenario,
                "value": clean(self.value), "mcse": clean(self.mcse), "n": int(self.n)}


class QueryResults(tuple):
    """Several answers of one query (a quantile at several levels, ``scenario="all"``): a tuple
    of :class:`QueryResult`, printed one per line."""

    def __str__(self) -> str:
        return "\n".join(map(str, self))

    def to_dict(self) -> list[dict]:
        return [r.to_dict() for r in self]


def _format(value: float, err: float) -> str:
    """Round the value to the first significant digit of its MCSE."""
    if not np.isfinite(err) or err <= 0.0 or not np.isfinite(value):
        err_text = f"{err:.2g}" if np.isfinite(err) else "nan"
        return f"{value:,.6g} ± {err_text}"
    decimals = int(min(max(0, -np.floor(np.log10(err))), 15))
    return f"{value:,.{decimals}f} ± {err:,.{decimals}f}"


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).ravel()]


class _Store:
    """What the evaluator needs from the draws: dimension sizes, the variables' dimensions and
    kinds, coordinate labels, and reading one variable with some dimensions fixed. Backed by an
    xarray Dataset (:class:`_XrStore`) or, for a fast command-line query, straight by the
    netCDF file (:class:`_H5Store`, no xarray import)."""

    sizes: dict[str, int]
    variables: dict[str, tuple[tuple[str, ...], str]]  # name -> (dims, numpy dtype kind)
    fixed: dict[str, int]

    def labels(self, dim: str) -> list[str]:
        raise NotImplementedError

    def _read(self, name: str, index: tuple) -> np.ndarray:
        raise NotImplementedError

    def read(self, name: str, **more: int) -> tuple[np.ndarray, tuple[str, ...]]:
        """Values of ``name`` with ``fixed`` and ``more`` dimensions taken at an index."""
        dims, _ = self.variables[name]
        take = {**self.fixed, **more}
        index = tuple(take.get(d, slice(None)) for d in dims)
        return np.asarray(self._read(name, index)), tuple(d for d in dims if d not in take)

    def select(self, dim: str, i: int) -> "_Store":
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.fixed = {**self.fixed, dim: i}
        view.sizes = {d: n for d, n in self.sizes.items() if d != dim}
        return view


class _XrStore(_Store):
    def __init__(self, ds):
        self.ds, self.fixed = ds, {}
        self.sizes = {str(d): int(n) for d, n in ds.sizes.items()}
        self.variables = {str(k): (tuple(map(str, v.dims)), v.dtype.kind)
                          for k, v in ds.data_vars.items()}

    def labels(self, dim: str) -> list[str]:
        if dim in self.ds.coords:
            return _decode(self.ds[dim].values)
        return [str(i) for i in range(self.ds.sizes[dim])]

    def _read(self, name, index):
        return self.ds[name].variable[index].values


class _H5Store(_Store):
    """One group of a netCDF-4 file (forecast.nc) read with h5py alone.

    netCDF-4 dimensions are HDF5 dimension scales: a variable's dimensions are the scales its
    ``DIMENSION_LIST`` references, matched by object identity (resolving each reference to a
    name would cost ~1 ms apiece). A scale whose ``NAME`` marks it as a bare dimension has no
    labels; a coordinate variable's values are its labels.
    """

    _NON_COORD = NON_COORD_PREFIX
    _BARE = DIMENSION_ONLY

    def __init__(self, group):
        import h5py

        self.group, self.fixed = group, {}
        scales, data = {}, {}
        for name, obj in group.items():
            if isinstance(obj, h5py.Dataset):
                is_scale = obj.attrs.get("CLASS") == b"DIMENSION_SCALE"
                (scales if is_scale else data)[name.removeprefix(self._NON_COORD)] = obj
        by_id = {obj.id: name for name, obj in scales.items()}
        self.sizes = {name: int(obj.shape[0]) for name, obj in scales.items()}
        self.coords = {name for name, obj in scales.items()
                       if not bytes(obj.attrs.get("NAME", b"")).startswith(self._BARE)}
        self.datasets = {**data, **{n: scales[n] for n in self.coords}}
        self.variables = {}
        for name, obj in data.items():
            refs = obj.attrs.get("DIMENSION_LIST")
            dims = () if refs is None else tuple(dimension_name(group.file[r[0]], by_id)
                                                 for r in refs)
            self.variables[name] = (dims, obj.dtype.kind)

    def labels(self, dim: str) -> list[str]:
        if dim in self.coords:
            return _decode(self.datasets[dim][...])
        return [str(i) for i in range(self.sizes[dim])]

    def _read(self, name, index):
        return self.datasets[name][index]


def _labels(ds, dim: str) -> list[str]:
    return _XrStore(ds).labels(dim)


def _scenario_indices(store: _Store, scenario: str | None) -> list[tuple[int | None, str | None]]:
    """``[(index, name)]`` of the scenarios to answer for (``"all"``: every one)."""
    if scenario == ALL_SCENARIOS and "scenario" in store.sizes:
        return list(enumerate(store.labels("scenario")))
    index = _scenario_index(store, scenario)
    return [(index, None if index is None else store.labels("scenario")[index])]


def _scenario_index(store: _Store, scenario: str | None) -> int | None:
    """Which scenario to use (``None``: the data have no scenario dimension)."""
    if "scenario" not in store.sizes:
        if scenario is not None:
            raise QueryError(f"scenario {scenario!r} requested but the results have no "
                             f"scenario dimension")
        return None
    names = store.labels("scenario")
    if scenario is None:
        if HEADLINE_SCENARIO not in names:
            raise QueryError(f"the results have no {HEADLINE_SCENARIO!r} scenario; choose one of: "
                             f"{', '.join(names)}")
        scenario = HEADLINE_SCENARIO
    check_scenario(scenario, names)
    return names.index(scenario)


def check_scenario(scenario: str, names: list[str]) -> None:
    """``QueryError`` (one line, listing ``names``) unless ``scenario`` is one of ``names``."""
    if scenario not in names:
        raise QueryError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(names)} "
                         f"(or {ALL_SCENARIOS})")


def select_scenario(ds, scenario: str | None):
    """An xarray Dataset's one scenario (default: the headline scenario); ``QueryError``
    otherwise."""
    i = _scenario_index(_XrStore(ds), scenario)
    return ds if i is None else ds.isel(scenario=i)


def aliases_of(attrs) -> dict[str, str]:
    """Query aliases from a draws Dataset's attributes (``price_currency``, set by
    ``Results.draws``): ``target_price_<ccy>`` -> ``target_price``."""
    currency = attrs.get("price_currency") if attrs is not None else None
    return {f"target_price_{str(currency).lower()}": "target_price"} if currency else {}


class _Evaluator:
    def __init__(self, store: _Store, aliases: dict[str, str] | None = None,
                 history: dict[str, dict[str, float]] | None = None):
        for dim in ("chain", "draw"):
            if dim not in store.sizes:
                raise QueryError(f"the results have no {dim!r} dimension (dimensions: "
                                 f"{', '.join(store.sizes)})")
        self.store = store
        self.aliases = {a: n for a, n in (aliases or {}).items() if a not in store.variables}
        self.shape = tuple(int(store.sizes.get(d, 1)) for d in SAMPLE_DIMS)
        if 0 in self.shape:
            raise QueryError(f"the results are empty (chain, draw, path = {self.shape})")
        self.names = sorted(
            name for name, (dims, kind) in store.variables.items()
            if set(dims) - set(store.fixed) <= _ALLOWED_DIMS and kind in "biuf"
        )
        self.cache: dict[tuple[str, str | None], np.ndarray] = {}
        self.history = history or {}

    def ref(self, node: Ref) -> np.ndarray:
        key = (node.name, node.year)
        if key not in self.cache:
            self.cache[key] = self._load(node)
        return self.cache[key]

    def _load(self, node: Ref) -> np.ndarray:
        if node.name in self.aliases:
            node = Ref(self.aliases[node.name], node.year, node.pos)
        variables = self.store.variables
        if node.name in variables and node.name not in self.names:
            dims, kind = variables[node.name]
            raise QueryError(f"variable {node.name!r} (dtype kind {kind!r}; dimensions "
                             f"{', '.join(dims)}) cannot be queried: it must be "
                             f"numeric with dimensions among "
                             f"{', '.join(sorted(_ALLOWED_DIMS))}")
        if node.name not in self.names:
            import difflib  # only needed for the error message

            close = difflib.get_close_matches(node.name, self.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise QueryError(f"unknown variable {node.name!r} at character {node.pos}{hint}; "
                             f"valid names: {', '.join(self.names)}")
        more = {}
        if "year" in variables[node.name][0]:
            years = self.store.labels("year")
            past = {} if node.year in years else self.history.get(node.name, {})
            valid = [y for y in past if y not in years] + years
            if node.year is None:
                raise QueryError(f"{node.name!r} has a year dimension: write {node.name}[YEAR] "
                                 f"with YEAR one of {', '.join(valid)}")
            if node.year not in years and node.year in past:  # an actual: the same on every path
                return np.full((1,) * len(SAMPLE_DIMS), float(past[node.year]))
            if node.year not in years:
                raise QueryError(f"unknown year {node.year!r} for {node.name!r}; valid years: "
                                 f"{', '.join(valid)}")
            more["year"] = years.index(node.year)
        elif node.year is not None:
            raise QueryError(f"{node.name!r} has no year dimension: write {node.name} "
                             f"without [{node.year}]")
        values, dims = self.store.read(node.name, **more)
        present = [d for d in SAMPLE_DIMS if d in dims]
        values = np.transpose(np.asarray(values, dtype=float), [dims.index(d) for d in present])
        # Insert length-1 axes for missing sample dims so the array broadcasts.
        return values.reshape([self.shape[i] if d in dims else 1
                               for i, d in enumerate(SAMPLE_DIMS)])

    def compute(self, node: Node):
        if isinstance(node, Number):
            return node.value
        if isinstance(node, Ref):
            return self.ref(node)
        if isinstance(node, Neg):
            return -self.compute(node.operand)
        if isinstance(node, BinOp):
            a, b = self.compute(node.left), self.compute(node.right)
            return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[node.op](a, b)
        if isinstance(node, Compare):
            a, b = self.compute(node.left), self.compute(node.right)
            for side in (a, b):
                bad = int(np.count_nonzero(np.isnan(side)))
                if bad:
                    raise QueryError(f"comparison at character {node.pos} has an undefined (NaN) "
                                     f"operand on {bad:,} values, e.g. from 0/0 or missing data")
            op = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
            return op[node.op](a, b)
        if isinstance(node, Not):
            return np.logical_not(self.compute(node.operand))
        if isinstance(node, BoolOp):
            fn = np.logical_and if node.op == "and" else np.logical_or
            return fn(self.compute(node.left), self.compute(node.right))
        raise TypeError(f"unknown AST node {node!r}")  # pragma: no cover


def evaluate(expression: str, ds: "xr.Dataset", scenario: str | None = None,
             aliases: dict[str, str] | None = None,
             history: dict[str, dict[str, float]] | None = None
             ) -> "QueryResult | QueryResults":
    """Evaluate a query over posterior predictive draws ``ds`` (see module docstring).

    ``scenario``: with a ``scenario`` dimension, ``None`` selects the headline scenario and
    ``"all"`` answers for each. ``aliases``: extra names (alias -> variable; default: from
    ``ds.attrs``, see :func:`aliases_of`). ``history``: actuals ``{variable: {year: value}}``
    addressable as ``variable[year]`` (see :func:`history_of`). Returns a :class:`QueryResult`
    (value in the expression's units, its MCSE, ``n`` = number of (chain, draw, path) elements
    used, and the scenario), or :class:`QueryResults` when the query has several answers
    (several quantile levels, ``scenario="all"``); raises :class:`QueryError`.
    """
    aliases = aliases_of(ds.attrs) if aliases is None else aliases
    return _answer(_evaluate(parse(expression), expression, _XrStore(ds), scenario, aliases,
                             history))


def _answer(results: list[QueryResult]) -> "QueryResult | QueryResults":
    return results[0] if len(results) == 1 else QueryResults(results)


def history_of(company_text: str | None, charts: dict | None = None
               ) -> dict[str, dict[str, float]]:
    """Actuals addressable in queries, ``{variable: {year: value}}``: the ``[history]`` table
    of a company file's text (every series of numbers, by its name) and, for lines derived from
    it (margins, unit counts), the history of the summary's fan-chart data (``charts``).
    Standard library only (``tomllib``)."""
    out: dict[str, dict[str, float]] = {}
    for name, fan in ((charts or {}).get("fans") or {}).items():
        past = fan.get("history") if isinstance(fan, dict) else None
        if isinstance(past, dict) and len(past.get("years", ())) == len(past.get("values", ())):
            out[name] = {str(y): float(v) for y, v in zip(past["years"], past["values"])
                         if isinstance(v, (int, float))}
    if company_text:
        import tomllib

        try:
            table = tomllib.loads(company_text).get("history", {})
        except tomllib.TOMLDecodeError:
            table = {}
        years = [str(y) for y in table.get("years", [])]
        for name, entry in table.items():
            values = entry.get("values") if isinstance(entry, dict) else None
            if (isinstance(values, list) and len(values) == len(years)
                    and all(isinstance(v, (int, float)) for v in values)):
                out.setdefault(name, {y: float(v) for y, v in zip(years, values)})
    return out


def evaluate_file(expression: str, results_dir: Path, scenario: str | None = None
                  ) -> "QueryResult | QueryResults":
    """:func:`evaluate` on a results folder's draws, read with h5py alone (no xarray):
    what ``stforecast query`` runs, in a fraction of the start-up time. The folder is read
    through ``stforecast.results.load_results`` (``ResultsError`` if it is not valid); history
    years come from the company file stored in ``forecast.nc`` and the summary's chart data."""
    query = parse(expression)  # a syntax error is reported before any file is opened
    with _open_draws(results_dir) as (results, group, history):
        from .errors import reading_draws
        with reading_draws(results.draws_path):
            store: _Store = _H5Store(group)
            wanted = wanted_scenarios(list(results.summary.scenarios), scenario)
            if "scenario" in store.sizes and not set(wanted) <= set(store.labels("scenario")):
                store = _XrStore(results.predictive(wanted))  # recomputed: not in the file
            return _answer(_evaluate(query, expression, store, scenario,
                                     results.summary.company.aliases(), history))


def wanted_scenarios(names: list[str], scenario: str | None) -> list[str]:
    """The scenarios of a run (``names``) that a query for ``scenario`` reads: the headline
    scenario by default, every one for ``"all"``."""
    if scenario == ALL_SCENARIOS:
        return list(names)
    return [HEADLINE_SCENARIO if scenario is None else scenario]


class _open_draws:
    """``with _open_draws(folder) as (results, posterior_predictive h5py group, history)``."""

    def __init__(self, results_dir):
        from .results import load_results

        self.results = load_results(results_dir)

    def __enter__(self):
        import h5py

        path = self.results.draws_path
        try:
            self.f = h5py.File(path, "r")
        except OSError as exc:
            raise QueryError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
        group = self.f.get("posterior_predictive")
        if not isinstance(group, h5py.Group):
            groups = ", ".join(k for k in self.f if isinstance(self.f[k], h5py.Group))
            self.f.close()
            raise QueryError(f"{path} has no group 'posterior_predictive' (groups: {groups})")
        return self.results, group, _LazyHistory(self.f, self.results.summary.charts)

    def __exit__(self, *exc):
        self.f.close()
        return False


class _LazyHistory:
    """:func:`history_of` for an open draws file, computed on first use (most queries name
    forecast years only and never pay for reading the company file)."""

    def __init__(self, f, charts):
        self.f, self.charts, self.table = f, charts, None

    def get(self, name: str, default=None):
        if self.table is None:
            text = self.f.attrs.get("company_text")
            text = text.decode() if isinstance(text, bytes) else text
            self.table = history_of(text if isinstance(text, str) else None, self.charts)
        return self.table.get(name, default)


def catalogue(results_dir: Path) -> dict:
    """What a query on a results folder can name: ``{"results", "scenarios", "headline",
    "variables": [{"name", "label", "units", "years", "history_years"}], "aliases",
    "functions", "grammar"}`` (``years``: ``[]`` for a per-path scalar). Reads no draws."""
    with _open_draws(results_dir) as (results, group, history):
        store = _H5Store(group)
        c = results.summary.company
        chart_vars = (results.summary.charts or {}).get("variables") or {}
        years = store.labels("year") if "year" in store.sizes else []
        evaluator = _Evaluator(store.select("scenario", 0) if "scenario" in store.sizes
                               else store)
        variables = []
        for name in evaluator.names:
            dims = store.variables[name][0]
            info = chart_vars.get(name) or {}
            label = info.get("label") or (variable(name).label if variable(name) else
                                          name.replace("_", " "))
            units = info.get("units") or c.units(name)
            has_years = "year" in dims
            variables.append({
                "name": name, "label": label, "units": units,
                "years": years if has_years else [],
                "history_years": [y for y in history.get(name, {}) if y not in years]
                if has_years else []})
        return {"results": str(results.folder),
                "scenarios": list(results.summary.scenarios) if "scenario" in store.sizes else [],
                "headline": HEADLINE_SCENARIO, "variables": variables,
                "aliases": c.aliases(), "functions": list(FUNCTIONS), "grammar": GRAMMAR}


def _evaluate(query: Query, expression: str, store: _Store, scenario: str | None,
              aliases: dict[str, str] | None = None,
              history: dict[str, dict[str, float]] | None = None) -> list[QueryResult]:
    out = []
    for index, name in _scenario_indices(store, scenario):
        view = store if index is None else store.select("scenario", index)
        out += _evaluate_one(query, expression, _Evaluator(view, aliases, history), name)
    return out


def _evaluate_one(query: Query, expression: str, evaluator: "_Evaluator",
                  scenario: str | None) -> list[QueryResult]:
    text = " ".join(expression.split())
    with np.errstate(all="ignore"):
        try:
            raw = evaluator.compute(query.arg)
        except RecursionError:  # pragma: no cover - guarded by the parser limits
            raise QueryError("query nested too deeply") from None
        constant = np.size(raw) == 1  # e.g. actuals only: no Monte Carlo error
        x = np.broadcast_to(np.asarray(raw, dtype=float), evaluator.shape)
        if constant and query.func != "P" and np.all(np.isfinite(raw)):
            value = 0.0 if query.func == "sd" else float(np.asarray(raw).ravel()[0])
            names = ([f"quantile({' '.join(query.arg_text.split())}, {q:g})"
                      for q in query.levels] if len(query.levels) > 1 else [text])
            return [_checked(query, evaluator, name, value, 0.0, x.size, scenario)
                    for name in names]
        if query.func == "P":
            value, err, n = _mcse.probability(x)
        else:
            bad = x.size - int(np.count_nonzero(np.isfinite(x)))
            if bad:
                raise QueryError(f"{query.func}(...) is undefined: the expression is not "
                                 f"finite (inf or NaN, e.g. division by zero) on {bad:,} of "
                                 f"{x.size:,} paths")
            n = x.size
            if query.func == "mean":
                value, err = float(x.mean()), _mcse.mcse_mean(x)
            elif query.func == "sd":
                value, err = float(x.std()), _mcse.mcse_sd(x)
            elif len(query.levels) > 1:
                arg = " ".join(query.arg_text.split())
                return [_checked(query, evaluator, f"quantile({arg}, {q:g})",
                                 *_mcse.mcse_quantile(x, q), n, scenario)
                        for q in query.levels]
            else:
                value, err = _mcse.mcse_quantile(x, query.q)
    return [_checked(query, evaluator, text, value, err, n, scenario)]


def _checked(query, evaluator, text, value, err, n, scenario) -> QueryResult:
    # Inputs are finite here, so a non-finite result is float64 overflow (e.g. mean(1e308)).
    # The MCSE may be nan only when it is undefined (fewer than 4 draws).
    if not np.isfinite(value) or np.isinf(err) or (np.isnan(err) and evaluator.shape[1] >= 4):
        raise QueryError(f"{query.func}(...) overflows: the values are too large for float64")
    return QueryResult(text, float(value), float(err), int(n), scenario)
