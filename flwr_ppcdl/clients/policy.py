"""A participant's privacy policy: what it agreed to spend, stated by the participant, not the submitter.

The run config comes from whoever submits the run; it sets ε, δ, the noise and the sampler of every
participant. A :class:`PrivacyPolicy` is the participant's own limit on them -- on a SuperNode it is
read from the node config (``flower-supernode --node-config "max-epsilon=1 ..."``, keys in
:mod:`flwr_ppcdl.wire`) -- and :meth:`PrivacyPolicy.check` refuses a configuration beyond it before
any record is read or anything is released (:class:`PolicyViolation`, a
:class:`~flwr_ppcdl.clients.errors.PublicError`: the server sees it as an error reply).

Without a policy in its node config, a participant on Flower's deployment runtime takes
:data:`DEPLOYMENT_DEFAULT` (``docs/deployment.md`` says why those values); simulations and the
in-process runner need none. Pure Python (no Flower, no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flwr_ppcdl import wire
from flwr_ppcdl.clients.errors import PublicError, PublicValueError
from flwr_ppcdl.privacy import check_epsilon
from flwr_ppcdl.privacy.mechanism import SAMPLERS_BY_NOISE
from flwr_ppcdl.privacy.release import NOISES

if TYPE_CHECKING:
    from flwr_ppcdl.clients.config import TrainerConfig

HARDENED_SAMPLERS: tuple[str, ...] = ("discrete", "opendp")
"""Samplers safe on real data: exact integer noise on a public grid, or OpenDP's. ``"numpy"`` is not."""

ALL_SAMPLERS: tuple[str, ...] = tuple(sorted({s for samplers in SAMPLERS_BY_NOISE.values() for s in samplers}))


class PolicyViolation(PublicError, ValueError):
    """The run config asks for more than the participant's privacy policy allows; nothing was read."""


@dataclass(frozen=True)
class PrivacyPolicy:
    """The most a participant agrees to spend, and how its noise may be drawn.

    Parameters
    ----------
    max_epsilon : float
        Total ε over the run (every release and every charged evaluation, composed by the ledger);
        finite. A run config asking for more per release, or a larger budget, is refused.
    max_delta : float
        Largest δ (Gaussian noise); a δ at or above ``1/n`` is refused too (``n`` local records).
    allowed_noise : tuple of str
        Noise laws the participant accepts (``"gaussian"``, ``"laplace"``).
    allowed_samplers : tuple of str
        Samplers it accepts (default: :data:`HARDENED_SAMPLERS`).
    source : str
        Where the policy came from (for the participant's log).

    A policy never allows ``insecure_noise_seed``: seeded noise is predictable, hence not private.
    """

    max_epsilon: float = 1.0
    max_delta: float = 1e-5
    allowed_noise: tuple[str, ...] = NOISES
    allowed_samplers: tuple[str, ...] = HARDENED_SAMPLERS
    source: str = "given"

    def __post_init__(self) -> None:
        epsilon = check_epsilon(self.max_epsilon, wire.NODE_MAX_EPSILON, allow_inf=False)
        object.__setattr__(self, "max_epsilon", epsilon)
        delta = self.max_delta
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0.0 < float(delta) < 1.0):
            raise ValueError(f"{wire.NODE_MAX_DELTA}={delta!r} must be a number in (0, 1)")
        object.__setattr__(self, "max_delta", float(delta))
        for key, values, known in (
            (wire.NODE_ALLOWED_NOISE, self.allowed_noise, NOISES),
            (wire.NODE_ALLOWED_SAMPLERS, self.allowed_samplers, ALL_SAMPLERS),
        ):
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                raise ValueError(f"{key}={','.join(values)!r} must name one or more of {known}")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any], *, default: PrivacyPolicy | None = None) -> PrivacyPolicy | None:
        """The policy a node config states; ``default`` when it states none of the policy's keys.

        Every key left out takes the class default (``max-epsilon`` 1, ``max-delta`` 1e-5, both
        noises, the hardened samplers). Lists are comma-separated strings (``"discrete,opendp"``).
        """
        keys = (wire.NODE_MAX_EPSILON, wire.NODE_MAX_DELTA, wire.NODE_ALLOWED_NOISE, wire.NODE_ALLOWED_SAMPLERS)
        if not any(key in node_config for key in keys):
            return default
        values: dict[str, Any] = {"source": "node config"}
        for key, field in ((wire.NODE_MAX_EPSILON, "max_epsilon"), (wire.NODE_MAX_DELTA, "max_delta")):
            if key in node_config:
                values[field] = _number(key, node_config[key])
        for key, field in ((wire.NODE_ALLOWED_NOISE, "allowed_noise"), (wire.NODE_ALLOWED_SAMPLERS, "allowed_samplers")):
            if key in node_config:
                values[field] = tuple(part.strip() for part in str(node_config[key]).split(",") if part.strip())
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise PublicValueError(f"the node config's privacy policy is invalid: {err}") from None

    def describe(self) -> str:
        """The policy as node-config keys, and where it came from."""
        return (
            f"{wire.NODE_MAX_EPSILON}={self.max_epsilon:g} {wire.NODE_MAX_DELTA}={self.max_delta:g} "
            f"{wire.NODE_ALLOWED_NOISE}={','.join(self.allowed_noise)} "
            f"{wire.NODE_ALLOWED_SAMPLERS}={','.join(self.allowed_samplers)} ({self.source})"
        )

    def violations(self, config: TrainerConfig, num_examples: int | None = None) -> list[str]:
        """What in ``config`` (and, when known, its ``n`` local records) this policy does not allow."""
        out = []
        if config.insecure_noise_seed is not None:
            out.append(f"insecure_noise_seed={config.insecure_noise_seed} makes the noise predictable (NOT private)")
        if config.noise not in self.allowed_noise:
            out.append(f"noise={config.noise!r} is not one of {wire.NODE_ALLOWED_NOISE}={','.join(self.allowed_noise)}")
        if config.sampler not in self.allowed_samplers:
            out.append(f"sampler={config.sampler!r} is not one of {wire.NODE_ALLOWED_SAMPLERS}={','.join(self.allowed_samplers)}")
        if not config.epsilon <= self.max_epsilon:
            out.append(f"epsilon={config.epsilon!r} per release is above {wire.NODE_MAX_EPSILON}={self.max_epsilon:g}")
        elif not config.budget <= self.max_epsilon:
            out.append(f"a budget of max_epsilon={config.budget!r} is above {wire.NODE_MAX_EPSILON}={self.max_epsilon:g}")
        if config.noise == "gaussian" and config.delta is not None and math.isfinite(config.epsilon):
            if config.delta > self.max_delta:
                out.append(f"delta={config.delta!r} is above {wire.NODE_MAX_DELTA}={self.max_delta:g}")
            elif num_examples is not None and config.delta * num_examples >= 1.0:
                out.append(f"delta={config.delta!r} is not below 1/n for this participant's n={num_examples}")
        return out

    def check(self, config: TrainerConfig, num_examples: int | None = None) -> None:
        """Refuse (:class:`PolicyViolation`, naming every violation) what this policy does not allow.

        Call it before the records are read: the message says nothing was read or released.
        """
        found = self.violations(config, num_examples)
        if found:
            raise PolicyViolation(
                f"the run config is beyond this participant's privacy policy ({self.describe()}): "
                f"{'; '.join(found)}; nothing was read or released"
            )


DEPLOYMENT_DEFAULT = PrivacyPolicy(source="the deployment default: the node config states no policy")
"""What a SuperNode's participant allows when its node config states no policy: ε <= 1 in total,
δ <= 1e-5 (and < 1/n), either noise law, the hardened samplers only."""


def _number(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PublicValueError(f"{key}={value!r} must be a number") from None
    if isinstance(value, bool):
        raise PublicValueError(f"{key}={value!r} must be a number")
    return number
