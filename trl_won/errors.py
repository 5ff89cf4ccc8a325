"""The exceptions `trl-won` reports as one line instead of a traceback.

A `TrlWonError` is the user's to fix (an argument, a file, a dataset, a server) or a job that could not be done (a
judge that never answered, a run that produced nothing). The command line prints `trl-won <command>: error: <message>`
and exits with `exit_code`: 2 for a wrong or missing argument ([`UsageError`]), 1 for everything else. Any other
exception is a bug and keeps its traceback.
"""


class TrlWonError(Exception):
    """An error the user can fix, or a job that failed at what it was asked to do; the message says why and the fix."""

    exit_code = 1


class UsageError(TrlWonError, ValueError):
    """A wrong, missing or contradictory command-line argument (exit code 2, like argparse's own errors)."""

    exit_code = 2


class NothingProducedError(TrlWonError):
    """A run finished without producing anything (0 pairs, 0 labels): its output is not usable."""
