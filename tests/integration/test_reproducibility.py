"""A torch model trains to the same bits inline and in spawned worker processes."""

import functools

import pytest

from fedlake.algorithms.fedavg import fedavg
from fedlake.data.activity import ActivityPopulation
from fedlake.models.registry import build_trainer
from fedlake.orchestration.sampling import CohortSpec
from fedlake.simulation import Population, simulate

pytestmark = pytest.mark.integration


def federation(run_dir, **kw):
    return simulate(
        recipe=functools.partial(fedavg, client_lr=0.2, local_epochs=2, batch_size=16),
        trainer=build_trainer("cnn1d", input_shape=(4, 128), num_classes=5, channels=(8, 16)),
        data=ActivityPopulation(12, seed=4),
        run_dir=run_dir,
        rounds=2,
        cohort=CohortSpec(count=6),
        population=Population(dropout=0.2),
        seed=4,
        **kw,
    )


def test_cnn_federation_is_bit_identical_inline_and_in_processes(tmp_path):
    # one client at a time inline, as in each worker: the same bits; a vectorised cohort
    # matches to float tolerance only (tests/client/test_cohort_run.py)
    inline = federation(tmp_path / "inline", executor="inline", vectorize=False).run()
    again = federation(tmp_path / "again", executor="inline", vectorize=False).run()
    procs = federation(tmp_path / "procs", executor="process", workers=2).run()
    assert inline.state.params.tobytes() == again.state.params.tobytes()
    assert procs.state.params.tobytes() == inline.state.params.tobytes()
    assert [h["cohort"] for h in procs.history] == [h["cohort"] for h in inline.history]
    assert inline.history[-1]["num_completed"] >= 1
