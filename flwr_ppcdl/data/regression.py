"""The public constants of each regression data set, in one table the App reads by data set name."""

from __future__ import annotations

from dataclasses import dataclass

from flwr_ppcdl.data.census import (
    CENSUS_FEATURE_SETS,
    CENSUS_NUM_NUMERIC,
    CENSUS_TARGET_BIN_EDGES,
    CENSUS_TARGET_BOUND,
    CENSUS_TARGET_CENTER,
)
from flwr_ppcdl.data.cps import (
    CPS_FEATURE_SETS,
    CPS_NUM_NUMERIC,
    CPS_TARGET_BIN_EDGES,
    CPS_TARGET_BOUND,
    CPS_TARGET_CENTER,
)


@dataclass(frozen=True)
class RegressionConstants:
    """Public constants of a regression data set (none is computed from its records).

    Attributes
    ----------
    center, bound : float
        The target is centred on ``center`` and clipped to ``center +- bound``.
    bin_edges : tuple of float
        Target bands for Dirichlet partitioning (raw target units).
    num_numeric : int
        Leading numeric feature columns, each in [0, 1] (the rest are one-hot indicators).
    feature_sets : tuple of str
        The feature sets the loader offers (the run-config key ``feature-set``).
    """

    center: float
    bound: float
    bin_edges: tuple[float, ...]
    num_numeric: int
    feature_sets: tuple[str, ...]

    @property
    def target_range(self) -> tuple[float, float]:
        """``(center - bound, center + bound)``: clipping and the "random-targets" corruption."""
        return (self.center - self.bound, self.center + self.bound)


REGRESSION_CONSTANTS: dict[str, RegressionConstants] = {
    "census2000": RegressionConstants(
        CENSUS_TARGET_CENTER, CENSUS_TARGET_BOUND, CENSUS_TARGET_BIN_EDGES, CENSUS_NUM_NUMERIC,
        CENSUS_FEATURE_SETS,
    ),
    "cps2004": RegressionConstants(
        CPS_TARGET_CENTER, CPS_TARGET_BOUND, CPS_TARGET_BIN_EDGES, CPS_NUM_NUMERIC, CPS_FEATURE_SETS
    ),
}
"""Regression data sets of the App (``dataset`` run-config key) and their public constants."""
