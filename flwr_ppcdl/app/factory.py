"""The App's aggregation rules: which Message-API strategy a run's settings ask for."""

from __future__ import annotations

from typing import Any

from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg, MultiKrum, Strategy

from flwr_ppcdl import wire
from flwr_ppcdl.app.experiment import body_keys, make_model, server_loss_fn, split_data
from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.clients import split_model
from flwr_ppcdl.data import Dataset


def make_strategy(settings: RunSettings, validation: Dataset | None = None) -> Strategy:
    """The configured aggregation rule (all Message-API strategies; evaluation is server-side).

    ``validation`` (server-held records) is required by ``reliability-method = server-data``.
    The project's own strategies keep the frozen public body exactly as sent (``frozen_keys``) and
    every shared release is checked against the run's public configuration.
    """
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_available_nodes": settings.min_nodes or settings.num_partitions,
        "min_train_nodes": settings.min_nodes or settings.num_partitions,
    }
    model = make_model(settings)
    frozen = body_keys(model)
    # no participant can hold more records than the training split the partition plan divides:
    # a larger claimed count is a lie and excludes the reply (the counts themselves stay unverified)
    reliability_options: dict[str, Any] = {"max_num_examples": float(len(split_data(settings)[0]))}
    expected = wire.ReleaseExpectation(
        task=settings.task,
        num_features=int(split_model(model)[1].in_features),
        epsilon=float(settings.epsilon),
        num_classes=settings.num_classes,
        feature_bound=1.0,
        target_bound=settings.target_bound if settings.task == "regression" else None,
        noise=settings.noise,
        delta=settings.delta if settings.noise == "gaussian" else 0.0,
        sampler=settings.sampler,
    )
    if settings.protocol == "statistics":
        from flwr_ppcdl.strategies.summed import SummedStatisticsFedAvg

        # the calibrated estimator with each release's known noise law (benchmarks/reliability_calibrated.py)
        return SummedStatisticsFedAvg(
            reliability=settings.strategy == "reliability", frozen_keys=frozen, expected_release=expected,
            decoder=settings.decoder, **reliability_options, **common,
        )
    if settings.strategy == "reliability":
        from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

        common["frozen_keys"] = frozen
        if settings.reliability_method == "server-data":
            if validation is None:
                raise ValueError("reliability-method 'server-data' needs the server's validation records")
            head = [k for k in model.state_dict() if k not in frozen]  # what the strategy scores
            loss = server_loss_fn(settings, validation, keys=head)
            return ReliabilityWeightedFedAvg(
                method="server_data", server_loss_fn=loss, **reliability_options, **common
            )
        # "calibrated": the library's default estimator (FedAvg's weights unless the evidence is
        # significant; benchmarks/reliability_calibrated.py), which also tests each shared release's
        # known-law view (share-release)
        return ReliabilityWeightedFedAvg(expected_release=expected, **reliability_options, **common)
    if settings.strategy == "fedavg":
        # FedAvg's weights (sample counts), but the frozen public body is kept as sent, never averaged:
        # Flower's FedAvg would let one reply shift a body buffer and make every participant refuse
        from flwr_ppcdl.strategies import ReliabilityWeightedFedAvg

        baseline = {**reliability_options, "method": "fedavg"}
        return ReliabilityWeightedFedAvg(frozen_keys=frozen, score_releases=False, **baseline, **common)
    if settings.strategy == "fedmedian":
        return FedMedian(**common)
    if settings.strategy == "fedtrimmedavg":
        return FedTrimmedAvg(beta=settings.trimmed_beta, **common)
    # MultiKrum is told the true number of unreliable participants: its best case.
    bad = len(settings.unreliable_ids)
    return MultiKrum(num_malicious_nodes=bad, num_nodes_to_select=max(1, settings.num_partitions - bad), **common)
