import numpy as np
import pytest

from fedlake.compression.bitpack import BITS, pack, packed_size, unpack
from fedlake.core.codec import CodecError


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("count", range(21))
def test_round_trip_small_lengths(bits, count):
    rng = np.random.default_rng(count * 10 + bits)
    levels = rng.integers(0, 1 << bits, size=count, dtype=np.uint8)
    data = pack(levels, bits)
    assert len(data) == packed_size(count, bits)
    out = unpack(data, count, bits)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, levels)


@pytest.mark.parametrize("bits", BITS)
def test_round_trip_large_random_length(bits):
    rng = np.random.default_rng(bits)
    count = 100_003
    levels = rng.integers(0, 1 << bits, size=count, dtype=np.uint8)
    data = pack(levels, bits)
    assert len(data) == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack(data, count, bits), levels)


@pytest.mark.parametrize(
    ("count", "bits", "size"),
    [
        (0, 1, 0),
        (1, 1, 1),
        (8, 1, 1),
        (9, 1, 2),
        (3, 2, 1),
        (4, 2, 1),
        (5, 2, 2),
        (1, 4, 1),
        (2, 4, 1),
        (3, 4, 2),
        (7, 8, 7),
    ],
)
def test_packed_size(count, bits, size):
    assert packed_size(count, bits) == size


def test_pack_layout_is_little_endian_within_each_byte():
    # 1 bit: the first value is the lowest bit
    assert pack(np.array([1, 0, 0, 0, 0, 0, 0, 0, 1], np.uint8), 1) == bytes([0b00000001, 1])
    # 2 bits: 1 | 2 << 2 | 3 << 4 | 0 << 6 = 0b00111001
    assert pack(np.array([1, 2, 3, 0], np.uint8), 2) == bytes([0b00111001])
    # 4 bits: 0x5 low nibble, 0xA high nibble; a third value starts a new byte
    assert pack(np.array([5, 10, 7], np.uint8), 4) == bytes([0xA5, 0x07])
    assert pack(np.array([0, 200, 255], np.uint8), 8) == bytes([0, 200, 255])


@pytest.mark.parametrize(
    ("data", "count", "bits"),
    [
        (bytes([0b00001000]), 3, 1),  # 4th bit set, only 3 values
        (bytes([0b01000000]), 3, 2),  # 4th 2-bit slot set
        (bytes([0x10]), 1, 4),  # high nibble set, one value
        (bytes([0xFF, 0x80]), 15, 1),  # last bit of the second byte
    ],
)
def test_non_zero_padding_bits_rejected(data, count, bits):
    with pytest.raises(CodecError, match="padding"):
        unpack(data, count, bits)


@pytest.mark.parametrize("bits", BITS)
def test_wrong_length_rejected(bits):
    levels = np.ones(10, np.uint8)
    data = pack(levels, bits)
    with pytest.raises(CodecError, match="packed bytes"):
        unpack(data + b"\0", 10, bits)
    with pytest.raises(CodecError, match="packed bytes"):
        unpack(data[:-1], 10, bits)


def test_unpack_accepts_memoryview():
    data = pack(np.array([3, 1, 2], np.uint8), 2)
    np.testing.assert_array_equal(unpack(memoryview(data), 3, 2), [3, 1, 2])


def test_pack_rejects_unsupported_bits():
    with pytest.raises(ValueError, match="bits must be one of"):
        pack(np.zeros(4, np.uint8), 3)
