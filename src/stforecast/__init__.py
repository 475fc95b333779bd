"""stforecast: probabilistic forecasting and risk simulation for equity research.

Money is in the company's currency (millions) unless a name says otherwise; prices are in its
price currency per share; ratios are fractions; days are days; fiscal years are labels of the
``year`` coordinate.

In a notebook (``stforecast.forecast``)::

    import stforecast
    fc = stforecast.Forecast.from_company("<company>")          # a shipped company or a folder
    fc.fit().simulate()                                         # fit, then 100,000 paths
    fc.query("P(target_price > 7.5)")                           # value ± Monte Carlo error
    fc.plot.fan("revenue")
    fc.save("results/<company>")
    res = stforecast.load("results/<company>")                  # summary, company, draws

Importing the package is cheap: PyMC is imported only by the modules that fit (``Forecast`` is
imported on first use).
"""

__version__ = "0.1.0"


def __getattr__(name):
    if name == "Forecast":
        from .forecast import Forecast
        return Forecast
    raise AttributeError(f"module 'stforecast' has no attribute {name!r}")


def load(folder):
    """A saved results folder (``results.Results``: ``.summary``, ``.company``, ``.draws()``);
    the same as :func:`load_results`. Imports neither PyMC nor PyTensor."""
    return load_results(folder)


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
    scenario (``"all"``: one answer each). Returns a ``QueryResult`` (``.value``, ``.mcse``,
    ``.n``, ``.scenario``), or ``QueryResults`` for several answers. History years are
    addressable for a results folder (the company's actuals).
    """
    from .query import evaluate as _evaluate, history_of, wanted_scenarios
    from .results import Results

    if not hasattr(draws, "data_vars"):
        draws = draws if isinstance(draws, Results) else load_results(draws)
        aliases = draws.summary.company.aliases()
        company_file = draws.provenance.inputs.get("company")
        history = history_of(company_file.text if company_file else None, draws.summary.charts)
        predictive = draws.predictive(wanted_scenarios(list(draws.summary.scenarios), scenario))
        return _evaluate(expression, predictive, scenario, aliases, history)
    return _evaluate(expression, draws, scenario)
