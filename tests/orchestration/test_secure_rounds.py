"""Secure aggregation (SecAgg+) in the simulator: the plain model within the encoding's
bound, dropouts after the key exchange, aborted attempts retried, masked replies only,
and every refusal's message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("cryptography")

from fedlake.algorithms import fedavg  # noqa: E402
from fedlake.client.logreg import LogRegTrainer  # noqa: E402
from fedlake.config import ConfigError, parse_config  # noqa: E402
from fedlake.core.rng import round_rng  # noqa: E402
from fedlake.core.task import ClientReply, SecureStage  # noqa: E402
from fedlake.data.synthetic import fedprox_synthetic  # noqa: E402
from fedlake.orchestration.checkpoint import load_checkpoint  # noqa: E402
from fedlake.orchestration.events import NullObserver  # noqa: E402
from fedlake.orchestration.sampling import CohortSpec, draw_cohort  # noqa: E402
from fedlake.orchestration.secure import SecureSettings, secure_encoding  # noqa: E402
from fedlake.run import run_experiment  # noqa: E402
from fedlake.run.build import build_experiment  # noqa: E402
from fedlake.secagg import MaskedInput, decode, unpack  # noqa: E402
from fedlake.simulation import Population, simulate  # noqa: E402
from fedlake.simulation.population import DROPOUT_RNG  # noqa: E402

DATA = fedprox_synthetic(1, 1, num_devices=12, seed=0)
TRAINER = LogRegTrainer(60, 10)
COHORT = 10
SEED = 1
SETTINGS = SecureSettings(clip=10.0)


def _run(tmp: Path, secure: SecureSettings | None, **kw: Any) -> Any:
    fed = simulate(
        recipe=fedavg, trainer=TRAINER, data=DATA, run_dir=tmp, rounds=1,
        cohort=CohortSpec(count=COHORT), seed=SEED, secure=secure, **kw,
    )  # fmt: skip
    fed.run()
    ckpt = load_checkpoint(tmp)
    assert ckpt is not None
    return ckpt


def _bound(dropped: set[str] = frozenset()) -> float:  # type: ignore[assignment]
    """The largest |secure - plain| per coordinate after one FedAvg round: the encoding's
    error of the weighted mean (float64), plus float32 rounding of the mean and the step."""
    cohort = draw_cohort(DATA.client_ids(), size=COHORT, seed=SEED, round_=0, attempt=0)
    survivors = [c for c in cohort if c not in dropped]
    weight = float(sum(DATA.load(c).num_train for c in survivors))
    encoding = secure_encoding(SETTINGS, COHORT, weighted=True)
    return encoding.error_bound(clients=len(survivors), total_weight=weight)


def _close(a: np.ndarray, b: np.ndarray, bound: float) -> None:
    eps = 4 * np.finfo(np.float32).eps * max(1.0, float(np.abs(a).max()))
    assert np.abs(a - b).max() <= bound + eps


def _metrics(ckpt: Any) -> dict[str, Any]:
    return json.loads(ckpt.history[-1]["metrics"])


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_a_secure_round_gives_the_plain_model_within_the_encoding_bound(
    tmp_path: Path, executor: str
) -> None:
    # the process executor runs clients one by one: the plain inline run's numbers then
    kw = {"executor": executor, "workers": 2} if executor == "process" else {}
    plain = _run(tmp_path / "plain", None, vectorize=executor == "inline")
    secure = _run(tmp_path / "secure", SETTINGS, **kw)
    _close(secure.state.params, plain.state.params, _bound())
    m = _metrics(secure)
    assert m["secagg_clipped"] == 0  # the bound holds for unclipped updates
    assert (m["secagg_degree"], m["secagg_threshold"], m["secagg_bits"]) == (9, 5, 40)
    assert m["secagg_advertised"] == m["secagg_masked"] == m["secagg_unmasked"] == COHORT
    assert all(m[f"secagg_bytes_{d}_{s}"] > 0 for d in ("up", "down") for s in ("share", "masked"))
    assert secure.history[-1]["num_completed"] == COHORT


def test_dropouts_after_the_key_exchange_leave_the_survivors_plain_aggregate(
    tmp_path: Path,
) -> None:
    population = Population(dropout=0.2)
    cohort = draw_cohort(DATA.client_ids(), size=COHORT, seed=SEED, round_=0, attempt=0)
    dropped = population.dropped(cohort, round_rng(SEED, 0, DROPOUT_RNG, 0))
    assert 1 <= len(dropped) <= 4  # the seed drops some, not too many
    plain = _run(tmp_path / "plain", None, population=population)
    secure = _run(tmp_path / "secure", SETTINGS, population=population)
    _close(secure.state.params, plain.state.params, _bound(dropped))
    m = _metrics(secure)
    assert m["secagg_shared"] == COHORT  # they shared their keys, then vanished
    assert m["secagg_masked"] == COHORT - len(dropped)
    assert secure.history[-1]["num_dropped"] == len(dropped)


def test_too_many_dropouts_abort_the_attempt_and_the_retry_policy_applies(
    tmp_path: Path,
) -> None:
    observer = NullObserver()
    fed = simulate(
        recipe=fedavg, trainer=TRAINER, data=DATA, run_dir=tmp_path, rounds=1,
        cohort=CohortSpec(count=COHORT), seed=SEED, secure=SETTINGS, max_retries=1,
        population=Population(dropout=0.8), observer=observer,  # type: ignore[arg-type]
    )  # fmt: skip
    result = fed.run()
    assert result.stop_reason == "insufficient_updates"
    ckpt = load_checkpoint(tmp_path)
    assert ckpt is not None
    assert [h["status"] for h in ckpt.history] == ["retry", "failed"]
    aborted = [line for line in observer.messages if "secure aggregation aborted" in line]
    assert len(aborted) == 2 and "t=5" in aborted[0]


class Recording:
    """An executor wrapper keeping every reply the server receives."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.replies: list[tuple[SecureStage | None, ClientReply]] = []

    def map_clients(self, task: Any, cohort: Any, **kw: Any) -> Any:
        for outcome in self.inner.map_clients(task, cohort, **kw):
            if isinstance(outcome, ClientReply):
                self.replies.append((task.stage, outcome))
            yield outcome

    def close(self) -> None:
        self.inner.close()


def test_the_server_receives_masked_vectors_only(tmp_path: Path) -> None:
    from fedlake.backends.inline import InlineExecutor

    kept: list[Recording] = []

    def factory(fleet: Any, stores: Any) -> Recording:
        kept.append(Recording(InlineExecutor(fleet, stores)))
        return kept[0]

    _run(tmp_path, SETTINGS, executor=factory)
    replies = kept[0].replies
    assert {stage for stage, _ in replies} == set(SecureStage)
    encoding = secure_encoding(SETTINGS, COHORT, weighted=True)
    masked = 0
    for stage, reply in replies:
        assert set(reply.payloads) == {"secagg"}  # never a delta
        assert "num_examples" not in reply.metrics and reply.weight in (0.0, 1.0)
        message = decode(reply.payloads["secagg"])
        if stage is SecureStage.MASKED_INPUT:
            assert isinstance(message, MaskedInput)
            values = unpack(message.vector, TRAINER.spec.size + 1, encoding.bits)
            signed = encoding.centred(values)
            # its encoding alone has |q| <= w * clip * scale + 1; masked: uniform in Z_R
            w = DATA.load(reply.client_id).num_train
            assert np.mean(np.abs(signed) > w * SETTINGS.clip * encoding.scale + 1) > 0.99
            masked += 1
    assert masked == COHORT


BASE: dict[str, Any] = {
    "name": "secure",
    "seed": 1,
    "data": {"scenario": "synthetic", "num_clients": 12},
    "model": {"kind": "logreg"},
    "algorithm": {"name": "fedavg", "local_epochs": 1},
    "federation": {"rounds": 1, "clients_per_round": 10, "secure_aggregation": True},
    "lakehouse": {"delta": False, "mlflow": False},
}


def _config(tmp_path: Path, **sections: Any) -> Any:
    raw = json.loads(json.dumps(BASE))
    for name, value in sections.items():
        raw[name] = {**raw.get(name, {}), **value} if isinstance(value, dict) else value
    raw["output_dir"] = str(tmp_path)
    return parse_config(raw)


def _refused(tmp_path: Path, **sections: Any) -> str:
    cfg = _config(tmp_path, **sections)
    with pytest.raises(ConfigError) as err:
        build_experiment(cfg, observer=NullObserver(), run_dir=tmp_path / "run")
    return str(err.value)


def test_a_secure_run_from_the_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path, secure_aggregation={"clip": 5.0, "degree": 6, "threshold": 4})
    m = json.loads(run_experiment(cfg).result.history[-1]["metrics"])
    assert (m["secagg_degree"], m["secagg_threshold"], m["secagg_bits"]) == (6, 4, 40)


@pytest.mark.parametrize(
    ("aggregator", "words"),
    [
        ({"kind": "krum", "f": 1}, "krum is a non-linear rule"),
        ({"kind": "median"}, "median is a non-linear rule"),
        ({"kind": "trimmed_mean", "trim": 1}, "trimmed_mean is a non-linear rule"),
        ({"kind": "bulyan", "f": 1}, "bulyan is a non-linear rule"),
    ],
)
def test_non_linear_aggregators_are_refused(
    tmp_path: Path, aggregator: dict[str, Any], words: str
) -> None:
    message = _refused(tmp_path, algorithm={"aggregator": aggregator})
    assert words in message and "reveals only the sum" in message


@pytest.mark.parametrize(
    ("sections", "words"),
    [
        ({"fedbuff": {"buffer": 4, "concurrency": 8}}, "FedBuff's steps sum whichever clients"),
        ({"executor": {"kind": "process", "fold": True}}, "fold = true with secure aggregation"),
        ({"attack": {"kind": "sign_flip", "fraction": 0.2}}, "remove [attack] with secure"),
        ({"algorithm": {"name": "scaffold"}}, "SCAFFOLD's control variates"),
        (
            {"compression": {"upload": [{"kind": "topk", "ratio": 0.1}]}},
            "only a single quantize stage",
        ),
        (
            {"compression": {"upload": [{"kind": "quantize", "bucket": 64}]}},
            "remove bucket",
        ),
        ({"privacy": {"mechanism": "central", "epsilon": 8.0}}, "use mechanism 'distributed'"),
    ],
)
def test_what_secure_aggregation_does_not_combine_with_is_refused(
    tmp_path: Path, sections: dict[str, Any], words: str
) -> None:
    if "fedbuff" in sections:
        fed = {k: v for k, v in BASE["federation"].items() if k != "clients_per_round"}
        sections = {**sections, "federation": fed}
    raw = json.loads(json.dumps(BASE))
    raw.update(sections)
    raw["output_dir"] = str(tmp_path)
    cfg = parse_config(raw)
    with pytest.raises(ConfigError, match=None) as err:
        build_experiment(cfg, observer=NullObserver(), run_dir=tmp_path / "run")
    assert words in str(err.value)


def test_the_section_without_the_flag_is_refused() -> None:
    raw = json.loads(json.dumps(BASE))
    raw["federation"]["secure_aggregation"] = False
    raw["secure_aggregation"] = {"clip": 2.0}
    with pytest.raises(ConfigError, match="federation.secure_aggregation is false"):
        parse_config(raw)
    raw["federation"]["secure_aggregation"] = True
    raw["secure_aggregation"] = {"degree": 6, "threshold": 3}
    with pytest.raises(ConfigError, match=r"threshold must be in \(degree / 2, degree\]"):
        parse_config(raw)


def test_a_chunk_of_a_task_carries_only_its_clients_messages() -> None:
    from fedlake.core.task import SECURE_STAGE, ClientTask

    task = ClientTask(
        round=0, attempt=0, seed=0, model=b"", extras={SECURE_STAGE: b"unmask"},
        inbox={"a": b"1", "b": b"2", "c": b"3"},
    )  # fmt: skip
    assert task.only(["a", "c"]).inbox == {"a": b"1", "c": b"3"}
    assert task.stage is SecureStage.UNMASK
    assert ClientTask(round=0, attempt=0, seed=0, model=b"").stage is None
