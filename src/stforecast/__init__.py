"""stforecast: probabilistic forecasting and risk simulation for equity research.

Money is in the company's currency (millions) unless a name says otherwise; prices are in its
price currency per share; ratios are fractions; days are days; fiscal years are labels of the
``year`` coordinate.

In a notebook::

    from stforecast.run import run_forecast, RunSettings       # fit + simulate + write results
    import stforecast as st
    res = st.load_results("results/<company>")                 # summary, company, draws
    res.summary.headline.p_upside                              # P(target price > price) ± MCSE
    st.evaluate("P(target_price > 7.5)", res)                  # value ± Monte Carlo error
    st.evaluate("P(cash[<year>] < 3000)", res, scenario="<scenario>")

Importing the package is cheap: PyMC is imported only by the modules that fit.
"""

__version__ = "0.1.0"


def load_results(results):
    """A results folder (``stforecast.results.Results``): ``.summary`` (typed summary.json),
    ``.company`` (as stored with the results), ``.draws(group, scenario)`` (lazy xarray),
    ``.folder``. One-line ``ResultsError`` if the folder is not valid results."""
    from .results import load_results as _load

    return _load(results)


def evaluate(expression: str, draws, scenario: str | None = None):
    """A query such as ``"P(cash[<year>] < 3000)"`` with its MCSE.

    ``draws``: a results folder (path), a ``Results`` from :func:`load_results`, or an xarray
    Dataset of predictive draws (e.g. from ``resimulate``). ``scenario``: default the headline
    scenario. Returns a ``QueryResult`` (``.value``, ``.mcse``, ``.n``).
    """
    from .query import evaluate as _evaluate
    from .results import Results

    if not hasattr(draws, "data_vars"):
        draws = draws if isinstance(draws, Results) else load_results(draws)
        aliases = draws.summary.company.aliases()
        return _evaluate(expression, draws.draws(), scenario, aliases)
    return _evaluate(expression, draws, scenario)
