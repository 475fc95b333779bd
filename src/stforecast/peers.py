"""Peer-multiple regression: the company's EV/sales multiple from its listed peers.

A company's peers file (``peers.toml`` in its folder) holds one ``[[peer]]`` row per listed
peer and declares what the regression uses (``[regression]``): the peer groups in order, the
response column (an EV/sales multiple) and the three predictor columns (a sales CAGR, a gross
margin and an FCF margin), each named with its period in the data file, never here. The peers
are regressed as

    log(response)_i = intercept + group_effect[group_i]
                      + beta_growth * (growth_i - growth_centre)
                      + beta_margin * (margin_i - margin_centre)
                      + beta_fcf_margin * (fcf_margin_i - fcf_margin_centre) + e_i,
    e_i ~ sigma * StudentT(residual_nu)        (Normal when residual_nu = inf)

Units: multiples are times ("x"); growth and the margins are fractions, so the slopes are
"log multiple per 1.00 (100pp)"; divide by 10 for "per 10pp". The centring constants are the
peer means of the fitted data and travel with the posterior (deterministics
``growth_centre`` / ``margin_centre`` / ``fcf_margin_centre``) so a prediction uses the same
ones.

Residuals are Student-t with fixed nu (from the file's ``[priors]``): with a few dozen peers,
a handful trading far above what the predictors explain would let a Normal likelihood pull
the slopes and inflate sigma, while nu itself is not identifiable from so few points. The
robust likelihood also keeps predictions honest away from the peers: nothing is clipped to
the peers' range, and a prediction there carries the slopes' full posterior uncertainty.

The intercept is partially pooled across the groups: the group effects sum to zero
(non-centred: ``group_effect = group_sigma * group_z``, ``group_z ~ ZeroSumNormal``), the
slopes are common. The company being valued (the file's ``[target]``) belongs to one group,
so its intercept is ``intercept + group_effect[target group]`` (deterministic
``intercept_target``); a group with few peers is shrunk towards the mean of the groups.
`build_peer_model` says how the model is parameterised for the sampler (standardised
predictors, zero-sum effects) so that it meets the quality bar at any seed; `peer_loo` is its
leave-one-out predictive check.

`predict_multiple` uses numpy/xarray only (pymc is imported inside the functions that
need it), so it runs on saved posteriors.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from stforecast.errors import DataFileError, show
from stforecast.registry import (DIVERGENCES_MAX, MAX_PRIOR_PARAMETER, MIN_PRIOR_SCALE,
                                 POSTERIOR_DIMS, RHAT_MAX)
from stforecast.tomlfile import read_toml

if TYPE_CHECKING:
    import pymc

MAX_FRACTION = 5.0
"""A ratio beyond +-5.00 (500%) is taken as a percentage typed as a number."""

PRIOR_KEYS = (
    "intercept_mu",
    "intercept_sigma",
    "group_sigma",
    "beta_growth_sigma",
    "beta_margin_sigma",
    "beta_fcf_margin_sigma",
    "residual_sigma",
    "residual_nu",
)
"""Keys of the ``[priors]`` table; see the comments there for the rationale."""

PREDICTION_PARAMS = (
    "intercept_target",
    "beta_growth",
    "beta_margin",
    "beta_fcf_margin",
    "sigma",
    "residual_nu",
    "growth_centre",
    "margin_centre",
    "fcf_margin_centre",
)
"""Posterior variables (dims chain, draw) that `predict_multiple` needs."""


def _positive(v: float) -> bool:
    return v > 0


def _growth(v: float) -> bool:
    return -1 < v <= MAX_FRACTION


def _unit(v: float) -> bool:
    return 0 <= v <= 1


def _margin(v: float) -> bool:
    return -MAX_FRACTION <= v <= 1


#: Kinds of numeric column a peers file may declare: kind -> (check, what is expected).
COLUMN_KINDS: dict[str, tuple[Any, str]] = {
    "positive": (_positive, "a positive number"),
    "growth": (_growth, f"a fraction in (-1, {MAX_FRACTION}]"),
    "fraction": (_unit, "a fraction in [0, 1]"),
    "margin": (_margin, f"a fraction in [-{MAX_FRACTION}, 1]"),
}

#: What the regression uses -> the column kinds it accepts.
ROLES: dict[str, tuple[str, ...]] = {
    "response": ("positive",),
    "growth": ("growth",),
    "margin": ("fraction", "margin"),
    "fcf_margin": ("margin",),
}

#: Predictor roles -> (their slope, their centre) in the posterior.
PREDICTORS: dict[str, tuple[str, str]] = {
    "growth": ("beta_growth", "growth_centre"),
    "margin": ("beta_margin", "margin_centre"),
    "fcf_margin": ("beta_fcf_margin", "fcf_margin_centre"),
}

#: ``[target]`` keys checked as numbers -> (column kind, required). Other keys are free text
#: or numbers kept for reference (attrs ``target_<key>``).
_TARGET_KEYS: dict[str, tuple[str, bool]] = {
    "sales_cagr": ("growth", True),
    "gross_margin": ("fraction", True),
    "fcf_margin": ("margin", True),
    "target_ev_sales": ("positive", False),
    "gross_margin_final": ("fraction", False),
}


@dataclass(frozen=True)
class Regression:
    """What a peer table's regression uses: its groups (in order) and the names of the response
    (a multiple, x) and of the growth, gross-margin and FCF-margin predictors (fractions)."""

    groups: tuple[str, ...]
    response: str
    growth: str
    margin: str
    fcf_margin: str

    def predictors(self) -> dict[str, str]:
        """Predictor role -> its column."""
        return {role: getattr(self, role) for role in PREDICTORS}


def regression(peers: xr.Dataset) -> Regression:
    """The regression a peer table declares (its ``regression_*`` attrs, set by `load_peers`)."""
    try:
        return Regression(tuple(str(g) for g in peers.attrs["regression_groups"]),
                          *(str(peers.attrs[f"regression_{r}"]) for r in ROLES))
    except KeyError as err:
        raise ValueError(f"peers: expected the attrs of a loaded peer table "
                         f"(stforecast.peers.load_peers), missing {err.args[0]!r}") from None


def _read_toml(path: Path) -> dict:
    """The table of a peers file (a regular file of bounded size; see ``stforecast.tomlfile``)."""
    return read_toml(path, DataFileError)[0]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_number(path: Path, where: str, value: Any, check: Any, expected: str) -> float:
    if not _is_number(value) or not check(value):
        raise DataFileError(f"{path}: {where}: expected {expected}, got {show(value)}")
    return float(value)


def _name(path: Path, where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise DataFileError(f"{path}: {where}: expected a name in lower_snake_case, got {show(value)}")
    return value


def _columns(path: Path, doc: dict) -> dict[str, tuple[str, str, bool]]:
    """``[columns]``: column -> (kind, units, required)."""
    table = doc.get("columns")
    if not isinstance(table, dict) or not table:
        raise DataFileError(f"{path}: columns: expected a [columns] table, one entry per numeric "
                            f"column, e.g. ev_sales = {{ kind = \"positive\", units = \"x\" }}")
    out = {}
    for col, entry in table.items():
        where = f"columns.{col}"
        _name(path, where, col)
        if col in ("company", "ticker", "group"):
            raise DataFileError(f"{path}: {where}: expected a numeric column, got a reserved name")
        if not isinstance(entry, dict) or set(entry) - {"kind", "units", "required"}:
            raise DataFileError(f"{path}: {where}: expected a table with kind, units and "
                                f"optional required, got {show(entry)}")
        if not isinstance(entry.get("kind"), str) or entry["kind"] not in COLUMN_KINDS:
            raise DataFileError(f"{path}: {where}.kind: expected one of {tuple(COLUMN_KINDS)}, "
                                f"got {show(entry.get('kind'))}")
        units = entry.get("units", "")
        required = entry.get("required", True)
        if not isinstance(units, str) or not isinstance(required, bool):
            raise DataFileError(f"{path}: {where}: expected units a string and required "
                                f"true/false, got {show(entry)}")
        out[col] = (entry["kind"], units, required)
    return out


def _regression(path: Path, doc: dict, columns: dict) -> Regression:
    """``[regression]``: the groups in order and the response / predictor columns."""
    table = doc.get("regression")
    if not isinstance(table, dict):
        raise DataFileError(f"{path}: regression: expected a [regression] table with groups, "
                            f"{', '.join(ROLES)}")
    extra = sorted(set(table) - {"groups", *ROLES})
    if extra:
        raise DataFileError(f"{path}: regression.{extra[0]}: expected only groups, "
                            f"{', '.join(ROLES)}")
    groups = table.get("groups")
    if not (isinstance(groups, list) and groups and all(isinstance(g, str) for g in groups)
            and len(set(groups)) == len(groups)):
        raise DataFileError(f"{path}: regression.groups: expected a list of distinct group "
                            f"names, got {show(groups)}")
    for i, group in enumerate(groups):
        _name(path, f"regression.groups[{i}]", group)
    names = []
    for role, kinds in ROLES.items():
        col = table.get(role)
        if not isinstance(col, str) or col not in columns:
            raise DataFileError(f"{path}: regression.{role}: expected one of the [columns] "
                                f"{tuple(columns)}, got {show(col)}")
        kind, _, required = columns[col]
        if kind not in kinds or not required:
            raise DataFileError(f"{path}: regression.{role}: expected a required column of "
                                f"kind {' or '.join(map(repr, kinds))}, got {col!r} "
                                f"(kind {kind!r}, required = {str(required).lower()})")
        names.append(col)
    return Regression(tuple(groups), *names)


def load_peers(path: str | Path) -> xr.Dataset:
    """Load a company's peer table as an xarray Dataset.

    Dim ``peer`` (coordinate = ticker), coordinates ``company`` and ``group``; one
    variable per column of ``[columns]``, in the file's order (multiples in x, money in the
    declared units, ratios as fractions; NaN where an optional value is omitted), with its
    ``units`` and ``kind`` as attrs. ``[meta]`` entries become attrs; ``[regression]``
    becomes ``regression_groups`` (a list) and ``regression_response`` / ``_growth`` /
    ``_margin`` / ``_fcf_margin`` (column names; see `regression`); ``[target]`` becomes
    ``target_<key>`` (its ``group`` must be a regression group; ``sales_cagr``,
    ``gross_margin`` and ``fcf_margin`` are the company's predictors at the report's case). Raises a one-line `DataFileError` (a
    ``ValueError``) naming the file, the key and what was expected on an unreadable file or
    bad content.
    """
    path = Path(path)
    doc = _read_toml(path)

    meta = doc.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("source"), str):
        raise DataFileError(f"{path}: meta.source: expected a [meta] table with a source string")
    declared = _columns(path, doc)
    reg = _regression(path, doc, declared)
    rows = doc.get("peer")
    if not isinstance(rows, list) or not rows:
        raise DataFileError(f"{path}: peer: expected a non-empty array of [[peer]] tables")

    columns: dict[str, list[float]] = {col: [] for col in declared}
    tickers, companies, groups = [], [], []
    for i, row in enumerate(rows):
        where = f"peer[{i}]"
        if not isinstance(row, dict):
            raise DataFileError(f"{path}: {where}: expected a [[peer]] table, got {show(row)}")
        for key in ("company", "ticker"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataFileError(
                    f"{path}: {where}.{key}: expected a non-empty string, got {show(row.get(key))}"
                )
        where = f"peer[{i}] ({row['ticker']})"
        if row["ticker"] in tickers:
            raise DataFileError(f"{path}: {where}.ticker: expected a unique ticker, got a duplicate")
        if row.get("group") not in reg.groups:
            raise DataFileError(
                f"{path}: {where}.group: expected one of {reg.groups}, got {show(row.get('group'))}"
            )
        unknown = set(row) - set(declared) - {"company", "ticker", "group"}
        if unknown:
            raise DataFileError(f"{path}: {where}: expected only the [columns] and company, "
                                f"ticker, group, got {sorted(unknown)}")
        for col, (kind, _, required) in declared.items():
            check, expected = COLUMN_KINDS[kind]
            if col not in row and not required:
                columns[col].append(np.nan)
                continue
            if col not in row:
                raise DataFileError(f"{path}: {where}.{col}: expected {expected}, got nothing")
            columns[col].append(_check_number(path, f"{where}.{col}", row[col], check, expected))
        tickers.append(row["ticker"])
        companies.append(row["company"])
        groups.append(row["group"])

    empty = [g for g in reg.groups if g not in groups]
    if empty:
        raise DataFileError(f"{path}: regression.groups: expected at least one [[peer]] in every "
                            f"group, none in {empty}")

    attrs: dict[str, Any] = {"path": str(path)}
    for key, value in meta.items():  # netCDF-friendly attrs: lists joined, dates as text
        if isinstance(value, list):
            value = "\n".join(map(str, value))
        attrs[key] = value if isinstance(value, str | int | float) else str(value)
    attrs["regression_groups"] = list(reg.groups)
    attrs.update({f"regression_{role}": getattr(reg, role) for role in ROLES})
    target = doc.get("target")
    if not isinstance(target, dict):
        raise DataFileError(f"{path}: target: expected a [target] table (the company being "
                            f"valued: group, sales_cagr, gross_margin, fcf_margin)")
    if target.get("group") not in reg.groups:
        raise DataFileError(
            f"{path}: target.group: expected one of {reg.groups}, got {show(target.get('group'))}"
        )
    for key, (kind, required) in _TARGET_KEYS.items():
        check, expected = COLUMN_KINDS[kind]
        if key in target or required:
            _check_number(path, f"target.{key}", target.get(key), check, expected)
    attrs.update({f"target_{k}": v for k, v in target.items()})

    ds = xr.Dataset(
        {col: ("peer", np.asarray(vals)) for col, vals in columns.items()},
        coords={"peer": tickers, "company": ("peer", companies), "group": ("peer", groups)},
        attrs=attrs,
    )
    for col, (kind, units, _) in declared.items():
        ds[col].attrs.update(units=units, kind=kind)
    return ds


def load_priors(path: str | Path) -> dict[str, float]:
    """Default priors of `build_peer_model`, read from the ``[priors]`` table.

    Scales are on the log-multiple scale; slope scales are per 1.00 (100pp) of the
    predictor; ``residual_nu`` may be ``inf`` (Normal residuals).
    """
    path = Path(path)
    table = _read_toml(path).get("priors", {})
    return _validate_priors(table, f"{path}: priors", DataFileError)


def _validate_priors(
    priors: Mapping[str, Any], where: str, error: type[ValueError] = ValueError
) -> dict[str, float]:
    unknown = set(priors) - set(PRIOR_KEYS)
    if unknown:
        raise error(f"{where}: expected keys among {PRIOR_KEYS}, got {sorted(unknown)}")
    out = {}
    for key in PRIOR_KEYS:
        value = priors.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if key == "intercept_mu":
            ok = ok and math.isfinite(value) and abs(value) <= MAX_PRIOR_PARAMETER
        elif key == "residual_nu":
            ok = ok and value >= MIN_PRIOR_SCALE and (value == math.inf
                                                       or value <= MAX_PRIOR_PARAMETER)
        else:
            ok = ok and MIN_PRIOR_SCALE <= value <= MAX_PRIOR_PARAMETER
        if not ok:
            expected = (f"a number of magnitude at most {MAX_PRIOR_PARAMETER:g}"
                        if key == "intercept_mu" else
                        f"a positive number (between {MIN_PRIOR_SCALE:g} and "
                        f"{MAX_PRIOR_PARAMETER:g}" + (", or inf)" if key == "residual_nu"
                                                      else ")"))
            raise error(f"{where}.{key}: expected {expected}, got {show(value)}")
        out[key] = float(value)
    return out


def _design(peers: xr.Dataset, reg: Regression) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The predictors (peer, predictor) in natural units, their centres and their scales."""
    x = np.stack([peers[col].values.astype(float) for col in reg.predictors().values()], axis=-1)
    scale = x.std(axis=0)
    if not np.all(np.isfinite(x)) or np.any(scale <= 0):
        raise ValueError(f"peers: expected every peer to have a value of each predictor "
                         f"{tuple(reg.predictors().values())}, not all equal")
    return x, x.mean(axis=0), scale


#: The peer table's data in ``build_peer_model(..., table_as_data=True)``, in this order.
TABLE_DATA = ("predictors_standardised", "predictor_centre", "predictor_scale",
              "group_membership", "log_ev_sales_observed")


def build_peer_model(
    peers: xr.Dataset,
    priors: Mapping[str, float] | None = None,
    target_group: str | None = None,
    table_as_data: bool = False,
) -> pymc.Model:
    """Bayesian regression of the log multiple on growth, gross margin and FCF margin.

    ``peers``: a peer table as from `load_peers` (or `simulate_peer_data`): the
    `regression` it declares names the response (x) and the predictors (fractions); a
    ``group`` coordinate along ``peer``; the ``[priors]`` are read from the file at
    ``peers.attrs["path"]``. ``priors`` overrides entries of `load_priors` (see the
    ``[priors]`` table for the rationale). ``target_group`` (default:
    ``peers.attrs["target_group"]``) selects the group effect added to the intercept for the
    valued company's ``intercept_target``.

    Parameterised for the sampler (the posterior is the same model as the module docstring's,
    with the priors given per 1.00 of each predictor):

    * the predictors are centred on the peer means and divided by their sds, and the free
      slopes ``slope_std`` (dim ``predictor``) are per sd, with prior sd = the file's sd per
      1.00 x the predictor's sd; ``beta_<role>`` = ``slope_std / sd`` (deterministic);
    * the group effects sum to zero (``group_z ~ ZeroSumNormal(1)``, non-centred:
      ``group_effect = group_sigma * group_z``), so ``intercept`` is the mean of the group
      intercepts and is not traded off against the mean of the effects: with three groups, an
      unconstrained effect per group left a ridge between the intercept and the effects'
      mean that mixed slowly (R-hat 1.016 at some seeds).

    Free variables: ``intercept``, ``group_sigma``, ``group_z`` (dim group), ``slope_std``
    (dim predictor), ``sigma``. Deterministics carried in the posterior for prediction:
    ``group_effect``, ``group_intercept``, ``intercept_target``, ``beta_growth``,
    ``beta_margin``, ``beta_fcf_margin``, ``growth_centre``, ``margin_centre``,
    ``fcf_margin_centre``, ``residual_nu``.

    ``table_as_data``: the table enters as ``pm.Data`` (``TABLE_DATA``: the standardised
    predictors, their centres and scales, the peers' groups as 0/1 columns, the log multiples),
    so that one compiled model fits every table of the same size, groups and priors
    (``fit_peer_model``). The same regression as the default graph, which has the table's
    values as constants and picks each peer's group effect by index.
    """
    import pymc as pm
    import pytensor.tensor as pt

    reg = regression(peers)
    prior = _validate_priors({**load_priors(peers.attrs["path"]), **(priors or {})}, "priors")
    groups = list(reg.groups)
    target_group = target_group or peers.attrs.get("target_group")
    if target_group not in groups:
        raise ValueError(f"target_group: expected one of {reg.groups}, got {target_group!r}")

    x, centre, scale = _design(peers, reg)
    z = (x - centre) / scale
    log_multiple = np.log(peers[reg.response].values.astype(float))
    group_idx = np.array([groups.index(g) for g in peers["group"].values])
    roles = list(PREDICTORS)
    slope_sigma = np.array([prior[f"beta_{r}_sigma"] for r in roles])  # per 1.00

    coords = {"group": groups, "peer": [str(p) for p in peers["peer"].values],
              "predictor": roles}
    with pm.Model(coords=coords) as model:
        if table_as_data:
            data = dict(zip(TABLE_DATA, (z, centre, scale, (group_idx[:, None] == np.arange(
                len(groups))).astype(float), log_multiple)))
            z, centre, scale, membership, log_multiple = (pm.Data(k, v) for k, v in data.items())
        slope_sd = slope_sigma * scale  # per sd of each predictor
        for i, role in enumerate(roles):
            pm.Deterministic(PREDICTORS[role][1], pt.as_tensor(centre[i]))
        nu = pm.Deterministic("residual_nu", pt.as_tensor(prior["residual_nu"]))

        intercept = pm.Normal("intercept", prior["intercept_mu"], prior["intercept_sigma"])
        group_sigma = pm.HalfNormal("group_sigma", prior["group_sigma"])
        group_z = pm.ZeroSumNormal("group_z", sigma=1.0, dims="group")
        group_effect = pm.Deterministic("group_effect", group_sigma * group_z, dims="group")
        slope_std = pm.Normal("slope_std", 0.0, slope_sd, dims="predictor")
        for i, role in enumerate(roles):
            pm.Deterministic(PREDICTORS[role][0], slope_std[i] / scale[i])
        sigma = pm.HalfNormal("sigma", prior["residual_sigma"])

        pm.Deterministic("group_intercept", intercept + group_effect, dims="group")
        pm.Deterministic("intercept_target", intercept + group_effect[groups.index(target_group)])

        peer_effect = (pt.dot(membership, group_effect) if table_as_data
                       else group_effect[group_idx])
        mu = intercept + peer_effect + pt.dot(z, slope_std)
        if math.isinf(prior["residual_nu"]):
            pm.Normal("log_ev_sales", mu=mu, sigma=sigma, observed=log_multiple, dims="peer")
        else:
            pm.StudentT("log_ev_sales", nu=nu, mu=mu, sigma=sigma, observed=log_multiple, dims="peer")
    return model


#: What `peer_diagnostics` and `peer_loo` measure of a fit (the fit cache keeps them with it).
PEER_CHECKS = ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences", "loo_elpd", "loo_se",
               "loo_p", "loo_pareto_k_max", "loo_n_high_k", "loo_n")


def peer_diagnostics(idata: xr.DataTree, var_names: list[str]) -> dict[str, float]:
    """R-hat max, bulk/tail ESS min over ``var_names`` and the divergence count."""
    import arviz_stats as az  # ArviZ's own functions, without importing its plotting

    post = idata["posterior"].to_dataset()[var_names]
    rhat = az.rhat(post)
    ess_bulk = az.ess(post, method="bulk")
    ess_tail = az.ess(post, method="tail")
    return {
        "rhat_max": max(float(rhat[v].max()) for v in var_names),
        "ess_bulk_min": min(float(ess_bulk[v].min()) for v in var_names),
        "ess_tail_min": min(float(ess_tail[v].min()) for v in var_names),
        "divergences": int(idata["sample_stats"]["diverging"].sum()),
    }


#: The peer regression's own sampler settings (every run, whatever the driver model's): cheap
#: (20 peers, a few seconds of sampling), so long enough to meet the quality bar at any seed
#: (measured at ten seeds: tests/test_quality_bar.py).
PEER_FIT = {"draws": 2000, "tune": 1000, "chains": 4, "nuts_sampler": "nutpie",
            "target_accept": 0.95}

def _compiled_nutpie(model: pymc.Model, peers: xr.Dataset, priors: Mapping | None):
    """nutpie's model of the peer regression ``model`` (of ``peers`` and ``priors``), compiled
    once and kept on disk (``stforecast.compiled``, its data and prior values frozen into the
    graph: the key holds them): ten fits at ten seeds, and every later process, sample on it."""
    from . import compiled as C

    reg = regression(peers)
    cols = [reg.response, *reg.predictors().values()]
    key = C.model_key("peers", C.PEER_SOURCES, table=[
        [peers[c].values.astype(float).tolist() for c in cols],
        [str(g) for g in peers["group"].values], list(reg.groups), peers.attrs.get("target_group"),
        sorted({**load_priors(peers.attrs["path"]), **(priors or {})}.items())])
    entry = C.load_or_build(model, key, where=str(peers.attrs["path"]))
    # starting points drawn on the frozen model, as nutpie's compile_pymc_model(freeze_model=
    # True) draws them (it orders the variables otherwise): the fits of a compilation per process
    from pymc.model.transform.optimization import freeze_dims_and_data
    return C.nutpie_model(entry, freeze_dims_and_data(model))


def _compiled_nutpie_table_as_data(model: pymc.Model, peers: xr.Dataset,
                                   priors: Mapping | None):
    """nutpie's model of ``build_peer_model(..., table_as_data=True)``, compiled once for every
    table of ``peers``'s size, groups and target group with these priors (the key holds them,
    not the table's values; ``stforecast.compiled``, the table read from nutpie's data)."""
    from . import compiled as C

    reg = regression(peers)
    key = C.model_key("peers-table-as-data", C.PEER_SOURCES, table=[
        peers.sizes["peer"], list(reg.groups), peers.attrs.get("target_group"),
        [reg.response, *reg.predictors().values()],
        sorted({**load_priors(peers.attrs["path"]), **(priors or {})}.items())])
    entry = C.load_or_build(model, key, where=str(peers.attrs["path"]),
                            observations_as_data=True)
    return C.nutpie_model(entry, model)


def peer_log_likelihood(posterior: xr.Dataset, peers: xr.Dataset) -> xr.Dataset:
    """Pointwise log likelihood ``log_ev_sales`` (dims chain, draw, peer) of each peer's log
    multiple at each posterior draw, from the posterior's deterministics (numpy/scipy: the
    model's Student-t, or Normal when ``residual_nu`` is inf)."""
    from scipy import stats

    reg = regression(peers)
    groups = list(reg.groups)
    idx = xr.DataArray([groups.index(str(g)) for g in peers["group"].values], dims="peer")
    mu = posterior["intercept"] + posterior["group_effect"].isel(group=idx, drop=True)
    for role, (beta, centre) in PREDICTORS.items():
        x = xr.DataArray(peers[getattr(reg, role)].values.astype(float), dims="peer")
        mu = mu + posterior[beta] * (x - posterior[centre])
    y = xr.DataArray(np.log(peers[reg.response].values.astype(float)), dims="peer")
    nu = float(np.asarray(posterior["residual_nu"]).reshape(-1)[0])
    z = ((y - mu) / posterior["sigma"]).transpose("chain", "draw", "peer")
    sigma = posterior["sigma"].broadcast_like(z).transpose(*z.dims).values
    dens = stats.norm.logpdf(z.values) if math.isinf(nu) else stats.t.logpdf(z.values, nu)
    ll = xr.DataArray(dens - np.log(sigma), dims=z.dims,
                      coords={"chain": z["chain"], "draw": z["draw"],
                              "peer": [str(p) for p in peers["peer"].values]})
    return xr.Dataset({"log_ev_sales": ll})


def fit_peer_model(
    peers: xr.Dataset,
    draws: int = PEER_FIT["draws"],
    tune: int = PEER_FIT["tune"],
    chains: int = PEER_FIT["chains"],
    seed: int | None = None,
    nuts_sampler: str = PEER_FIT["nuts_sampler"],
    priors: Mapping[str, float] | None = None,
    target_accept: float = PEER_FIT["target_accept"],
    table_as_data: bool = False,
) -> xr.DataTree:
    """Fit `build_peer_model` with NUTS and return the ArviZ 1.x DataTree (groups
    ``posterior``, ``sample_stats``, ``log_likelihood``).

    Diagnostics over the free variables are stored in the root attrs (and warned about
    when R-hat > ``registry.RHAT_MAX`` or there are divergences): ``rhat_max``, ``ess_bulk_min``,
    ``ess_tail_min``, ``divergences``, ``wall_time_s`` (seconds, including
    compilation), and the leave-one-out check of `peer_loo`. The default ``target_accept`` is
    high because the group sd is weakly identified from a few groups. ``nuts_sampler``:
    ``"nutpie"`` (compiled once per peer table and priors, kept on disk) or ``"pymc"``.
    ``table_as_data`` (nutpie): the table is data of the compiled model (``build_peer_model``),
    compiled once for every table of its size, groups and priors (simulated tables, say); the
    run's fit has the table's values in its graph, as its draws always had.
    """
    import pymc as pm

    model = build_peer_model(peers, priors, table_as_data=table_as_data)
    start = time.perf_counter()
    if nuts_sampler == "nutpie":
        import nutpie

        compiled = (_compiled_nutpie(model, peers, priors) if not table_as_data
                    else _compiled_nutpie_table_as_data(model, peers, priors))
        idata = nutpie.sample(compiled, draws=draws, tune=tune,
                              chains=chains, cores=min(chains, 2), seed=seed,
                              target_accept=target_accept, progress_bar=False)
    else:
        with model:
            idata = pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed,
                              nuts_sampler=nuts_sampler, target_accept=target_accept,
                              progressbar=False, compute_convergence_checks=False)
    idata = xr.DataTree.from_dict({
        "posterior": idata["posterior"].to_dataset(),
        "sample_stats": idata["sample_stats"].to_dataset(),
        "log_likelihood": peer_log_likelihood(idata["posterior"].to_dataset(), peers)})
    diagnostics = peer_diagnostics(idata, [rv.name for rv in model.free_RVs])
    diagnostics["wall_time_s"] = time.perf_counter() - start
    idata.attrs.update(diagnostics)
    idata.attrs.update(peer_loo(idata))
    if diagnostics["rhat_max"] > RHAT_MAX or diagnostics["divergences"] > DIVERGENCES_MAX:
        warnings.warn(
            f"peer model: R-hat max {diagnostics['rhat_max']:.3f}, "
            f"{diagnostics['divergences']} divergences",
            stacklevel=2,
        )
    return idata


#: Pareto k above which a peer's PSIS-LOO estimate is unreliable (Vehtari et al. 2024; the
#: threshold ArviZ flags for a few thousand draws).
PARETO_K_MAX = 0.7


def peer_loo(idata: xr.DataTree) -> dict[str, float]:
    """The regression's PSIS leave-one-out predictive check (ArviZ ``loo``) from the fit's
    ``log_likelihood`` group: ``loo_elpd`` (expected log pointwise predictive density of a
    left-out peer's log multiple, summed over peers), ``loo_se``, ``loo_p`` (effective number of
    parameters), ``loo_pareto_k_max`` and ``loo_n_high_k`` (peers with k > `PARETO_K_MAX`),
    ``loo_n`` (peers). Empty when the fit has no log likelihood."""
    import arviz_stats as az  # ArviZ's own functions, without importing its plotting

    if "log_likelihood" not in idata.children:
        return {}
    with warnings.catch_warnings():  # a high Pareto k is reported, not warned about
        warnings.simplefilter("ignore")
        res = az.loo(idata, pointwise=True)
    k = np.asarray(res.pareto_k).reshape(-1)
    return {"loo_elpd": float(res.elpd), "loo_se": float(res.se), "loo_p": float(res.p),
            "loo_pareto_k_max": float(np.max(k)),
            "loo_n_high_k": int(np.sum(k > PARETO_K_MAX)), "loo_n": int(k.size)}


def _as_array(value: Any, name: str) -> xr.DataArray:
    if isinstance(value, xr.DataArray):
        return value
    if np.ndim(value) == 0:
        return xr.DataArray(float(value))
    raise ValueError(f"{name}: expected a scalar or an xarray.DataArray, got {type(value).__name__}")


def _standard_t(nu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Standard Student-t draws of shape ``nu.shape``; Normal where nu is inf."""
    finite = np.isfinite(nu)
    return np.where(finite, rng.standard_t(np.where(finite, nu, 1.0)), rng.standard_normal(nu.shape))


def predict_multiple(
    posterior: xr.Dataset | xr.DataTree,
    sales_cagr: float | xr.DataArray,
    gross_margin: float | xr.DataArray,
    fcf_margin: float | xr.DataArray,
    premium: float | np.ndarray | xr.DataArray | None = None,
    rng: np.random.Generator | int | None = None,
) -> xr.DataArray:
    """Predicted EV/sales multiple (x) for the valued company, with residual noise.

    ``posterior``: Dataset of the variables in `PREDICTION_PARAMS`, dims (chain,
    draw) (or the fit's DataTree, whose ``posterior`` group is used).
    ``sales_cagr``, ``gross_margin``, ``fcf_margin``: fractions, scalars or DataArrays,
    typically with dims (chain, draw, path). If the predictors have (chain, draw):
    the output has their dims; when the sizes equal the posterior's, draws are
    paired by position, otherwise each predictor (chain, draw) gets a posterior draw
    resampled with replacement by ``rng`` (the same index for all parameters, so
    joint draws stay joint). Otherwise the output has dims (chain, draw, *predictor
    dims) with the posterior's sizes.
    ``premium``: log premium added to the log multiple; a scalar, a DataArray
    (broadcast by dim name) or a 1-D numpy array of draws (resampled with
    replacement per output element).

    Per element: ``exp(intercept_target + sum_k beta_k*(x_k - centre_k) + sigma*t_nu
    + premium)``. Nothing is clipped: a predictor far from the peers' values gets the
    regression's line with its full parameter uncertainty, whose spread grows with the
    distance from the peers' centre (the slopes' posterior sd times the distance), on top of
    the Student-t residual.
    """
    rng = np.random.default_rng(rng)
    post = posterior["posterior"].to_dataset() if isinstance(posterior, xr.DataTree) else posterior
    missing = [v for v in PREDICTION_PARAMS if v not in post]
    if missing:
        raise ValueError(f"posterior: expected variables {PREDICTION_PARAMS}, missing {missing}")
    params = post[list(PREDICTION_PARAMS)]
    params = params.drop_vars([c for c in POSTERIOR_DIMS if c in params.coords])

    values = dict(zip(PREDICTORS, xr.broadcast(
        _as_array(sales_cagr, "sales_cagr"), _as_array(gross_margin, "gross_margin"),
        _as_array(fcf_margin, "fcf_margin"))))
    growth = values["growth"]
    present = [d for d in POSTERIOR_DIMS if d in growth.dims]
    if len(present) == len(POSTERIOR_DIMS):
        out_dims = growth.dims
        target = tuple(growth.sizes[d] for d in POSTERIOR_DIMS)
        if target != tuple(params.sizes[d] for d in POSTERIOR_DIMS):
            n_post = params.sizes["chain"] * params.sizes["draw"]
            pick = rng.integers(0, n_post, size=target)
            params = xr.Dataset(
                {
                    v: (POSTERIOR_DIMS, params[v].transpose(*POSTERIOR_DIMS).values.reshape(n_post)[pick])
                    for v in params.data_vars
                }
            )
    elif present:
        raise ValueError(f"predictors: expected both dims {POSTERIOR_DIMS} or neither, got {growth.dims}")
    else:
        out_dims = POSTERIOR_DIMS + growth.dims

    log_mu = params["intercept_target"] + sum(
        params[beta] * (values[role] - params[centre])
        for role, (beta, centre) in PREDICTORS.items())
    log_mu = log_mu.transpose(*out_dims)
    nu = params["residual_nu"].broadcast_like(log_mu).transpose(*out_dims).values
    log_multiple = log_mu + params["sigma"] * xr.DataArray(_standard_t(nu, rng), dims=out_dims)

    if isinstance(premium, np.ndarray) and premium.ndim == 1:
        log_multiple = log_multiple + xr.DataArray(rng.choice(premium, size=log_mu.shape), dims=out_dims)
    elif premium is not None:
        log_multiple = log_multiple + _as_array(premium, "premium")

    result = np.exp(log_multiple.transpose(*out_dims))
    result.name = "ev_sales_multiple"
    result.attrs["units"] = "x (EV/sales)"
    return result


def simulate_peer_data(
    n_per_group: int | Mapping[str, int],
    params: Mapping[str, Any],
    like: xr.Dataset,
    rng: np.random.Generator | int | None = None,
) -> xr.Dataset:
    """Simulate a peer table from the regression at known parameters (for recovery tests).

    ``like``: a loaded peer table (`load_peers`) whose groups, column names, target group and
    priors file the simulated table shares (its attrs are copied), and whose predictor
    moments are the defaults below. ``n_per_group``: peers per group (one count for every
    group, or group -> count).
    ``params``: ``intercept``, ``group_effect`` (mapping group -> log effect),
    ``beta_growth``, ``beta_margin``, ``beta_fcf_margin`` (per 1.00 of the fraction; the last
    defaults to 0), ``sigma``, ``residual_nu`` (inf = Normal); optional ``growth_mean``,
    ``growth_sd``, ``margin_mean``, ``margin_sd``, ``fcf_margin_mean``, ``fcf_margin_sd`` for
    the Normal predictor draws (default: the means/sds of ``like``'s peers; gross margins are
    clipped to [0, 1]).
    Predictors are centred on their sample means, as `build_peer_model` does.
    Returns a Dataset with the variables the model needs and the ``group`` coordinate.
    """
    rng = np.random.default_rng(rng)
    reg = regression(like)
    counts = n_per_group if isinstance(n_per_group, Mapping) else dict.fromkeys(reg.groups,
                                                                              n_per_group)
    groups = np.concatenate([np.full(int(counts.get(g, 0)), g) for g in reg.groups])
    n = groups.size
    defaults = {
        "growth_mean": float(like[reg.growth].mean()),
        "growth_sd": float(like[reg.growth].std(ddof=1)),
        "margin_mean": float(like[reg.margin].mean()),
        "margin_sd": float(like[reg.margin].std(ddof=1)),
        "fcf_margin_mean": float(like[reg.fcf_margin].mean()),
        "fcf_margin_sd": float(like[reg.fcf_margin].std(ddof=1)),
        "beta_fcf_margin": 0.0,
    }
    params = {**defaults, **params}
    growth = rng.normal(params["growth_mean"], params["growth_sd"], n)
    margin = np.clip(rng.normal(params["margin_mean"], params["margin_sd"], n), 0.0, 1.0)
    fcf = np.clip(rng.normal(params["fcf_margin_mean"], params["fcf_margin_sd"], n),
                  -MAX_FRACTION, 1.0)
    effect = np.array([params["group_effect"][g] for g in groups])
    log_mu = (
        params["intercept"]
        + effect
        + params["beta_growth"] * (growth - growth.mean())
        + params["beta_margin"] * (margin - margin.mean())
        + params["beta_fcf_margin"] * (fcf - fcf.mean())
    )
    noise = _standard_t(np.full(n, float(params["residual_nu"])), rng)
    return xr.Dataset(
        {
            reg.response: ("peer", np.exp(log_mu + params["sigma"] * noise)),
            reg.growth: ("peer", growth),
            reg.margin: ("peer", margin),
            reg.fcf_margin: ("peer", fcf),
        },
        coords={"peer": [f"SIM{i:04d}" for i in range(n)], "group": ("peer", groups)},
        attrs=dict(like.attrs),
    )
