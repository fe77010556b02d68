"""The client data seam: one client's train/test arrays, and where they come from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from fedlake.core.dataset import ClientDataset

__all__ = ["ClientData", "ClientDataset", "InMemoryClientData"]


@runtime_checkable
class ClientData(Protocol):
    """Where clients' data comes from: ids and a loader (must be picklable for spawn)."""

    def client_ids(self) -> Sequence[str]:
        """All client ids, in a stable order."""
        ...

    def load(self, client_id: str) -> ClientDataset:
        """Load one client's train/test split."""
        ...


class InMemoryClientData:
    """ClientData over a dict of already-materialised datasets."""

    def __init__(self, datasets: Mapping[str, ClientDataset]) -> None:
        if not datasets:
            raise ValueError("InMemoryClientData needs at least one client")
        self._data = dict(datasets)

    def client_ids(self) -> Sequence[str]:
        """All client ids, in insertion order."""
        return list(self._data)

    def load(self, client_id: str) -> ClientDataset:
        """Return the stored dataset of ``client_id``."""
        try:
            return self._data[client_id]
        except KeyError:
            raise KeyError(f"unknown client id {client_id!r}") from None
