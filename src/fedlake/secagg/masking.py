"""The masks of SecAgg: a self mask PRG(b_u) and pairwise masks +-PRG(s_uv) that cancel.

Client u sends y_u = x_u + PRG(b_u) + sum over its neighbours v of sign(u, v) PRG(s_uv)
(mod R), with sign(u, v) = +1 if u < v else -1, so the pairwise masks of every pair that
both send cancel in the sum (Bonawitz et al., CCS 2017, Section 4).
"""

from __future__ import annotations

import numpy as np

from fedlake.secagg.prg import PAIR_MASK, SELF_MASK, keystream
from fedlake.secagg.ring import reduce

__all__ = ["add_pair_mask", "add_self_mask", "pair_sign"]


def pair_sign(me: int, peer: int) -> int:
    """+1 when ``me`` adds the pairwise mask with ``peer``, -1 when it subtracts it."""
    if me == peer:
        raise ValueError(f"a client has no pairwise mask with itself, got {me} twice")
    return 1 if me < peer else -1


def _add(acc: np.ndarray, mask: np.ndarray, sign: int, bits: int) -> None:
    """acc += sign * mask (mod 2^bits), in place (``mask`` reduced or not: the same)."""
    if sign > 0:
        np.add(acc, mask, out=acc)
    else:
        np.subtract(acc, mask, out=acc)
    reduce(acc, bits)


def add_self_mask(acc: np.ndarray, seed: bytes, *, bits: int, sign: int = 1) -> None:
    """acc += sign * PRG(seed) for the self mask b_u (sign -1 removes it)."""
    _add(acc, keystream(seed, acc.size, bits=bits, purpose=SELF_MASK), sign, bits)


def add_pair_mask(acc: np.ndarray, seed: bytes, *, me: int, peer: int, bits: int) -> None:
    """acc += sign(me, peer) * PRG(s_{me,peer}): ``me``'s share of their pairwise mask."""
    mask = keystream(seed, acc.size, bits=bits, purpose=PAIR_MASK)
    _add(acc, mask, pair_sign(me, peer), bits)
