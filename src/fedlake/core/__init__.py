"""Core types (numpy only): params, tasks, updates, transforms, aggregators, plugins, state."""

from fedlake.core.aggregator import Aggregator, Fold, FoldAccumulator, stack_deltas
from fedlake.core.algorithm import Algorithm, LocalConfig, with_plugins
from fedlake.core.codec import Codec, CodecError, Compression, Pruner
from fedlake.core.dataset import ClientDataset
from fedlake.core.params import ParamSpec, TensorSpec, as_vector, frozen
from fedlake.core.plugin import ClientPlugin, ClientRefusal, RoundContext, ServerPlugin
from fedlake.core.rng import client_key, round_rng
from fedlake.core.state import (
    Aggregated,
    EmptyCohortError,
    ServerState,
    TooFewUpdatesError,
    aggregate_updates,
    apply_server_step,
    init_server_state,
    server_round,
)
from fedlake.core.task import (
    ClientFailure,
    ClientOutcome,
    ClientReply,
    ClientTask,
    FailureReason,
    Instructions,
)
from fedlake.core.trainer import FitResult, Trainer
from fedlake.core.transform import Transform, chain, identity, scale
from fedlake.core.update import DELTA, ClientUpdate, validate_update

__all__ = [
    "DELTA",
    "Aggregated",
    "Aggregator",
    "Algorithm",
    "ClientDataset",
    "ClientFailure",
    "ClientOutcome",
    "ClientPlugin",
    "ClientRefusal",
    "ClientReply",
    "ClientTask",
    "ClientUpdate",
    "Codec",
    "CodecError",
    "Compression",
    "EmptyCohortError",
    "FailureReason",
    "FitResult",
    "Fold",
    "FoldAccumulator",
    "Instructions",
    "LocalConfig",
    "ParamSpec",
    "Pruner",
    "RoundContext",
    "ServerPlugin",
    "ServerState",
    "TensorSpec",
    "TooFewUpdatesError",
    "Trainer",
    "Transform",
    "aggregate_updates",
    "apply_server_step",
    "as_vector",
    "chain",
    "client_key",
    "frozen",
    "identity",
    "init_server_state",
    "round_rng",
    "scale",
    "server_round",
    "stack_deltas",
    "validate_update",
    "with_plugins",
]
