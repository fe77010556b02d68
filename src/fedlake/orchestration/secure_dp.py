"""Distributed DP in a secure attempt: the encoding, each client's noise share, the release.

With ``[privacy] mechanism = "distributed"`` the clients clip their update to the L2
bound, encode it at ``levels`` per clip and add a Skellam share of the noise
(:mod:`fedlake.privacy.distributed`); the server picks the shares so that the sum of
``m_min = ceil(n (1 - expected_dropout))`` masked inputs carries the full noise, refuses
to unmask the sum of fewer, and divides the noised sum by the fixed denominator (the
expected clients per round), as DP-FedAvg does. The ring is sized for the clipped inputs
plus 20 standard deviations of the noise (a wrap past that spoils the round's accuracy,
never its privacy: the modulus is post-processing of the noised sum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedlake.privacy.distributed import DistributedDP, min_survivors, skellam_variance

if TYPE_CHECKING:
    from fedlake.secagg import FixedPoint

__all__ = ["NOISE_TAIL", "DPEncoding", "dp_encoding"]

NOISE_TAIL = 20.0  # standard deviations of the summed noise the ring must hold


@dataclass(frozen=True)
class DPEncoding:
    """A secure attempt's encoding under distributed DP and each client's noise share.

    Attributes:
        encoding: the fixed-point encoding (clip = the L2 bound, weight 1).
        variance: the Skellam variance each client adds per coordinate.
        min_survivors: the fewest masked inputs the server unmasks.
        dp: the settings.
    """

    encoding: FixedPoint
    variance: float
    min_survivors: int
    dp: DistributedDP

    def extras(self) -> dict[str, Any]:
        """What the clients need, for the task's encoding extras (JSON)."""
        return {"clip": self.dp.clip, "variance": self.variance, "secure": self.dp.secure_noise}

    def check_survivors(self, survivors: int) -> None:
        """Refuse (RoundAborted) a sum whose noise shares fall short of the full noise."""
        from fedlake.secagg import RoundAborted

        if survivors < self.min_survivors:
            raise RoundAborted(
                f"{survivors} masked inputs, fewer than the {self.min_survivors} whose "
                "distributed DP noise shares make up the full noise: the sum is not unmasked"
            )

    def delta(
        self, total: np.ndarray, dim: int, sent: np.ndarray | None
    ) -> tuple[np.ndarray, float]:
        """The unmasked, noised sum over the fixed denominator (full length, zeros where
        nothing is sent) and that denominator."""
        signed = self.encoding.centred(total).astype(np.float64)
        mean = signed / (self.encoding.scale * self.dp.denominator)
        delta = np.zeros(dim, dtype=np.float32)
        if sent is None:
            delta[:] = mean
        else:
            delta[sent] = mean
        return delta, self.dp.denominator


def dp_encoding(
    dp: DistributedDP,
    *,
    clients: int,
    length: int,
    levels: int,
    expected_dropout: float,
    bits: int | None = None,
) -> DPEncoding:
    """The encoding and noise shares of a secure attempt of ``clients`` clients summing
    ``length`` values at ``levels`` per clip.

    Raises:
        ValueError: no ring of at most 64 bits (or not the given ``bits``) holds the sum.
    """
    from fedlake.secagg import BITS, FixedPoint

    scale = levels / dp.clip
    total = skellam_variance(dp.noise_multiplier, clip=dp.clip, scale=scale, dim=length)
    least = min_survivors(clients, expected_dropout)
    share = total / least
    # every client's clipped, rounded coordinate, plus the summed noise's tail
    peak = clients * (math.ceil(dp.clip * scale) + 1) + NOISE_TAIL * math.sqrt(clients * share)
    need = (2 * math.ceil(peak)).bit_length()
    if bits is None:
        bits = next((b for b in BITS if b >= need), None)
        if bits is None:
            raise ValueError(
                f"distributed DP for {clients} clients at {levels} levels per clip needs "
                f"{need} bits, more than 64: lower the cohort or the levels"
            )
    elif bits < need:
        raise ValueError(
            f"secure_aggregation.bits = {bits} cannot hold {clients} clipped inputs plus the "
            f"distributed DP noise: it needs {need} bits (or leave bits unset)"
        )
    encoding = FixedPoint(clip=dp.clip, scale=scale, bits=bits, clients=clients)
    return DPEncoding(encoding, share, least, dp)
