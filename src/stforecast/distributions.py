"""Quantiles and random draws of the priors' families, without ``scipy.stats``.

The numbers are scipy.stats' own: a frozen distribution's ``ppf`` is its standard quantile
function (a ``scipy.special`` function) times the scale plus the location, and its ``rvs`` the
standard variates numpy's ``Generator`` draws, times the scale plus the location; this module
does the same operations in the same order, so a quantile is the same float and a draw consumes
the same random numbers and gives the same floats (``tests/test_priors.py`` compares every
family with scipy.stats). Importing ``scipy.stats`` costs about 0.4 s, a large part of a
command that re-simulates saved results; ``Prior.frozen`` still gives the scipy.stats object
for everything else (densities, moments, plots). Pure numpy / scipy.special.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special
from scipy.special import _ufuncs  # the Beta quantile scipy.stats.beta.ppf calls

#: Per family: the standard distribution's support (before scale and location).
SUPPORT = {"Normal": (-math.inf, math.inf), "StudentT": (-math.inf, math.inf),
           "LogNormal": (0.0, math.inf), "Gamma": (0.0, math.inf),
           "HalfNormal": (0.0, math.inf), "Exponential": (0.0, math.inf),
           "Beta": (0.0, 1.0), "Uniform": (0.0, 1.0)}


def _standard(dist: str, p: dict[str, float]):
    """(shape-only quantile function, standard draws given (size, rng), location, scale) as
    scipy.stats parameterises ``dist`` (``priors.Prior.frozen``)."""
    match dist:
        case "Normal":
            return special.ndtri, lambda size, rng: rng.standard_normal(size), p["mu"], p["sigma"]
        case "StudentT":
            nu = p["nu"]
            return (lambda q: special.stdtrit(nu, q),
                    lambda size, rng: rng.standard_t(nu, size=size), p["mu"], p["sigma"])
        case "LogNormal":
            s = p["sigma"]
            return (lambda q: np.exp(s * special.ndtri(q)),
                    lambda size, rng: np.exp(s * rng.standard_normal(size)), 0.0,
                    math.exp(p["mu"]))
        case "Gamma":
            a = p["alpha"]
            return (lambda q: special.gammaincinv(a, q),
                    lambda size, rng: rng.standard_gamma(a, size), 0.0, 1.0 / p["beta"])
        case "HalfNormal":
            return (lambda q: special.ndtri((1 + q) / 2.0),
                    lambda size, rng: abs(rng.standard_normal(size=size)), 0.0, p["sigma"])
        case "Exponential":
            return (lambda q: -special.log1p(-q),
                    lambda size, rng: rng.standard_exponential(size), 0.0, 1.0 / p["lam"])
        case "Beta":
            a, b = p["alpha"], p["beta"]
            return (lambda q: _ufuncs._beta_ppf(q, a, b),
                    lambda size, rng: rng.beta(a, b, size), 0.0, 1.0)
        case "Uniform":
            return (lambda q: q, lambda size, rng: rng.uniform(0.0, 1.0, size), p["lower"],
                    p["upper"] - p["lower"])
    raise ValueError(f"unknown family {dist!r}")


def quantile(dist: str, params: dict[str, float], q):
    """The quantile function of ``dist`` at ``q`` (scipy.stats' ``ppf``: NaN outside [0, 1],
    the support's ends at 0 and 1); a float for a scalar ``q``."""
    if dist == "LogitNormal":  # logit(X) ~ Normal(mu, sigma)
        return 1.0 / (1.0 + np.exp(-quantile("Normal", params, q)))
    ppf, _, loc, scale = _standard(dist, params)
    q = np.asarray(q, dtype=float)
    lo, hi = SUPPORT[dist]
    out = np.full(q.shape, np.nan)
    out[q == 0] = lo * scale + loc
    out[q == 1] = hi * scale + loc
    inside = (0 < q) & (q < 1)
    if inside.any():
        out[inside] = ppf(q[inside]) * scale + loc
    return out[()] if out.ndim == 0 else out


def draw(dist: str, params: dict[str, float], size, rng: np.random.Generator) -> np.ndarray:
    """``size`` random draws of ``dist`` from ``rng`` (scipy.stats' ``rvs(size=size,
    random_state=rng)``: the same random numbers consumed, the same values)."""
    if dist == "LogitNormal":
        return 1.0 / (1.0 + np.exp(-draw("Normal", params, size, rng)))
    _, rvs, loc, scale = _standard(dist, params)
    if scale == 0:
        return loc * np.ones(size, "d")
    out = rvs(size, rng) * scale + loc
    return out[()] if size == () else out


def t_cdf(nu: float, mu: float, sigma: float, x: float) -> float:
    """P(T <= x) for T ~ Student-t(nu, mu, sigma) (scipy.stats.t's ``cdf`` at a finite x)."""
    return float(special.stdtr(nu, (x - mu) / sigma))


def t_quantile(nu: float, mu: float, sigma: float, q) -> np.ndarray:
    """The quantile function of Student-t(nu, mu, sigma) at ``q`` (scipy.stats.t's ``ppf``)."""
    return quantile("StudentT", {"nu": nu, "mu": mu, "sigma": sigma}, q)


def mean(dist: str, params: dict[str, float]) -> float | None:
    """The mean of ``dist`` as scipy.stats computes it (the same float), for the families whose
    mean scipy computes in closed form: Normal, StudentT (nu > 1), Beta, Gamma, Exponential,
    Uniform; None for the others (``Prior.mean`` then asks scipy.stats)."""
    p = params
    match dist:
        case "Normal":
            return float(p["mu"])
        case "StudentT" if p["nu"] > 1:
            return 0.0 * p["sigma"] + p["mu"]
        case "Beta":
            return p["alpha"] * 1.0 / (p["alpha"] + p["beta"]) * 1.0 + 0.0
        case "Gamma":
            return float(p["alpha"]) * (1.0 / p["beta"]) + 0.0
        case "Exponential":
            return 1.0 * (1.0 / p["lam"]) + 0.0
        case "Uniform":
            return 0.5 * (p["upper"] - p["lower"]) + p["lower"]
    return None
