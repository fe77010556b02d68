"""The simulated clients' state stores: one dict for the whole population, saved with each
checkpoint so that a resumed simulation continues bit for bit."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

from fedlake.client.stores import MemoryStateStore
from fedlake.core.algorithm import Algorithm

__all__ = ["SimulatedStores"]

# format-2 checkpoints kept each client's state under these keys
_LEGACY_KEYS = {"control": "scaffold", "residual": "error_feedback", "dp_history": "dp_history"}


class SimulatedStores(MemoryStateStore):
    """Every simulated client's record, in memory; a :class:`Snapshotable` for checkpoints."""

    name = "client_states"

    def __init__(self, algorithm: Algorithm | None = None) -> None:
        super().__init__()
        self.algorithm = algorithm

    def snapshot(self) -> bytes:
        """Every record, as bytes (only ever read back by :meth:`restore`)."""
        return pickle.dumps(self.records, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, data: bytes) -> None:
        """Return to a snapshot (our own checkpoint file, written by :meth:`snapshot`)."""
        self.records = pickle.loads(data)

    def adopt_legacy(self, client_states: Mapping[str, Any]) -> None:
        """Take over the client states of a format-2 checkpoint (one dict per client)."""
        names = dict(_LEGACY_KEYS)
        personal = self.algorithm.personal if self.algorithm is not None else None
        if personal is not None:
            names["personal"] = personal.name
        self.records = {
            cid: {"states": {names[k]: v for k, v in (kept or {}).items() if k in names}}
            for cid, kept in client_states.items()
        }
