"""Error replies name the problem, never a record's value or position; the participant's own log
keeps the full error. Both client flavours."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, RecordDict

from flwr_ppcdl.app.grid import InProcessGrid
from flwr_ppcdl.clients import (
    ClientSetup,
    FunctionalMechanismClient,
    ParticipantError,
    TrainerConfig,
    load_state,
    make_client_app,
    public_error,
)
from flwr_ppcdl.privacy import BudgetExceededError, RecordError
from tests.clients.helpers import digits, digits_model

BAD_VALUE, BAD_INDEX = 77, 17  # neither appears in any public number of this setup (10 classes, 1400 records)


def _bad_records() -> tuple[torch.Tensor, torch.Tensor]:
    x, y, _, _ = digits()
    y = y.clone()
    y[BAD_INDEX] = BAD_VALUE
    return x, y


def _leaks(text: str) -> bool:
    return str(BAD_VALUE) in text or str(BAD_INDEX) in text


def test_message_api_error_reply_names_the_rule_not_the_record(caplog: pytest.LogCaptureFixture) -> None:
    config = TrainerConfig(task="classification", num_classes=10, epsilon=1.0)
    app = make_client_app(lambda ctx: ClientSetup(digits_model(), _bad_records(), config))
    grid = InProcessGrid(app, num_nodes=1)
    request = Message(RecordDict({"arrays": ArrayRecord(digits_model().state_dict())}), 1001, "train")
    with caplog.at_level(logging.ERROR, logger="flwr"):
        [reply] = grid.send_and_receive([request])
    assert reply.has_error()
    reason = reply.error.reason
    assert "RecordError" in reason and "labels must be integers in [0, 10)" in reason and "out of range" in reason
    assert not _leaks(reason), reason
    # the participant's own log has the full error (value and position)
    assert f"got {BAD_VALUE} at index {BAD_INDEX}" in caplog.text
    # nothing was released or charged, and the state survived the failed round
    state = load_state(grid.contexts[1001])
    assert state.records_read == 0 and state.release is None


def test_numpy_client_error_names_the_rule_not_the_record(caplog: pytest.LogCaptureFixture) -> None:
    """Flower turns a NumPyClient's exception into an error reply with ``str(exception)``."""
    client = FunctionalMechanismClient(
        digits_model(), _bad_records(), context={}, task="classification", num_classes=10, epsilon=1.0
    )
    params = [v.numpy() for v in digits_model().state_dict().values()]
    with caplog.at_level(logging.ERROR, logger="flwr"), pytest.raises(ParticipantError) as caught:
        client.fit(params, {})
    text = str(caught.value)
    assert "labels must be integers in [0, 10)" in text and not _leaks(text), text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained record error
    assert f"got {BAD_VALUE} at index {BAD_INDEX}" in caplog.text
    assert client.trainer.epsilon_spent == 0.0


def test_public_error_allowlist() -> None:
    record = RecordError(f"labels must be integers in [0, 3); got {BAD_VALUE} at index {BAD_INDEX}", "labels out of range")
    assert public_error(record) == "RecordError: labels out of range"
    budget = BudgetExceededError("would bring the total to 2.0, above max_epsilon=1.0")
    assert public_error(budget) == f"BudgetExceededError: {budget}"  # public by construction
    # anything else (numpy, torch, a data loader...) might quote a record: only its type crosses
    other = ValueError(f"could not convert {BAD_VALUE} at {BAD_INDEX}")
    assert public_error(other).startswith("ValueError: ") and not _leaks(public_error(other))
    nan = ValueError(f"bad value {np.nan} in row {BAD_INDEX}")
    assert "nan" not in public_error(nan)
