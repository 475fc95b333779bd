"""stforecast: probabilistic forecasting and risk simulation for equity research.

Money is in RMB mn unless a name says otherwise (``target_price_hkd``); ratios are
fractions; days are days; fiscal years are labels ``FY18`` ... ``FY23``.

In a notebook::

    from stforecast.run import run_forecast, RunSettings       # fit + simulate + write results/
    import stforecast as st
    draws = st.load_results("results")                         # xarray Dataset, dims scenario, ...
    st.evaluate("P(target_price_hkd > 6.73)", draws)           # value ± Monte Carlo error
    st.evaluate("P(revenue[FY23] > 8825)", draws, scenario="combined-stress")

Importing the package is cheap: PyMC is imported only by the modules that fit.
"""

__version__ = "0.1.0"


def load_results(results="results", group: str = "posterior_predictive"):
    """One group of a results folder's ``forecast.nc``, lazily loaded.

    ``group``: ``"posterior_predictive"`` (the draws, dims scenario, chain, draw, path, year),
    ``"posterior"``, ``"prior"``, ``"prior_predictive"``, ``"peer_posterior"``, ``"sample_stats"``.
    """
    from pathlib import Path

    from .query import load_predictive
    return load_predictive(Path(results), group)


def evaluate(expression: str, draws=None, scenario: str | None = None, results="results"):
    """A query such as ``"P(cash[FY23] < 3000)"`` on saved draws, with its MCSE.

    ``draws``: from :func:`load_results` (default: load ``results``). ``scenario``: default
    ``"risk-weighted"``. Returns a ``QueryResult`` (``.value``, ``.mcse``, ``.n``).
    """
    from .query import evaluate as _evaluate
    return _evaluate(expression, draws if draws is not None else load_results(results), scenario)
