"""The EV/sales multiple on each path: the report's judgement or the peer regression.

Two methods (``valuation.method`` in the priors file):

* ``"report"``: the multiple is the driver model's ``ev_sales_multiple`` (a prior around the
  report's multiple), the same whatever the path's growth;
* ``"peer-regression"``: the multiple is predicted by the company's peer regression
  (``stforecast.peers``) from the path's own revenue CAGR (last history year to last forecast
  year) and its valuation-year gross margin, with the regression's parameter and residual
  uncertainty, times ``exp(peer_premium)`` (a prior in the priors file). A path or scenario
  that grows more slowly gets a lower multiple, as markets do. The regression is not
  extrapolated: a path's CAGR and margin are clipped to the peers' observed ranges, so a path
  growing 100% a year gets the multiple of the fastest-growing peer's growth, not
  exp(slope x 100%).

Both are computed on every path (``ev_sales_multiple_report`` / ``ev_sales_multiple_peer``
and ``target_price_report`` / ``target_price_peer``); ``ev_sales_multiple`` and
``target_price`` are the chosen method's. A shock on the ``ev_sales_multiple`` channel
(e.g. a narrower investor base) multiplies both. The peer regression's residual noise, its
posterior draw per path and the premium are fixed by ``seed``, so every scenario sees the same
ones (common random numbers): a scenario changes the peer multiple only through growth, margin
and its shock channel.

The peers' growth and margin columns are the ones their file's ``[regression]`` names (the
peers' gross margin may be from an earlier year than the valuation year); the company's margin
is taken at the valuation year, so that a margin shock reaches the multiple.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .company import Company
from .engine import valuation
from .peers import PREDICTION_PARAMS, predict_multiple, regression
from .priors import Prior
from .registry import METHOD_VARIABLES, SAMPLE_DIMS, VALUATION_METHODS as METHODS


@dataclass(frozen=True)
class PeerRelation:
    """A fitted peer regression (posterior of ``PREDICTION_PARAMS``, dims chain, draw), the
    premium prior, and the seed that fixes its random numbers across scenarios."""

    posterior: xr.Dataset
    premium: Prior
    seed: int
    #: The peers' observed ranges of CAGR and gross margin: the regression is not extrapolated
    #: beyond them (a path outside gets the multiple at the nearest edge).
    growth_range: tuple[float, float] = (-np.inf, np.inf)
    margin_range: tuple[float, float] = (-np.inf, np.inf)
    cache: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Valuation:
    method: str = "report"
    peers: PeerRelation | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"valuation method: expected one of {METHODS}, got {self.method!r}")
        if self.method == "peer-regression" and self.peers is None:
            raise ValueError("valuation method 'peer-regression' needs a fitted peer relation")


def sales_cagr(drivers: xr.Dataset, company: Company) -> xr.DataArray:
    """Revenue CAGR from the last history year to the last forecast year (fraction per year)."""
    segments = drivers["segment_revenue"]
    last = segments.isel(year=-1, drop=True).sum("segment", skipna=False)
    start = company.last_history_revenue()
    cagr = (last / start) ** (1.0 / int(segments.sizes["year"])) - 1.0
    return cagr.assign_attrs(period=f"{company.last_history_year}-{company.last_forecast_year}")


def _log_terms(relation: PeerRelation, dims: list[str], shape: tuple[int, ...]):
    """Per path: the log multiple at zero growth and margin, and the two slopes.

    ``predict_multiple`` is linear in growth and margin on the log scale, and its random numbers
    (posterior draw per path, residual noise, premium) are fixed by the relation's seed, so
    log m = a + b_growth * g + b_margin * m exactly, with a, b read off three predictions.
    Cached per shape: every scenario reuses them (and gets the same noise).
    """
    key = (tuple(dims), shape)
    if key not in relation.cache:
        premium = xr.DataArray(relation.premium.frozen().rvs(
            size=shape, random_state=np.random.default_rng([relation.seed, 1])), dims=dims)

        def log_predict(g: float, m: float) -> np.ndarray:
            x = xr.DataArray(np.zeros(shape), dims=dims)
            out = predict_multiple(relation.posterior, x + g, x + m, premium=premium,
                                   rng=np.random.default_rng([relation.seed, 2]))
            return np.log(out.transpose(*dims).values)

        a = log_predict(0.0, 0.0)
        relation.cache[key] = (a, log_predict(1.0, 0.0) - a, log_predict(0.0, 1.0) - a)
    return relation.cache[key]


def peer_multiple(drivers: xr.Dataset, relation: PeerRelation, company: Company,
                  growth: xr.DataArray | None = None) -> xr.DataArray:
    """The peer-regression multiple per path (x, before any shock on the multiple).

    ``growth``: the paths' ``sales_cagr`` when already computed.
    """
    growth = sales_cagr(drivers, company) if growth is None else growth
    margin = drivers["gross_margin"].sel(year=company.market.valuation_year, drop=True)
    growth, margin = xr.broadcast(growth, margin)
    dims = [d for d in SAMPLE_DIMS if d in growth.dims]
    growth = growth.transpose(*dims).clip(*relation.growth_range)
    margin = margin.transpose(*dims).clip(*relation.margin_range)
    a, b_growth, b_margin = _log_terms(relation, dims, growth.shape)
    multiple = growth.copy(data=np.exp(a + b_growth * growth.values + b_margin * margin.values))
    multiple.name = "ev_sales_multiple_peer"
    multiple.attrs = {"units": f"x (EV/sales {company.market.valuation_year})"}
    return multiple


def set_multiples(drivers: xr.Dataset, method: Valuation, company: Company) -> xr.Dataset:
    """Drivers with ``ev_sales_multiple`` set by ``method`` and both methods' multiples kept.

    ``drivers["ev_sales_multiple"]`` on entry is the report method's (after any shock);
    ``drivers["multiple_shock_factor"]``, when present, is the shocks' factor on the multiple.
    """
    growth = sales_cagr(drivers, company)
    out = drivers.assign(ev_sales_multiple_report=drivers["ev_sales_multiple"],
                         sales_cagr=growth)
    if method.peers is None:
        return out
    factor = drivers.get("multiple_shock_factor", xr.DataArray(1.0))
    peer = peer_multiple(drivers, method.peers, company, growth) * factor
    out = out.assign(ev_sales_multiple_peer=peer)
    if method.method == "peer-regression":
        out["ev_sales_multiple"] = peer
    return out


def method_target_prices(statements: xr.Dataset, drivers: xr.Dataset,
                         company: Company) -> dict[str, xr.DataArray]:
    """``target_price_report`` and (with peers) ``target_price_peer`` per path."""
    out = {}
    for method, (tp_name, multiple) in METHOD_VARIABLES.items():
        if multiple in drivers:
            d = xr.Dataset({"ev_sales_multiple": drivers[multiple]})
            tp = valuation(d, statements, statements, company.market)["target_price"]
            tp.attrs = {"units": f"{company.price_currency} per share", "valuation_method": method}
            out[tp_name] = tp
    return out


def relation_from_fit(peer_idata, premium: Prior, seed: int,
                      peers: xr.Dataset | None = None) -> PeerRelation:
    """A ``PeerRelation`` from ``peers.fit_peer_model``'s DataTree (or posterior Dataset);
    ``peers`` (the fitted data) sets the ranges the regression is not extrapolated beyond."""
    post = peer_idata["posterior"].to_dataset() if isinstance(peer_idata, xr.DataTree) \
        else peer_idata
    ranges = {}
    if peers is not None:
        reg = regression(peers)
        for key, var in (("growth_range", reg.growth), ("margin_range", reg.margin)):
            values = peers[var].values.astype(float)
            ranges[key] = (float(np.nanmin(values)), float(np.nanmax(values)))
    return PeerRelation(post[list(PREDICTION_PARAMS)], premium, seed, **ranges)
