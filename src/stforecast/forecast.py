"""The Python API on one screen: a company's forecast, step by step.

::

    import stforecast
    fc = stforecast.Forecast.from_company("<company>")   # a shipped company, or a folder
    fc.fit()                                             # driver model + peer regression
    fc.simulate()                                        # 100,000 paths under every scenario
    fc.query("P(target_price > 7.5)")                    # value ± Monte Carlo error
    fc.plot.fan("revenue")                               # a matplotlib Figure
    fc.save("results/<company>")                         # the results folder (and report)
    res = stforecast.load("results/<company>")           # read it back, no PyMC needed

Each step returns the forecast, so the calls chain (``Forecast.from_company(...).fit().
simulate()``). Every step is the same stage function ``stforecast run`` uses
(``stforecast.run``: ``prepare`` -> ``fit_models`` -> ``simulate_draws`` -> ``summarise`` ->
``write``), so a forecast made here and one made on the command line with the same seed and
settings are the same numbers. Statistics come from the summary layer; ``plot`` draws them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import run as _run
from .errors import StforecastError
from .fit import FitSettings
from .registry import HEADLINE_SCENARIO


class Forecast:
    """One company's forecast: its inputs, then (after ``fit``) the fitted models, then (after
    ``simulate``) the predictive draws and their ``summary``.

    ``settings``: seed, paths and fit settings (``run.RunSettings``); ``fit`` and ``simulate``
    take keyword overrides.
    """

    def __init__(self, inputs: _run.Inputs, settings: _run.RunSettings = _run.RunSettings()):
        self.inputs = inputs
        self.settings = settings
        self.fitted: _run.Fitted | None = None
        self._draws: _run.Draws | None = None
        self._summary = None

    @classmethod
    def from_company(cls, company=None, *, priors=None, scenarios=None,
                     seed: int = _run.DEFAULT_SEED) -> Forecast:
        """A forecast of ``company`` (a shipped company's name, a company folder, or None for the
        default one); ``priors`` / ``scenarios``: other files than the company's own."""
        return cls(_run.prepare(company, priors, scenarios), _run.RunSettings(seed=seed))

    def __repr__(self) -> str:
        state = "simulated" if self._draws else "fitted" if self.fitted else "not fitted"
        return f"Forecast({self.company.key!r}, seed={self.settings.seed}, {state})"

    @property
    def company(self):
        return self.inputs.company

    # --- the steps ----------------------------------------------------------------------------
    def fit(self, *, progress: bool = False, **fit_settings) -> Forecast:
        """Fit the driver model (NUTS) and the peer regression. Keywords: ``draws``, ``tune``,
        ``chains``, ``target_accept``, ``sampler``, ``prior_draws`` (``fit.FitSettings``)."""
        fs = replace(self.settings.fit, **fit_settings) if fit_settings else self.settings.fit
        self.settings = replace(self.settings, fit=fs, progress=progress)
        with _run._quiet_pymc():
            self.fitted = _run.fit_models(self.inputs, self.settings)
        self._draws = self._summary = None
        return self

    def simulate(self, paths: int | None = None) -> Forecast:
        """Simulate at least ``paths`` future paths (default 100,000) under every scenario and
        summarise them."""
        if self.fitted is None:
            raise StforecastError("Forecast.simulate: expected a fitted forecast (call .fit() "
                                  "first)")
        if paths is not None:
            self.settings = replace(self.settings, paths=int(paths))
        self._draws = _run.simulate_draws(self.inputs, self.fitted, self.settings.paths,
                                          self.settings.seed)
        self._summary = _run.summarise(self.inputs, self.fitted, self._draws, self.settings)
        return self

    # --- what it says -------------------------------------------------------------------------
    @property
    def summary(self):
        """The typed summary (``results.Summary``): ``summary.headline.p_upside``, ..."""
        return self._simulated()._summary

    @property
    def draws(self):
        """The predictive draws of every scenario (xarray; dims scenario, chain, draw, path,
        year)."""
        return self._simulated()._draws.predictive

    def query(self, expression: str, scenario: str | None = None):
        """A probability or statistic of the draws with its Monte Carlo error, e.g.
        ``"P(revenue[<year>] > 9000)"`` (see ``stforecast.query``); ``scenario``: default the
        headline scenario (``"all"``: one answer each). History years are the company's
        actuals."""
        from .query import evaluate, history_of

        history = history_of(self.company.files.get("company", (None, None))[1],
                             self.summary.charts)
        return evaluate(expression, self.draws, scenario or HEADLINE_SCENARIO, history=history)

    @property
    def plot(self) -> _Plots:
        """Charts of the summary: ``fan(variable)``, ``target_price()``, ``scenarios(variable)``,
        ``valuation_methods()``, ``peers()``, ``tornado(outcome)``, ``prior_posterior()``."""
        return _Plots(self.summary)

    def save(self, folder, report: bool = True) -> Path:
        """Write the results folder (draws, summary.json, and the report unless ``report`` is
        False), atomically; returns its path."""
        self._simulated()
        _run.write(Path(folder), self.inputs, self.fitted, self._draws, self._summary,
                   self.settings, report)
        return Path(folder)

    def _simulated(self) -> Forecast:
        if self._draws is None:
            raise StforecastError("Forecast: expected simulated draws (call .fit() then "
                                  ".simulate() first)")
        return self


class _Plots:
    """Charts of a summary (``stforecast.plots`` on ``summary.charts``); each returns a Figure."""

    def __init__(self, summary):
        self._summary = summary
        self._charts = summary.charts

    def fan(self, variable: str = "revenue"):
        from .plots import fan_chart

        fans = self._charts.get("fans") or {}
        if variable not in fans:
            raise StforecastError(f"plot.fan: variable '{variable}': expected one of "
                                  f"{', '.join(fans)}")
        return fan_chart(fans[variable], scenario=self._charts.get("scenario"))

    def target_price(self):
        from .plots import target_price_distribution

        return target_price_distribution(self._charts["target_price"])

    def outside_view(self, kind: str = "cagr"):
        """The outside view: ``"cagr"`` (the base-rate histogram of 3-year sales CAGR beside
        this forecast's) or ``"inside_vs_final"`` (revenue and target price, inside view alone
        and blended)."""
        from .plots import outside_view_cagr, outside_view_densities

        block = self._charts.get("outside_view")
        if not block:
            raise StforecastError("plot.outside_view: expected a forecast with an outside view "
                                  "(an [outside_view] section in the priors and its base rates)")
        return outside_view_cagr(block) if kind == "cagr" else outside_view_densities(block)

    def scenarios(self, variable: str = "target_price"):
        from .plots import scenario_comparison

        blocks = self._charts.get("scenarios") or {}
        if variable not in blocks:
            raise StforecastError(f"plot.scenarios: variable '{variable}': expected one of "
                                  f"{', '.join(blocks)}")
        return scenario_comparison(blocks[variable])

    def valuation_methods(self):
        from .plots import valuation_methods
        from .report import method_name
        from .registry import VALUATION_METHODS

        return valuation_methods(self._charts["valuation_methods"],
                                 {m: method_name(m) for m in VALUATION_METHODS})

    def peers(self):
        from .plots import peer_relation

        if not self._charts.get("peers"):
            raise StforecastError("plot.peers: expected a peer regression in this forecast")
        return peer_relation(self._charts["peers"])

    def tornado(self, outcome: str = "target_price"):
        from .plots import figures

        figs = figures({"variables": self._charts.get("variables") or {}},
                       {outcome: self._summary.to_dict()["sensitivity"].get(outcome) or {}})
        if f"tornado_{outcome}" not in figs:
            raise StforecastError(f"plot.tornado: outcome '{outcome}': expected one of "
                                  f"{', '.join(self._summary.sensitivity)}")
        return figs[f"tornado_{outcome}"]

    def prior_posterior(self):
        from .plots import prior_posterior

        return prior_posterior(self._charts["prior_posterior"])


def load(folder):
    """A saved results folder (``results.Results``: ``.summary``, ``.company``, ``.draws()``);
    reading it imports neither PyMC nor PyTensor."""
    from .results import load_results

    return load_results(folder)
