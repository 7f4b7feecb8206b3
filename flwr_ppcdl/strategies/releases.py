"""What a participant's shared functional-mechanism release gives the server's reliability estimator.

A participant with ``share_statistics=True`` replies with its release (``wire.FM_RELEASE``), already
differentially private. Both server protocols read it here: the statistics protocol sums releases
(:class:`~flwr_ppcdl.strategies.summed.SummedStatisticsFedAvg`), the parameter protocol averages
parameters (:class:`~flwr_ppcdl.strategies.ReliabilityWeightedFedAvg`); in both the calibrated
estimator tests each release's *scoring view* under its known noise law. Every function is
post-processing of the release (no privacy cost), and a release is untrusted input: parsing raises
``ValueError`` with the reason, never anything else.
"""

from __future__ import annotations

import dataclasses
import math
from logging import WARNING
from typing import Any

import numpy as np
from flwr.app import Message
from flwr.supercore import log

from flwr_ppcdl import wire
from flwr_ppcdl.privacy import Release, combine_releases
from flwr_ppcdl.privacy.release_checks import check_release
from flwr_ppcdl.privacy.release_law import entry_noise
from flwr_ppcdl.reliability import ScoredView, Upload
from flwr_ppcdl.reliability.noise_law import class_means, gram_moments, target_moments


def clip_scored_view(task: str) -> tuple[bool, bool]:
    """Per layer of :func:`release_scoring_view`, whether its energy bounds the participant's influence.

    The feature second moments (the Gram part): yes, in both tasks -- a forged Gram entry is far from
    every honest participant's moments and would otherwise steer the pooled solve. Class means
    (classification): yes, a bound on what a corruption the structured tests do not model can do. Target
    moments (regression): no -- honest target skew makes them far (census2000, Dirichlet 0.3: the clip
    removed honest records), and their influence is bounded by the n bounded records the release checks
    enforce.
    """
    return (task == "classification", True)


def release_scoring_view(release: Release) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What the reliability estimator scores for one release, and its exact noise variance, layer by layer.

    First layer -- classification: the participant's class means of the features (:func:`class_means`:
    K x d, read from the cross term and the Gram matrix's bias column) -- random labels collapse the
    rows, flipped labels permute them, label skew does not move them, and no inverse of the noisy Gram
    matrix amplifies the noise; regression: the target moments ``b / n`` (:func:`target_moments`: the
    feature-target moments and the mean target, noise variance ``noise_sd^2 / n^2``) -- random targets
    remove their covariance part, shrunk or exploded targets scale them. Second layer: the feature
    second moments ``G / n`` (:func:`gram_moments`, upper triangle, noise variance ``noise_sd^2 / n^2``),
    so a release that keeps honest class means or target moments but forges its Gram part is scored too.
    In classification its energy bounds influence but its statistics are no evidence (:func:`release_view`):
    labels do not move it, honest label skew does (Fashion-MNIST, Dirichlet 0.3: honest ``collapse`` z 2-6,
    one participant flagged every round). In regression they stay evidence beside the few target moments
    (census2000: 4), whose threshold alone flagged target-skewed honest participants (tuning seeds).
    """
    gram = np.asarray(release.statistics["gram"], dtype=np.float64)
    n, sd = float(release.num_examples), entry_noise(release).sd
    second, second_var = gram_moments(gram, n, sd)
    if release.task == "classification":
        first, first_var = class_means(np.asarray(release.statistics["cross"], dtype=np.float64), gram, n, sd)
    else:
        first, first_var = target_moments(np.asarray(release.statistics["cross"], dtype=np.float64), n, sd)
    return [first, second], [first_var, second_var]


def release_view(release: Release) -> ScoredView:
    """The release's scoring view and noise law as the estimator takes them."""
    layers, variance = release_scoring_view(release)
    return ScoredView(layers, variance, bounded_influence=clip_scored_view(release.task),
                      evidence=(True, release.task != "classification"))


def parse_release(msg: Message, expected: wire.ReleaseExpectation | None = None) -> Release:
    """The release a participant shared in its reply, checked (:func:`~flwr_ppcdl.privacy.release_checks.check_release`);
    ``ValueError`` with the reason otherwise."""
    try:
        records = msg.content.config_records
        if wire.FM_RELEASE not in records:
            raise ValueError(f"no ConfigRecord {wire.FM_RELEASE!r} (participant did not share its statistics)")
        text = records[wire.FM_RELEASE].get(wire.RELEASE_JSON)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - untrusted content
        raise ValueError(f"unreadable reply ({type(err).__name__}: {err})") from None
    if text is None:
        raise ValueError(f"ConfigRecord {wire.FM_RELEASE!r} has no field {wire.RELEASE_JSON!r}")
    return check_release(wire.decode_release(text), expected)


def carries_release(msg: Message) -> bool:
    try:
        return not msg.has_error() and wire.FM_RELEASE in msg.content.config_records
    except Exception:  # noqa: BLE001
        return False


def consistent_releases(
    releases: list[Release], nodes: list[int], positions: list[int], excluded: dict[int, str], with_epsilon: bool
) -> tuple[list[Release], list[int], list[int]]:
    """Keep the releases that agree with the majority's public shape; exclude the others by node.

    Without a public expectation the majority also fixes ε (a lone release claiming a huge ε, hence
    little noise, is excluded).
    """
    if not releases:
        return [], [], []

    def signature(r: Release) -> tuple[Any, ...]:
        sig = (r.task, r.num_classes, r.num_features, r.feature_bound, r.target_bound, r.neighbouring, r.repair_keep,
               r.noise, r.sampler)
        return sig + ((round(r.epsilon, 6),) if with_epsilon else ())

    sigs = [signature(r) for r in releases]
    majority = max(set(sigs), key=sigs.count)
    keep = [i for i, sig in enumerate(sigs) if sig == majority]
    for i, sig in enumerate(sigs):
        if sig != majority:
            excluded[nodes[i]] = f"release {sig} disagrees with the majority {majority}"
            log(WARNING, "[ppcdl] node %s excluded: %s", nodes[i], excluded[nodes[i]])
    return [releases[i] for i in keep], [nodes[i] for i in keep], [positions[i] for i in keep]


def read_release(text: Any, count: Any, expected: wire.ReleaseExpectation | None = None) -> Release:
    """A reply's shared release (its JSON ``text``), checked against the public expectation and the
    reply's claimed count: ``ValueError`` with the reason when it is malformed or disagrees."""
    if not isinstance(text, str):
        raise ValueError(f"{wire.FM_RELEASE} must be the release as JSON text; got {type(text).__name__}")
    release = check_release(wire.decode_release(text), expected)
    if count != release.num_examples:
        raise ValueError(f"the claimed count {count!r} differs from the release's n={release.num_examples}")
    return release


def attach_release_views(
    uploads: list[Upload], releases: dict[int, Release], expected: wire.ReleaseExpectation | None
) -> None:
    """Give each upload whose reply shared a release (position -> release) its known-law view.

    The releases must agree on their public shape (and, without a public expectation, on ε: a lone
    release claiming a large ε claims little noise, hence a large say in the consensus its view is
    tested against); an upload whose release disagrees with the round's majority is rejected, with
    the reason, like any malformed reply. Uploads the adapter already rejected are left alone.
    """
    positions = sorted(p for p in releases if uploads[p].reason is None)
    if not positions:
        return
    excluded: dict[int, str] = {}
    _, _, kept = consistent_releases(
        [releases[p] for p in positions], [uploads[p].node_id for p in positions], positions, excluded, expected is None
    )
    for p in positions:
        if p in kept:
            uploads[p].view = release_view(releases[p])
        else:
            uploads[p].reason = f"bad {wire.FM_RELEASE}: {excluded.get(uploads[p].node_id, 'disagrees with the majority')}"


def median_release(releases: list[Release]) -> Release:
    """The pooled release of a round without a decidable honest majority: ``N`` times the entry-wise
    median of the releases' per-record statistics (``G / n``, ``C / n``), ``N`` the total count.

    Bounded influence: any minority moves each entry at most within the range of the others' values.
    Its noise sd is that of a median of the participants' per-record noise (about
    ``sqrt(pi / 2) / sqrt(K)`` times their median, times ``N``), which the repair rule reads.
    Post-processing of the releases: no privacy cost.
    """
    total = float(sum(r.num_examples for r in releases))
    per_record = {key: np.median(np.stack([np.asarray(r.statistics[key], dtype=np.float64) / r.num_examples
                                            for r in releases]), axis=0) for key in releases[0].statistics}
    spread = math.sqrt(math.pi / 2.0 / len(releases)) * float(np.median([r.noise_sd / r.num_examples for r in releases]))
    scale = math.sqrt(math.pi / 2.0 / len(releases)) * float(np.median([r.noise_scale / r.num_examples for r in releases]))
    return dataclasses.replace(combine_releases(releases), statistics={k: total * v for k, v in per_record.items()},
                               noise_sd=total * spread, noise_scale=total * scale)
