"""Composable pure vector transforms: ``init(params) -> state`` and ``update``.

Used for client local steps (e.g. FedProx on gradients), upload processing
(clipping, compression) and server optimisers, in the style of optax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from fedlake.core.recycle import MODELS


class UpdateFn(Protocol):
    """``update(vec, state, *, params, rng) -> (vec, state)``."""

    def __call__(
        self, vec: np.ndarray, state: Any, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, Any]: ...


class Affine(NamedTuple):
    """A local step that is ``g + mu * (w - anchor) + offset`` (anchor None: the start params).

    A compiled trainer may run such a step inside its own loop instead of calling
    ``update``; ``offset`` is ``(d,)`` or one row per client ``(m, d)``.
    """

    mu: float = 0.0
    anchor: np.ndarray | None = None
    offset: np.ndarray | None = None


class Transform(NamedTuple):
    """A pair of pure functions; ``state`` is explicit, immutable and returned.

    ``stacked`` promises that ``update`` works row by row on a cohort's stacked
    ``(m, d)`` gradients and params (``init`` then gets the stacked start params),
    draws nothing from ``rng`` and keeps its state constant across steps; vectorised
    cohort training uses only such transforms (others fall back to per-client loops).
    ``affine``, when set, states what ``update`` computes in closed form (FedProx's and
    SCAFFOLD's local steps), so a compiled trainer can apply it without calling back.
    """

    init: Callable[[np.ndarray], Any]
    update: UpdateFn
    stacked: bool = False
    affine: Affine | None = None


def combined(parts: Sequence[Affine | None]) -> Affine | None:
    """The one affine step of a chain of them, or None (a non-affine part, two anchors)."""
    if any(p is None for p in parts):
        return None
    steps = [p for p in parts if p is not None]
    pulls = [p for p in steps if p.mu]
    if len(pulls) > 1:
        return None
    offsets = [p.offset for p in steps if p.offset is not None]
    offset = None
    if offsets:
        offset = offsets[0]
        for o in offsets[1:]:
            offset = offset + o
    pull = pulls[0] if pulls else Affine()
    return Affine(pull.mu, pull.anchor, offset)


def identity() -> Transform:
    """The transform that returns its input unchanged."""

    def init(params: np.ndarray) -> None:
        return None

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, None]:
        return vec, state

    return Transform(init, update, stacked=True, affine=Affine())


def scale(factor: float) -> Transform:
    """Multiply the vector by a constant (e.g. a learning rate)."""
    factor = float(factor)

    def init(params: np.ndarray) -> None:
        return None

    def update(
        vec: np.ndarray, state: None, *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, None]:
        if isinstance(vec, np.ndarray) and vec.dtype == np.float32:
            if factor == 1.0:  # x * 1.0f is x, bit for bit: no pass, no 100 MB array
                return vec, state
            # written into last round's array (a new one costs its page faults)
            out = MODELS.empty(vec.size, np.float32).reshape(vec.shape)
            return np.multiply(vec, np.float32(factor), out=out), state
        return (vec * np.float32(factor)).astype(np.float32, copy=False), state

    return Transform(init, update, stacked=True)


def chain(*transforms: Transform) -> Transform:
    """Compose transforms left to right; the state is the tuple of their states."""
    if not transforms:
        return identity()

    def init(params: np.ndarray) -> tuple[Any, ...]:
        return tuple(t.init(params) for t in transforms)

    def update(
        vec: np.ndarray, state: tuple[Any, ...], *, params: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, tuple[Any, ...]]:
        new_states = []
        for t, s in zip(transforms, state, strict=True):
            vec, s = t.update(vec, s, params=params, rng=rng)
            new_states.append(s)
        return vec, tuple(new_states)

    stacked = all(t.stacked for t in transforms)
    return Transform(init, update, stacked=stacked, affine=combined([t.affine for t in transforms]))
