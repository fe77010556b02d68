import math
import struct
from dataclasses import replace

import numpy as np
import pytest

from fedlake.compression.codec import make_codec
from fedlake.compression.sparsify import (
    ALL,
    BITMAP,
    SEED,
    U16,
    U32,
    _mask_from_seed,
    count_of,
    dense,
    random_mask,
    top_k,
)
from fedlake.compression.wire import HEADER, HEADER_BYTES, Header
from fedlake.core.codec import CodecError


def header(payload: bytes) -> Header:
    fields = HEADER.unpack_from(payload)[2:]
    return Header(*fields)


def rewrite(payload: bytes, body: bytes | None = None, **fields) -> bytes:
    """``payload`` with some header fields and/or its body replaced (body length follows)."""
    body = payload[HEADER_BYTES:] if body is None else body
    h = header(payload)
    values = {**h.__dict__, **fields, "body_length": len(body)}
    return Header(**values).pack() + body


def encode(sparsifier, vec, seed=0, coder=None) -> bytes:
    codec = make_codec(sparsifier, coder)
    return codec.encode(np.asarray(vec, np.float32), np.random.default_rng(seed))


def decode(sparsifier, payload, dim, coder=None) -> np.ndarray:
    return make_codec(sparsifier, coder).decode(payload, dim)


# top_k: selection


def test_top_k_keeps_the_k_largest_magnitudes_by_hand():
    vec = [0.5, -3.0, 1.0, 2.5, -0.1, 4.0, 0.0, -2.0]
    payload = encode(top_k(0.5), vec)  # k = 4: |4|, |-3|, |2.5|, |-2|
    h = header(payload)
    assert h.count == 4
    out = decode(top_k(0.5), payload, 8)
    np.testing.assert_array_equal(out, [0.0, -3.0, 0.0, 2.5, 0.0, 4.0, 0.0, -2.0])


def test_top_k_single_largest_magnitude_is_negative():
    out = decode(top_k(0.1), encode(top_k(0.1), [1.0, -5.0, 2.0, 4.0]), 4)
    np.testing.assert_array_equal(out, [0.0, -5.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("ratio", "dim", "k"),
    [
        (0.5, 8, 4),
        (0.25, 10, 3),  # 2.5 rounds up
        (0.125, 17, 3),  # 2.125 rounds up
        (0.01, 10, 1),  # 0.1 rounds up to 1
        (1e-6, 1000, 1),  # at least one
        (1.0, 7, 7),
        (0.5, 1, 1),
        (0.5, 0, 0),  # an empty vector keeps nothing
    ],
)
def test_top_k_count_is_ceil_ratio_times_dim(ratio, dim, k):
    vec = np.arange(1, dim + 1, dtype=np.float32)
    payload = encode(top_k(ratio), vec)
    assert header(payload).count == k
    out = decode(top_k(ratio), payload, dim)
    assert np.count_nonzero(out) == k
    # the kept ones are the k largest (the last k of an increasing vector)
    np.testing.assert_array_equal(out[dim - k :], vec[dim - k :])


def test_top_k_count_is_not_inflated_by_float_rounding():
    payload = encode(top_k(0.07), np.arange(1, 101, dtype=np.float32))
    assert header(payload).count == 7


# top_k: index modes and their exact sizes


@pytest.mark.parametrize(
    ("dim", "ratio", "k", "mode", "index_bytes"),
    [
        (1000, 1 / 128, 8, U16, 16),  # 8 * 2 = 16 bytes < 125-byte bitmap
        (80, 1 / 32, 3, U16, 6),  # 6 bytes < 10-byte bitmap
        (64, 1 / 16, 4, BITMAP, 8),  # a tie (8 bytes either way) goes to the bitmap
        (100, 0.5, 50, BITMAP, 13),  # 100 bytes of u16 > 13-byte bitmap
        (65536, 1 / 1024, 64, U16, 128),  # the largest dim with u16 indices
        (65537, 1 / 1024, 65, U32, 260),  # one more: u32 indices
        (65537, 1 / 16, 4097, BITMAP, 8193),  # 16388 bytes of u32 > 8193-byte bitmap
        (5, 1.0, 5, BITMAP, 1),
    ],
)
def test_top_k_index_mode_and_size(dim, ratio, k, mode, index_bytes):
    rng = np.random.default_rng(dim)
    vec = rng.standard_normal(dim).astype(np.float32)
    payload = encode(top_k(ratio), vec)
    h = header(payload)
    assert (h.index_mode, h.count, h.dim) == (mode, k, dim)
    assert h.body_length == index_bytes + 4 * k  # then k float32 values
    assert len(payload) == HEADER_BYTES + index_bytes + 4 * k
    out = decode(top_k(ratio), payload, dim)
    kept = np.flatnonzero(out)
    assert kept.size == k
    threshold = np.sort(np.abs(vec))[dim - k]
    assert (np.abs(vec[kept]) >= threshold).all()
    np.testing.assert_array_equal(out[kept], vec[kept])


def test_top_k_u16_index_reaches_the_last_position():
    dim = 65536
    vec = np.zeros(dim, np.float32)
    vec[[0, 30000, 65535]] = [1.0, -2.0, 3.0]
    payload = encode(top_k(3 / dim), vec)
    assert header(payload).index_mode == U16
    assert payload[HEADER_BYTES : HEADER_BYTES + 6] == struct.pack("<3H", 0, 30000, 65535)
    np.testing.assert_array_equal(decode(top_k(3 / dim), payload, dim), vec)


def test_top_k_u32_round_trip_beyond_u16():
    dim = 70000
    vec = np.zeros(dim, np.float32)
    vec[[5, 65536, 69999]] = [1.0, -2.0, 3.0]
    payload = encode(top_k(3 / dim), vec)
    assert header(payload).index_mode == U32
    assert payload[HEADER_BYTES : HEADER_BYTES + 12] == struct.pack("<3I", 5, 65536, 69999)
    np.testing.assert_array_equal(decode(top_k(3 / dim), payload, dim), vec)


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, float("nan"), "0.5", None])
@pytest.mark.parametrize("make", [top_k, random_mask])
def test_sparsifiers_reject_bad_ratio(make, ratio):
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        make(ratio)


# top_k: malformed positions


def u16_payload() -> tuple[bytes, np.ndarray]:
    vec = np.arange(1000, dtype=np.float32)[::-1].copy()  # largest at the front
    payload = encode(top_k(1 / 128), vec)  # 8 u16 indices 0..7
    assert header(payload).index_mode == U16
    return payload, vec


def with_indices(payload: bytes, indices, fmt="<8H") -> bytes:
    idx = struct.pack(fmt, *indices)
    return payload[:HEADER_BYTES] + idx + payload[HEADER_BYTES + len(idx) :]


def test_valid_u16_payload_indices_by_hand():
    payload, vec = u16_payload()
    assert struct.unpack_from("<8H", payload, HEADER_BYTES) == tuple(range(8))
    out = decode(top_k(1 / 128), payload, 1000)
    np.testing.assert_array_equal(out[:8], vec[:8])
    assert not out[8:].any()


@pytest.mark.parametrize(
    "indices",
    [
        [1, 0, 2, 3, 4, 5, 6, 7],  # unsorted
        [0, 1, 2, 3, 5, 4, 6, 7],  # unsorted in the middle
        [0, 0, 2, 3, 4, 5, 6, 7],  # repeated
        [0, 1, 2, 3, 4, 5, 7, 7],  # repeated at the end
        [0, 1, 2, 3, 4, 5, 6000, 7],  # out of range in the middle, so unsorted
    ],
)
def test_top_k_rejects_unsorted_or_repeated_indices(indices):
    payload, _ = u16_payload()
    with pytest.raises(CodecError, match="strictly increasing"):
        decode(top_k(1 / 128), with_indices(payload, indices), 1000)


@pytest.mark.parametrize("last", [1000, 65535])
def test_top_k_rejects_out_of_range_index(last):
    payload, _ = u16_payload()
    with pytest.raises(CodecError, match="out of range"):
        decode(top_k(1 / 128), with_indices(payload, [0, 1, 2, 3, 4, 5, 6, last]), 1000)


def test_top_k_rejects_out_of_range_u32_index():
    dim = 70000
    vec = np.zeros(dim, np.float32)
    vec[[5, 65536, 69999]] = [1.0, -2.0, 3.0]
    payload = encode(top_k(3 / dim), vec)
    bad = with_indices(payload, [5, 65536, 70000], "<3I")
    with pytest.raises(CodecError, match="out of range"):
        decode(top_k(3 / dim), bad, dim)


def bitmap_payload() -> bytes:
    vec = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    payload = encode(top_k(0.5), vec)
    assert header(payload).index_mode == BITMAP
    return payload


def test_top_k_rejects_bitmap_count_mismatch():
    payload = bytearray(bitmap_payload())
    bitmap = np.frombuffer(bytes(payload[HEADER_BYTES : HEADER_BYTES + 13]), np.uint8)
    first = int(np.flatnonzero(np.unpackbits(bitmap, bitorder="little"))[0])
    payload[HEADER_BYTES + first // 8] &= ~(1 << (first % 8)) & 0xFF  # clear one kept bit
    with pytest.raises(CodecError, match="marks 49 positions, header says 50"):
        decode(top_k(0.5), bytes(payload), 100)


def test_top_k_rejects_bitmap_bits_past_the_end():
    payload = bytearray(bitmap_payload())
    payload[HEADER_BYTES + 12] |= 0x80  # bit 103 of a 100-bit bitmap
    with pytest.raises(CodecError, match="past the vector's end"):
        decode(top_k(0.5), bytes(payload), 100)


@pytest.mark.parametrize("mode", [ALL, SEED, 7, 255])
def test_top_k_rejects_unknown_index_mode(mode):
    payload, _ = u16_payload()
    with pytest.raises(CodecError, match=f"unknown index mode {mode}"):
        decode(top_k(1 / 128), rewrite(payload, index_mode=mode), 1000)


def test_top_k_switching_u16_to_bitmap_mode_fails_on_length():
    payload, _ = u16_payload()
    with pytest.raises(CodecError):
        decode(top_k(1 / 128), rewrite(payload, index_mode=BITMAP), 1000)


# dense


def test_dense_sends_no_positions():
    payload = encode(dense(), [1.0, 2.0, 3.0])
    h = header(payload)
    assert (h.index_mode, h.count, h.body_length) == (ALL, 3, 12)


def test_dense_rejects_an_index_mode():
    payload = encode(dense(), [1.0, 2.0, 3.0])
    with pytest.raises(CodecError, match="dense payload with index mode 1"):
        decode(dense(), rewrite(payload, index_mode=U16), 3)


def test_dense_rejects_fewer_values_than_dim():
    payload = encode(dense(), [1.0, 2.0, 3.0])
    short = rewrite(payload, body=payload[HEADER_BYTES:-4], count=2)
    with pytest.raises(CodecError, match="2 of 3 values"):
        decode(dense(), short, 3)


# random_mask


def seed_of(payload: bytes) -> int:
    return struct.unpack_from("<Q", payload, HEADER_BYTES)[0]


def test_random_mask_sends_only_the_seed():
    dim = 1000
    vec = np.arange(1, dim + 1, dtype=np.float32)
    payload = encode(random_mask(0.25), vec, seed=3)
    h = header(payload)
    assert h.index_mode == SEED
    assert h.body_length == 8 + 4 * h.count  # seed, then float32 values
    assert seed_of(payload) < 2**63


def test_random_mask_positions_are_rebuilt_from_the_seed():
    dim = 1000
    vec = np.arange(1, dim + 1, dtype=np.float32)  # no zeros: non-zeros are the kept positions
    for seed in range(5):
        payload = encode(random_mask(0.25, unbiased=False), vec, seed=seed)
        expected = _mask_from_seed(seed_of(payload), dim, 0.25)
        assert header(payload).count == expected.size
        out = decode(random_mask(0.25, unbiased=False), payload, dim)
        np.testing.assert_array_equal(np.flatnonzero(out), expected)
        np.testing.assert_array_equal(out[expected], vec[expected])


def test_random_mask_same_rng_seed_same_payload():
    vec = np.random.default_rng(0).standard_normal(500).astype(np.float32)
    assert encode(random_mask(0.1), vec, seed=9) == encode(random_mask(0.1), vec, seed=9)
    assert encode(random_mask(0.1), vec, seed=9) != encode(random_mask(0.1), vec, seed=10)


def test_mask_from_seed_is_sorted_and_in_range():
    idx = _mask_from_seed(12345, 10_000, 0.3)
    assert (np.diff(idx) > 0).all()
    assert idx[0] >= 0 and idx[-1] < 10_000


def test_mask_from_seed_ratio_one_keeps_everything():
    np.testing.assert_array_equal(_mask_from_seed(7, 100, 1.0), np.arange(100))


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5])
def test_random_mask_selects_about_ratio_times_dim(ratio):
    dim = 100_000
    vec = np.ones(dim, np.float32)
    sd = math.sqrt(dim * ratio * (1 - ratio))  # binomial count
    for seed in range(5):
        count = header(encode(random_mask(ratio), vec, seed=seed)).count
        assert abs(count - ratio * dim) <= 5 * sd


def test_random_mask_unbiased_scales_kept_values_by_one_over_ratio():
    vec = np.arange(1, 201, dtype=np.float32)
    out = decode(random_mask(0.25), encode(random_mask(0.25), vec), 200)
    kept = np.flatnonzero(out)
    np.testing.assert_array_equal(out[kept], vec[kept] * 4)


def test_random_mask_unbiased_is_unbiased_over_seeds():
    ratio, n = 0.25, 2000
    vec = np.random.default_rng(1).standard_normal(50).astype(np.float32)
    sp = random_mask(ratio)
    total = np.zeros(vec.size)
    for seed in range(n):
        total += decode(sp, encode(sp, vec, seed=seed), vec.size)
    mean = total / n
    # each decoded value is vec / ratio with probability ratio, else 0:
    # variance vec^2 (1 / ratio - 1)
    stderr = np.abs(vec) * math.sqrt(1 / ratio - 1) / math.sqrt(n)
    assert (np.abs(mean - vec) <= 5 * stderr + 1e-6).all()


def test_random_mask_biased_mean_is_ratio_times_input():
    ratio, n = 0.25, 2000
    vec = np.random.default_rng(2).standard_normal(50).astype(np.float32)
    sp = random_mask(ratio, unbiased=False)
    total = np.zeros(vec.size)
    for seed in range(n):
        total += decode(sp, encode(sp, vec, seed=seed), vec.size)
    mean = total / n
    stderr = np.abs(vec) * math.sqrt(ratio * (1 - ratio)) / math.sqrt(n)
    assert (np.abs(mean - ratio * vec) <= 5 * stderr + 1e-6).all()


def test_random_mask_rejects_a_count_that_is_not_k():
    # any seed names a valid mask of exactly k positions; a payload claiming another
    # count (with a body of matching length) is refused
    dim = 1000
    payload = encode(random_mask(0.25), np.ones(dim, np.float32))
    h = header(payload)
    values = payload[HEADER_BYTES + 8 :]
    short = values[:-4]
    edited = replace(h, count=h.count - 1, body_length=h.body_length - 4).pack()
    bad = edited + payload[HEADER_BYTES : HEADER_BYTES + 8] + short
    with pytest.raises(CodecError, match="carries 249 values, expected 250"):
        decode(random_mask(0.25), bad, dim)


def test_random_mask_keeps_exactly_k_positions():
    for dim, ratio in [(1000, 0.25), (100, 0.07), (7, 0.5), (1, 0.01)]:
        for seed in range(5):
            assert _mask_from_seed(seed, dim, ratio).size == count_of(ratio, dim)


@pytest.mark.parametrize("mode", [ALL, U16, BITMAP])
def test_random_mask_rejects_other_index_modes(mode):
    payload = encode(random_mask(0.25), np.ones(100, np.float32))
    with pytest.raises(CodecError, match="expected a seed"):
        decode(random_mask(0.25), rewrite(payload, index_mode=mode), 100)


def test_random_mask_rejects_a_missing_seed():
    payload = encode(random_mask(1.0), np.ones(3, np.float32))
    bad = rewrite(payload, body=payload[HEADER_BYTES : HEADER_BYTES + 4])  # half a seed
    with pytest.raises(CodecError, match="mask seed"):
        decode(random_mask(1.0), bad, 3)
