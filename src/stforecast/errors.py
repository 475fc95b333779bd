"""The one base class of stforecast's user-facing errors.

Every error in a user's input (a company folder, a priors or scenarios file, a query, an
actuals file, a results folder) is a ``StforecastError`` whose message is ONE line naming the
file, the key and what was expected. The command line prints it and exits with status 2.
Standard library only.
"""


class StforecastError(ValueError):
    """Bad input, described in one line (file, key, expectation)."""


class DataFileError(StforecastError):
    """A company data file (company.toml, peers.toml) is malformed."""


class ResultsError(StforecastError):
    """A results folder is missing, incomplete or of another schema version."""
