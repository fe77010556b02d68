"""Where a client keeps its state between rounds: the ClientStateStore seam and a dict store.

A client's record is a mapping of plain values: dicts with string keys, lists, tuples,
numpy arrays, numbers, strings, booleans and None. It holds its plugins' states (a
control variate, an error-feedback residual, a personal model, a privacy history) and
never leaves the client. Stores: :class:`MemoryStateStore` (a dict: simulation, and the
records a process worker is handed for one chunk) and
:class:`fedlake.client.folder_store.FolderStateStore` (one file per client, atomic
writes, no pickle: a real client).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["ClientStateStore", "MemoryStateStore", "Record"]

Record = Mapping[str, Any]


@runtime_checkable
class ClientStateStore(Protocol):
    """Loads and saves each client's record, by client id."""

    def load(self, client_id: str) -> Record | None:
        """The client's record, or None for a client with none yet."""
        ...

    def save(self, client_id: str, record: Record) -> None:
        """Replace the client's record (atomically: a crash leaves the old or the new one)."""
        ...


class MemoryStateStore:
    """Records in a dict: what is saved is kept as the very objects given."""

    def __init__(self, records: Mapping[str, Record] | None = None) -> None:
        self.records: dict[str, Record] = dict(records or {})

    def load(self, client_id: str) -> Record | None:
        """The client's record, or None."""
        return self.records.get(client_id)

    def save(self, client_id: str, record: Record) -> None:
        """Keep ``record`` for ``client_id``."""
        self.records[client_id] = record

    def delete(self, client_id: str) -> None:
        """Forget ``client_id``'s record (nothing happens when it has none)."""
        self.records.pop(client_id, None)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)
