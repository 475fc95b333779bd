"""The results contract: a results folder's ``summary.json`` and ``forecast.nc``, typed and versioned.

A results folder (what ``stforecast run`` writes) holds

* ``summary.json``: a :class:`Summary` (``schema_version`` = ``registry.SCHEMA_VERSION``): the
  company it belongs to, statistics per line item and year and per-path scalars for the headline
  scenario (at the top level) and for every scenario (under ``scenarios``), P(upside) with its
  Monte Carlo error, both valuation methods, the peer fit, sampler diagnostics against the quality
  bar, the prior predictive, the shocks, the sensitivity (per outcome: the rank view
  ``ranking`` and the tornado in the outcome's units ``tornado``, optional so that summaries
  written before it still load), settings, seed, input hashes and package versions;
* ``forecast.nc``: the draws (groups ``posterior``, ``prior``, ``sample_stats``,
  ``observed_data``, ``posterior_predictive``, ``prior_predictive``, ``peer_posterior``) whose
  ROOT attributes are a :class:`Provenance`: schema version, company, seed, settings and the text
  and sha256 of every input file (company, priors, scenarios, peers; and ``scenarios_base``, the
  company's own scenarios file, when the run's scenarios file was an overlay on it), so a
  results folder is self-contained.

:func:`load_results` is the one loader (the command line, re-simulation, scoring, the report and
the Python API read results through it). Reading validates before anything uses the results: a
missing file, another schema version, or a missing or mistyped key of ``summary.json``; a
``forecast.nc`` that is empty, truncated or not HDF5, whose root attributes are not the
provenance of the run that wrote the summary beside it (company, seed, settings), or that lacks a
group the reader needs (``groups``; :meth:`Results.require` adds more later) -- each is a
one-line :class:`~stforecast.errors.ResultsError` naming the file and the key, never a traceback.

A results folder is written as a whole (``stforecast.publish``): built in a staging folder
``.<name>.tmp-<pid>-<random>`` beside it under the lock ``.<name>.lock`` and swapped in when
complete (an atomic exchange of the two folders on Linux and macOS; elsewhere two renames,
between which the folder is missing: :func:`load_results` then names the set-aside copy
``.<name>.old-…`` and the next run puts it back). So readers see the previous folder or the
new one, never a mix.

Standard library only at import (``stforecast query`` imports it without numpy or xarray);
h5netcdf, xarray and the company parser are imported by the functions that need them.
Units: money in the company's currency (millions), prices in its price currency per share,
ratios as fractions, probabilities as fractions.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import types
import typing
from contextlib import contextmanager
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from .errors import ResultsError
from . import plain_netcdf
from .registry import DRAWS_FILE, READABLE_SCHEMAS, SCHEMA_VERSION, SUMMARY_FILE, variable

#: Input files a run records in forecast.nc (names as in ``Company.files``).
INPUT_FILES = ("company", "priors", "scenarios", "peers",
               "scenarios_base",  # the company's own scenarios, when a run used an overlay
               "base_rates")  # the base-rates file the priors' outside view read
#: The group of forecast.nc that readers of predictive draws need (query, score, sensitivity).
PREDICTIVE = ("posterior_predictive",)
#: Written only when not None (``metadata``): e.g. the mean of a multiple's statistics.
_OMIT_NONE = {"omit_none": True}


# --------------------------------------------------------------------------- the dataclasses
@dataclass(frozen=True, kw_only=True)
class Stats:
    """Mean (omitted for some scalars) and the registry's ``QUANTILES`` of one variable over all
    ``(chain, draw, path)`` samples, in the variable's units."""

    mean: float | None = field(default=None, metadata=_OMIT_NONE)
    q05: float
    q25: float
    q50: float
    q75: float
    q95: float


@dataclass(frozen=True)
class Interval:
    """A median and a 90% interval."""

    q05: float
    q50: float
    q95: float


@dataclass(frozen=True)
class Probability:
    """A probability (fraction of samples), its Monte Carlo standard error and the sample size."""

    value: float
    mcse: float
    n: int


@dataclass(frozen=True)
class Diagnostics:
    """Sampler diagnostics of one fit and whether they meet the quality bar (``reasons``: what
    misses it, one line each)."""

    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    ok: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ValuationMethodSummary:
    """One valuation method: target price (price currency per share), P(target price > price)
    and the EV/sales multiple (x)."""

    target_price: Stats
    p_upside: Probability
    ev_sales_multiple: Stats


@dataclass(frozen=True)
class Funding:
    """The funding rule and the management response in one scenario (correct conventions).

    ``floor``: the minimum liquidity (currency mn); ``p_raise_by``: year -> P(the company has
    raised money by that year's end); ``amount_raised``: money raised over the forecast years
    (currency mn, all paths, zero where none), ``amount_raised_if_raised`` on the paths that
    raise (None when none does); ``dilution``: new shares by the last forecast year over
    today's (fraction); ``p_cost_cut_by``: year -> P(management has cut costs by then).
    """

    floor: float | None
    p_raise_by: dict[str, Probability]
    amount_raised: Stats
    dilution: Stats
    p_cost_cut_by: dict[str, Probability]
    amount_raised_if_raised: Stats | None = None


@dataclass(frozen=True)
class Upside:
    """What ``p_upside`` means: P(``variable`` > ``price``), in words in ``definition``."""

    variable: str
    price: float
    price_currency: str
    horizon_years: float
    method: str
    definition: str


@dataclass(frozen=True)
class ScenarioSummary:
    """One scenario's statistics.

    ``lines``: line item -> year -> :class:`Stats`; ``scalars``: per-path scalar -> Stats
    (``target_price``, ``cash_burn``, ...; which names are scalars is the registry's ``kind``);
    ``p_upside``: P(target_price > price); ``valuation_methods``: method -> its summary.
    In JSON, lines and scalars are keys of the scenario's block (and, for the headline scenario,
    of the top level); ``description`` and ``shocks`` (shock -> its setting) only under
    ``scenarios``.
    """

    lines: dict[str, dict[str, Stats]]
    scalars: dict[str, Stats]
    p_upside: Probability
    valuation_methods: dict[str, ValuationMethodSummary]
    description: str = ""
    shocks: dict[str, str] = field(default_factory=dict)
    funding: Funding | None = None

    def to_dict(self, texts: bool = True) -> dict:
        out = {"description": self.description, "shocks": dict(self.shocks)} if texts else {}
        for name, by_year in self.lines.items():
            out[name] = {y: _encode(s) for y, s in by_year.items()}
        out.update({name: _encode(s) for name, s in self.scalars.items()})
        out["p_upside"] = _encode(self.p_upside)
        out["valuation_methods"] = _encode(self.valuation_methods)
        if self.funding is not None:
            out["funding"] = _encode(self.funding)
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str, src: str, texts: bool = True) -> ScenarioSummary:
        d = _table(d, where, src)
        known = {"p_upside": Probability, "valuation_methods": dict[str, ValuationMethodSummary],
                 "funding": Funding}
        if texts:
            known.update(description=str, shocks=dict[str, str])
        values, lines, scalars = {}, {}, {}
        for key, value in d.items():
            at = _join(where, key)
            if key in known:
                values[key] = _decode(known[key], value, at, src)
            elif _is_scalar(key):
                scalars[key] = _decode(Stats, value, at, src)
            else:
                lines[key] = _decode(dict[str, Stats], value, at, src)
        for key in ("p_upside", "valuation_methods"):
            if key not in values:
                _fail(src, _join(where, key), "a value (the key is missing)")
        if not lines:
            _fail(src, where or "(top level)", "line items (e.g. 'revenue': {year: stats})")
        return cls(lines=lines, scalars=scalars, **values)


@dataclass(frozen=True)
class PeerPrediction:
    """The peer regression's multiple at the report's own growth and margins (x EV/sales)."""

    sales_cagr: float
    gross_margin: float
    multiple: Interval
    multiple_with_premium: Interval
    report_multiple: float
    fcf_margin: float | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True)
class PeerLoo:
    """The peer regression's PSIS leave-one-out predictive check (ArviZ ``loo``): ``elpd`` (the
    expected log predictive density of a left-out peer's log multiple, summed over the ``n``
    peers) and its ``se``, ``p_loo`` (effective number of parameters), the largest Pareto k and
    how many peers have k above ``k_threshold`` (their leave-one-out estimate is unreliable)."""

    elpd: float
    se: float
    p_loo: float
    pareto_k_max: float
    n_high_k: int
    n: int
    k_threshold: float


@dataclass(frozen=True)
class PeerFit:
    """The peer regression: its diagnostics, slopes (log multiple per 10pp), prediction at the
    report's case, leave-one-out check, and the share of the headline scenario's paths whose
    predictors lie outside the peers' observed range (predicted without a clip)."""

    diagnostics: Diagnostics
    beta_growth_per_10pp: Interval
    beta_margin_per_10pp: Interval
    at_report_growth_and_margin: PeerPrediction
    beta_fcf_margin_per_10pp: Interval | None = field(default=None, metadata=_OMIT_NONE)
    loo: PeerLoo | None = field(default=None, metadata=_OMIT_NONE)
    share_outside_peer_range: float | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True)
class UpsideRange:
    """P(upside) across valuation methods and scenarios: ``p_upside[method][scenario]`` with
    its Monte Carlo error; ``definition`` says what is compared with which price."""

    definition: str
    price: float
    p_upside: dict[str, dict[str, Probability]]
    low: float
    high: float


@dataclass(frozen=True)
class ReportPercentile:
    """Where the report's own figure falls in the forecast (fraction of samples below it);
    ``None`` when the report publishes no such figure."""

    report: float | None
    percentile: float | None
    year: str | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True)
class ReportPercentiles:
    revenue: ReportPercentile
    target_price: ReportPercentile


@dataclass(frozen=True)
class PriorPredictive:
    """The driver model's prior predictive (no shocks): a check of the priors."""

    p_any_revenue_decline: float
    p_upside: Probability
    revenue_final: Stats


@dataclass(frozen=True)
class Periods:
    """The years a statistic covers, e.g. ``cash_burn``: ``"<first>-<last forecast year>"``;
    ``revenue_final``:
    the last forecast year."""

    cash_burn: str
    p_any_revenue_decline: str
    sales_cagr: str
    revenue_final: str


@dataclass(frozen=True)
class Assumption:
    """A driver's prior as the priors file states it, with its source."""

    driver: str
    prior: str
    source: str


@dataclass(frozen=True)
class Shock:
    """A scenario shock as the scenarios file defines it."""

    shock: str
    label: str
    annual_probability: str
    annual_probability_mean: float
    severity: str
    persistence: float
    channels: dict[str, float]
    source: str


@dataclass(frozen=True)
class Ranked:
    driver: str
    score: float  # Spearman rank correlation with the outcome


@dataclass(frozen=True)
class Swing:
    """One bar of the tornado: the outcome's median with the input in its bottom (``low``) and
    top (``high``) band, in the outcome's units; the input's 10th and 90th percentiles in its own
    units (``basis``: which value of the input, e.g. its mean over the forecast years); the
    number of paths in each band (``stforecast.sensitivity.swing_sensitivity``)."""

    driver: str
    label: str
    basis: str
    low: float
    high: float
    swing: float
    input_low: float
    input_high: float
    n_low: int
    n_high: int


@dataclass(frozen=True)
class Tornado:
    """The tornado of one outcome: ``statistic`` (median) over the paths in each input's
    ``band`` (0.1: bottom and top decile), the outcome's overall ``median``, bars by swing."""

    statistic: str
    band: float
    median: float
    entries: tuple[Swing, ...]


@dataclass(frozen=True)
class Sensitivity:
    """The sensitivity of one outcome (``year``: None for a per-path scalar): the rank view
    (``ranking``: Spearman correlations) and the tornado in the outcome's units (``tornado``;
    absent from summaries written before it existed)."""

    year: str | None
    ranking: tuple[Ranked, ...]
    tornado: Tornado | None = field(default=None, metadata=_OMIT_NONE)


@dataclass(frozen=True)
class CompanyInfo:
    """The company the results belong to. ``price`` and ``target_price_published``: price
    currency per share; ``files``: sha256 of each input file the run read."""

    key: str
    name: str
    ticker: str
    report: str
    currency: str
    price_currency: str
    price: float
    target_price_published: float
    history_years: tuple[str, ...]
    forecast_years: tuple[str, ...]
    valuation_year: str
    segments: tuple[str, ...]
    folder: str
    files: dict[str, str]

    @property
    def final_year(self) -> str:
        return self.forecast_years[-1]

    def units(self, name: str) -> str:
        """The units of a registry variable for this company (e.g. ``"HKD per share"``)."""
        v = variable(name)
        return v.unit_text(self.currency, self.price_currency) if v else ""

    def aliases(self) -> dict[str, str]:
        """Names accepted for a variable in queries: ``target_price_<price currency>``
        (e.g. ``target_price_hkd``) for ``target_price``."""
        return {f"target_price_{self.price_currency.lower()}": "target_price"}


@dataclass(frozen=True)
class Settings:
    """How the run was made: posterior predictive paths and the fit's settings."""

    paths: int
    draws: int
    tune: int
    chains: int
    target_accept: float
    sampler: str
    prior_draws: int


@dataclass(frozen=True, kw_only=True)
class Summary:
    """Everything ``summary.json`` holds (see the module docstring); the headline scenario's
    statistics are ``summary.headline`` (written at the top level of the JSON)."""

    schema_version: int = SCHEMA_VERSION
    company: CompanyInfo
    headline_scenario: str
    valuation_method: str
    #: What P(upside) means (price, horizon, method, in words); None in results without it.
    upside: Upside | None = field(default=None, metadata=_OMIT_NONE)
    peer_fit: PeerFit | None = field(default=None, metadata=_OMIT_NONE)
    p_upside_range: UpsideRange | None = field(default=None, metadata=_OMIT_NONE)
    diagnostics: Diagnostics
    reasons: tuple[str, ...]
    ok: bool
    report_percentiles: ReportPercentiles
    prior_predictive: PriorPredictive
    p_any_revenue_decline: float
    periods: Periods
    assumptions: tuple[Assumption, ...]
    scenarios: dict[str, ScenarioSummary]
    shocks: tuple[Shock, ...]
    sensitivity: dict[str, Sensitivity]
    n_paths: int
    seed: int
    priors_file: str
    priors_sha256: str
    scenarios_file: str
    scenarios_sha256: str
    settings: Settings
    versions: dict[str, str]
    #: The outside view (``stforecast.outside_view``): the reference class, the weight and the
    #: 3-year CAGR table for the reference class, the inside view alone and the final forecast.
    outside_view: dict[str, Any] | None = field(default=None, metadata=_OMIT_NONE)
    #: What the charts and the report show, computed at run time (``stforecast.charts``): plain
    #: JSON, so presentation reads it and computes nothing.
    charts: dict[str, Any] = field(default_factory=dict)
    #: Seconds per step of the run that made it; never written (a seed reproduces the file).
    timings_s: dict[str, float] = field(default_factory=dict, compare=False, repr=False,
                                        metadata={"stored": False})

    @property
    def headline(self) -> ScenarioSummary:
        return self.scenarios[self.headline_scenario]

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out: dict[str, Any] = {"schema_version": self.schema_version,
                               "company": _encode(self.company)}
        out.update(self.headline.to_dict(texts=False))
        for f in fields(self):
            if f.name not in out and _stored(f, getattr(self, f.name)):
                out[f.name] = _encode(getattr(self, f.name))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, path: str | Path = SUMMARY_FILE) -> Summary:
        """Parse and validate ``summary.json``; one-line ``ResultsError`` on any problem."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ResultsError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(d, str(path))

    @classmethod
    def from_dict(cls, d: Any, src: str = SUMMARY_FILE) -> Summary:
        d = _table(d, "", src)
        version = d.get("schema_version")
        if version not in READABLE_SCHEMAS:
            got = "none" if version is None else repr(version)
            _fail(src, "schema_version", f"{SCHEMA_VERSION}, got {got} (results of another "
                                         f"stforecast version: rerun `stforecast run`)")
        names = {f.name for f in fields(cls) if f.metadata.get("stored", True)}
        own = {k: v for k, v in d.items() if k in names}
        summary = _decode_dataclass(cls, own, "", src)
        headline = ScenarioSummary.from_dict({k: v for k, v in d.items() if k not in names}, "",
                                             src, texts=False)
        if summary.headline_scenario not in summary.scenarios:
            _fail(src, "headline_scenario", f"one of the scenarios {list(summary.scenarios)}, "
                                            f"got {summary.headline_scenario!r}")
        own_block = summary.headline
        if (headline.lines, headline.scalars, headline.p_upside, headline.valuation_methods,
                headline.funding) != (own_block.lines, own_block.scalars, own_block.p_upside,
                                      own_block.valuation_methods, own_block.funding):
            _fail(src, "(top level)", f"the statistics of scenarios.{summary.headline_scenario} "
                                      f"(the headline scenario); they differ")
        return summary


@dataclass(frozen=True)
class InputFile:
    """An input file as the run read it: where from, its text and its sha256."""

    path: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class Provenance:
    """``forecast.nc``'s root attributes: what made the draws.

    As attributes: ``schema_version``, ``company`` (key), ``company_name``, ``currency``,
    ``price_currency``, ``seed``, ``settings`` (JSON), ``stforecast_version`` and, per input
    file ``<name>`` of ``INPUT_FILES``, ``<name>_file`` (path), ``<name>_text`` and
    ``<name>_sha256``.
    """

    company: str
    company_name: str
    currency: str
    price_currency: str
    seed: int
    settings: Settings
    inputs: dict[str, InputFile]
    stforecast_version: str
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def for_run(cls, company, seed: int, settings: Settings, priors_path=None,
                scenarios_path=None, base_rates_path=None) -> Provenance:
        """The provenance of a run of ``company`` (a ``stforecast.company.Company``); the priors
        and scenarios files default to the company's own; ``base_rates_path``: the base-rates
        file the outside view read (stored so that a re-simulation needs the folder alone)."""
        from . import __version__

        inputs = {name: InputFile(*company.files[name]) for name in INPUT_FILES
                  if name in company.files}
        for name, path in (("priors", priors_path), ("scenarios", scenarios_path)):
            if path is not None:
                inputs[name] = InputFile(str(path), Path(path).read_text())
        own = company.files.get("scenarios")
        if scenarios_path is not None and own is not None and own[1] != inputs["scenarios"].text:
            inputs["scenarios_base"] = InputFile(*own)  # a user's file laid over this one
        if base_rates_path is not None and Path(base_rates_path).is_file():
            inputs["base_rates"] = InputFile(str(base_rates_path),
                                             Path(base_rates_path).read_text())
        return cls(company.key, company.name, company.currency, company.price_currency,
                   int(seed), settings, inputs, __version__)

    def to_attrs(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {
            "schema_version": self.schema_version, "company": self.company,
            "company_name": self.company_name, "currency": self.currency,
            "price_currency": self.price_currency, "seed": self.seed,
            "settings": json.dumps(_encode(self.settings)),
            "stforecast_version": self.stforecast_version}
        for name, f in self.inputs.items():
            out.update({f"{name}_file": f.path, f"{name}_text": f.text,
                        f"{name}_sha256": f.sha256})
        return out

    @classmethod
    def from_attrs(cls, attrs: dict, src: str) -> Provenance:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in attrs.items()}
        if attrs.get("schema_version") not in READABLE_SCHEMAS:
            _fail(src, "schema_version", f"{SCHEMA_VERSION} in the file's root attributes, got "
                                         f"{attrs.get('schema_version')!r} (rerun `stforecast run`)")
        try:
            settings = json.loads(attrs.get("settings", ""))
        except (TypeError, json.JSONDecodeError):
            _fail(src, "settings", "a JSON object (the run's settings)")
        inputs = {}
        for name in INPUT_FILES:
            if f"{name}_text" not in attrs:
                continue
            path = _decode(str, attrs.get(f"{name}_file"), f"{name}_file", src)
            f = InputFile(path, _decode(str, attrs[f"{name}_text"], f"{name}_text", src))
            if f.sha256 != attrs.get(f"{name}_sha256"):
                _fail(src, f"{name}_sha256", f"the sha256 of {name}_text ({f.sha256}); the stored "
                                             f"text was altered")
            inputs[name] = f
        if "company" not in inputs:
            _fail(src, "company_text", "the text of the run's company file (it is missing)")
        values = {k: _decode(str, attrs.get(k), k, src) for k in (
            "company", "company_name", "currency", "price_currency", "stforecast_version")}
        return cls(**values, seed=_decode(int, attrs.get("seed"), "seed", src),
                   settings=_decode(Settings, settings, "settings", src), inputs=inputs)


# --------------------------------------------------------------------------- the loader
class Results:
    """A results folder, read through the contract.

    ``summary``: the typed :class:`Summary`; ``provenance``: ``forecast.nc``'s root attributes;
    ``company``: the ``Company`` re-parsed from the stored company file (the folder it came from
    is not needed); ``draws(group, scenario)``: one group of ``forecast.nc`` as a lazily loaded
    xarray Dataset; ``predictive(scenarios)``: posterior predictive draws of some scenarios
    (those the file does not keep recomputed).
    """

    def __init__(self, folder: Path, summary: Summary):
        self.folder = Path(folder)
        self.summary = summary

    def __repr__(self) -> str:
        c = self.summary.company
        return f"Results({str(self.folder)!r}, company={c.key!r}, n_paths={self.summary.n_paths})"

    @property
    def draws_path(self) -> Path:
        return self.folder / DRAWS_FILE

    def require(self, groups: tuple[str, ...] = PREDICTIVE) -> Results:
        """Check ``forecast.nc`` (:func:`check_draws`) for these groups; returns ``self``."""
        checked = self.__dict__.get("_checked_groups")
        missing = tuple(g for g in groups if checked is None or g not in checked)
        if checked is None or missing:
            self.__dict__["provenance"] = check_draws(self.draws_path, self.summary, missing)
            self.__dict__["_checked_groups"] = (checked or set()) | set(missing)
        return self

    @cached_property
    def provenance(self) -> Provenance:
        return Provenance.from_attrs(read_root_attrs(self.draws_path), str(self.draws_path))

    @cached_property
    def company(self):
        """The results' ``Company`` (from the stored company text; ``files``: every stored input)."""
        from .company import company_from_text

        stored = self.provenance.inputs
        c = stored["company"]
        return company_from_text(c.text, c.path, self.summary.company.folder,
                                 files={k: (f.path, f.text) for k, f in stored.items()})

    def draws(self, group: str = "posterior_predictive", scenario: str | None = None):
        """One group of ``forecast.nc`` as an xarray Dataset (lazily loaded; ``attrs`` carry the
        company key and its currencies). For ``posterior_predictive``: every scenario of the
        run (``scenario`` None) or one (``scenario``: a name, its dimension dropped); the file
        keeps the headline scenario, the others are recomputed from the stored posterior
        (``stforecast.resimulation.recompute``: exact, a few seconds)."""
        if group == "posterior_predictive":
            ds = self.predictive(None if scenario is None else [scenario])
            return ds if scenario is None else ds.isel(scenario=0)
        ds = self._open(group)
        if scenario is not None:
            from .query import select_scenario
            ds = select_scenario(ds, scenario)
        return ds

    def predictive(self, scenarios: list[str] | None = None):
        """The posterior predictive draws of ``scenarios`` (default: every scenario of the run, in
        the summary's order) with their ``scenario`` dimension: those ``forecast.nc`` keeps
        read lazily, the others recomputed (see :meth:`draws`). An unknown name is a
        ``QueryError`` listing the run's scenarios."""
        from .query import check_scenario

        ds = self._open("posterior_predictive")
        if "scenario" not in ds.dims:
            return ds
        known = list(self.summary.scenarios)
        names = known if scenarios is None else list(scenarios)
        for name in names:
            check_scenario(name, known)
        stored = [str(v) for v in ds["scenario"].values]
        missing = [n for n in names if n not in stored]
        if missing:
            import xarray as xr

            from .resimulation import recompute
            ds = xr.concat([ds, recompute(self, missing).assign_attrs(ds.attrs)], "scenario",
                           data_vars="all", coords="minimal", compat="override", join="exact")
        return ds if names == stored else ds.sel(scenario=names)

    def _open(self, group: str):
        import xarray as xr

        try:
            ds = xr.open_dataset(self.draws_path, group=group, engine="h5netcdf")
        except (OSError, KeyError, ValueError) as exc:
            raise ResultsError(f"{self.draws_path}: cannot read group {group!r} "
                               f"({' '.join(str(exc).split())})") from None
        c = self.summary.company
        ds.attrs.update(company=c.key, currency=c.currency, price_currency=c.price_currency)
        return ds

    def read_group(self, group: str):
        """One small group of ``forecast.nc`` (a posterior) read whole with h5py: the variables
        and coordinates (names, dimensions, dtypes, values) that ``draws(group).load()`` has,
        without its attributes and without xarray's netCDF bookkeeping per variable (a few ms
        each: 0.1-0.3 s for a posterior). A group with anything else (an encoding, a value
        type or an attribute the plain reading does not cover) is read by ``draws``."""
        import h5py

        try:
            with h5py.File(self.draws_path, "r") as f:
                ds = (plain_netcdf.read_group(f[group]) if isinstance(f.get(group), h5py.Group)
                      else None)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError):
            ds = None
        return self.draws(group).load() if ds is None else ds

    @contextmanager
    def input_files(self):
        """The stored input files written to a temporary folder: ``{name: path}`` (for the
        parsers that read files), removed afterwards."""
        with tempfile.TemporaryDirectory(prefix=f"stforecast-{self.summary.company.key}-") as tmp:
            out = {}
            for name, f in self.provenance.inputs.items():
                path = Path(tmp) / name / Path(f.path).name  # one folder each: names may clash
                path.parent.mkdir()
                path.write_text(f.text)
                out[name] = path
            yield out


#: The largest summary.json read (a run's is well under 1 MB; chart data included).
SUMMARY_MAX_BYTES = 16 << 20


def load_results(folder: str | Path, groups: tuple[str, ...] = PREDICTIVE) -> Results:
    """Read a results folder, validated before anything uses it: ``summary.json`` against the
    schema, and ``forecast.nc`` opened (a truncated, empty or foreign file is refused), its root
    attributes checked (a :class:`Provenance` of the same company, seed and settings as the
    summary: both files of one run) and every group of ``groups`` present with readable
    variables. Any problem is a one-line ``ResultsError``; nothing is written."""
    folder = Path(folder)
    path = folder / SUMMARY_FILE
    if not folder.exists():
        from .publish import interrupted

        old = interrupted(folder)
        if old is not None:
            raise ResultsError(f"{folder}: missing: a run was killed while replacing it; the "
                               f"previous results are in {old.name}, and the next "
                               f"`stforecast run` into {folder} restores them")
    try:
        if path.exists() and not path.is_file():
            raise ResultsError(f"{path}: expected a JSON file, it is not a regular file")
        if path.is_file() and path.stat().st_size > SUMMARY_MAX_BYTES:
            raise ResultsError(f"{path}: expected a summary of at most {SUMMARY_MAX_BYTES >> 20} "
                               f"MB, it has {path.stat().st_size:,} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{path}: no results file; run `stforecast run` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read ({' '.join(str(exc).split())})") from None
    if not (folder / DRAWS_FILE).is_file():
        raise ResultsError(f"{folder / DRAWS_FILE}: no draws file; run `stforecast run` first")
    return Results(folder, Summary.from_json(text, path)).require(groups)


def check_draws(path: Path, summary: Summary, groups: tuple[str, ...] = ()) -> Provenance:
    """Open ``forecast.nc`` (h5py alone, no xarray), check that its root attributes are the
    provenance of the run that wrote ``summary`` and that every group of ``groups`` has
    variables whose metadata can be read. Returns the provenance; one-line ``ResultsError``
    otherwise."""
    import h5py

    def fail(what, exc):
        raise ResultsError(f"{path}: {what} ({' '.join(str(exc).split())[:200]}); the results "
                           f"are damaged: run `stforecast run` again") from None

    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        fail("expected a netCDF-4 (HDF5) draws file, cannot open it", exc)
    with f:
        try:
            attrs = dict(f.attrs)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            fail("cannot read the root attributes", exc)
        provenance = Provenance.from_attrs(attrs, str(path))
        _same_run(provenance, summary, path)
        for group in groups:
            try:
                obj = f.get(group)
                present = [k for k in f if isinstance(f.get(k), h5py.Group)]
                if not isinstance(obj, h5py.Group):
                    _fail(str(path), group, f"the group {group!r} of the draws (the file has: "
                                            f"{', '.join(present) or 'no group'})")
                n = 0
                for name, ds in obj.items():
                    if not isinstance(ds, h5py.Dataset):
                        continue
                    ds.shape, ds.dtype  # metadata readable
                    n += ds.attrs.get("CLASS") != b"DIMENSION_SCALE"
            except ResultsError:
                raise
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                fail(f"cannot read the group {group!r}", exc)
            if not n:
                _fail(str(path), group, "variables in the group (it has none)")
    return provenance


def _same_run(provenance: Provenance, summary: Summary, path: Path) -> None:
    """summary.json and forecast.nc must come from one run (same company, seed and settings)."""
    pairs = (("company", provenance.company, summary.company.key),
             ("seed", provenance.seed, summary.seed),
             ("settings", provenance.settings, summary.settings))
    for key, draws, own in pairs:
        if draws != own:
            _fail(str(path), key, f"the {key} of {SUMMARY_FILE} beside it "
                                  f"({_short(_encode(own))}), got {_short(_encode(draws))}: the "
                                  f"two files come from different runs; run `stforecast run` "
                                  f"again")


# --------------------------------------------------------------------------- forecast.nc I/O
#: Root attributes of forecast.nc beside the provenance, written by ``stforecast run`` only:
#: the run's content key (``run.run_key``) and the sha256 of the summary.json written with it.
RUN_KEY_ATTR, SUMMARY_SHA_ATTR = "run_key", "summary_sha256"


def write_results(folder: Path, summary: Summary, groups: dict, provenance: Provenance,
                  run_key: str | None = None) -> None:
    """Write ``forecast.nc`` (each xarray Dataset of ``groups`` as a group, with its variables'
    encodings, then the provenance as root attributes) and ``summary.json`` into ``folder``.
    ``run_key``: the run's content key, stored as a root attribute with the sha256 of the
    summary (:func:`stored_run` finds the folder up to date by it)."""
    folder = Path(folder)
    text = summary.to_json()
    attrs = provenance.to_attrs()
    if run_key is not None:
        attrs.update({RUN_KEY_ATTR: run_key,
                      SUMMARY_SHA_ATTR: hashlib.sha256(text.encode()).hexdigest()})
    plain_netcdf.write_groups(folder / DRAWS_FILE, groups, attrs)
    (folder / SUMMARY_FILE).write_text(text)


def stored_run(folder: Path, run_key: str, groups: tuple[str, ...] = ()) -> Summary | None:
    """The :class:`Summary` of ``folder`` when it holds the results of a run with content key
    ``run_key`` (root attribute of forecast.nc), its summary.json unaltered since (sha256) and
    its draws valid (:func:`check_draws` for ``groups``); None otherwise (no folder, another
    key, results written by the Python API, a damaged or altered file). Reads no draws."""
    import h5py

    folder = Path(folder)
    try:
        with h5py.File(folder / DRAWS_FILE, "r") as f:
            attrs = {k: f.attrs.get(k) for k in (RUN_KEY_ATTR, SUMMARY_SHA_ATTR)}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        if attrs[RUN_KEY_ATTR] != run_key:
            return None
        raw = (folder / SUMMARY_FILE).read_bytes()
        if hashlib.sha256(raw).hexdigest() != attrs[SUMMARY_SHA_ATTR]:
            return None
        summary = Summary.from_json(raw.decode("utf-8"), folder / SUMMARY_FILE)
        check_draws(folder / DRAWS_FILE, summary, groups)
    except (OSError, ValueError, KeyError, ResultsError):
        return None
    return summary


def write_root_attrs(path: Path, attrs: dict) -> None:
    import h5netcdf

    with h5netcdf.File(path, "a") as f:
        for key, value in attrs.items():
            f.attrs[key] = value


def read_root_attrs(path: Path) -> dict:
    import h5netcdf

    try:
        with h5netcdf.File(path, "r") as f:
            return dict(f.attrs)
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read ({' '.join(str(exc).split())})") from None


# --------------------------------------------------------------------------- encoding
def _stored(f, value) -> bool:
    if not f.metadata.get("stored", True):
        return False
    return not (f.metadata.get("omit_none") and value is None)


def _encode(obj):
    if is_dataclass(obj):
        if hasattr(obj, "to_dict"):
            return obj.to_dict()
        return {f.name: _encode(getattr(obj, f.name)) for f in fields(obj)
                if _stored(f, getattr(obj, f.name))}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------- decoding
def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _fail(src: str, where: str, expected: str):
    raise ResultsError(f"{src}: key '{where}': expected {expected}")


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _table(d, where: str, src: str) -> dict:
    if not isinstance(d, dict):
        _fail(src, where or "(top level)", f"a table, got {_short(d)}")
    return d


def _is_scalar(name: str) -> bool:
    v = variable(name)
    return v is not None and v.kind == "scalar"


@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _describe(tp) -> str:
    if is_dataclass(tp):
        return f"a table ({tp.__name__})"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is dict:
        return f"a table of {_describe(typing.get_args(tp)[1])}"
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, str(tp))


def _decode(tp, value, where: str, src: str):
    """``value`` (parsed JSON) as type ``tp``; ``ResultsError`` naming ``where`` otherwise."""
    if tp is Any:  # opaque JSON (chart data)
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, where, src) if value is not None else \
            _fail(src, where, f"{_describe(tp)}, got null")
    if is_dataclass(tp):
        if hasattr(tp, "from_dict"):
            return tp.from_dict(value, where, src)
        return _decode_dataclass(tp, value, where, src)
    if origin is dict:
        _, item = typing.get_args(tp)
        d = _table(value, where, src)
        return {str(k): _decode(item, v, _join(where, k), src) for k, v in d.items()}
    if origin in (list, tuple):
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            _fail(src, where, f"{_describe(tp)}, got {_short(value)}")
        out = [_decode(item, v, f"{where}[{i}]", src) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    ok = {float: isinstance(value, (int, float)) and not isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          bool: isinstance(value, bool), str: isinstance(value, str)}.get(tp)
    if ok is None:  # pragma: no cover - a type the contract does not use
        raise TypeError(f"cannot decode {tp!r}")
    if not ok:
        _fail(src, where, f"{_describe(tp)}, got {_short(value)}")
    return float(value) if tp is float else value


def _decode_dataclass(cls, value, where: str, src: str):
    d = _table(value, where, src)
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls) if f.metadata.get("stored", True)}
    extra = [k for k in d if k not in known]
    if extra:
        _fail(src, _join(where, extra[0]), f"only the keys of {cls.__name__}: "
                                           f"{', '.join(known)}")
    kwargs = {}
    for name, f in known.items():
        if name in d:
            kwargs[name] = _decode(hints[name], d[name], _join(where, name), src)
        elif f.default is MISSING and f.default_factory is MISSING:
            _fail(src, _join(where, name), f"{_describe(hints[name])} (the key is missing)")
    return cls(**kwargs)
