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


@dataclasses.dataclass(frozen=True)
class FlakyData:
    """``inner``'s clients; the first load of ``KILLER``'s data (per ``marks`` folder)
    ends its process, later ones work: a task that a retry rescues."""

    inner: ClientData
    marks: str

    def client_ids(self) -> Sequence[str]:
        """The inner data's clients."""
        return self.inner.client_ids()

    def load(self, client_id: str) -> ClientDataset:
        """The client's data; the first time for ``KILLER``, the process exits."""
        if client_id == KILLER:
            mark = os.path.join(self.marks, "killed-once")
            if not os.path.exists(mark):
                open(mark, "w").close()  # noqa: SIM115
                os._exit(17)
        return self.inner.load(client_id)


def main() -> None:
    """Run the flaky fleet through the registry's spark executor (``sys.argv``: marks
    folder, task retries); print the failed clients, comma-separated."""
    import sys

    from fedlake.backends.registry import spark
    from fedlake.client.stores import MemoryStateStore
    from fedlake.core.task import ClientFailure
    from fedlake.testing.conformance import toy_task
    from tests.spark import killer  # by module, not __main__: the workers import it

    fleet = toy_fleet()
    flaky = dataclasses.replace(fleet, data=killer.FlakyData(fleet.data, sys.argv[1]))
    executor = spark(
        flaky, MemoryStateStore(), workers=2, vectorize=False, task_retries=int(sys.argv[2])
    )
    try:
        cohort = ["c0", "c1", "c2", "c3", KILLER, "c5"]
        out = list(executor.map_clients(toy_task(flaky), cohort))
    finally:
        executor.close()
    print("FAILED=" + ",".join(sorted(o.client_id for o in out if isinstance(o, ClientFailure))))


if __name__ == "__main__":
    main()
