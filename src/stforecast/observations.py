"""What the driver model conditions on, read from a company (``Observations``): segment growth,
ratio-driver history on the processes' scales, the last history year's revenue and unit counts,
and the partial-year facts. No PyMC here: a re-simulation on a saved posterior needs these too
(``stforecast.model`` fits on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .company import Company, historical_ratios
from .processes import RATIO_DRIVERS, to_scale


@dataclass(frozen=True)
class Observations:
    """Everything the model conditions on, on the model's scales.

    ``segment_growth``: log revenue growth per segment over the history years after the first.
    ``ratios``: every history year's value of each ratio driver on its process scale.
    ``revenue_last``: segment revenue in the last history year (currency mn). ``units_last``:
    unit counts in the last history year, per units segment. ``facts``: the company's
    partial-year observations, name -> value in natural units (a count, a fraction).
    """

    segment_growth: dict[str, np.ndarray]
    ratios: dict[str, np.ndarray]
    revenue_last: dict[str, float]
    units_last: dict[str, float]
    facts: dict[str, float]


def observations_from_company(company: Company) -> Observations:
    h = company.history
    last = company.last_history_year
    growth = {s.name: np.diff(np.log(h[s.revenue].values)) for s in company.segments}
    ratios_nat = historical_ratios(h)
    ratios = {r: to_scale(r, ratios_nat[r].values) for r in RATIO_DRIVERS}
    return Observations(
        segment_growth=growth,
        ratios=ratios,
        revenue_last={s.name: float(h[s.revenue].sel(year=last)) for s in company.segments},
        units_last={s.name: s.units_last for s in company.segments if s.kind == "units"},
        facts={o.name: o.value for o in company.observations},
    )
