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

Compile once: the driver model's prior parameters are one data vector
(``model.PRIOR_VALUES``), so every setting refits the same compiled model
(``stforecast.compiled``, kept in each worker process and on disk), its values the setting's.
A setting that repeats the file's values reproduces the run's posterior bit for bit, and a
setting's fit is identical serially and on any worker. With ``sampler = "pymc"`` every prior
setting compiles its own model (PyMC's NUTS compiles inside ``pm.sample``).
"""

from __future__ import annotations

import math
from dataclasses import replace

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


def prior_fit(values: tuple[tuple[str, float], ...], base) -> dict:
    """The refit of one prior setting (see the module docstring) on ``base`` (a ``SweepBase``
    with ``priors``, ``fit`` and ``fit_seed``): ``{"values", "posterior" (float64),
    "diagnostics" (dict), "seconds": {"compile", "sampling"}}`` (``compile``: the seconds this
    task spent on the compiled model, ~0 when its worker had it before)."""
    from .compiled import driver_key
    from .fit import sample_posterior
    from .model import build_model, label_first_year

    spec = with_values(base.priors, values)  # validates the values (one line naming the parameter)
    model = build_model(spec, base.obs, base.company)
    result = sample_posterior(model, base.fit, base.fit_seed,
                              model_key=driver_key(base.company, base.obs, spec))
    posterior = label_first_year(result.idata["posterior"].to_dataset(), base.company)
    return {"values": values, "posterior": posterior, "diagnostics": result.diagnostics.to_dict(),
            "seconds": {k: round(result.timings[k], 2) for k in ("compile", "sampling")}}


def with_values(spec, values: tuple[tuple[str, float], ...]):
    return with_prior_values(spec, dict(values))
