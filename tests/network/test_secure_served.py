"""Secure aggregation (SecAgg+) between a server and remote clients.

The four stages of a secure attempt travel as four offers with the attempt's (round,
attempt) and the stage's number; a task frame carries the client's own inbox entry only;
a reply to one stage is refused as a reply to another. Served secure rounds (RemoteClients
in threads against the in-process app) give the plain model within the encoding's
bound, and survive a client that goes silent after sharing its keys.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cryptography")

from fedlake.algorithms import fedavg  # noqa: E402
from fedlake.backends.inline import InlineExecutor  # noqa: E402
from fedlake.backends.remote.coordinator import Coordinator, Refusal  # noqa: E402
from fedlake.backends.remote.wire import (  # noqa: E402
    reply_from_bytes,
    reply_to_bytes,
    stage_number,
    task_from_bytes,
    task_parts,
)
from fedlake.client.fleet import ClientFleet  # noqa: E402
from fedlake.client.logreg import LogRegTrainer  # noqa: E402
from fedlake.client.stores import MemoryStateStore  # noqa: E402
from fedlake.core.task import (  # noqa: E402
    SECURE_STAGE,
    ClientFailure,
    ClientReply,
    ClientTask,
    FailureReason,
    SecureStage,
)
from fedlake.data.synthetic import fedprox_synthetic  # noqa: E402
from fedlake.orchestration.checkpoint import load_checkpoint  # noqa: E402
from fedlake.orchestration.federation import Federation  # noqa: E402
from fedlake.orchestration.sampling import CohortSpec  # noqa: E402
from fedlake.orchestration.secure import SecureSettings, secure_encoding  # noqa: E402
from tests.network.test_remote_conformance import LoopbackRemote  # noqa: E402

DATA = fedprox_synthetic(1, 1, num_devices=5, seed=0)
TRAINER = LogRegTrainer(60, 10)
SEED = 1
SETTINGS = SecureSettings(clip=10.0)
TIMEOUT_S = 6.0  # each stage's deadline in the dropout test


def _stage_task(stage: SecureStage, inbox: dict[str, bytes]) -> ClientTask:
    extras = {
        SECURE_STAGE: stage.value.encode(),
        "secagg.config": b"\x01\x02config",
        "secagg.cohort": b'["a", "b", "c"]',
        "control": b"\x00" * 8,  # a plain extra keeps its x_ section
    }
    return ClientTask(round=2, attempt=1, seed=7, model=b"", extras=extras, inbox=inbox)


def _frame(task: ClientTask, client: str) -> bytes:
    return b"".join(bytes(p) for p in task_parts(task, client, "run"))


def test_a_secure_task_frame_round_trips_with_its_stage_extras_and_own_inbox() -> None:
    inbox = {"a": b"for-a-only", "b": b"for-b-only", "c": b"for-c-only"}
    task = _stage_task(SecureStage.SHARE_KEYS, inbox)
    got, client, run = task_from_bytes(_frame(task, "a"))
    assert (client, run, got.tag, got.seed) == ("a", "run", (2, 1), 7)
    assert got.stage is SecureStage.SHARE_KEYS and stage_number(got) == 2
    assert {k: bytes(v) for k, v in got.extras.items()} == dict(task.extras)
    assert {k: bytes(v) for k, v in got.inbox.items()} == {"a": b"for-a-only"}
    # a client without an entry gets none; a plain task stays stage 0
    alone, _, _ = task_from_bytes(_frame(task, "d"))
    assert dict(alone.inbox) == {}
    assert stage_number(ClientTask(0, 0, 0, b"")) == 0


def test_a_clients_frame_holds_no_other_clients_inbox_entry() -> None:
    inbox = {c: f"secret-message-of-{c}".encode() * 3 for c in "abc"}
    task = _stage_task(SecureStage.UNMASK, inbox)
    for me in "abc":
        frame = _frame(task, me)
        assert inbox[me] in frame
        assert not any(inbox[other] in frame for other in "abc" if other != me)


def test_a_reply_to_one_stage_is_refused_as_a_reply_to_another() -> None:
    coordinator = Coordinator("run")
    task = _stage_task(SecureStage.SHARE_KEYS, {"a": b"x"})
    attempt = coordinator.open_attempt(task, ["a", "b"], 30)
    assert coordinator.offer("a")["stage"] == 2  # type: ignore[index]
    reply = ClientReply("a", {"secagg": b"message"}, 1.0)
    body = reply_to_bytes(reply, round_=2, attempt=1, run_id="run", stage=1)
    assert reply_from_bytes(body)[1]["stage"] == 1
    with pytest.raises(Refusal, match="at stage 2, not stage 1") as late:
        coordinator.submit("a", 2, 1, body, "d1", stage=1)  # stage 1's URL, stage 2 open
    assert late.value.status == 409
    with pytest.raises(Refusal, match="not stage 1") as fetch:  # nor its task
        coordinator.task_frame("a", 2, 1, stage=1)
    assert fetch.value.status == 409
    with pytest.raises(Refusal, match="stage 1 sent as one to stage 2") as wrong:
        coordinator.submit("a", 2, 1, body, "d1", stage=2)  # stage 2's URL, stage 1's frame
    assert wrong.value.status == 409
    good = reply_to_bytes(reply, round_=2, attempt=1, run_id="run", stage=2)
    assert coordinator.submit("a", 2, 1, good, "d2", stage=2) == "accepted"
    assert attempt.outcomes.get_nowait().client_id == "a"
    coordinator.close_attempt(attempt)
    # the next stage opens for the same (round, attempt): offered again
    coordinator.open_attempt(_stage_task(SecureStage.MASKED_INPUT, {}), ["a"], 30)
    assert coordinator.offer("a")["stage"] == 3  # type: ignore[index]


def test_a_plain_attempt_is_stage_zero_and_its_reply_frame_names_none() -> None:
    coordinator = Coordinator("run")
    coordinator.open_attempt(ClientTask(0, 0, 0, b""), ["a"], 30)
    assert coordinator.offer("a")["stage"] == 0  # type: ignore[index]
    body = reply_to_bytes(ClientReply("a", {}, 1.0), round_=0, attempt=0, run_id="run")
    assert b'"stage"' not in body and reply_from_bytes(body)[1]["stage"] == 0
    assert coordinator.submit("a", 0, 0, body, "d") == "accepted"


class Silent:
    """A client's runtime that answers the key exchange, then not its masked input in
    time: it blocks until ``release`` (after the round; its late failure is refused)."""

    def __init__(self, inner: Any, release: threading.Event) -> None:
        self.inner, self.release = inner, release

    def handle(self, task: ClientTask, client_id: str) -> Any:
        if task.stage is SecureStage.MASKED_INPUT:
            self.release.wait(60)
            return ClientFailure(client_id, FailureReason.LOST, "gone")
        return self.inner.handle(task, client_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Kept:
    """An executor whose ``close`` the test makes, not the Federation."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def map_clients(self, task: ClientTask, cohort: Any) -> Any:
        return self.inner.map_clients(task, cohort)

    def close(self) -> None:
        """Nothing: the test closes the inner executor."""


def _fleet() -> ClientFleet:
    return ClientFleet(DATA, TRAINER, fedavg)


def _federation(tmp: Path, executor: Any, ids: list[str], secure: SecureSettings | None) -> Any:
    fleet = _fleet()
    fed = Federation(
        algorithm=fleet.algorithm, trainer=TRAINER, client_ids=ids, executor=executor,
        run_dir=tmp, rounds=1, cohort=CohortSpec(count=len(ids)), seed=SEED, secure=secure,
    )  # fmt: skip
    fed.run()
    ckpt = load_checkpoint(tmp)
    assert ckpt is not None
    return ckpt


def _plain(tmp: Path, ids: list[str]) -> np.ndarray:
    """The plain model of one FedAvg round over ``ids`` (clients one by one)."""
    ckpt = _federation(tmp, InlineExecutor(_fleet(), chunk=1), ids, None)
    return np.array(ckpt.state.params)


def _bound(survivors: list[str], cohort: int) -> float:
    """The encoding's error of the weighted mean over ``survivors``."""
    weight = float(sum(DATA.load(c).num_train for c in survivors))
    encoding = secure_encoding(SETTINGS, cohort, weighted=True)
    return encoding.error_bound(clients=len(survivors), total_weight=weight)


def _close(a: np.ndarray, b: np.ndarray, bound: float) -> None:
    eps = 4 * np.finfo(np.float32).eps * max(1.0, float(np.abs(a).max()))
    assert np.abs(a - b).max() <= bound + eps


@pytest.mark.integration
def test_a_served_secure_round_gives_the_plain_model_within_the_bound(tmp_path: Path) -> None:
    ids = list(DATA.client_ids())
    remote = LoopbackRemote(_fleet(), MemoryStateStore())
    try:
        secure = _federation(tmp_path / "secure", remote, ids, SETTINGS)
    finally:
        remote.close()
    plain = _plain(tmp_path / "plain", ids)
    _close(np.array(secure.state.params), plain, _bound(ids, len(ids)))
    m = json.loads(secure.history[-1]["metrics"])
    assert m["secagg_clipped"] == 0
    assert m["secagg_advertised"] == m["secagg_masked"] == m["secagg_unmasked"] == len(ids)
    assert secure.history[-1]["num_completed"] == len(ids)


@pytest.mark.integration
def test_a_client_silent_after_sharing_its_keys_is_a_dropout(tmp_path: Path) -> None:
    ids = list(DATA.client_ids())
    gone = ids[1]
    release = threading.Event()
    remote = LoopbackRemote(
        _fleet(),
        MemoryStateStore(),
        round_timeout_s=TIMEOUT_S,
        wrap=lambda cid, rt: Silent(rt, release) if cid == gone else rt,
    )
    try:  # the server stays up until the silent client heard its late answer refused
        secure = _federation(tmp_path / "secure", Kept(remote), ids, SETTINGS)
    finally:
        release.set()
        time.sleep(1.0)  # its failure is sent, and refused: the attempt closed
        remote.close()
    survivors = [c for c in ids if c != gone]
    plain = _plain(tmp_path / "plain", survivors)
    _close(np.array(secure.state.params), plain, _bound(survivors, len(ids)))
    m = json.loads(secure.history[-1]["metrics"])
    assert m["secagg_shared"] == len(ids)  # it shared its keys, then went silent
    assert m["secagg_masked"] == len(survivors)
    row = secure.history[-1]
    assert row["num_completed"] == len(survivors) and row["num_dropped"] == 1
    late = [r for r in remote.coordinator.refusals if r["client"] == gone]
    assert late and late[-1]["status"] == 409  # its answer after the deadline: refused


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        ({"fedbuff": {"buffer": 3, "concurrency": 4}}, "FedBuff's steps sum whichever clients"),
        ({"algorithm": {"name": "scaffold"}}, "SCAFFOLD's control variates"),
        ({"algorithm": {"aggregator": {"kind": "median"}}}, "reveals only the sum"),
        (
            {"compression": {"upload": [{"kind": "topk", "ratio": 0.1}]}},
            "only a single quantize stage",
        ),
        ({"privacy": {"mechanism": "central", "epsilon": 8.0}}, "use mechanism 'distributed'"),
    ],
)
def test_the_server_refuses_what_secure_aggregation_does_not_combine_with(
    tmp_path: Path, sections: dict[str, Any], words: str
) -> None:
    from fedlake.backends.remote.certs import make_certs
    from fedlake.config import ConfigError, parse_config
    from fedlake.run.deploy import build_served

    certs = make_certs(tmp_path / "certs", ("a", "b", "c", "d"))
    raw: dict[str, Any] = {
        "output_dir": str(tmp_path / "runs"),
        "data": {"scenario": "remote", "input_shape": [4], "num_classes": 2},
        "model": {"kind": "logreg"},
        "federation": {"rounds": 1, "secure_aggregation": True},
        "lakehouse": {"delta": False, "mlflow": False},
    }
    served = build_served(parse_config(raw), certs)  # served: no refusal any more
    assert served.federation.secure is not None
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    with pytest.raises(ConfigError) as err:
        build_served(parse_config(raw), certs)
    assert words in str(err.value)


@pytest.mark.integration
def test_a_served_round_with_distributed_dp_carries_the_planned_noise(tmp_path: Path) -> None:
    pytest.importorskip("randomgen")
    from fedlake.algorithms.private import apply_dp
    from fedlake.orchestration.secure import LEVELS
    from fedlake.orchestration.secure_dp import dp_encoding
    from fedlake.privacy.distributed import DistributedDP
    from fedlake.privacy.plan import Budget, PrivacyPlan
    from fedlake.privacy.settings import DPSettings

    ids = list(DATA.client_ids())
    n, z = len(ids), 0.5
    dp = DistributedDP(noise_multiplier=z, clip=100.0, denominator=float(n))  # never clips
    recipe = apply_dp(
        fedavg(weighted=False),
        DPSettings("distributed", z, 100.0, None, "none", float(n), SEED, True),
    )
    settings = SecureSettings(clip=100.0, expected_dropout=0.0, dp=dp)
    plan = PrivacyPlan("distributed", z, Budget(None, 1e-5), n, n, "none", "rdp")
    remote = LoopbackRemote(
        ClientFleet(DATA, TRAINER, lambda: recipe), MemoryStateStore(), round_timeout_s=20
    )
    try:
        fed = Federation(
            algorithm=recipe, trainer=TRAINER, client_ids=ids, executor=remote,
            run_dir=tmp_path / "dp", rounds=1, cohort=CohortSpec(count=n), seed=SEED,
            secure=settings, privacy=plan,
        )  # fmt: skip
        fed.run()
    finally:
        remote.close()
    noisy = load_checkpoint(tmp_path / "dp")
    assert noisy is not None and noisy.history[-1]["status"] == "completed"
    uniform = ClientFleet(DATA, TRAINER, lambda: fedavg(weighted=False))
    plain = _federation(tmp_path / "plain", InlineExecutor(uniform, chunk=1), ids, None)
    gap = np.array(noisy.state.params, dtype=np.float64) - np.array(plain.state.params)
    enc = dp_encoding(dp, clients=n, length=gap.size, levels=LEVELS, expected_dropout=0.0)
    std = np.sqrt(n * enc.variance) / (enc.encoding.scale * n)  # the summed noise, / n
    assert 0.85 < gap.std() / std < 1.15 and abs(gap.mean()) < 4 * std / np.sqrt(gap.size)
    assert noisy.history[-1]["epsilon"] > 0


def test_the_key_exchange_stages_wait_their_own_timeout() -> None:
    from fedlake.backends.remote.executor import RemoteExecutor

    executor = RemoteExecutor(Coordinator("run"), round_timeout_s=60, key_stage_timeout_s=0.3)
    assert executor.timeout_of(_stage_task(SecureStage.MASKED_INPUT, {})) == 60
    t0 = time.perf_counter()
    (silent,) = list(executor.map_clients(_stage_task(SecureStage.ADVERTISE, {}), ["a"]))
    assert time.perf_counter() - t0 < 5  # not the round's 60 s
    assert isinstance(silent, ClientFailure) and "within 0.3 s" in silent.message
    with pytest.raises(ValueError, match="key_stage_timeout_s must be > 0"):
        RemoteExecutor(Coordinator("run"), round_timeout_s=60, key_stage_timeout_s=0)
