"""``method="server_data"``: the calibrated estimator's flags put to records the server holds.

A flag is overruled (the participant gets its FedAvg share back) exactly where adding the flagged upload at
that share to the aggregate lowers the loss on the server's records more than adding a trusted
participant's upload once more does, beyond chance, in this round and in the last round the participant
was flagged; otherwise it stands. Synthetic uploads:
seven honest ones, a common signal plus noise; three more, a coherent minority, the signal plus one
common offset twice as large as the signal (a second data mode, or colluders), which the uploads alone flag.
The server's loss is the squared distance to a target: the honest mean (records like the majority's),
or the mixture ``signal + 0.3 x 2 offset`` (records of both modes).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from flwr_ppcdl.reliability import ReliabilityAggregator, ReliabilityOptions, Upload


def _round(mixture: float, loss_error: bool = False):
    rng = np.random.default_rng(2)
    signal, offset = [rng.normal(size=(40, 25)), rng.normal(size=25)], [rng.normal(size=(40, 25)), rng.normal(size=25)]
    bad = np.arange(10) >= 7
    ups = [[s + 2 * b * o + 0.3 * rng.normal(size=s.shape) for s, o in zip(signal, offset, strict=True)] for b in bad]
    counts = rng.integers(50, 150, size=10)
    target = [s + 2 * mixture * o for s, o in zip(signal, offset, strict=True)]
    calls = []

    def loss(arrays: list[np.ndarray]) -> float:
        calls.append(1)
        if loss_error:
            raise RuntimeError("server records unavailable")
        return float(sum(np.sum((a - t) ** 2) for a, t in zip(arrays, target, strict=True)))

    uploads = [Upload(1000 + k, u, int(counts[k])) for k, u in enumerate(ups)]
    alone = ReliabilityAggregator(ReliabilityOptions(seed=0))
    alone.aggregate(1, uploads)
    flags_only = np.array([alone.history[-1].weights[1000 + k] for k in range(10)])
    agg = ReliabilityAggregator(ReliabilityOptions(method="server_data", server_loss_fn=loss, seed=0))
    first = agg.aggregate(1, uploads)
    assert agg.history[-1].overruled == [] and first.arrays is not None  # one verdict is not enough
    outcome = agg.aggregate(2, uploads)  # the same uploads again
    share = counts / counts.sum()
    w = np.array([agg.history[-1].weights[1000 + k] for k in range(10)])
    return ups, bad, share, w, outcome, flags_only, agg.history[-1], calls, loss


def test_without_server_records_the_uploads_flag_the_coherent_minority() -> None:
    """The premise of the tests below: the calibrated estimator alone flags the three."""
    _, bad, share, _, _, flags_only, _, _, _ = _round(0.0)
    assert np.all((flags_only < 0.5 * share) == bad)


def test_a_flag_stands_where_the_flagged_upload_raises_the_server_loss() -> None:
    """The server's records agree with the majority: every weight is the uploads' own."""
    ups, bad, share, w, outcome, flags_only, report, calls, _ = _round(0.0)
    assert report.overruled == []
    np.testing.assert_array_equal(w, flags_only)
    assert len(calls) == 2 * (1 + len(ups))  # per round with a flag: the aggregate, then each upload once


def test_a_flag_is_overruled_where_the_flagged_upload_lowers_the_server_loss() -> None:
    """The server's records favour a mixture (an honest second data mode): each flagged upload, added at
    its share, lowers the loss, so every participant ends at its FedAvg share (the honest ones' posterior
    probability of being honest, > .999 here, the only difference) and the aggregate is FedAvg's."""
    ups, bad, share, w, outcome, _, report, _, loss = _round(0.3)
    np.testing.assert_allclose(w, share, rtol=2e-3)
    assert sorted(report.overruled) == sorted(1000 + k for k in np.flatnonzero(bad))
    assert not set(report.down_weighted) & set(report.overruled)
    fedavg = [sum(s * u[layer] for s, u in zip(share, ups, strict=True)) for layer in range(len(ups[0]))]
    for a, b in zip(outcome.arrays, fedavg, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-2 * np.abs(b).max())


def test_a_failing_server_loss_leaves_the_flags_standing_and_the_run_going(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="flwr"):
        _, _, _, w, outcome, flags_only, report, _, _ = _round(0.3, loss_error=True)
    assert outcome.arrays is not None and report.overruled == []
    np.testing.assert_array_equal(w, flags_only)
    assert "server loss failed (RuntimeError: server records unavailable)" in caplog.text


def test_server_data_needs_a_loss_function_and_refuses_it_elsewhere() -> None:
    with pytest.raises(ValueError, match="server_loss_fn"):
        ReliabilityAggregator(ReliabilityOptions(method="server_data"))
    with pytest.raises(ValueError, match="server_loss_fn=.* is not used by method='calibrated'"):
        ReliabilityOptions(server_loss_fn=len)


def test_the_statistics_strategy_refuses_server_data_instead_of_skipping_its_step() -> None:
    """SummedStatisticsFedAvg sums releases and never forms the averaged parameters the step scores."""
    from flwr_ppcdl.strategies.summed import SummedStatisticsFedAvg

    with pytest.raises(ValueError, match="method='server_data'"):
        SummedStatisticsFedAvg(method="server_data", server_loss_fn=len)
