"""Run clients one after another in this process (the default executor)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from fedlake.client.local import ClientJob, ClientResult, ClientTask


class InlineExecutor:
    """Sequential, in-process execution: simplest and fastest for small models."""

    def map_clients(
        self, job: ClientJob, task: ClientTask, cohort: Sequence[str]
    ) -> Iterator[ClientResult]:
        """Run each client in turn."""
        for cid in cohort:
            yield job.run(task, cid)

    def close(self) -> None:
        """Nothing to release."""
