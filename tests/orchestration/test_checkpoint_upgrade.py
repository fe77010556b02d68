"""A run checkpointed by fedlake before the seam redesign (format 2) resumes bit for bit.

Format 2 kept every simulated client's state in the checkpoint (``client_states``: the
SCAFFOLD control variate under ``control``, the error-feedback residual under
``residual``, the personal model under ``personal``) and SCAFFOLD's server control in
``ServerState.control``. Loading upgrades it: the server control becomes the scaffold
plugin's state and the clients' states go to the simulator's stores.
"""

from __future__ import annotations

import functools
import pickle

import numpy as np

from fedlake.algorithms.spec import RecipeSpec, build_algorithm
from fedlake.client.logreg import LogRegTrainer
from fedlake.config import AlgorithmConfig, CompressionConfig, PersonalizationConfig
from fedlake.data.synthetic import fedprox_synthetic
from fedlake.orchestration.checkpoint import CHECKPOINT, FORMAT_VERSION, load_checkpoint
from fedlake.orchestration.sampling import CohortSpec
from fedlake.simulation import Population, SimulatedStores, simulate

DATA = fedprox_synthetic(1, 1, num_devices=10, seed=0)
SPEC = RecipeSpec(
    algorithm=AlgorithmConfig(name="scaffold", client_lr=0.05, batch_size=10),
    compression=CompressionConfig.model_validate(
        {"upload": [{"kind": "topk", "ratio": 0.3}], "error_feedback": True}
    ),
    personalization=PersonalizationConfig(kind="ditto", lam=0.5),
)
LEGACY_KEYS = {"scaffold": "control", "error_feedback": "residual", "ditto": "personal"}


def federation(run_dir, rounds):
    return simulate(
        recipe=functools.partial(build_algorithm, SPEC),
        trainer=LogRegTrainer(60, 10),
        data=DATA,
        run_dir=run_dir,
        rounds=rounds,
        cohort=CohortSpec(count=5),
        seed=3,
        population=Population(dropout=0.2),
        min_clients=4,
    )


def as_format_2(run_dir) -> None:
    """Rewrite a run's checkpoint as format 2 wrote it (states resolved, in the checkpoint)."""
    path = run_dir / CHECKPOINT
    ckpt = pickle.loads(path.read_bytes())
    stores = SimulatedStores()
    stores.restore(ckpt.components["client_states"])
    clients = {}
    for cid, record in stores.records.items():
        states = dict(record["states"])
        pending = record.get("pending")
        if pending and tuple(pending["tag"]) == tuple(ckpt.acks.get(cid, ())):
            states.update(pending["states"])  # format 2 kept only what counted
        clients[cid] = {LEGACY_KEYS[k]: v for k, v in states.items() if v is not None}
    for key in ("components", "acks", "legacy_client_states"):
        del ckpt.__dict__[key]
    ckpt.__dict__["client_states"] = clients
    ckpt.state.__dict__["control"] = ckpt.state.__dict__.pop("plugins")["scaffold"]
    ckpt.version = 2
    path.write_bytes(pickle.dumps(ckpt))


def test_a_format_2_checkpoint_resumes_to_the_uninterrupted_model(tmp_path) -> None:
    straight = federation(tmp_path / "straight", 4).run()
    federation(tmp_path / "resumed", 2).run()
    as_format_2(tmp_path / "resumed")
    upgraded = load_checkpoint(tmp_path / "resumed")
    assert upgraded.version == FORMAT_VERSION and upgraded.legacy_client_states
    assert set(upgraded.state.plugins) == {"scaffold"}
    resumed = federation(tmp_path / "resumed", 4).run(resume=True)
    assert resumed.state.params.tobytes() == straight.state.params.tobytes()
    np.testing.assert_array_equal(
        resumed.state.plugins["scaffold"], straight.state.plugins["scaffold"]
    )
    assert [h["eval_accuracy"] for h in resumed.history] == [
        h["eval_accuracy"] for h in straight.history
    ]
