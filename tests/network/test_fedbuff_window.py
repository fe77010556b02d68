"""FedBuff on the deployed server, in process: slots, arrivals, staleness and expiry.

The Coordinator in buffered mode and the BufferedRemoteExecutor are driven directly, as
the HTTP handlers and the Federation's thread drive them: clients ask for work
(``offer``), fetch their task (``task_frame``), answer (``submit`` / ``fail``); a step
publishes a version and gathers K arrivals.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fedlake.backends.remote.coordinator import Coordinator, Refusal
from fedlake.backends.remote.executor import BufferedRemoteExecutor
from fedlake.backends.remote.wire import reply_to_bytes
from fedlake.compression.messages import encode_model
from fedlake.core.task import ClientFailure, ClientReply, ClientTask, FailureReason
from fedlake.orchestration.buffered import FedBuffSettings

RUN = "fedbuff"
MODEL = encode_model(np.zeros(4, np.float32), None, None, np.random.default_rng(0))


def task(version: int, attempt: int = 0) -> ClientTask:
    return ClientTask(round=version, attempt=attempt, seed=0, model=MODEL)


def executor(concurrency: int = 2, buffer: int = 2, timeout_s: float = 30.0,
             max_staleness: int | None = None) -> BufferedRemoteExecutor:  # fmt: skip
    settings = FedBuffSettings(concurrency=concurrency, buffer=buffer, max_staleness=max_staleness)
    return BufferedRemoteExecutor(Coordinator(RUN), round_timeout_s=timeout_s, settings=settings)


def pull(ex: BufferedRemoteExecutor, client: str) -> tuple[int, int] | None:
    """``client`` asks for work and fetches it: the (round, attempt) it got, or None."""
    offer = ex.coordinator.offer(client)
    if offer is None:
        return None
    tag = (offer["round"] - 1, offer["attempt"])
    ex.coordinator.task_frame(client, *tag)
    return tag


def answer(
    ex: BufferedRemoteExecutor, client: str, tag: tuple[int, int], value: float = 1.0
) -> str:
    reply = ClientReply(client, {"delta": np.full(4, value, np.float32).tobytes()}, 10.0)
    body = reply_to_bytes(reply, round_=tag[0], attempt=tag[1], run_id=RUN)
    return ex.coordinator.submit(client, tag[0], tag[1], body, f"digest-{client}-{tag}")


def gather_soon(ex: BufferedRemoteExecutor, t: ClientTask, size: int) -> list[str]:
    """``gather`` in a thread (it publishes, then waits); its cohort once it returns."""
    out: list[list[str]] = []
    thread = threading.Thread(target=lambda: out.append(ex.gather(t, size)), daemon=True)
    thread.start()
    deadline = time.time() + 5
    while ex.window.current is None or ex.window.current.task is not t:
        assert time.time() < deadline, "gather did not publish its task"
        time.sleep(0.01)
    ex._thread = thread  # type: ignore[attr-defined]
    ex._out = out  # type: ignore[attr-defined]
    return out


def joined(ex: BufferedRemoteExecutor) -> list[str]:
    ex._thread.join(timeout=10)  # type: ignore[attr-defined]
    assert ex._out, "gather did not return"  # type: ignore[attr-defined]
    return ex._out[0]  # type: ignore[attr-defined]


def test_no_more_clients_train_at_once_than_the_concurrency() -> None:
    ex = executor(concurrency=2, buffer=1)
    assert pull(ex, "a") is None  # nothing published yet
    gather_soon(ex, task(0), 1)
    assert pull(ex, "a") == (0, 0) and pull(ex, "b") == (0, 0)
    assert pull(ex, "c") is None  # both slots taken
    assert ex.coordinator.offer("a") is not None  # a holder is offered its own slot again
    assert answer(ex, "a", (0, 0)) == "accepted"
    assert joined(ex) == ["a"]
    assert pull(ex, "c") == (0, 0)  # a's slot is free: c takes it on the current version


def test_each_step_takes_at_most_one_update_per_client() -> None:
    """A client whose update a step took gets no new slot before the next step (central
    DP's sensitivity assumes one update per client per step)."""
    ex = executor(concurrency=3, buffer=2)
    gather_soon(ex, task(0), 2)
    tag_a, _ = pull(ex, "a"), pull(ex, "b")
    assert tag_a is not None
    answer(ex, "a", tag_a)
    time.sleep(0.2)
    assert pull(ex, "a") is None  # its update waits in this step's buffer
    answer(ex, "b", (0, 0))
    assert sorted(joined(ex)) == ["a", "b"]
    gather_soon(ex, task(1), 2)
    assert pull(ex, "a") == (1, 0)  # the next step: it may train again, on version 1


def test_stale_updates_are_weighted_and_the_too_stale_dropped() -> None:
    ex = executor(concurrency=3, buffer=1, max_staleness=1)
    gather_soon(ex, task(0), 1)
    for c in "abc":
        assert pull(ex, c) == (0, 0)
    answer(ex, "a", (0, 0))
    assert joined(ex) == ["a"]
    gather_soon(ex, task(1), 1)
    answer(ex, "b", (0, 0))  # one version behind: taken, weight 1/sqrt(2)
    assert joined(ex) == ["b"]
    assert ex.pulled() == {"b": (0, 0)} and ex.round_metrics()["staleness_max"] == 1
    gather_soon(ex, task(2), 1)
    answer(ex, "c", (0, 0))  # two behind, over max_staleness 1: dropped, recorded
    assert pull(ex, "a") == (2, 0)
    answer(ex, "a", (2, 0))
    assert sorted(joined(ex)) == ["a", "c"]
    outcomes = {o.client_id: o for o in ex.map_clients(task(2), ["c", "a"])}
    stale = outcomes["c"]
    assert isinstance(stale, ClientFailure) and stale.reason is FailureReason.STRAGGLER
    assert "stale" in stale.message and "max_staleness 1" in stale.message
    assert isinstance(outcomes["a"], ClientReply)
    assert ex.round_metrics()["stale_dropped"] == 1
    assert ex.settings.weight(1) == pytest.approx(2**-0.5)


def test_an_unanswered_slot_expires_and_its_late_reply_is_refused() -> None:
    ex = executor(concurrency=1, buffer=1, timeout_s=0.6)
    gather_soon(ex, task(0), 1)
    assert pull(ex, "a") == (0, 0)
    assert pull(ex, "b") is None
    cohort = joined(ex)  # a never answers: its slot expires inside the step's timeout
    assert cohort == ["a"]
    (failure,) = ex.map_clients(task(0), cohort)
    assert isinstance(failure, ClientFailure) and failure.reason is FailureReason.STRAGGLER
    with pytest.raises(Refusal) as refused:
        answer(ex, "a", (0, 0))
    assert refused.value.status == 409


def test_a_resent_reply_is_a_duplicate_and_a_slot_outlives_a_retry() -> None:
    ex = executor(concurrency=2, buffer=2, timeout_s=1.5)
    gather_soon(ex, task(0), 2)
    assert pull(ex, "a") == (0, 0)
    assert answer(ex, "a", (0, 0)) == "accepted"
    assert answer(ex, "a", (0, 0)) == "duplicate"  # the client did not hear the first answer
    assert joined(ex) == ["a"]  # the step's time ran out: one update, a retry follows
    assert pull(ex, "b") == (0, 0)  # between the two, the version is still attempt 0
    gather_soon(ex, task(0, attempt=1), 2)  # the retry: the same version, a new attempt
    assert pull(ex, "a") == (0, 1)
    assert answer(ex, "b", (0, 0)) == "accepted"  # b still holds its slot on attempt 0
    assert answer(ex, "a", (0, 1)) == "accepted"
    assert sorted(joined(ex)) == ["a", "b"]
    assert ex.pulled() == {"a": (0, 1), "b": (0, 0)} and ex.round_metrics()["staleness_max"] == 0


def test_a_failure_frees_the_slot_and_is_recorded() -> None:
    ex = executor(concurrency=1, buffer=1)
    gather_soon(ex, task(0), 1)
    assert pull(ex, "a") == (0, 0)
    ex.coordinator.fail("a", 0, 0, "error", "boom")
    assert pull(ex, "b") == (0, 0)  # the slot is free at once
    answer(ex, "b", (0, 0))
    assert joined(ex) == ["a", "b"]
    status = ex.coordinator.status()
    assert status["sampled"] == [] and status["round"] == 1


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"algorithm": {"name": "scaffold"}}, "SCAFFOLD's control variates"),
        ({"fedbuff": {"concurrency": 9, "buffer": 4}}, "buffer (4) > the 3 clients"),
        ({"privacy": {"noise_multiplier": 1.0}}, "no amplification by sampling holds"),
    ],
)
def test_the_server_refuses_what_fedbuff_cannot_combine_with(tmp_path, sections, message) -> None:
    from fedlake.backends.remote.certs import make_certs
    from fedlake.config import ConfigError, parse_config
    from fedlake.run.deploy import build_served

    certs = make_certs(tmp_path / "certs", ("a", "b", "c"))
    raw = {
        "output_dir": str(tmp_path / "runs"),
        "data": {"scenario": "remote", "input_shape": [4], "num_classes": 2},
        "model": {"kind": "logreg"},
        "fedbuff": {"concurrency": 3, "buffer": 2},
        "lakehouse": {"delta": False, "mlflow": False},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    with pytest.raises(ConfigError) as err:
        build_served(parse_config(raw), certs)
    assert message in str(err.value)
