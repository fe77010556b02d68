"""An FL algorithm is data: local config, local step, upload, aggregator, server, plugins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fedlake.core.aggregator import Aggregator
from fedlake.core.codec import Compression
from fedlake.core.local import LocalConfig, SampleDP
from fedlake.core.params import ParamSpec
from fedlake.core.plugin import ClientPlugin, ServerPlugin
from fedlake.core.transform import Transform, identity

__all__ = ["Algorithm", "LocalConfig", "SampleDP", "with_plugins"]

DP_BUDGET = "dp_history"  # the name of the DP-SGD client budget plugin


@dataclass(frozen=True)
class Algorithm:
    """What clients and server compute; how it runs is the executor's business.

    Args:
        name: recipe name, for logs.
        local: local training hyperparameters.
        aggregator: turns the cohort's deltas (and every other named vector) into one.
        server: server optimiser applied to the aggregated delta (a pseudo-gradient
            pointing towards the clients); the result is added to the params.
        local_step: transform applied to every local minibatch gradient (None: plain SGD,
            which lets trainers skip the per-step numpy round trip).
        upload: transform applied to the client delta before it is sent.
        compression: codecs of both directions, error feedback and pruning
            (default: float32 both ways).
        client_plugins: client-side features, run in this order at each hook
            (:class:`~fedlake.core.plugin.ClientPlugin`).
        server_plugins: server-side features (:class:`~fedlake.core.plugin.ServerPlugin`).
    """

    name: str
    local: LocalConfig
    aggregator: Aggregator
    server: Transform
    local_step: Transform | None = None
    upload: Transform = field(default_factory=identity)
    compression: Compression = field(default_factory=Compression)
    client_plugins: tuple[ClientPlugin, ...] = ()
    server_plugins: tuple[ServerPlugin, ...] = ()

    def __post_init__(self) -> None:
        for kind, plugins in (("client", self.client_plugins), ("server", self.server_plugins)):
            names = [p.name for p in plugins]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{kind} plugins must have distinct names, got {twice} twice")
        if self.local.dp is not None and not self.has(DP_BUDGET):
            raise ValueError(
                "DP-SGD (local.dp) needs its client budget plugin, which keeps each client's "
                "privacy history and refuses rounds past its epsilon: add "
                "fedlake.plugins.dpsgd_budget(dp) (fedlake.algorithms.apply_dp does)"
            )
        upload = self.compression.upload
        keeps = [p.name for p in self.client_plugins if p.kept_local is not None]
        if keeps and upload is not None and upload.train_positions is not None:
            raise ValueError(
                "FedPer personal layers cannot be combined with a random_mask or structured "
                "upload: use topk or quantize uploads"
            )
        if self.vectors and not self.aggregator.linear:
            raise ValueError(
                f"{', '.join(p.name for p in self.server_plugins if p.vectors)} needs a linear "
                f"aggregator (it averages {', '.join(self.vectors)} like the deltas), got "
                f"{self.aggregator.name}"
            )

    def has(self, name: str) -> bool:
        """Whether a client or server plugin called ``name`` is part of the algorithm."""
        names = [p.name for p in self.client_plugins] + [p.name for p in self.server_plugins]
        return name in names

    @property
    def vectors(self) -> tuple[str, ...]:
        """The named vectors every reply carries besides ``delta`` (server plugins ask)."""
        return tuple(v for p in self.server_plugins for v in p.vectors)

    @property
    def needs_acks(self) -> bool:
        """Whether some client plugin commits its state only once acknowledged."""
        return any(p.needs_ack for p in self.client_plugins)

    @property
    def personal(self) -> ClientPlugin | None:
        """The plugin that says which model a client would use (personalisation), if any."""
        found = [p for p in self.client_plugins if p.personal is not None]
        return found[0] if found else None

    def kept_local(self, spec: ParamSpec) -> np.ndarray | None:
        """Positions that never leave the clients (FedPer's layers), or None."""
        masks = [p.kept_local(spec) for p in self.client_plugins if p.kept_local is not None]
        masks = [m for m in masks if m is not None]
        if not masks:
            return None
        out = np.zeros(spec.size, dtype=bool)
        for m in masks:
            out |= m
        return out


def with_plugins(
    algorithm: Algorithm,
    *,
    client: Sequence[ClientPlugin] = (),
    server: Sequence[ServerPlugin] = (),
    first: bool = False,
) -> Algorithm:
    """``algorithm`` with more plugins, after its own (``first``: before them)."""
    own_c, own_s = algorithm.client_plugins, algorithm.server_plugins
    if first:
        return replace(
            algorithm, client_plugins=(*client, *own_c), server_plugins=(*server, *own_s)
        )
    return replace(algorithm, client_plugins=(*own_c, *client), server_plugins=(*own_s, *server))
