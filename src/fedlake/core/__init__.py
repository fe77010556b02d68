"""Core types (numpy only): params, updates, transforms, aggregators, algorithms, state."""

from fedlake.core.aggregator import Aggregator, Fold, FoldAccumulator, stack_deltas
from fedlake.core.algorithm import Algorithm, LocalConfig
from fedlake.core.codec import Codec, CodecError, Compression, Pruner
from fedlake.core.params import ParamSpec, TensorSpec, as_vector, frozen
from fedlake.core.state import (
    Aggregated,
    EmptyCohortError,
    ServerState,
    TooFewUpdatesError,
    aggregate_updates,
    apply_server_step,
    init_server_state,
    round_rng,
    server_round,
)
from fedlake.core.transform import Transform, chain, identity, scale
from fedlake.core.update import CONTROL, DELTA, ClientUpdate, validate_update

__all__ = [
    "CONTROL",
    "DELTA",
    "Aggregated",
    "Aggregator",
    "EmptyCohortError",
    "Algorithm",
    "ClientUpdate",
    "Codec",
    "CodecError",
    "Compression",
    "Fold",
    "FoldAccumulator",
    "LocalConfig",
    "ParamSpec",
    "Pruner",
    "ServerState",
    "TensorSpec",
    "TooFewUpdatesError",
    "Transform",
    "aggregate_updates",
    "apply_server_step",
    "as_vector",
    "chain",
    "frozen",
    "identity",
    "init_server_state",
    "round_rng",
    "scale",
    "server_round",
    "stack_deltas",
    "validate_update",
]
