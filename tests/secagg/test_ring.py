"""Z_R vectors: exact-width packing with length and range checks."""

import numpy as np
import pytest

from fedlake.secagg.errors import MalformedMessage
from fedlake.secagg.ring import BITS, dtype_for, pack, packed_size, reduce, unpack


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("count", [0, 1, 7, 1000])
def test_round_trip_at_bits_per_value(bits, count):
    rng = np.random.default_rng(bits + count)
    values = rng.integers(0, 2**bits, size=count, dtype=np.uint64).astype(dtype_for(bits))
    if count:
        values[0] = 2**bits - 1  # the largest value survives
    data = pack(values, bits)
    assert len(data) == packed_size(count, bits) == count * bits // 8
    out = unpack(data, count, bits)
    assert out.dtype == dtype_for(bits)
    np.testing.assert_array_equal(out, values)


def test_little_endian_layout():
    assert pack(np.array([0x01020304], dtype=np.uint32), 32) == b"\x04\x03\x02\x01"
    assert pack(np.array([0x010203], dtype=np.uint32), 24) == b"\x03\x02\x01"
    assert pack(np.array([1], dtype=np.uint64), 64) == b"\x01" + bytes(7)


def test_wrong_length_is_rejected_with_the_numbers():
    data = pack(np.arange(10, dtype=np.uint32), 32)
    with pytest.raises(
        MalformedMessage, match="expected 40 bytes for 10 values of 32 bits, got 39"
    ):
        unpack(data[:-1], 10, 32)
    with pytest.raises(MalformedMessage, match="got 44"):
        unpack(data + bytes(4), 10, 32)


@pytest.mark.parametrize("bits", [16, 24, 32, 48])
def test_out_of_range_values_are_rejected(bits):
    with pytest.raises(ValueError, match=f"values must lie in \\[0, 2\\^{bits}\\)"):
        pack(np.array([0, 2**bits], dtype=np.uint64), bits)
    with pytest.raises(ValueError, match="values must lie"):
        pack(np.array([-1, 0]), bits)


def test_non_integer_or_non_vector_input_is_rejected():
    with pytest.raises(ValueError, match="expected a 1-D integer array"):
        pack(np.zeros(3), 32)
    with pytest.raises(ValueError, match="expected a 1-D integer array"):
        pack(np.zeros((2, 2), dtype=np.uint32), 32)
    with pytest.raises(ValueError, match="bits must be one of"):
        pack(np.zeros(3, dtype=np.uint32), 20)


def test_sums_wrap_mod_r():
    bits = 24
    a = np.array([2**24 - 1, 5], dtype=dtype_for(bits))
    b = np.array([2, 2**24 - 5], dtype=dtype_for(bits))
    np.testing.assert_array_equal(reduce(a + b, bits), [1, 0])
