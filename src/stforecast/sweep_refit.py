"""Prior settings of a sweep: a priors file's hyperparameters replaced, the driver model refitted.

A swept prior parameter is named by its place in the priors file and the distribution's
parameter: ``growth.<driver>.<part>.<parameter>`` and ``ratio.<driver>.<part>.<parameter>``
(``part``: long_run, persistence or volatility), ``pooling.<name>.<parameter>`` and
``valuation.ev_sales_multiple.<parameter>``; e.g. ``pooling.company_growth_effect.sigma``. The
parameter is one of the family's own (``mu``, ``sigma``, ``alpha``, ...); for a prior given as
an elicited ``range`` it replaces the parameter the range resolved to. ``peer_premium`` is not
sweepable here: it acts in the simulation through the peer regression, not in the driver model.

``prior_fit(values, base)`` is one setting's refit: the driver model with the swept prior
parameters set to ``values``, fitted on the company's own history with the run's fit settings
and seed, its diagnostics checked against the bar. Its posterior is kept at full precision, as
the run stores its own.

Compile once per worker: ``model.py`` writes prior hyperparameters into the graph as constants,
which a compiled model cannot change. Without touching ``model.py``, the sweep builds the model
with the SWEPT parameters as ``pm.Data`` (``_hyperparameters_as_data`` wraps ``model.prior_rv``
while the model is built), compiles it once per worker process and sweep, and gives each
setting its values through ``with_data``, as calibration gives new observations. The price:
that graph is not the run's (data where the run has folded constants), so a setting that
repeats the file's values reproduces the run's posterior statistically, not bit for bit. Every
worker compiles the same graph, so a setting's fit is identical serially and on any worker.
The clean form of this, for whoever owns ``model.py``: ``prior_rv`` taking its parameters as
``pm.Data`` (one shared variable per distribution parameter, ``<variable>__<parameter>``), so
the run's own model could be re-used for prior settings. With ``sampler = "pymc"`` every prior
setting compiles its own model (PyMC's NUTS compiles inside ``pm.sample``).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from .distributed import worker_cached

#: Prefix of a prior parameter's key in a sweep's settings (shock keys have none).
PRIOR_PREFIX = "priors."
#: Sections of a priors file whose distributions the driver model uses, and the number of names
#: before the distribution's parameter (growth.<driver>.<part>, pooling.<name>).
SECTIONS = {"growth": 3, "ratio": 3, "pooling": 2, "valuation": 2}
#: Valuation priors the driver model samples (``peer_premium`` acts in the simulation only).
MODEL_VALUATION = ("ev_sales_multiple",)


def is_prior_key(key: str) -> bool:
    return key.startswith(PRIOR_PREFIX)


def locate(spec, name: str):
    """The ``Prior`` that ``name`` (``growth.<driver>.<part>``, ``pooling.<name>``, ...) names
    in ``spec``, or a one-line reason why it names none (a string)."""
    parts = name.split(".")
    section = parts[0]
    if section not in SECTIONS:
        return f"a section of the priors file the driver model uses: one of {', '.join(SECTIONS)}"
    if len(parts) != SECTIONS[section]:
        shape = ("<driver>.<part>" if SECTIONS[section] == 3 else "<name>")
        return f"{section}.{shape}.<parameter>"
    if section in ("growth", "ratio"):
        table = spec.growth if section == "growth" else spec.ratios
        if parts[1] not in table:
            return f"a {section} driver of the priors file: one of {', '.join(table)}"
        from .priors import PROCESS_PARTS
        if parts[2] not in PROCESS_PARTS:
            return f"a process part: one of {', '.join(PROCESS_PARTS)}"
        return getattr(table[parts[1]], parts[2])
    if section == "pooling":
        if parts[1] not in spec.pooling:
            return f"a pooling prior: one of {', '.join(spec.pooling)}"
        return spec.pooling[parts[1]]
    if parts[1] not in MODEL_VALUATION or parts[1] not in spec.valuation:
        return (f"a valuation prior of the driver model: {', '.join(MODEL_VALUATION)} "
                f"(peer_premium acts in the simulation, not in the fit)")
    return spec.valuation[parts[1]]


def check_value(spec, key: str, value) -> str | None:
    """Why ``value`` cannot replace prior parameter ``key`` (without the prefix), or None."""
    from .priors import POSITIVE_PARAMS
    name, _, param = key.rpartition(".")
    prior = locate(spec, name)
    if isinstance(prior, str):
        return prior
    if param not in prior.params:
        return f"a parameter of its {prior.dist} prior: one of {', '.join(prior.params)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"finite numbers, got {value!r}"
    if param in POSITIVE_PARAMS and value <= 0:
        return f"{param} > 0, got {value!r}"
    return None


def with_prior_values(spec, values: dict[str, float]):
    """``spec`` (a ``PriorSpec``) with each ``key -> value`` of ``values`` (keys with or without
    the ``priors.`` prefix) replacing one distribution parameter."""
    growth, ratios = dict(spec.growth), dict(spec.ratios)
    pooling, valuation = dict(spec.pooling), dict(spec.valuation)
    for key, value in values.items():
        key = key.removeprefix(PRIOR_PREFIX)
        problem = check_value(spec, key, value)
        if problem is not None:
            raise ValueError(f"prior parameter {key}: expected {problem}")
        name, _, param = key.rpartition(".")
        parts = name.split(".")
        if parts[0] in ("growth", "ratio"):
            table = growth if parts[0] == "growth" else ratios
            process = table[parts[1]]
            old = getattr(process, parts[2])
            table[parts[1]] = replace(process, **{parts[2]: replace(
                old, params={**old.params, param: float(value)}, elicited=None)})
        else:
            table = pooling if parts[0] == "pooling" else valuation
            old = table[parts[1]]
            table[parts[1]] = replace(old, params={**old.params, param: float(value)},
                                      elicited=None)
    return replace(spec, growth=growth, ratios=ratios, pooling=pooling, valuation=valuation)


#: Name of the data variable carrying a swept prior parameter in the compiled model.
DATA_PREFIX = "sweep_prior__"


def data_name(key: str) -> str:
    """``pooling.company_growth_effect.sigma`` -> the name of its data variable."""
    return DATA_PREFIX + key.removeprefix(PRIOR_PREFIX)


@contextmanager
def _hyperparameters_as_data(spec, keys: tuple[str, ...]):
    """While building the driver model, the swept priors' parameters enter it as ``pm.Data``
    (named ``data_name(key)``) instead of constants, so one compilation takes every prior
    setting through ``with_data``. ``model.py`` is not changed: its ``prior_rv`` is wrapped for
    the duration of the build, and only for the ``Prior`` objects the keys name (found by
    identity in ``spec``, which ``build_model`` walks). Should ``model.py`` stop building priors
    through ``prior_rv``, ``with_data`` fails loudly (an unknown data variable), never silently.
    """
    import pymc as pm

    from . import model as model_module
    swept = {}
    for key in keys:
        name, _, param = key.removeprefix(PRIOR_PREFIX).rpartition(".")
        swept.setdefault(id(locate(spec, name)), {})[param] = data_name(key)
    original = model_module.prior_rv

    def prior_rv(prior, name):
        params = swept.get(id(prior))
        if not params:
            return original(prior, name)
        values = {k: (pm.Data(params[k], np.asarray(v, dtype="float64")) if k in params else v)
                  for k, v in prior.params.items()}
        return original(replace(prior, params=values), name)

    model_module.prior_rv = prior_rv
    try:
        yield
    finally:
        model_module.prior_rv = original


def _compiled_for(base, keys: tuple[str, ...]):
    """(model, compiled) of the driver model with the swept parameters ``keys`` as data: once
    per worker process, sweep keys and run (``distributed.worker_cached``)."""
    def build():
        from .fit import compile_nutpie
        from .model import build_model
        with _hyperparameters_as_data(base.priors, keys):
            model = build_model(base.priors, base.obs, base.company)
        return model, compile_nutpie(model, freeze=False)  # each setting sets its data
    key = ("sweep-prior-model", base.priors.sha256,
           tuple(sorted(base.company.file_hashes().items())), keys)
    return worker_cached(key, build)


def prior_fit(values: tuple[tuple[str, float], ...], base) -> dict:
    """The refit of one prior setting (see the module docstring) on ``base`` (a ``SweepBase``
    with ``priors``, ``fit`` and ``fit_seed``): ``{"values", "posterior" (float64),
    "diagnostics" (dict), "seconds": {"compile", "sampling"}}`` (``compile``: the seconds this
    task spent compiling, 0 when its worker had compiled the model before)."""
    import nutpie

    from .fit import diagnose, free_parameter_names, sample_posterior
    from .model import build_model

    fs = base.fit
    with_values(base.priors, values)  # validates the values (one line naming the parameter)
    seconds = {"compile": 0.0}
    if fs.sampler == "nutpie":
        t = time.perf_counter()
        model, compiled = _compiled_for(base, tuple(k for k, _ in values))
        seconds["compile"] = time.perf_counter() - t
        t = time.perf_counter()
        compiled = compiled.with_data(**{data_name(k): np.asarray(v, dtype="float64")
                                         for k, v in values})
        # exactly fit.sample_posterior's call
        idata = nutpie.sample(compiled, draws=fs.draws, tune=fs.tune, chains=fs.chains,
                              cores=min(fs.chains, 2), target_accept=fs.target_accept,
                              seed=base.fit_seed, progress_bar=False)
        seconds["sampling"] = time.perf_counter() - t
        diagnostics = diagnose(idata["posterior"].to_dataset(),
                               idata["sample_stats"].to_dataset(), free_parameter_names(model))
    else:  # PyMC's NUTS compiles inside pm.sample: one compilation per setting
        model = build_model(with_values(base.priors, values), base.obs, base.company)
        t = time.perf_counter()
        result = sample_posterior(model, fs, base.fit_seed)
        seconds["sampling"] = time.perf_counter() - t
        idata, diagnostics = result.idata, result.diagnostics
    posterior = idata["posterior"].to_dataset()
    if "first_year_growth" in posterior:
        posterior["first_year_growth"].attrs["year"] = base.company.first_forecast_year
    return {"values": values, "posterior": posterior, "diagnostics": diagnostics.to_dict(),
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def with_values(spec, values: tuple[tuple[str, float], ...]):
    return with_prior_values(spec, dict(values))
