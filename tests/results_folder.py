"""A results folder around synthetic draws, for the tests of query and score: the draws as the
``posterior_predictive`` group, forecast.nc's provenance from the shipped SenseTime files, and
a real (small-run) summary.json of schema 2 (``fixtures/summary_schema2_sensetime.json``) whose
scenarios are the draws' own (every one the headline's statistics): readers take a run's
scenarios from its summary, and recompute those forecast.nc does not hold."""

from dataclasses import replace
from pathlib import Path

from stforecast.company import load_company
from stforecast.results import Provenance, Summary, write_results

FIXTURE = Path(__file__).parent / "fixtures" / "summary_schema2_sensetime.json"


def write_results_folder(ds, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    summary = Summary.from_json(FIXTURE.read_text(), FIXTURE)
    if "scenario" in ds.dims:
        summary = replace(summary, scenarios={str(name): summary.scenarios.get(str(name),
                                                                               summary.headline)
                                              for name in ds["scenario"].values})
    provenance = Provenance.for_run(load_company("sensetime"), summary.seed, summary.settings)
    write_results(folder, summary, {"posterior_predictive": ds}, provenance)
    return folder
