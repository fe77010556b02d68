"""The simulated adversary of a round: who is malicious, and what their updates become."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedlake.compression.messages import encode_delta
from fedlake.core.codec import Codec, CodecError
from fedlake.core.rng import round_rng
from fedlake.core.task import ClientReply
from fedlake.core.update import DELTA, ClientUpdate, validate_update
from fedlake.simulation.attacks.base import (
    ATTACK_RNG,
    CHOOSE,
    CRAFT,
    ENCODE,
    Attack,
    malicious_count,
)


@dataclass(frozen=True)
class Adversary:
    """``fraction`` of every round's sampled cohort is malicious and runs ``attack``."""

    attack: Attack
    fraction: float

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not 0 <= self.fraction < 1:
            raise ValueError(f"attack fraction must be in [0, 1), got {self.fraction!r}")

    def count(self, cohort: int) -> int:
        """How many clients of a sampled cohort of ``cohort`` are malicious."""
        return malicious_count(cohort, self.fraction)

    def choose(self, cohort: Sequence[str], rng: np.random.Generator) -> frozenset[str]:
        """The malicious clients of a round, drawn from its sampled cohort."""
        m = self.count(len(cohort))
        if m == 0:
            return frozenset()
        return frozenset(cohort[i] for i in rng.choice(len(cohort), size=m, replace=False))

    def choose_in_round(
        self, cohort: Sequence[str], *, seed: int, round_: int, attempt: int
    ) -> frozenset[str]:
        """The malicious clients of attempt ``attempt`` of round ``round_`` (reproducible)."""
        return self.choose(cohort, round_rng(seed, round_, ATTACK_RNG, attempt, CHOOSE))

    def corrupt_round(
        self,
        results: Sequence[Any],
        malicious: frozenset[str],
        *,
        seed: int,
        round_: int,
        attempt: int,
        dim: int,
        decode: Callable[[ClientReply], ClientUpdate],
        mask: np.ndarray | None,
        codec: Codec | None,
    ) -> list[Any]:
        """:meth:`corrupt` with the round's generators and upload encoding (the simulator)."""
        encode_rng = round_rng(seed, round_, ATTACK_RNG, attempt, ENCODE)

        def encode(vec: np.ndarray) -> bytes | memoryview:
            return encode_delta(vec, mask, codec, encode_rng)[0]

        craft_rng = round_rng(seed, round_, ATTACK_RNG, attempt, CRAFT)
        return self.corrupt(
            results, malicious, dim=dim, decode=decode, encode=encode, rng=craft_rng
        )

    def corrupt(
        self,
        results: Sequence[Any],
        malicious: frozenset[str],
        *,
        dim: int,
        decode: Callable[[ClientReply], ClientUpdate],
        encode: Callable[[np.ndarray], bytes | memoryview],
        rng: np.random.Generator,
    ) -> list[Any]:
        """``results`` (ClientReply or ClientFailure) with the malicious updates crafted.

        The adversary decodes every update it can (it sees the honest ones: omniscient),
        crafts the malicious deltas together, and encodes them with the round's upload
        codec, so they travel, count and are screened like any other update. Results it
        cannot read (failures, undecodable or invalid payloads) pass through untouched
        for screening to record.
        """
        results = list(results)
        if not self.attack.crafts or not malicious:
            return results
        own_at: list[int] = []
        own: list[np.ndarray] = []
        honest: list[np.ndarray] = []
        for i, result in enumerate(results):
            if not isinstance(result, ClientReply):
                continue
            try:
                update = decode(result)
            except CodecError:
                continue
            if validate_update(update, dim) is not None:
                continue
            if result.client_id in malicious:
                own_at.append(i)
                own.append(update.delta)
            else:
                honest.append(update.delta)
        if not own:
            return results
        crafted = self.attack.craft(
            np.stack(own),
            np.stack(honest) if honest else np.empty((0, dim), np.float32),
            cohort=len(own) + len(honest),
            rng=rng,
        )
        for i, delta in zip(own_at, crafted, strict=True):
            sent = results[i]
            assert isinstance(sent, ClientReply)
            vec = np.asarray(delta, dtype=np.float32)
            # only the model delta is crafted; other payloads (SCAFFOLD's control) travel as sent
            results[i] = replace(sent, payloads={**sent.payloads, DELTA: encode(vec)})
        return results
