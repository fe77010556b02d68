"""Recycler: an array is handed out again only once nothing refers to it."""

from __future__ import annotations

import threading

import numpy as np

from fedlake.core.recycle import SMALLEST, Recycler

N = SMALLEST // 4  # float32 values in the smallest array worth keeping


def test_reused_once_let_go() -> None:
    pool = Recycler()
    a = pool.empty(N, np.float32)
    address = a.ctypes.data
    del a
    b = pool.empty(N, np.float32)
    assert b.ctypes.data == address
    assert b.dtype == np.float32 and b.shape == (N,) and b.flags.writeable


def test_never_aliases_what_is_still_referenced() -> None:
    pool = Recycler()
    a = pool.empty(N, np.float32)
    holders = [memoryview(a), a[5:10], np.frombuffer(memoryview(a).cast("B")[8:], np.uint8)]
    address = a.ctypes.data
    del a
    while holders:  # any one alone keeps the array in use
        b = pool.empty(N, np.float32)
        assert b.ctypes.data != address
        assert not any(np.shares_memory(b, np.asarray(h)) for h in holders)
        del holders[0], b
    c = pool.empty(N, np.float32)
    assert c.ctypes.data == address  # every holder gone


def test_small_arrays_are_not_kept() -> None:
    pool = Recycler()
    a = pool.empty(10, np.float64)
    assert a.base is None and a.shape == (10,)


def test_keeps_at_most_keep_arrays() -> None:
    pool = Recycler(keep=2)
    held = [pool.empty(N, np.float32) for _ in range(3)]
    assert len(pool._arrays) == 3  # all in use: none could be dropped
    del held
    pool.empty(N, np.float32)
    assert len(pool._arrays) <= 3
    pool.empty(N + 1, np.float32)  # a new one: the pool trims to ``keep``
    assert len(pool._arrays) <= 3


def test_threads_never_share_an_array() -> None:
    pool = Recycler(keep=4)
    seen: list[int] = []
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(20):
            a = pool.empty(N, np.float32)
            a[:100] = k
            if not (a[:100] == k).all():
                errors.append("written by another thread")
            seen.append(a.ctypes.data)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(seen)) <= 8  # reused, not one new array per call


def test_large_plain_update_is_a_recycled_view_that_pickles_as_bytes() -> None:
    import pickle

    from fedlake.compression.messages import decode_delta, encode_delta
    from fedlake.core.task import ClientReply

    delta = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    payload, _ = encode_delta(delta, None, None, np.random.default_rng(1))
    assert isinstance(payload, memoryview) and payload.readonly
    assert np.array_equal(decode_delta(payload, N, None, None), delta)
    reply = ClientReply("c1", {"delta": payload}, 2.0, {"loss": 0.5})
    back = pickle.loads(pickle.dumps(reply))
    assert isinstance(back.payloads["delta"], bytes)
    assert back.payloads["delta"] == payload and back.weight == 2.0 and back.client_id == "c1"
    small, _ = encode_delta(delta[:10], None, None, np.random.default_rng(1))
    assert isinstance(small, bytes)


def test_frozen_until_handed_out_again() -> None:
    from fedlake.core.params import frozen

    pool = Recycler()
    a = pool.empty(N, np.float32)
    a[:] = 1.5
    address = a.ctypes.data
    view = Recycler.freeze(a)
    assert view is a and not a.flags.writeable and not a.base.flags.writeable
    assert frozen(a) is a  # nothing can change it: kept without a copy
    del a, view
    b = pool.empty(N, np.float32)
    assert b.ctypes.data == address and b.flags.writeable  # writable again for its new taker
    b[:] = 2.0
