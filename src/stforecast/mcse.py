"""Monte Carlo standard errors for posterior predictive summaries (pure numpy).

Posterior predictive draws are shaped ``(chain, draw, path)``: several simulated
paths share one posterior draw, and draws are autocorrelated along each chain.
Every estimator here is a plain average (or quantile) over *all* elements, and
its Monte Carlo standard error (MCSE) is computed from the per-``(chain, draw)``
means over ``path``, so that both sources of dependence are accounted for:

    estimate = mean(x)                         (over chain, draw and path)
    m[c, d]  = mean(x[c, d, :])                (per-draw means)
    MCSE     = sd(m) / sqrt(ess(m))

``ess`` is the rank-free split-chain effective sample size with Geyer's initial
monotone sequence (Vehtari, Gelman, Simpson, Carpenter & Buerkner 2021, "Rank-
normalization, folding, and localization"; Stan's / ArviZ's ``ess_mean``), with
autocovariances from the FFT.

Units: an MCSE has the units of its estimate (RMB mn for line items, HKD for
``target_price_hkd``, a fraction for probabilities).

This module imports numpy only (no arviz / pymc / pytensor / scipy), because it
sits on the fast ``stforecast query`` path.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ess", "mcse_mean", "mcse_quantile", "mcse_sd", "probability"]

def _autocov(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance of each row of ``x`` (chain, draw), lags 0..draw-1, by FFT."""
    n = x.shape[1]
    centred = x - x.mean(axis=1, keepdims=True)
    n_fft = 1 << int(np.ceil(np.log2(2 * n)))  # zero padding: no circular wrap-around
    spec = np.fft.rfft(centred, n=n_fft, axis=1)
    acov = np.fft.irfft(spec * np.conjugate(spec), n=n_fft, axis=1)[:, :n]
    return acov / n


def _split_chains(x: np.ndarray) -> np.ndarray:
    """Split each chain in two halves (dropping the middle draw if odd)."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def ess(x: np.ndarray) -> float:
    """Effective sample size of the mean of ``x`` shaped (chain, draw).

    Split chains, FFT autocovariance, Geyer's initial positive sequence made
    monotone; tau is floored at ``1 / log10(n)`` as in Stan. Returns ``nan`` for
    fewer than 4 draws or non-finite input and ``n = chain * draw`` for constant
    input (whose MCSE is 0 anyway).
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"ess expects an array shaped (chain, draw), got shape {x.shape}")
    if x.shape[1] < 4 or x.shape[0] < 1 or not np.all(np.isfinite(x)):
        return float("nan")
    if np.ptp(x) < np.finfo(float).resolution * max(1.0, float(np.max(np.abs(x)))):
        return float(x.size)

    x = _split_chains(x)  # with an odd draw count the middle draw is dropped, as in Stan
    n_chain, n_draw = x.shape
    n_total = x.size
    acov = _autocov(x)
    mean_acov = acov.mean(axis=0)  # average over chains, per lag
    within = mean_acov[0] * n_draw / (n_draw - 1.0)  # W: mean within-chain variance
    var_plus = within * (n_draw - 1.0) / n_draw
    if n_chain > 1:
        var_plus += np.var(x.mean(axis=1), ddof=1)
    rho = 1.0 - (within - mean_acov) / var_plus  # combined autocorrelation, per lag

    # Geyer's initial positive sequence: sum pairs (rho[2k] + rho[2k+1]) while > 0.
    rho_t = np.zeros(n_draw)
    rho_t[0] = 1.0
    rho_t[1] = rho[1]
    rho_even, rho_odd = 1.0, rho[1]
    t = 1
    while t < n_draw - 3 and rho_even + rho_odd > 0.0:
        rho_even, rho_odd = rho[t + 1], rho[t + 2]
        if rho_even + rho_odd >= 0.0:
            rho_t[t + 1], rho_t[t + 2] = rho_even, rho_odd
        t += 2
    max_t = t - 2
    if rho_even > 0.0:
        rho_t[max_t + 1] = rho_even
    # Initial monotone sequence: pair sums must not increase.
    t = 1
    while t <= max_t - 2:
        if rho_t[t + 1] + rho_t[t + 2] > rho_t[t - 1] + rho_t[t]:
            rho_t[t + 1] = rho_t[t + 2] = (rho_t[t - 1] + rho_t[t]) / 2.0
        t += 2

    tau = -1.0 + 2.0 * rho_t[: max_t + 1].sum() + rho_t[max_t + 1 : max_t + 2].sum()
    tau = max(tau, 1.0 / np.log10(n_total))
    out = n_total / tau
    return float(out) if np.isfinite(out) else float("nan")


def _per_draw(x: np.ndarray) -> np.ndarray:
    """Per-(chain, draw) means over ``path`` (identity for 2-D input)."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 3:
        return x.mean(axis=2)
    if x.ndim == 2:
        return x
    raise ValueError(f"expected an array shaped (chain, draw[, path]), got shape {x.shape}")


def mcse_mean(x: np.ndarray) -> float:
    """MCSE of ``mean(x)`` for ``x`` shaped (chain, draw, path) or (chain, draw).

    ``sd(m) / sqrt(ess(m))`` with ``m`` the per-draw means over ``path``.
    """
    m = _per_draw(x)
    sd = float(np.std(m, ddof=1)) if m.size > 1 else float("nan")
    if sd == 0.0:
        return 0.0
    return sd / np.sqrt(ess(m))


def mcse_sd(x: np.ndarray) -> float:
    """MCSE of ``sd(x)`` (ddof=0, all elements) by the delta method.

    With ``y = (x - mean(x))**2``: ``var = mean(y)`` and
    ``MCSE(sd) = MCSE(mean(y)) / (2 sd)``.
    """
    x = np.asarray(x, dtype=float)
    sd = float(np.std(x))
    if sd == 0.0:
        return 0.0
    return mcse_mean((x - x.mean()) ** 2) / (2.0 * sd)


def mcse_quantile(x: np.ndarray, q: float) -> tuple[float, float]:
    """Quantile ``q`` of all elements of ``x`` and its MCSE: ``(estimate, mcse)``.

    The estimate is ``numpy.quantile`` (linear interpolation) over all elements.
    The MCSE follows ArviZ's Beta-interval approach: with ``I = (x <= estimate)``,
    the Monte Carlo variance of the empirical cdf at the estimate is
    ``v = mcse_mean(I) ** 2`` (per-draw means of ``I``, so autocorrelation and
    shared draws count), i.e. an effective size ``ess_q = q (1 - q) / v``. The
    cdf value is then Beta(ess_q q + 1, ess_q (1 - q) + 1) distributed; its
    +-1 sd interval [a, b] (normal approximation of the Beta, so no scipy) is
    mapped back through the order statistics, and
    ``MCSE = (x_(ceil(b N)) - x_(floor(a N))) / 2``.
    """
    x = np.asarray(x, dtype=float)
    flat = x.ravel()
    n = flat.size
    estimate = float(np.quantile(flat, q))
    indicator = (x <= estimate).astype(float)
    se_cdf = mcse_mean(indicator)
    if not np.isfinite(se_cdf):
        return estimate, float("nan")
    n_cap = n * max(1.0, np.log10(n))  # as ess: at most n / (1 / log10 n)
    ess_q = n_cap if se_cdf == 0.0 else min(q * (1.0 - q) / se_cdf**2, n_cap)
    alpha, beta = ess_q * q + 1.0, ess_q * (1.0 - q) + 1.0
    mean = alpha / (alpha + beta)
    sd = np.sqrt(alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1.0)))
    lo, hi = mean - sd, mean + sd  # +-1 sd interval of the cdf value
    i_lo = int(np.floor(max(lo * n - 1.0, 0.0)))
    i_hi = int(np.ceil(min(hi * n - 1.0, n - 1.0)))
    i_lo = min(i_lo, n - 1)
    i_hi = max(i_hi, 0)
    part = np.partition(flat, sorted({i_lo, i_hi}))
    return estimate, float((part[i_hi] - part[i_lo]) / 2.0)


def probability(indicator: np.ndarray) -> tuple[float, float, int]:
    """``(P, MCSE, n)`` for a boolean array shaped (chain, draw, path) or (chain, draw).

    ``P`` is the fraction of true elements, ``n`` the number of elements.
    """
    ind = np.asarray(indicator, dtype=float)
    return float(ind.mean()), mcse_mean(ind), int(ind.size)
