"""A fleet whose client ``KILLER`` kills the Python process that loads its data (a lost
Spark task: its worker dies mid-partition). Importable by Spark's Python workers."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from fedlake.client.fleet import ClientFleet
from fedlake.core.dataset import ClientDataset
from fedlake.data.base import ClientData
from fedlake.testing.conformance import toy_fleet

KILLER = "c4"


@dataclasses.dataclass(frozen=True)
class KillerData:
    """``inner``'s clients; loading ``KILLER``'s data ends its process at once."""

    inner: ClientData

    def client_ids(self) -> Sequence[str]:
        """The inner data's clients."""
        return self.inner.client_ids()

    def load(self, client_id: str) -> ClientDataset:
        """The client's data; ``KILLER`` exits the process (no exception to catch)."""
        if client_id == KILLER:
            os._exit(17)
        return self.inner.load(client_id)


def killer_fleet() -> ClientFleet:
    """The toy fleet with ``KILLER`` among its clients."""
    fleet = toy_fleet()
    return dataclasses.replace(fleet, data=KillerData(fleet.data))
