"""The request body reader: one buffer, hashed off the event loop, lengths enforced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fedlake.backends.remote.auth import body_digest
from fedlake.backends.remote.body import THREADED, BodyLengthMismatch, BodyTooLarge, read_body


def _stream(data: bytes, chunk: int = 65536) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for start in range(0, len(data), chunk):
            yield data[start : start + chunk]
            await asyncio.sleep(0)

    return gen()


@pytest.mark.parametrize("size", [0, 1, 1000, THREADED - 1, THREADED, 3 * THREADED + 12345])
def test_body_and_digest(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    body, digest = asyncio.run(read_body(_stream(data, 40_000), size, 10 * THREADED))
    assert bytes(body) == data
    assert digest == body_digest(data)


def test_undeclared_length_is_joined_under_the_limit() -> None:
    data = b"y" * 5000
    body, digest = asyncio.run(read_body(_stream(data), None, 5000))
    assert body == data and digest == body_digest(data)
    with pytest.raises(BodyTooLarge):
        asyncio.run(read_body(_stream(data), None, 4999))


@pytest.mark.parametrize("declared", [THREADED + 10, 2 * THREADED])
def test_length_other_than_declared(declared: int) -> None:
    data = b"z" * (THREADED + 1000)
    with pytest.raises(BodyLengthMismatch):
        asyncio.run(read_body(_stream(data), declared, 10 * THREADED))


def test_small_declared_length_mismatch() -> None:
    with pytest.raises(BodyLengthMismatch):
        asyncio.run(read_body(_stream(b"abc"), 4, 100))
