"""Run clients in this process (the default executor), a whole cohort at once where possible."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from fedlake.client.fleet import ClientFleet
from fedlake.client.stores import ClientStateStore, MemoryStateStore
from fedlake.core.task import ClientOutcome, ClientTask

DEFAULT_CHUNK = 512  # clients trained together at most
STACK_BYTES = 1 << 30  # and at most this much stacked float32 state (about 4 copies of m x d)


class InlineExecutor:
    """In-process execution; trains the cohort vectorised (``chunk`` clients at a time).

    Trainers that cannot train a stacked cohort (or recipes whose local step cannot
    run on one) fall back to one client after another, with the same results. Chunks
    shrink for large models so the stacked state stays under about 1 GiB.
    ``chunk=1`` always runs clients one by one. The clients' states live in ``store``.
    """

    def __init__(
        self,
        fleet: ClientFleet,
        store: ClientStateStore | None = None,
        *,
        chunk: int = DEFAULT_CHUNK,
    ) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.chunk = chunk
        self.fleet = fleet
        self.store = store if store is not None else MemoryStateStore()
        self.runtime = fleet.runtime(self.store)

    def map_clients(
        self,
        task: ClientTask,
        cohort: Sequence[str],
        *,
        variants: Mapping[str, str] | None = None,
    ) -> Iterator[ClientOutcome]:
        """Run the cohort chunk by chunk, yielding each client's outcome in cohort order."""
        variants = variants or {}
        dim = max(1, self.fleet.trainer.spec.size)
        chunk = max(1, min(self.chunk, STACK_BYTES // (16 * dim)))  # large models: fewer
        for start in range(0, len(cohort), chunk):
            part = list(cohort[start : start + chunk])
            if chunk == 1:
                yield self.runtime.handle(task, part[0], variants.get(part[0]))
            else:
                yield from self.runtime.handle_many(task, part, variants)

    def close(self) -> None:
        """Nothing to release."""
