"""Run clients in this process (the default executor), a whole cohort at once where possible."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from fedlake.client.local import ClientJob, ClientResult, ClientTask

DEFAULT_CHUNK = 512  # clients trained together at most
STACK_BYTES = 1 << 30  # and at most this much stacked float32 state (about 4 copies of m x d)


class InlineExecutor:
    """In-process execution; trains the cohort vectorised (``chunk`` clients at a time).

    Trainers that cannot train a stacked cohort (or recipes whose local step cannot
    run on one) fall back to one client after another, with the same results. Chunks
    shrink for large models so the stacked state stays under about 1 GiB.
    ``chunk=1`` always runs clients one by one.
    """

    def __init__(self, chunk: int = DEFAULT_CHUNK) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.chunk = chunk

    def map_clients(
        self, job: ClientJob, task: ClientTask, cohort: Sequence[str]
    ) -> Iterator[ClientResult]:
        """Run the cohort chunk by chunk, yielding each client's result."""
        dim = max(1, int(np.asarray(task.params).size))
        chunk = max(1, min(self.chunk, STACK_BYTES // (16 * dim)))  # large models: fewer
        for start in range(0, len(cohort), chunk):
            part = list(cohort[start : start + chunk])
            if chunk == 1:
                yield job.run(task, part[0])
            else:
                yield from job.run_many(task, part)

    def close(self) -> None:
        """Nothing to release."""
