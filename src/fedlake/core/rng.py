"""Randomness as a function of (seed, round, purpose, ...): resumable and order-free."""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["CLIENT_RNG", "SERVER_RNG", "client_key", "round_rng"]

CLIENT_RNG = 3  # purpose tag of client-side generators
SERVER_RNG = 7  # purpose tag of the server-side generator


def round_rng(seed: int, round_: int, *purpose: int) -> np.random.Generator:
    """A generator determined only by (seed, round, purpose...): resumable and order-free."""
    return np.random.default_rng([int(seed), int(round_), *map(int, purpose)])


def client_key(client_id: str) -> int:
    """A stable integer for a client id (Python's hash() is salted per process)."""
    return zlib.crc32(client_id.encode("utf-8"))
