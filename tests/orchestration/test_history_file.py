"""history.json: throttled during a run, complete when a run call ends, never ahead of the
checkpoint, and `read_history` prefers a newer checkpoint (a run killed mid-second)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time

from fedlake.algorithms import fedavg
from fedlake.client.logreg import LogRegTrainer
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.orchestration import checkpoint as ck
from fedlake.orchestration.events import NullObserver
from fedlake.orchestration.sampling import CohortSpec
from fedlake.simulation import simulate


def federation(run_dir, rounds=6):
    return simulate(
        recipe=functools.partial(fedavg, client_lr=0.05, batch_size=20),
        trainer=LogRegTrainer(60, 10),
        data=fedprox_synthetic(1, 1, num_devices=8, seed=0),
        run_dir=run_dir,
        rounds=rounds,
        cohort=CohortSpec(count=4),
        observer=NullObserver(),
    )


def rounds_in(path):
    return [h["round"] for h in json.loads(path.read_text())]


def test_history_is_complete_after_a_finished_and_a_paused_call(tmp_path):
    federation(tmp_path / "a").run()
    assert rounds_in(tmp_path / "a" / ck.HISTORY) == [1, 2, 3, 4, 5, 6]
    federation(tmp_path / "b").run(stop_after=4)  # fast rounds: the throttle skipped some
    assert rounds_in(tmp_path / "b" / ck.HISTORY) == [1, 2, 3, 4]
    federation(tmp_path / "b").run(resume=True)
    assert rounds_in(tmp_path / "b" / ck.HISTORY) == [1, 2, 3, 4, 5, 6]


def test_an_unsaved_round_never_reaches_history(tmp_path):
    fed = federation(tmp_path)

    class Boom(NullObserver):
        def round_started(self, *, round, attempt, cohort_size):
            if round == 4:
                fed.player.min_updates = 5  # more than a cohort of 4 gives: round 4 is retried

        def message(self, text):
            if "round 4" in text:
                raise KeyboardInterrupt  # its retry row is in memory, not in a checkpoint

    fed.observer = Boom()
    with contextlib.suppress(KeyboardInterrupt):
        fed.run()
    saved = [h["round"] for h in ck.load_checkpoint(tmp_path).history]
    assert saved == [1, 2, 3] and rounds_in(tmp_path / ck.HISTORY) == saved


def test_read_history_prefers_a_newer_checkpoint(tmp_path):
    federation(tmp_path, rounds=3).run()
    stale = tmp_path / ck.HISTORY
    stale.write_text(json.dumps(json.loads(stale.read_text())[:1]))  # as if killed early
    past = time.time() - 60
    os.utime(stale, (past, past))
    assert [h["round"] for h in ck.read_history(tmp_path)] == [1, 2, 3]
    assert ck.read_history(tmp_path / "nothing") is None
