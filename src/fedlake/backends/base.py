"""The executor seam: where clients run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

from fedlake.client.local import ClientJob, ClientResult, ClientTask


@runtime_checkable
class Executor(Protocol):
    """Runs a task on a cohort of clients and yields their results as they finish."""

    def map_clients(
        self, job: ClientJob, task: ClientTask, cohort: Sequence[str]
    ) -> Iterator[ClientResult]:
        """Yield one ClientUpdate or ClientFailure per client in ``cohort``."""
        ...

    def close(self) -> None:
        """Release workers."""
        ...
