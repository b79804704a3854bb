"""The project's exceptions: what counts as the user's fault.

Everything a user can get wrong — text, options, file paths, checkpoints, command-line and
protocol values — raises :class:`InputError` (a ``ValueError``, so ``except ValueError`` in
user code keeps working). The fronts treat only these as the caller's mistake: the CLI prints
one ``fpstream: error: …`` line and exits 2, the servers answer ``bad_request``/400. Any other
exception is a bug: it surfaces as ``internal`` (exit 1, HTTP 500) with its traceback in the
log. No torch here: clients import this module too.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "InputError"]


class InputError(ValueError):
    """Bad input from the user of the engine: text, options, files or arguments."""


class CheckpointError(InputError):
    """A checkpoint file cannot be used: unreadable, of the wrong kind, or with bad keys."""
