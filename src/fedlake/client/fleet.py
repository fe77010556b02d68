"""Clients that run in one process: a simulator, a worker process, a Spark task.

A :class:`ClientFleet` is what such a process needs to answer tasks for many clients:
their data, the trainer, the recipe spec (not the built algorithm: its transforms and
plugins are closures and do not travel) and the simulator's client variants. It is
picklable, so executors ship it once to each worker; each process builds the algorithm
from the spec once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fedlake.algorithms.spec import RecipeSpec, build_algorithm
from fedlake.client.runtime import ClientRuntime
from fedlake.client.stores import ClientStateStore
from fedlake.core.algorithm import Algorithm
from fedlake.core.plugin import ClientPlugin
from fedlake.core.trainer import Trainer
from fedlake.data.base import ClientData

__all__ = ["ClientFleet"]


@dataclass(frozen=True)
class ClientFleet:
    """Everything a process needs to run clients (picklable for spawned workers).

    Args:
        data: the clients' data.
        trainer: the model's trainer.
        recipe: the recipe's spec, or a picklable zero-argument factory of the algorithm
            (e.g. a ``functools.partial`` of a recipe).
        variants: other client programs by name, each a picklable factory of the plugins
            such a client runs before the algorithm's (the simulator's malicious clients).
    """

    data: ClientData
    trainer: Trainer
    recipe: RecipeSpec | Callable[[], Algorithm]
    variants: Mapping[str, Callable[[], tuple[ClientPlugin, ...]]] = field(default_factory=dict)

    @cached_property
    def algorithm(self) -> Algorithm:
        """The recipe, built once per fleet object in each process."""
        if isinstance(self.recipe, RecipeSpec):
            return build_algorithm(self.recipe)
        return self.recipe()

    def runtime(self, store: ClientStateStore) -> ClientRuntime:
        """A client runtime over this fleet's clients, keeping their states in ``store``."""
        variants = {name: make() for name, make in self.variants.items()}
        return ClientRuntime(self.data, self.trainer, self.algorithm, store, variants=variants)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("algorithm", None)  # closures do not pickle; each process rebuilds its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
