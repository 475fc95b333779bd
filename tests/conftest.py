"""Shared test options: ``--full-sbc`` runs the full simulation-based calibration (250 fits)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_addoption(parser):
    parser.addoption("--full-sbc", action="store_true", default=False,
                     help="run the full SBC (250 fits, a few minutes) instead of the reduced one")
