"""fedlake.data: where clients' data comes from (generators, partitioners, tables).

Importing this package needs only numpy; scikit-learn, pyarrow and deltalake are
imported when the functions that need them are called.
"""

from fedlake.data.activity import (
    ACTIVITIES,
    CHANNELS,
    FEATURE_NAMES,
    ActivityPopulation,
    window_features,
)
from fedlake.data.base import ClientData, ClientDataset, InMemoryClientData
from fedlake.data.partition import (
    by_column,
    dirichlet,
    hash_split,
    iid,
    partition_dataset,
    quantity_skew,
    split_indices,
)
from fedlake.data.sources import TableClientData, write_client_table
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.data.tabular import load_breast_cancer_xy, load_digits_xy, sklearn_federated

__all__ = [
    "ACTIVITIES",
    "CHANNELS",
    "FEATURE_NAMES",
    "ActivityPopulation",
    "ClientData",
    "ClientDataset",
    "InMemoryClientData",
    "TableClientData",
    "by_column",
    "dirichlet",
    "fedprox_synthetic",
    "hash_split",
    "iid",
    "load_breast_cancer_xy",
    "load_digits_xy",
    "partition_dataset",
    "quantity_skew",
    "sklearn_federated",
    "split_indices",
    "window_features",
    "write_client_table",
]
