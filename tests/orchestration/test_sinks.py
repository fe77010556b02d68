"""RunSinks: rows to the store, metrics to the tracker; a replay never doubles a row."""

from fedlake.orchestration.sinks import METRICS_KEY, RunSinks
from fedlake.testing import MemoryStore, NullTracker


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.reads = 0

    def read(self, table):
        self.reads += 1
        return super().read(table)


def pending(round_):
    return {
        "rounds": [{"round": round_, "attempt": 0, "status": "completed"}],
        "client_updates": [{"round": round_, "client_id": "c0"}],
        METRICS_KEY: [{"step": round_, "eval_accuracy": 0.5, "eval_loss": float("nan")}],
    }


def test_a_normal_flush_only_appends():
    store, tracker = CountingStore(), NullTracker()
    sinks = RunSinks(run_id="r1", store=store, tracker=tracker)
    for r in (1, 2, 3):
        sinks.flush(pending(r))
    assert store.reads == 0
    assert [row["round"] for row in store.read("rounds")] == [1, 2, 3]
    assert {row["run_id"] for row in store.read("client_updates")} == {"r1"}
    assert tracker.metrics == [(r, {"eval_accuracy": 0.5}) for r in (1, 2, 3)]  # NaN dropped


def test_a_replay_of_rows_already_written_does_not_double_them():
    store, tracker = CountingStore(), NullTracker()
    sinks = RunSinks(run_id="r1", store=store, tracker=tracker)
    sinks.flush(pending(1))  # written, then the run was killed before its checkpoint said so
    sinks.flush(pending(1), replay=True)
    assert len(store.read("rounds")) == 1 and len(store.read("client_updates")) == 1
    assert len(tracker.metrics) == 2  # metrics are idempotent per step in the tracker
    sinks.flush(pending(2), replay=True)  # saved but never written: written now
    assert [row["round"] for row in store.read("rounds")] == [1, 2]
