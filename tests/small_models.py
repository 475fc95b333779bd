"""A small model built as the driver model is (its priors' parameters one data vector,
``stforecast.model.PRIOR_VALUES``): what tests of ``stforecast.compiled`` compile in a few
seconds, in the test process and in fresh ones (``python -c`` with this folder on the path)."""

from __future__ import annotations

import numpy as np

#: What decides the small model's graph (its key's content, ``compiled.model_key``).
STRUCTURE = "location normal, scale half-normal, four normal observations"


def small_model(scale: float = 1.0):
    """The model: ``location ~ Normal(0, scale)``, ``noise ~ HalfNormal(1)``, four observations
    ``~ Normal(location, noise)``; ``scale`` is a value of the prior-values vector."""
    import pymc as pm

    from stforecast.model import PRIOR_VALUES

    with pm.Model() as model:
        values = pm.Data(PRIOR_VALUES, np.array([0.0, scale, 1.0]))
        location = pm.Normal("location", values[0], values[1])
        noise = pm.HalfNormal("noise", values[2])
        pm.Normal("y", location, noise, observed=np.array([0.3, -0.2, 0.5, 1.1]))
    return model


def small_key() -> str:
    from stforecast import compiled
    return compiled.model_key("small-test-model", compiled.SOURCES, structure=STRUCTURE)
