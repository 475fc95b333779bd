"""The driver processes, written once: AR(1) steps and the scales ratio drivers live on.

Pure arithmetic that works on numpy arrays and on PyTensor tensors alike (pass ``xp=pytensor.
tensor`` for the latter's ``log``, ``exp`` and ``sqrt``). The PyMC model (``model``), the
forward simulation (``simulate``) and the self-checks (``calibration``) all use these, so the
three cannot drift apart.

* growth: ``g_t = mu + phi (g_{t-1} - mu) + sigma e_t`` (log growth per year);
* ratios: ``x_t = L + rho (x_{t-1} - L) + s e_t`` on the log scale, or the logit scale for a
  margin, around the long-run level ``L`` (natural units on the way in and out).
"""

from __future__ import annotations

import numpy as np

#: Ratio driver -> (scale of its process, units). Names are the engine's, not a company's.
#: Operating costs and capex are not ratio processes: they are amounts in currency
#: (``stforecast.costs``), simulated forward from priors anchored on the last history year.
RATIO_DRIVERS = {
    "gross_margin": ("logit", "fraction of revenue"),
    "trade_receivable_days": ("log", "days of revenue, year-end balance"),
    "other_receivable_days": ("log", "days of revenue, year-end balance"),
    "inventory_days": ("log", "days of cost of sales, year-end balance"),
    "trade_payable_days": ("log", "days of cost of sales, year-end balance"),
    "other_payable_days": ("log", "days of cost of sales, year-end balance"),
    "da_ratio": ("log", "fraction of revenue"),
}


def ar_step(mu, phi, sigma, previous, innovation):
    """One AR(1) step around ``mu`` with persistence ``phi`` and innovation sd ``sigma``."""
    return mu + phi * (previous - mu) + sigma * innovation


def stationary_sd(phi, sigma, xp=np):
    """The stationary sd of an AR(1): ``sigma / sqrt(1 - phi^2)``."""
    return sigma / xp.sqrt(1 - phi**2)


def to_scale(name: str, x, xp=np):
    """A ratio driver's natural units -> its process scale (log, or logit for a margin)."""
    return xp.log(x / (1 - x)) if RATIO_DRIVERS[name][0] == "logit" else xp.log(x)


def from_scale(name: str, y, xp=np):
    """A ratio driver's process scale -> natural units."""
    return 1 / (1 + xp.exp(-y)) if RATIO_DRIVERS[name][0] == "logit" else xp.exp(y)


def logit(p, xp=np):
    return xp.log(p / (1 - p))
