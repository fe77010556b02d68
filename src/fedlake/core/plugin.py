"""Plugins: the features that ride along a round, as small pure functions with explicit state.

A client plugin's hooks run inside the client runtime (``fedlake.client.runtime``) at
fixed points of a client's round, each taking the round's :class:`RoundContext` and the
plugin's own state and returning both (the context is frozen: hooks return a changed
copy). What a plugin keeps between rounds (a control variate, a residual, a personal
model) lives in the client's own state store, under the plugin's name, and never
travels. A server plugin keeps its state in :class:`~fedlake.core.state.ServerState`,
ships encoded vectors with the model, asks every reply for named vectors that the
aggregator folds like the delta, and steps its state after the server optimiser.

SCAFFOLD, FedPer, Ditto, fine-tuning, error feedback, local-DP reports and the DP-SGD
client budget are plugins (``fedlake.plugins``); an algorithm holds a tuple of them, so
"SCAFFOLD + Ditto + error feedback" is one expression.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from fedlake.core.dataset import ClientDataset
from fedlake.core.local import LocalConfig
from fedlake.core.params import ParamSpec
from fedlake.core.task import ClientTask
from fedlake.core.trainer import FitResult, Trainer
from fedlake.core.transform import Transform

__all__ = [
    "ClientPlugin",
    "ClientRefusal",
    "Hook",
    "PersonalContext",
    "RoundContext",
    "ServerPlugin",
]


class ClientRefusal(ValueError):
    """A client declines a round on its own terms (its privacy budget is spent)."""


@dataclass(frozen=True)
class RoundContext:
    """One client's round as it goes: what it received, its data, how it trains, what it sends.

    Filled by the runtime in order; plugins read it and return changed copies:
    before training ``start`` (where training starts; None: the global model),
    ``correction`` (added to every gradient: SCAFFOLD's ``c - c_i``), ``dataset`` and
    ``claimed`` (the example count reported, when it is not the trained rows'); after
    training ``upload`` (the params whose delta from the global model is uploaded);
    after the delta is computed ``delta`` and ``payloads`` (extra encoded vectors by
    name); before encoding ``delta`` (error feedback adds its residual); at the end
    ``weight`` and ``metrics``.
    """

    client_id: str
    task: ClientTask
    trainer: Trainer
    dataset: ClientDataset
    rng: np.random.Generator
    encode_rng: np.random.Generator
    config: LocalConfig
    global_params: np.ndarray
    total_steps: int  # the full local work, in steps (a straggler does fewer)
    local_step: Transform | None = None  # the recipe's step and the pruning mask
    trainable: np.ndarray | None = None  # positions that train (pruned or unsent: not)
    kept_local: np.ndarray | None = None  # positions that never leave the client (FedPer)
    sent: np.ndarray | None = None  # positions an upload carries (None: all)
    start: np.ndarray | None = None
    correction: np.ndarray | None = None
    claimed: int | None = None
    fit: FitResult | None = None
    upload: np.ndarray | None = None
    delta: np.ndarray | None = None
    payloads: Mapping[str, bytes | memoryview] = field(default_factory=dict)
    weight: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def start_params(self) -> np.ndarray:
        """The params local training starts from."""
        return self.global_params if self.start is None else self.start

    def evolve(self, **changes: Any) -> RoundContext:
        """A copy with ``changes``: ``dataclasses.replace`` without re-running ``__init__``.

        Hand-written because a round makes several copies per client and ``replace``
        costs about 15 us each, as much as some clients' whole training step.
        """
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"RoundContext has no field(s) {sorted(unknown)}")
        new = object.__new__(RoundContext)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @property
    def dim(self) -> int:
        """Length of the flat parameter vector."""
        return int(self.global_params.size)


_FIELDS = frozenset(f.name for f in fields(RoundContext))


@dataclass(frozen=True)
class PersonalContext:
    """What a personalising plugin needs to say which model one client would use."""

    trainer: Trainer
    global_params: np.ndarray
    x_train: np.ndarray
    y_train: np.ndarray
    config: LocalConfig
    rng: np.random.Generator


Hook = Callable[[RoundContext, Any], tuple[RoundContext, Any]]


@dataclass(frozen=True)
class ClientPlugin:
    """A client-side feature: optional hooks at fixed points of a client's round.

    Args:
        name: the key of its state in the client's store (unique within an algorithm).
        init: the state of a client seen for the first time, from the model's length
            (None: the state starts as None).
        before_fit: after the runtime prepared the round (data, steps, masks), before
            local training; may raise :class:`ClientRefusal`.
        after_fit: after local training (``ctx.fit`` set, ``ctx.upload`` the trained params).
        on_delta: after ``ctx.delta = ctx.upload - ctx.global_params``.
        before_encode: after the upload transforms (clip, local DP), before encoding.
        finish: after encoding (``ctx.payloads["delta"]`` set) and the metrics.
        commit: ``(old, new, acknowledged) -> state`` for a plugin whose new state
            counts only once the server aggregated the contribution that made it
            (SCAFFOLD's c_i); None commits at once.
        kept_local: the positions (bool, over the flat params) that never leave the
            client, for a model of a given spec (FedPer's layers); the server decodes
            uploads without them.
        personal: ``(ctx, state) -> params``: the model this client would use
            (personalisation; evaluated on the client's own test split).
    """

    name: str
    init: Callable[[int], Any] | None = None
    before_fit: Hook | None = None
    after_fit: Hook | None = None
    on_delta: Hook | None = None
    before_encode: Hook | None = None
    finish: Hook | None = None
    commit: Callable[[Any, Any, bool], Any] | None = None
    kept_local: Callable[[ParamSpec], np.ndarray | None] | None = None
    personal: Callable[[PersonalContext, Any], np.ndarray] | None = None

    @property
    def needs_ack(self) -> bool:
        """Whether the plugin's new state waits for the server's acknowledgement."""
        return self.commit is not None


@dataclass(frozen=True)
class ServerPlugin:
    """A server-side feature with state in the server state.

    Args:
        name: the key of its state in ``ServerState.plugins``.
        init: its state for the initial params.
        vectors: names of vectors every reply must carry besides ``delta``; the
            aggregator folds each like the delta (same rule, same weights).
        extras: the encoded vectors shipped with the model in every task, by name.
        step: ``(state, aggregate, participation) -> (state, metrics)`` after the server
            optimiser: ``aggregate`` maps each vector name to the cohort's aggregate,
            ``participation`` is the cohort's share of the population, ``|S| / N``.
    """

    name: str
    init: Callable[[np.ndarray], Any]
    vectors: tuple[str, ...] = ()
    extras: Callable[[Any], Mapping[str, bytes]] | None = None
    step: Callable[[Any, Mapping[str, np.ndarray], float], tuple[Any, dict[str, float]]] | None = (
        None
    )
