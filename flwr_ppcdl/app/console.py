"""What a run prints: the App's one logger and the ``verbosity`` run-config setting.

:data:`LOG` (``flwr.ppcdl``) is a child of Flower's logger, so its lines go wherever Flower's go:
the console, the log stream of ``flwr run --stream`` and ``flwr log``, a SuperLink's log file, and
Hydra's handlers in a sweep (each once). ``verbosity`` (:data:`~flwr_ppcdl.app.settings.VERBOSITIES`):

* ``quiet``: the lines marked :data:`SUMMARY` (the result, where it was written) and warnings;
* ``normal`` (default): also one line per round; Flower's own INFO lines are held back;
* ``verbose``: also Flower's own per-round log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

LOG = logging.getLogger("flwr.ppcdl")
SUMMARY = {"ppcdl_summary": True}
"""``LOG.info(..., extra=SUMMARY)``: a line that ``verbosity = "quiet"`` still shows."""
FLOWER_LOGGER = "flwr"


class _Verbosity(logging.Filter):
    """Let through what the current verbosity shows (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.level = "normal"

    def filter(self, record: logging.LogRecord) -> bool:
        if self.level != "quiet" or record.levelno >= logging.WARNING:
            return True
        return bool(getattr(record, "ppcdl_summary", False))


_FILTER = _Verbosity()
LOG.addFilter(_FILTER)
LOG.setLevel(logging.DEBUG)

FLOWER_NOISE = (
    "Since flwr 1.32, default simulated SuperNodes",  # the App sizes its federation itself
    "fraction_evaluate is set to 0.0",  # the App evaluates on the server's test split, by design
    "Manually terminating ClientAppActor",  # Ray's actors stopped at the end of every simulation
)
"""Flower warnings that say nothing about a run of this App (shown with ``verbosity = "verbose"`` only)."""


class _FlowerNoise(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.active and any(noise in str(record.msg) for noise in FLOWER_NOISE))


_NOISE = _FlowerNoise()
logging.getLogger(FLOWER_LOGGER).addFilter(_NOISE)


@contextmanager
def verbosity(level: str) -> Iterator[None]:
    """Apply ``level`` to :data:`LOG` and to Flower's own logger while the block runs; restore both.

    Flower's logger is set to WARNING, and its :data:`FLOWER_NOISE` warnings are held back, unless
    ``level == "verbose"``; :data:`LOG` keeps its own level, and Python passes a child's records to
    its parents' handlers whatever the parents' level.
    """
    flower = logging.getLogger(FLOWER_LOGGER)
    saved = flower.level, _FILTER.level, _NOISE.active
    _FILTER.level = level
    if level != "verbose":
        flower.setLevel(logging.WARNING)
        _NOISE.active = True
    try:
        yield
    finally:
        flower.setLevel(saved[0])
        _FILTER.level, _NOISE.active = saved[1], saved[2]


@contextmanager
def muted() -> Iterator[None]:
    """Hold back everything but errors from Flower's logger (and :data:`LOG`) while the block runs:
    for work whose warnings another part of the run has already given (a reference aggregation)."""
    flower = logging.getLogger(FLOWER_LOGGER)
    saved = flower.level, LOG.level
    flower.setLevel(logging.ERROR)
    LOG.setLevel(logging.ERROR)
    try:
        yield
    finally:
        flower.setLevel(saved[0])
        LOG.setLevel(saved[1])


@contextmanager
def root_handlers_only() -> Iterator[None]:
    """While the block runs, Flower's lines go out through the root logger's handlers only.

    Flower's logger has a console handler of its own and also propagates to the root logger; under
    Hydra, which gives the root logger a console and a file handler, every line would print twice.
    Without root handlers nothing changes.
    """
    import flwr.supercore.logger  # noqa: F401 - Flower adds its console handler when first imported

    flower = logging.getLogger(FLOWER_LOGGER)
    own = [h for h in flower.handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    if not logging.getLogger().handlers or not flower.propagate:
        own = []
    for handler in own:
        flower.removeHandler(handler)
    try:
        yield
    finally:
        for handler in own:
            flower.addHandler(handler)
