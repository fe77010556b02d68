"""A client's side of a secure-aggregation (SecAgg+) attempt, one stage per task.

The server runs four tasks per attempt (``ClientTask.stage``): ``advertise`` (the
client's public keys), ``share_keys`` (Shamir shares of its secrets, encrypted to its
neighbours), ``masked_input`` (the only stage that trains: the update, clipped, weighted
and encoded in fixed point, then masked) and ``unmask`` (the shares the server needs to
remove the masks of the sum, never both of one client's secrets). The task's extras
carry the round's public :class:`~fedlake.secagg.SecAggConfig`, the cohort (a client's
protocol id is its position in it, from 1) and the encoding; ``task.inbox`` carries each
client's own message. The session's secrets live in the client's state store between
stages and are erased once it answered the unmasking request; they are sent nowhere.
Bonawitz et al., ACM CCS 2017; Bell et al., ACM CCS 2020.

``fedlake.secagg`` needs the ``crypto`` extra: it is imported only when a secure task
arrives, so a plain client installs without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlake.client.stores import ClientStateStore
from fedlake.core.rng import client_key, round_rng
from fedlake.core.task import ClientReply, ClientTask, SecureStage

if TYPE_CHECKING:
    from fedlake.secagg import ClientSession, FixedPoint, SecAggConfig

__all__ = [
    "CONFIG",
    "COHORT",
    "ENCODING",
    "PAYLOAD",
    "RECORD_KEY",
    "SECAGG_RNG",
    "SecureRound",
    "answer_stage",
    "seal_reply",
    "weight_coordinate",
]

CONFIG = "secagg.config"  # extras: the round's SecAggConfig bytes
COHORT = "secagg.cohort"  # extras: the cohort's client ids, JSON (protocol id = position + 1)
ENCODING = "secagg.encoding"  # extras: the fixed-point encoding, JSON
PAYLOAD = "secagg"  # the reply payload holding the stage's message
RECORD_KEY = "secagg"  # the client's record key holding its session state (uint8 array)
SECAGG_RNG = 13  # purpose tag of the generator of a client's stochastic rounding
# metrics a masked input never carries: the server learns only the sum of the weights
_PRIVATE_METRICS = ("num_examples",)


def weight_coordinate(clip: float) -> float:
    """The value a client appends to its update so that the sum carries the total weight:
    the largest power of two <= ``clip`` (so ``weight * value * scale`` is an exact
    integer for integer weights and never clipped)."""
    return float(2.0 ** np.floor(np.log2(clip)))


@dataclass(frozen=True)
class SecureRound:
    """What a secure task's extras say: the protocol config, ids and the encoding."""

    config: SecAggConfig
    ids: Mapping[str, int]
    encoding: FixedPoint
    weighted: bool
    dp: Mapping[str, Any] | None = None  # distributed DP: clip, variance, secure

    @classmethod
    def of(cls, task: ClientTask) -> SecureRound:
        """Read a secure task's extras (raises ValueError when they are missing or bad)."""
        from fedlake.secagg import FixedPoint, SecAggConfig

        try:
            config = SecAggConfig.from_bytes(bytes(task.extras[CONFIG]))
            cohort = json.loads(bytes(task.extras[COHORT]))
            enc = json.loads(bytes(task.extras[ENCODING]))
        except KeyError as exc:
            raise ValueError(f"secure task without its {exc.args[0]!r} extra") from None
        encoding = FixedPoint(
            clip=float(enc["clip"]),
            scale=float(enc["scale"]),
            bits=int(enc["bits"]),
            clients=int(enc["clients"]),
            max_weight=float(enc["max_weight"]),
        )
        ids = {str(c): i + 1 for i, c in enumerate(cohort)}
        return cls(config, ids, encoding, bool(enc["weighted"]), enc.get("dp"))

    def id_of(self, client_id: str) -> int:
        """``client_id``'s protocol id (raises ValueError outside the cohort)."""
        try:
            return self.ids[client_id]
        except KeyError:
            raise ValueError(f"client {client_id!r} is not in this secure round") from None


def _reply(client_id: str, message: Any, weight: float = 0.0) -> ClientReply:
    return ClientReply(client_id, {PAYLOAD: message.to_bytes()}, weight)


def _inbox(task: ClientTask, client_id: str) -> bytes:
    try:
        return bytes(task.inbox[client_id])
    except KeyError:
        raise ValueError(f"no {task.stage} message for client {client_id!r}") from None


def _restore(store: ClientStateStore, client_id: str, config: SecAggConfig) -> ClientSession:
    """The client's session of this round from its store."""
    from fedlake.secagg import ClientSession, ClientState

    raw = (store.load(client_id) or {}).get(RECORD_KEY)
    state = None if raw is None else ClientState.from_bytes(np.asarray(raw).tobytes())
    if state is None or state.config != config:
        raise ValueError("no secure-aggregation session of this round in the client's store")
    return ClientSession.restore(state)


def _keep(store: ClientStateStore, client_id: str, session: ClientSession | None) -> None:
    """Save the session's state in the client's record (None, or a finished one: erase it)."""
    from fedlake.secagg import ClientStage

    record = dict(store.load(client_id) or {})
    if session is None or session.state.stage == ClientStage.DONE:
        if RECORD_KEY not in record:
            return
        record.pop(RECORD_KEY)
    else:
        record[RECORD_KEY] = np.frombuffer(session.state.to_bytes(), dtype=np.uint8).copy()
    store.save(client_id, record)


def answer_stage(store: ClientStateStore, task: ClientTask, client_id: str) -> ClientReply:
    """Answer a key-exchange stage (advertise, share_keys, unmask); raises on anything wrong."""
    from fedlake.secagg import ClientSession, KeyDirectory, UnmaskRequest

    secure = SecureRound.of(task)
    me = secure.id_of(client_id)
    stage = task.stage
    if stage is SecureStage.ADVERTISE:
        session = ClientSession(secure.config, me)  # fresh secrets from the OS
        message: Any = session.advertise()
    elif stage is SecureStage.SHARE_KEYS:
        session = _restore(store, client_id, secure.config)
        message = session.share_keys(KeyDirectory.from_bytes(_inbox(task, client_id)))
    elif stage is SecureStage.UNMASK:
        session = _restore(store, client_id, secure.config)
        message = session.unmask(UnmaskRequest.from_bytes(_inbox(task, client_id)))
    else:
        raise ValueError(f"stage {stage} is not a key-exchange stage")
    _keep(store, client_id, session)
    return _reply(client_id, message)


def _noised(
    enc: FixedPoint, values: np.ndarray, dp: Mapping[str, Any], rng: np.random.Generator
) -> tuple[Any, np.ndarray]:
    """Distributed DP: ``values`` clipped to the L2 bound, encoded (weight 1), plus this
    client's Skellam share of the noise, in the ring (``fedlake.privacy.distributed``)."""
    from fedlake.privacy.distributed import skellam_noise

    clip = float(dp["clip"])
    norm = float(np.linalg.norm(values))
    if norm > clip:
        values = values * (clip / norm)
    encoded = enc.encode(values, weight=1.0, rng=rng)
    noise = skellam_noise(values.size, float(dp["variance"]), secure=bool(dp["secure"]), rng=rng)
    return encoded, enc.to_ring(enc.centred(encoded.values) + noise)


def seal_reply(
    store: ClientStateStore,
    task: ClientTask,
    client_id: str,
    delta: np.ndarray,
    sent: np.ndarray | None,
    *,
    examples: float,
    metrics: Mapping[str, float],
) -> ClientReply:
    """The masked input of a trained client: its (sent) update, clipped, weighted, encoded
    in fixed point with its weight appended, then masked; its session is kept."""
    from fedlake.secagg import ShareDelivery

    secure = SecureRound.of(task)
    session = _restore(store, client_id, secure.config)
    enc = secure.encoding
    weight = float(examples) if secure.weighted else 1.0
    if weight > enc.max_weight:
        raise ValueError(
            f"weight {weight:g} exceeds secure_aggregation.max_weight {enc.max_weight:g}: "
            "the sum could wrap; raise max_weight"
        )
    values = np.asarray(delta if sent is None else delta[sent], dtype=np.float64)
    rng = round_rng(task.seed, task.round, SECAGG_RNG, task.attempt, client_key(client_id))
    if secure.dp is None:
        vector = np.append(values, weight_coordinate(enc.clip))
        encoded = enc.encode(vector, weight=weight, rng=rng)
        masked_input = encoded.values
    else:
        encoded, masked_input = _noised(enc, values, secure.dp, rng)
    delivery = ShareDelivery.from_bytes(_inbox(task, client_id))
    message = session.masked_input(delivery, masked_input)
    _keep(store, client_id, session)
    kept = {
        k: v for k, v in metrics.items() if k not in _PRIVATE_METRICS and not k.startswith("dp_")
    }
    kept["secagg_clipped"] = float(encoded.clipped)
    return ClientReply(client_id, {PAYLOAD: message.to_bytes()}, 1.0, kept)
