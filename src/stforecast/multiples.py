"""The EV/sales multiple on each path: the report's judgement or the peer regression.

Two methods (``valuation.method`` in the priors file):

* ``"report"``: the multiple is the driver model's ``ev_sales_multiple`` (a prior around the
  report's multiple), the same whatever the path's growth;
* ``"peer-regression"``: the multiple is predicted by the company's peer regression
  (``stforecast.peers``) from what the market can see on that path AT THE VALUATION DATE (the
  end of the valuation year): the revenue CAGR it can expect then, the valuation year's gross
  margin and FCF margin; with the regression's parameter and residual uncertainty, times
  ``exp(peer_premium)`` (the company's premium to its peer line) and ``exp(sector_rerating)``
  (how far the whole sector's multiples move between the peers' price date and the valuation
  date), both priors in the priors file.

No look-ahead. The peers' growth predictor is a sales CAGR from the last history year to the
last forecast year as the market forecast it. On a path, the years up to the valuation year
are known at the valuation date; the later years are not, so the CAGR uses the revenue the
market could expect for them: ``expected_growth`` (per segment, from ``simulate.driver_paths``:
the driver processes' conditional expectation of the log growth after the valuation year given
the path's parameters and its growth up to the valuation year) applied to the path's
valuation-year revenue (after any shock). Changing a path's revenue after the valuation year
does not change its multiple (a test checks it). Without ``expected_growth`` (a point case such
as the report's own, whose forecast IS its expectation) the realised CAGR is used.

No clip. A path whose predictors lie outside the peers' observed ranges gets the regression's
line with the slopes' full posterior uncertainty (whose spread grows with the distance from the
peers' centre) and the Student-t residual; ``peer_outside_range`` (1 = at least one predictor
outside the peers' range) says how often that happens.

Both methods are computed on every path (``ev_sales_multiple_report`` /
``ev_sales_multiple_peer`` and ``target_price_report`` / ``target_price_peer``);
``ev_sales_multiple`` and ``target_price`` are the chosen method's. A shock on the
``ev_sales_multiple`` channel (e.g. a narrower investor base) multiplies both. The peer
regression's residual noise, its posterior draw per path, the premium and the re-rating are
fixed by ``seed``, so every scenario sees the same ones (common random numbers): a scenario
changes the peer multiple only through the predictors and its shock channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import xarray as xr

from .company import Company
from .engine import valuation
from .named import without_attrs
from .peers import PREDICTION_PARAMS, PREDICTORS, predict_multiple, regression
from .priors import Prior
from .registry import METHOD_VARIABLES, SAMPLE_DIMS, VALUATION_METHODS as METHODS

#: Per-path predictor variables, in the order of ``peers.PREDICTORS``.
PREDICTOR_VARIABLES = ("sales_cagr", "gross_margin_valuation", "fcf_margin_valuation")


@dataclass(frozen=True)
class PeerRelation:
    """A fitted peer regression (posterior of ``PREDICTION_PARAMS``, dims chain, draw), the
    premium and sector re-rating priors (log factors), and the seed that fixes their random
    numbers across scenarios."""

    posterior: xr.Dataset
    premium: Prior
    seed: int
    rerating: Prior | None = None
    #: The peers' observed ranges of each predictor (role -> (min, max)): not a clip, only
    #: what ``peer_outside_range`` is measured against.
    ranges: dict = field(default_factory=dict, compare=False)
    cache: dict = field(default_factory=dict, compare=False, repr=False)
    #: ``(start, stop, n_chains)``: the relation on the chains ``start:stop`` of ``n_chains``
    #: (``Valuation.on_chains``); None for all of them.
    chains: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Valuation:
    method: str = "report"
    peers: PeerRelation | None = None

    def on_chains(self, start: int, stop: int, n_chains: int) -> Valuation:
        """This valuation for the paths of the chains ``start:stop`` of ``n_chains`` (a
        scenario simulated in parts): the peer regression's random numbers on those paths are
        the ones the whole gets there (its draws for all chains, sliced), so the parts put
        together are the whole, number for number."""
        if self.peers is None:
            return self
        return replace(self, peers=replace(self.peers, chains=(start, stop, n_chains)))

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"valuation method: expected one of {METHODS}, got {self.method!r}")
        if self.method == "peer-regression" and self.peers is None:
            raise ValueError("valuation method 'peer-regression' needs a fitted peer relation")


def sales_cagr(drivers: xr.Dataset, company: Company) -> xr.DataArray:
    """Revenue CAGR from the last history year to the last forecast year (fraction per year),
    as the market could expect it at the end of the valuation year (see the module docstring):
    realised revenue up to the valuation year, then ``drivers["expected_growth"]`` (per
    segment: expected log growth from the valuation year to the last forecast year). Without
    ``expected_growth``, the drivers' own last-year revenue (a point case)."""
    segments = drivers["segment_revenue"]
    start = company.last_history_revenue()
    n_years = int(segments.sizes["year"])
    if "expected_growth" in drivers:
        at_valuation = segments.sel(year=company.market.valuation_year, drop=True)
        final = (at_valuation * np.exp(drivers["expected_growth"])).sum("segment", skipna=False)
        basis = f"expected at the end of {company.market.valuation_year}"
    else:
        final = segments.isel(year=-1, drop=True).sum("segment", skipna=False)
        basis = "the drivers' own forecast (no expected_growth given)"
    cagr = without_attrs((final / start) ** (1.0 / n_years) - 1.0)
    return cagr.assign_attrs(period=f"{company.last_history_year}-{company.last_forecast_year}",
                             basis=basis)


def fcf_margin(statements: xr.Dataset, company: Company) -> xr.DataArray:
    """Free cash flow / revenue in the valuation year (fraction) from the engine's output."""
    year = company.market.valuation_year
    return (statements["free_cash_flow"].sel(year=year, drop=True)
            / statements["revenue"].sel(year=year, drop=True))


def _log_terms(relation: PeerRelation, dims: list[str], shape: tuple[int, ...]):
    """Per path: the log multiple at zero predictors, and one slope per predictor.

    ``predict_multiple`` is linear in the predictors on the log scale, and its random numbers
    (posterior draw per path, residual noise, premium, re-rating) are fixed by the relation's
    seed, so log m = a + sum_k b_k x_k exactly, with a and b_k read off four predictions.
    Cached per shape: every scenario reuses them (and gets the same noise).
    """
    if relation.chains is not None:  # a part: the whole's numbers, sliced (cache shared)
        start, stop, n_chains = relation.chains
        if dims[0] != "chain" or shape[0] != stop - start:
            raise ValueError(f"peer relation on chains {start}:{stop}: paths of shape {shape} "
                             f"over {dims}")
        a, slopes = _log_terms(replace(relation, chains=None), dims, (n_chains, *shape[1:]))
        return a[start:stop], [b[start:stop] for b in slopes]
    key = (tuple(dims), shape)
    if key not in relation.cache:
        log_factor = relation.premium.draw(shape, np.random.default_rng([relation.seed, 1]))
        if relation.rerating is not None:
            log_factor = log_factor + relation.rerating.draw(
                shape, np.random.default_rng([relation.seed, 3]))
        premium = xr.DataArray(log_factor, dims=dims)

        def log_predict(*x: float) -> np.ndarray:
            zero = xr.DataArray(np.zeros(shape), dims=dims)
            out = predict_multiple(relation.posterior, *(zero + v for v in x), premium=premium,
                                   rng=np.random.default_rng([relation.seed, 2]))
            return np.log(out.transpose(*dims).values)

        a = log_predict(0.0, 0.0, 0.0)
        slopes = [log_predict(*np.eye(len(PREDICTORS))[k]) - a for k in range(len(PREDICTORS))]
        relation.cache[key] = (a, slopes)
    return relation.cache[key]


def peer_multiple(predictors: dict[str, xr.DataArray], relation: PeerRelation,
                  company: Company) -> xr.DataArray:
    """The peer-regression multiple per path (x, before any shock on the multiple).

    ``predictors``: ``PREDICTOR_VARIABLES`` -> per-path values (see `peer_predictors`).
    """
    values = xr.broadcast(*(predictors[name] for name in PREDICTOR_VARIABLES))
    dims = [d for d in SAMPLE_DIMS if d in values[0].dims]
    values = [v.transpose(*dims) for v in values]
    a, slopes = _log_terms(relation, dims, values[0].shape)
    log_m = a + sum(b * v.values for b, v in zip(slopes, values))
    multiple = values[0].copy(data=np.exp(log_m))
    multiple.name = "ev_sales_multiple_peer"
    multiple.attrs = {"units": f"x (EV/sales {company.market.valuation_year})"}
    return multiple


def peer_predictors(drivers: xr.Dataset, statements: xr.Dataset, company: Company,
                    cagr: xr.DataArray | None = None) -> dict[str, xr.DataArray]:
    """The regression's predictors per path, all known at the valuation date: the expected
    sales CAGR (``cagr`` when already computed: ``sales_cagr``), and the valuation year's gross
    margin and FCF margin."""
    year = company.market.valuation_year
    return {"sales_cagr": sales_cagr(drivers, company) if cagr is None else cagr,
            "gross_margin_valuation": drivers["gross_margin"].sel(year=year, drop=True),
            "fcf_margin_valuation": fcf_margin(statements, company)}


def outside_range(predictors: dict[str, xr.DataArray], relation: PeerRelation) -> xr.DataArray:
    """1.0 where at least one predictor lies outside the peers' observed range, else 0.0."""
    out = xr.DataArray(False)
    for role, name in zip(PREDICTORS, PREDICTOR_VARIABLES):
        lo, hi = relation.ranges.get(role, (-np.inf, np.inf))
        out = out | (predictors[name] < lo) | (predictors[name] > hi)
    return without_attrs(out.astype(float).rename("peer_outside_range"))  # not the CAGR's


def set_multiples(drivers: xr.Dataset, method: Valuation, company: Company,
                  statements: Mapping[str, xr.DataArray] | None = None) -> xr.Dataset:
    """Drivers with ``ev_sales_multiple`` set by ``method`` and both methods' multiples kept.

    ``drivers["ev_sales_multiple"]`` on entry is the report method's (after any shock);
    ``drivers["multiple_shock_factor"]``, when present, is the shocks' factor on the multiple.
    ``statements``: the engine's statements on these drivers (its output, or its
    ``engine.Accounts`` before the valuation; only the valuation year's FCF margin is read);
    needed with a peer relation.
    """
    cagr = sales_cagr(drivers, company)
    out = drivers.assign(ev_sales_multiple_report=drivers["ev_sales_multiple"], sales_cagr=cagr)
    if method.peers is None:
        return out
    if statements is None:
        raise ValueError("set_multiples: the peer regression needs the engine's statements "
                         "(FCF margin at the valuation year)")
    predictors = peer_predictors(drivers, statements, company, cagr)
    factor = drivers.get("multiple_shock_factor", xr.DataArray(1.0))
    peer = peer_multiple(predictors, method.peers, company) * factor
    out = out.assign(ev_sales_multiple_peer=peer,
                     fcf_margin_valuation=predictors["fcf_margin_valuation"],
                     peer_outside_range=outside_range(predictors, method.peers))
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
                      peers: xr.Dataset | None = None,
                      rerating: Prior | None = None) -> PeerRelation:
    """A ``PeerRelation`` from ``peers.fit_peer_model``'s DataTree (or posterior Dataset);
    ``peers`` (the fitted data) sets the ranges ``peer_outside_range`` is measured against;
    ``rerating``: the sector re-rating prior (log factor), None for none."""
    post = peer_idata["posterior"].to_dataset() if isinstance(peer_idata, xr.DataTree) \
        else peer_idata
    ranges = {}
    if peers is not None:
        for role, col in regression(peers).predictors().items():
            values = peers[col].values.astype(float)
            ranges[role] = (float(np.nanmin(values)), float(np.nanmax(values)))
    return PeerRelation(post[list(PREDICTION_PARAMS)], premium, seed, rerating, ranges)
