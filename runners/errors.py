"""The two error tiers of fmsearch.

``TrialFailed`` is trial-level: the trial is recorded as failed and the study goes on.
``FmsearchError`` (and its subclasses) is fatal: the command stops with its message, which says
what was expected and what was got. Both live here, the lowest layer, so that ``runners``,
``search`` and the CLI share them.
"""

from __future__ import annotations


class FmsearchError(Exception):
    """A fatal error whose message is meant for the user, not a traceback."""


class DataError(FmsearchError):
    """Fashion-MNIST is missing, corrupt or asked for in an impossible split."""


class TrialFailed(Exception):
    """One trial failed (NaN loss, an error while training); the study goes on."""
