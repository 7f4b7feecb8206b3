"""What a participant's error may say over the wire, and what stays in its own log.

An error reply travels to the server, its logs and its ``result.json``. Errors raised on a
participant's records name the offending value and its position (useful to the participant), so
the text of an error reply is built here from a short allowlist, never from ``str(error)`` alone:

* :class:`~flwr_ppcdl.privacy.validation.RecordError` (a label out of range, a NaN feature...):
  its ``public`` text, which names the broken rule only;
* errors whose message is public by construction (budget and configuration refusals, a changed
  body: :data:`PUBLIC_ERRORS`): their message;
* anything else (torch, numpy, a user's data loader...): its type only.

The full error, with its traceback, goes to the participant's own log (:func:`log_locally`).
"""

from __future__ import annotations

import logging

from flwr_ppcdl.clients.model import BodyChangedError
from flwr_ppcdl.privacy import BudgetExceededError, RecordError

log = logging.getLogger("flwr.ppcdl.participant")
"""The participant's own log. Its level is its own (INFO), so a run's verbosity on the server's side
(``flwr_ppcdl.app.console``, which quiets Flower's logger in the same process during a simulation)
does not hide what a participant says about its privacy or its failures."""
log.setLevel(logging.INFO)


class PublicError(RuntimeError):
    """A participant refuses to go on for a reason that names only public configuration.

    Its message may cross the wire unchanged; never put a record's value in it.
    """


class PublicValueError(PublicError, ValueError):
    """A :class:`PublicError` about a configuration value (also a ``ValueError``)."""


class ParticipantError(RuntimeError):
    """What a legacy ``NumPyClient`` raises instead of the original error: its message is
    :func:`public_error` of that error (Flower copies ``str(error)`` into the error reply)."""


PUBLIC_ERRORS: tuple[type[BaseException], ...] = (PublicError, BudgetExceededError, BodyChangedError)
"""Error types whose messages name only public configuration and ε (never a record)."""


def public_error(exc: BaseException) -> str:
    """The text an error reply may carry about ``exc``: its type and a message naming no record.

    Parameters
    ----------
    exc
        The error raised while serving a message.

    Returns
    -------
    str
        ``"<type>: <public message>"``; for an error outside the allowlist only the type and a
        pointer to the participant's own log.
    """
    name = type(exc).__name__
    if isinstance(exc, RecordError):
        return f"{name}: {exc.public}"
    if isinstance(exc, PUBLIC_ERRORS):
        return f"{name}: {exc}"
    return f"{name}: the participant failed; the details are in its own log only"


def log_locally(exc: BaseException, action: str) -> None:
    """Log the full error and its traceback on the participant's side only."""
    log.error("[ppcdl] participant %s failed: %s", action, exc, exc_info=exc)
