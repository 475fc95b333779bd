"""Peer-multiple regression: SenseTime's EV/sales FY22E from its listed peers.

The 20 peers of the report's Figure 69 (``datasets/peers.toml``) are regressed as

    log(EV/sales FY22E)_i = intercept + group_effect[group_i]
                            + beta_growth * (sales_cagr_i - growth_centre)
                            + beta_margin * (gross_margin_i - margin_centre) + e_i,
    e_i ~ sigma * StudentT(residual_nu)        (Normal when residual_nu = inf)

Units: multiples are times ("x"); growth (sales CAGR FY20-23E) and gross margin
(FY20) are fractions, so the slopes are "log multiple per 1.00 (100pp)"; divide by
10 for "per 10pp". The centring constants are the peer means of the fitted data and
travel with the posterior (deterministics ``growth_centre`` / ``margin_centre``) so a
prediction uses the same ones.

Residuals are Student-t with fixed nu (default 5, from the data file): a handful of
peers (Atlassian, Datadog, Cambricon) trade far above what growth and margin explain,
and with 20 points a Normal likelihood would let them pull the slopes and inflate
sigma, while nu itself is not identifiable from 20 points, so it is fixed.

The intercept is partially pooled across the three groups (non-centred:
``group_effect = group_sigma * group_z``), the slopes are common. SenseTime is a China
AI company, so its intercept is ``intercept + group_effect["china_ai"]``
(deterministic ``intercept_target``). With only two China AI peers (Cambricon and
Arcsoft) that group effect is shrunk towards the population intercept.

`predict_multiple` uses numpy/xarray only (pymc is imported inside the functions that
need it), so it runs on saved posteriors.
"""

from __future__ import annotations

import math
import time
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from stforecast.errors import DataFileError

if TYPE_CHECKING:
    import pymc

GROUPS = ("global_ai", "china_ai", "global_saas")
"""Peer groups of Figure 69, in report order."""

DEFAULT_TARGET_GROUP = "china_ai"
"""Group whose effect forms SenseTime's intercept when the data do not say."""

RESPONSE = "ev_sales_fy22e"
GROWTH = "sales_cagr_fy20_23e"
MARGIN = "gross_margin_fy20"

SAMPLE_DIMS = ("chain", "draw")

MAX_FRACTION = 5.0
"""A ratio beyond +-5.00 (500%) is taken as a percentage typed as a number."""

RHAT_MAX_OK = 1.01
"""R-hat above this triggers a warning (Vehtari et al. 2021)."""

PRIOR_KEYS = (
    "intercept_mu",
    "intercept_sigma",
    "group_sigma",
    "beta_growth_sigma",
    "beta_margin_sigma",
    "residual_sigma",
    "residual_nu",
)
"""Keys of the ``[priors]`` table; see the comments there for the rationale."""

PREDICTION_PARAMS = (
    "intercept_target",
    "beta_growth",
    "beta_margin",
    "sigma",
    "residual_nu",
    "growth_centre",
    "margin_centre",
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


# column -> (check, what is expected, required)
_COLUMNS: dict[str, tuple[Any, str, bool]] = {
    "market_cap_usd_mn": (_positive, "a positive number (USD mn)", True),
    "price_lc": (_positive, "a positive number (local currency)", False),
    "ev_sales_fy21e": (_positive, "a positive multiple (x)", True),
    "ev_sales_fy22e": (_positive, "a positive multiple (x)", True),
    "ps_fy21e": (_positive, "a positive multiple (x)", False),
    "ps_fy22e": (_positive, "a positive multiple (x)", False),
    "sales_cagr_fy20_23e": (_growth, f"a fraction in (-1, {MAX_FRACTION}]", True),
    "eps_cagr_fy20_23e": (_growth, f"a fraction in (-1, {MAX_FRACTION}]", False),
    "gross_margin_fy20": (_unit, "a fraction in [0, 1]", True),
    "fcf_margin_fy20": (_margin, f"a fraction in [-{MAX_FRACTION}, 1]", True),
}

_TARGET_KEYS: dict[str, tuple[Any, str]] = {
    "target_ev_sales": (_positive, "a positive multiple (x)"),
    "sales_cagr": (_growth, f"a fraction in (-1, {MAX_FRACTION}]"),
    "gross_margin": (_unit, "a fraction in [0, 1]"),
    "gross_margin_final": (_unit, "a fraction in [0, 1]"),
}


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as err:
        raise DataFileError(f"{path}: cannot read file ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise DataFileError(f"{path}: not valid TOML ({err})") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_number(path: Path, where: str, value: Any, check: Any, expected: str) -> float:
    if not _is_number(value) or not check(value):
        raise DataFileError(f"{path}: {where}: expected {expected}, got {value!r}")
    return float(value)


def load_peers(path: str | Path) -> xr.Dataset:
    """Load the peer table (default: packaged Figure 69 data) as an xarray Dataset.

    Dim ``peer`` (coordinate = ticker), coordinates ``company`` and ``group``; one
    variable per numeric column (multiples in x, market cap in USD mn, ratios as
    fractions; NaN where the report prints n.a.). ``[meta]`` entries and the
    ``[sensetime]`` reference figures become attrs (the latter prefixed
    ``sensetime_``). Raises a one-line `DataFileError` (a ``ValueError``) naming the
    file, the key and what was expected on an unreadable file or bad content.
    """
    path = Path(path)
    doc = _read_toml(path)

    meta = doc.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("source"), str):
        raise DataFileError(f"{path}: meta.source: expected a [meta] table with a source string")
    rows = doc.get("peer")
    if not isinstance(rows, list) or not rows:
        raise DataFileError(f"{path}: peer: expected a non-empty array of [[peer]] tables")

    columns: dict[str, list[float]] = {col: [] for col in _COLUMNS}
    tickers, companies, groups = [], [], []
    for i, row in enumerate(rows):
        where = f"peer[{i}]"
        if not isinstance(row, dict):
            raise DataFileError(f"{path}: {where}: expected a [[peer]] table, got {row!r}")
        for key in ("company", "ticker"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataFileError(
                    f"{path}: {where}.{key}: expected a non-empty string, got {row.get(key)!r}"
                )
        where = f"peer[{i}] ({row['ticker']})"
        if row["ticker"] in tickers:
            raise DataFileError(f"{path}: {where}.ticker: expected a unique ticker, got a duplicate")
        if row.get("group") not in GROUPS:
            raise DataFileError(
                f"{path}: {where}.group: expected one of {GROUPS}, got {row.get('group')!r}"
            )
        unknown = set(row) - set(_COLUMNS) - {"company", "ticker", "group"}
        if unknown:
            raise DataFileError(f"{path}: {where}: expected only known keys, got {sorted(unknown)}")
        for col, (check, expected, required) in _COLUMNS.items():
            if col not in row and not required:
                columns[col].append(np.nan)
                continue
            if col not in row:
                raise DataFileError(f"{path}: {where}.{col}: expected {expected}, got nothing")
            columns[col].append(_check_number(path, f"{where}.{col}", row[col], check, expected))
        tickers.append(row["ticker"])
        companies.append(row["company"])
        groups.append(row["group"])

    attrs: dict[str, Any] = {"path": str(path)}
    for key, value in meta.items():  # netCDF-friendly attrs: lists joined, dates as text
        if isinstance(value, list):
            value = "\n".join(map(str, value))
        attrs[key] = value if isinstance(value, str | int | float) else str(value)
    sensetime = doc.get("target", {})
    for key, (check, expected) in _TARGET_KEYS.items():
        if key in sensetime:
            _check_number(path, f"target.{key}", sensetime[key], check, expected)
    if "group" in sensetime and sensetime["group"] not in GROUPS:
        raise DataFileError(
            f"{path}: target.group: expected one of {GROUPS}, got {sensetime['group']!r}"
        )
    attrs.update({f"target_{k}": v for k, v in sensetime.items()})

    return xr.Dataset(
        {col: ("peer", np.asarray(vals)) for col, vals in columns.items()},
        coords={"peer": tickers, "company": ("peer", companies), "group": ("peer", groups)},
        attrs=attrs,
    )


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
            ok = ok and math.isfinite(value)
        elif key == "residual_nu":
            ok = ok and value > 0
        else:
            ok = ok and math.isfinite(value) and value > 0
        if not ok:
            expected = "a finite number" if key == "intercept_mu" else "a positive number"
            raise error(f"{where}.{key}: expected {expected}, got {value!r}")
        out[key] = float(value)
    return out


def build_peer_model(
    peers: xr.Dataset,
    priors: Mapping[str, float] | None = None,
    target_group: str | None = None,
) -> pymc.Model:
    """Bayesian regression of log EV/sales FY22E on sales CAGR and gross margin.

    ``peers`` needs variables ``ev_sales_fy22e`` (x), ``sales_cagr_fy20_23e`` and
    ``gross_margin_fy20`` (fractions) and a ``group`` coordinate along ``peer``.
    ``priors`` overrides entries of `load_priors` (see the ``[priors]`` table for the
    rationale). ``target_group`` (default: ``peers.attrs["target_group"]``, else
    ``"china_ai"``) selects the group effect added to the population intercept for
    SenseTime's ``intercept_target``.

    Free variables: ``intercept``, ``group_sigma``, ``group_z`` (dim group),
    ``beta_growth``, ``beta_margin``, ``sigma``. Deterministics carried in the
    posterior for prediction: ``group_effect``, ``group_intercept``,
    ``intercept_target``, ``growth_centre``, ``margin_centre``, ``residual_nu``.
    """
    import pymc as pm
    import pytensor.tensor as pt

    prior = _validate_priors({**load_priors(peers.attrs["path"]), **(priors or {})}, "priors")
    target_group = target_group or peers.attrs.get("target_group", DEFAULT_TARGET_GROUP)
    if target_group not in GROUPS:
        raise ValueError(f"target_group: expected one of {GROUPS}, got {target_group!r}")

    growth = peers[GROWTH].values.astype(float)
    margin = peers[MARGIN].values.astype(float)
    log_multiple = np.log(peers[RESPONSE].values.astype(float))
    group_idx = np.array([GROUPS.index(g) for g in peers["group"].values])

    coords = {"group": list(GROUPS), "peer": [str(p) for p in peers["peer"].values]}
    with pm.Model(coords=coords) as model:
        growth_centre = pm.Deterministic("growth_centre", pt.as_tensor(growth.mean()))
        margin_centre = pm.Deterministic("margin_centre", pt.as_tensor(margin.mean()))
        nu = pm.Deterministic("residual_nu", pt.as_tensor(prior["residual_nu"]))

        intercept = pm.Normal("intercept", prior["intercept_mu"], prior["intercept_sigma"])
        group_sigma = pm.HalfNormal("group_sigma", prior["group_sigma"])
        group_z = pm.Normal("group_z", 0.0, 1.0, dims="group")
        group_effect = pm.Deterministic("group_effect", group_sigma * group_z, dims="group")
        beta_growth = pm.Normal("beta_growth", 0.0, prior["beta_growth_sigma"])
        beta_margin = pm.Normal("beta_margin", 0.0, prior["beta_margin_sigma"])
        sigma = pm.HalfNormal("sigma", prior["residual_sigma"])

        pm.Deterministic("group_intercept", intercept + group_effect, dims="group")
        pm.Deterministic("intercept_target", intercept + group_effect[GROUPS.index(target_group)])

        mu = (
            intercept
            + group_effect[group_idx]
            + beta_growth * (growth - growth_centre)
            + beta_margin * (margin - margin_centre)
        )
        if math.isinf(prior["residual_nu"]):
            pm.Normal("log_ev_sales", mu=mu, sigma=sigma, observed=log_multiple, dims="peer")
        else:
            pm.StudentT("log_ev_sales", nu=nu, mu=mu, sigma=sigma, observed=log_multiple, dims="peer")
    return model


def peer_diagnostics(idata: xr.DataTree, var_names: list[str]) -> dict[str, float]:
    """R-hat max, bulk/tail ESS min over ``var_names`` and the divergence count."""
    import arviz as az

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


def fit_peer_model(
    peers: xr.Dataset,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    nuts_sampler: str = "pymc",
    priors: Mapping[str, float] | None = None,
    target_accept: float = 0.95,
) -> xr.DataTree:
    """Fit `build_peer_model` with NUTS and return the ArviZ 1.x DataTree.

    Diagnostics over the free variables are stored in the root attrs (and warned about
    when R-hat > 1.01 or there are divergences): ``rhat_max``, ``ess_bulk_min``,
    ``ess_tail_min``, ``divergences``, and ``wall_time_s`` (seconds, including
    compilation). The default ``target_accept`` is high because the group sd is
    weakly identified from three groups.
    """
    import pymc as pm

    model = build_peer_model(peers, priors)
    start = time.perf_counter()
    with model:
        idata = pm.sample(
            draws=draws,
            tune=tune,
            chains=chains,
            random_seed=seed,
            nuts_sampler=nuts_sampler,
            target_accept=target_accept,
            progressbar=False,
            compute_convergence_checks=False,
        )
    diagnostics = peer_diagnostics(idata, [rv.name for rv in model.free_RVs])
    diagnostics["wall_time_s"] = time.perf_counter() - start
    idata.attrs.update(diagnostics)
    if diagnostics["rhat_max"] > RHAT_MAX_OK or diagnostics["divergences"] > 0:
        warnings.warn(
            f"peer model: R-hat max {diagnostics['rhat_max']:.3f}, "
            f"{diagnostics['divergences']} divergences",
            stacklevel=2,
        )
    return idata


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
    premium: float | np.ndarray | xr.DataArray | None = None,
    rng: np.random.Generator | int | None = None,
) -> xr.DataArray:
    """Predicted EV/sales FY22E multiple (x) for SenseTime, with residual noise.

    ``posterior``: Dataset of the variables in `PREDICTION_PARAMS`, dims (chain,
    draw) (or the fit's DataTree, whose ``posterior`` group is used).
    ``sales_cagr``, ``gross_margin``: fractions, scalars or DataArrays, typically
    with dims (chain, draw, path). If the predictors have (chain, draw):
    the output has their dims; when the sizes equal the posterior's, draws are
    paired by position, otherwise each predictor (chain, draw) gets a posterior draw
    resampled with replacement by ``rng`` (the same index for all parameters, so
    joint draws stay joint). Otherwise the output has dims (chain, draw, *predictor
    dims) with the posterior's sizes.
    ``premium``: log premium added to the log multiple; a scalar, a DataArray
    (broadcast by dim name) or a 1-D numpy array of draws (resampled with
    replacement per output element).

    Per element: ``exp(intercept_target + beta_growth*(g - growth_centre)
    + beta_margin*(m - margin_centre) + sigma*t_nu + premium)``.
    """
    rng = np.random.default_rng(rng)
    post = posterior["posterior"].to_dataset() if isinstance(posterior, xr.DataTree) else posterior
    missing = [v for v in PREDICTION_PARAMS if v not in post]
    if missing:
        raise ValueError(f"posterior: expected variables {PREDICTION_PARAMS}, missing {missing}")
    params = post[list(PREDICTION_PARAMS)]
    params = params.drop_vars([c for c in SAMPLE_DIMS if c in params.coords])

    growth, margin = xr.broadcast(
        _as_array(sales_cagr, "sales_cagr"), _as_array(gross_margin, "gross_margin")
    )
    present = [d for d in SAMPLE_DIMS if d in growth.dims]
    if len(present) == len(SAMPLE_DIMS):
        out_dims = growth.dims
        target = tuple(growth.sizes[d] for d in SAMPLE_DIMS)
        if target != tuple(params.sizes[d] for d in SAMPLE_DIMS):
            n_post = params.sizes["chain"] * params.sizes["draw"]
            pick = rng.integers(0, n_post, size=target)
            params = xr.Dataset(
                {
                    v: (SAMPLE_DIMS, params[v].transpose(*SAMPLE_DIMS).values.reshape(n_post)[pick])
                    for v in params.data_vars
                }
            )
    elif present:
        raise ValueError(f"predictors: expected both dims {SAMPLE_DIMS} or neither, got {growth.dims}")
    else:
        out_dims = SAMPLE_DIMS + growth.dims

    log_mu = (
        params["intercept_target"]
        + params["beta_growth"] * (growth - params["growth_centre"])
        + params["beta_margin"] * (margin - params["margin_centre"])
    ).transpose(*out_dims)
    nu = params["residual_nu"].broadcast_like(log_mu).transpose(*out_dims).values
    log_multiple = log_mu + params["sigma"] * xr.DataArray(_standard_t(nu, rng), dims=out_dims)

    if isinstance(premium, np.ndarray) and premium.ndim == 1:
        log_multiple = log_multiple + xr.DataArray(rng.choice(premium, size=log_mu.shape), dims=out_dims)
    elif premium is not None:
        log_multiple = log_multiple + _as_array(premium, "premium")

    result = np.exp(log_multiple.transpose(*out_dims))
    result.name = RESPONSE
    result.attrs["units"] = "x (EV/sales FY22E)"
    return result


def simulate_peer_data(
    n_per_group: int | Mapping[str, int],
    params: Mapping[str, Any],
    rng: np.random.Generator | int | None = None,
) -> xr.Dataset:
    """Simulate a peer table from the regression at known parameters (for recovery tests).

    ``params``: ``intercept``, ``group_effect`` (mapping group -> log effect),
    ``beta_growth``, ``beta_margin`` (per 1.00 of the fraction), ``sigma``,
    ``residual_nu`` (inf = Normal); optional ``growth_mean``, ``growth_sd``,
    ``margin_mean``, ``margin_sd`` for the Normal predictor draws (default: the
    means/sds of the packaged peers; margins are clipped to [0, 1]).
    Predictors are centred on their sample means, as `build_peer_model` does.
    Returns a Dataset with the variables the model needs and the ``group`` coordinate.
    """
    rng = np.random.default_rng(rng)
    counts = n_per_group if isinstance(n_per_group, Mapping) else dict.fromkeys(GROUPS, n_per_group)
    groups = np.concatenate([np.full(int(counts.get(g, 0)), g) for g in GROUPS])
    n = groups.size
    if any(k not in params for k in ("growth_mean", "growth_sd", "margin_mean", "margin_sd")):
        real = load_peers()
        defaults = {
            "growth_mean": float(real[GROWTH].mean()),
            "growth_sd": float(real[GROWTH].std(ddof=1)),
            "margin_mean": float(real[MARGIN].mean()),
            "margin_sd": float(real[MARGIN].std(ddof=1)),
        }
        params = {**defaults, **params}
    growth = rng.normal(params["growth_mean"], params["growth_sd"], n)
    margin = np.clip(rng.normal(params["margin_mean"], params["margin_sd"], n), 0.0, 1.0)
    effect = np.array([params["group_effect"][g] for g in groups])
    log_mu = (
        params["intercept"]
        + effect
        + params["beta_growth"] * (growth - growth.mean())
        + params["beta_margin"] * (margin - margin.mean())
    )
    noise = _standard_t(np.full(n, float(params["residual_nu"])), rng)
    return xr.Dataset(
        {
            RESPONSE: ("peer", np.exp(log_mu + params["sigma"] * noise)),
            GROWTH: ("peer", growth),
            MARGIN: ("peer", margin),
        },
        coords={"peer": [f"SIM{i:04d}" for i in range(n)], "group": ("peer", groups)},
    )
