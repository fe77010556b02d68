"""Reading a request body: into one buffer, under a size limit, hashed as it arrives.

A large body with a declared length streams into one numpy buffer of that length (numpy
asks the kernel for huge pages: filling 100 MB costs ~15 ms where joining the chunks into
``bytes`` costs ~60; and a buffer a folded update no longer uses is filled again, with no
page faults at all), and its digest (``auth.body_hasher``: BLAKE3) is computed on a
worker thread from views of the filled part while the event loop goes on decrypting the
rest (the hasher releases the GIL): the loop's thread, which every client's transfer
shares, does neither the hashing nor a join. A small body, or one of no declared length,
is joined and hashed on the loop.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fedlake.backends.remote.auth import body_hasher
from fedlake.core.recycle import Recycler

__all__ = ["BodyTooLarge", "BodyLengthMismatch", "read_body"]

THREADED = 1 << 20  # bodies from this size up are hashed off the event loop
BATCH = 1 << 20  # bytes handed to the hashing thread at a time

_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fedlake-body-hash")
_BUFFERS = Recycler(keep=8)  # a round's bodies, reused by the next once folded


class BodyTooLarge(ValueError):
    """More bytes arrived than the limit allows."""


class BodyLengthMismatch(ValueError):
    """The body's length differs from its declared ``content-length``."""


def _hash_views(views: queue.SimpleQueue[memoryview | None]) -> str:
    """The body hash of the views taken from ``views`` up to a ``None``."""
    digest = body_hasher()
    while (view := views.get()) is not None:
        digest.update(view)
    return digest.hexdigest()


async def read_body(
    stream: AsyncIterator[bytes], declared: int | None, limit: int
) -> tuple[bytes | memoryview, str]:
    """``(body, its hex body hash)`` of at most ``limit`` bytes from ``stream``.

    ``declared``: the request's content-length (already checked against ``limit``), or
    None. Raises :class:`BodyTooLarge` or :class:`BodyLengthMismatch`.
    """
    if declared is None or declared < THREADED:
        return await _joined(stream, declared, limit)
    view = _BUFFERS.empty(declared).data  # bytes ("B")
    views: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
    hashed = asyncio.wrap_future(_POOL.submit(_hash_views, views))
    got = handed = 0
    try:
        async for chunk in stream:
            end = got + len(chunk)
            if end > declared:
                raise BodyLengthMismatch(f"body over its content-length of {declared} bytes")
            view[got:end] = chunk
            got = end
            if got - handed >= BATCH:
                views.put(view[handed:got])
                handed = got
        if got != declared:
            raise BodyLengthMismatch(f"body of {got} bytes, its content-length said {declared}")
        views.put(view[handed:got])
    finally:
        views.put(None)  # the thread ends whatever happened here
    return view, await hashed


async def _joined(
    stream: AsyncIterator[bytes], declared: int | None, limit: int
) -> tuple[bytes, str]:
    """A small body (or one of no declared length), joined and hashed on the loop."""
    digest = body_hasher()
    chunks: list[bytes] = []
    got = 0
    async for chunk in stream:
        got += len(chunk)
        if got > limit:
            raise BodyTooLarge(f"body over the limit of {limit} bytes")
        chunks.append(chunk)
        digest.update(chunk)
    if declared is not None and got != declared:
        raise BodyLengthMismatch(f"body of {got} bytes, its content-length said {declared}")
    return b"".join(chunks), digest.hexdigest()
