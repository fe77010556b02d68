import struct

import numpy as np
import pytest

from fedlake.compression.bitpack import BITS
from fedlake.compression.values import ValueCoder, float16, float32, uniform
from fedlake.compression.wire import Reader


def roundtrip(coder: ValueCoder, values, seed: int = 0) -> tuple[bytes, np.ndarray]:
    values = np.asarray(values, dtype=np.float32)
    data = coder.encode(values, np.random.default_rng(seed))
    reader = Reader(memoryview(data))
    out = coder.decode(reader, values.size)
    reader.finish()
    return data, out


def bucket_ranges(values: np.ndarray, bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-value min and max of the value's bucket."""
    lo = np.empty_like(values)
    hi = np.empty_like(values)
    for start in range(0, values.size, bucket):
        chunk = values[start : start + bucket]
        lo[start : start + bucket] = chunk.min()
        hi[start : start + bucket] = chunk.max()
    return lo, hi


# float32 / float16


def test_float32_is_bit_exact_for_every_bit_pattern():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 2**32, size=5000, dtype=np.uint64).astype(np.uint32)
    values = raw.view(np.float32)
    data, out = roundtrip(float32(), values)
    assert len(data) == float32().size(values.size) == 4 * values.size
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.uint32), raw)


def test_float32_is_lossless_and_float16_is_not():
    assert float32().lossless
    assert not float16().lossless
    assert not uniform(8).lossless


def test_float16_round_trip_within_half_precision():
    rng = np.random.default_rng(1)
    values = (rng.standard_normal(1000) * 100).astype(np.float32)
    data, out = roundtrip(float16(), values)
    assert len(data) == float16().size(values.size) == 2 * values.size
    assert out.dtype == np.float32
    # float16 keeps 11 significant bits: relative error <= 2**-11 for normal numbers
    normal = np.abs(values) >= 2.0**-14
    np.testing.assert_array_less(
        np.abs(out - values)[normal], np.abs(values)[normal] * 2.0**-11 + 1e-12
    )
    np.testing.assert_array_equal(out, values.astype(np.float16).astype(np.float32))


def test_float16_accepts_its_largest_finite_value():
    _, out = roundtrip(float16(), [65504.0, -65504.0, 0.0])
    np.testing.assert_array_equal(out, [65504.0, -65504.0, 0.0])


@pytest.mark.parametrize("value", [65505.0, -65520.0, 1e6, -3e38])
def test_float16_refuses_values_beyond_its_range(value):
    with pytest.raises(ValueError, match="float16"):
        float16().encode(np.array([0.0, value], np.float32), np.random.default_rng(0))


def test_float16_empty_vector():
    data, out = roundtrip(float16(), [])
    assert data == b""
    assert out.shape == (0,)


# uniform: sizes


@pytest.mark.parametrize(
    ("bits", "bucket", "count", "size"),
    [
        (8, 512, 0, 0),
        (8, 4, 4, 8 + 4),
        (4, 3, 7, 3 * 8 + 4),  # 3 buckets; 28 bits -> 4 bytes
        (1, 512, 1000, 2 * 8 + 125),
        (2, 5, 5, 8 + 2),  # 10 bits -> 2 bytes
        (1, 1, 9, 9 * 8 + 2),
    ],
)
def test_uniform_size_by_hand(bits, bucket, count, size):
    assert uniform(bits, bucket=bucket).size(count) == size


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("bucket", [1, 3, 8, 512])
@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 100])
def test_uniform_payload_length_equals_size(bits, bucket, count):
    coder = uniform(bits, bucket=bucket)
    values = np.random.default_rng(count).standard_normal(count).astype(np.float32)
    data, out = roundtrip(coder, values)
    assert len(data) == coder.size(count)
    assert out.shape == (count,)
    assert out.dtype == np.float32


# uniform: hand-computed examples


def test_uniform_nearest_8_bits_hand_example():
    coder = uniform(8, stochastic=False, bucket=4)
    data, out = roundtrip(coder, [0.0, 1.0, 2.0, 3.0])
    # min 0, max 3, then levels 0, 1/3, 2/3 and 3/3 of 255
    assert data == struct.pack("<ff", 0.0, 3.0) + bytes([0, 85, 170, 255])
    np.testing.assert_allclose(out, [0.0, 1.0, 2.0, 3.0], rtol=1e-6)
    assert out[0] == 0.0
    assert out[3] == 3.0


def test_uniform_nearest_rounds_to_the_closest_level():
    coder = uniform(8, stochastic=False, bucket=4)
    # step = 255 / 255 = 1: 10.4 -> level 10, 10.6 -> level 11
    data, out = roundtrip(coder, [0.0, 10.4, 10.6, 255.0])
    assert struct.unpack_from("<ff", data) == (0.0, 255.0)
    assert data[8:] == bytes([0, 10, 11, 255])
    np.testing.assert_array_equal(out, [0.0, 10.0, 11.0, 255.0])


def test_uniform_one_bit_decodes_to_bucket_min_or_max():
    values = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    coder = uniform(1, bucket=4)
    seen = set()
    for seed in range(50):
        _, out = roundtrip(coder, values, seed)
        assert set(out.tolist()) <= {0.0, 1.0}
        assert out[0] == 0.0  # the minimum is level 0 exactly
        assert out[3] == 1.0  # the maximum is level 1 exactly
        seen.update(zip(range(4), out.tolist(), strict=True))
    # the middle values are rounded both ways across seeds
    assert {(1, 0.0), (1, 1.0), (2, 0.0), (2, 1.0)} <= seen


@pytest.mark.parametrize(
    ("bits", "stochastic"), [(1, True), (2, True), (4, True), (8, True), (8, False)]
)
def test_uniform_constant_vector_is_exact(bits, stochastic):
    coder = uniform(bits, stochastic=stochastic, bucket=4)
    values = np.full(10, -2.75, np.float32)
    _, out = roundtrip(coder, values, seed=3)
    np.testing.assert_array_equal(out, values)


def test_uniform_partial_last_bucket_is_not_widened_by_padding():
    coder = uniform(8, stochastic=False, bucket=4)
    data, out = roundtrip(coder, [0.0, 1.0, 2.0, 3.0, 10.0, 11.0])
    lo = struct.unpack_from("<2f", data, 0)
    hi = struct.unpack_from("<2f", data, 8)
    assert lo == (0.0, 10.0)  # not 0.0 (the zero padding)
    assert hi == (3.0, 11.0)
    assert data[16:] == bytes([0, 85, 170, 255, 0, 255])
    np.testing.assert_array_equal(out[4:], [10.0, 11.0])


def test_uniform_partial_last_bucket_of_negative_values():
    coder = uniform(8, stochastic=False, bucket=4)
    data, out = roundtrip(coder, [1.0, 2.0, 3.0, 4.0, -5.0])
    assert struct.unpack_from("<2f", data, 0) == (1.0, -5.0)
    assert struct.unpack_from("<2f", data, 8) == (4.0, -5.0)
    assert out[4] == -5.0


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_uniform_decoded_values_stay_within_bucket_range(bits, scale):
    bucket = 7
    coder = uniform(bits, bucket=bucket)
    rng = np.random.default_rng(bits)
    for seed in range(20):
        values = (rng.standard_normal(50) * scale + rng.uniform(-scale, scale)).astype(np.float32)
        _, out = roundtrip(coder, values, seed)
        lo, hi = bucket_ranges(values, bucket)
        assert (out >= lo).all()
        assert (out <= hi).all()


def test_uniform_nearest_8_bits_error_is_at_most_half_a_level():
    bucket = 16
    coder = uniform(8, stochastic=False, bucket=bucket)
    rng = np.random.default_rng(7)
    for _ in range(20):
        values = (rng.standard_normal(100) * rng.uniform(0.01, 100)).astype(np.float32)
        _, out = roundtrip(coder, values)
        lo, hi = bucket_ranges(values, bucket)
        half_step = (hi.astype(np.float64) - lo) / 255 / 2
        err = np.abs(out.astype(np.float64) - values)
        # a little slack for float32 arithmetic in the coder
        assert (err <= half_step * (1 + 1e-3) + 1e-6 * np.abs(values)).all()


def test_uniform_rejects_non_finite_values():
    with pytest.raises(ValueError, match="NaN or infinite"):
        uniform(8).encode(np.array([0.0, np.nan], np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        uniform(4).encode(np.array([np.inf, 0.0], np.float32), np.random.default_rng(0))


def test_uniform_stochastic_is_deterministic_given_the_rng_seed():
    coder = uniform(2, bucket=8)
    values = np.random.default_rng(0).standard_normal(40).astype(np.float32)
    assert roundtrip(coder, values, 5)[0] == roundtrip(coder, values, 5)[0]
    assert roundtrip(coder, values, 5)[0] != roundtrip(coder, values, 6)[0]


# uniform: unbiasedness of stochastic rounding (statistical, fixed seeds)


@pytest.mark.parametrize("bits", BITS)
def test_uniform_stochastic_rounding_is_unbiased(bits):
    bucket = 8
    n = 2000
    coder = uniform(bits, bucket=bucket)
    values = np.random.default_rng(100 + bits).standard_normal(24).astype(np.float32)
    total = np.zeros(values.size, np.float64)
    for seed in range(n):
        _, out = roundtrip(coder, values, seed)
        total += out
    mean = total / n
    lo, hi = bucket_ranges(values, bucket)
    step = (hi.astype(np.float64) - lo) / ((1 << bits) - 1)
    # a value at fraction p between two levels step apart has variance step^2 p (1 - p),
    # at most step^2 / 4: the standard error of the mean is at most step / (2 sqrt(n))
    stderr = step / (2 * np.sqrt(n))
    err = np.abs(mean - values)
    assert (err <= 5 * stderr + 1e-5 * (hi - lo)).all(), err / stderr


def test_uniform_nearest_rounding_is_deterministic():
    coder = uniform(8, stochastic=False, bucket=8)
    values = np.random.default_rng(0).standard_normal(40).astype(np.float32)
    assert roundtrip(coder, values, 1)[0] == roundtrip(coder, values, 2)[0]


# uniform: argument validation


@pytest.mark.parametrize("bits", [0, 3, 5, 16, 32])
def test_uniform_rejects_unsupported_bits(bits):
    with pytest.raises(ValueError, match=rf"bits must be one of 1, 2, 4, 8, got {bits}"):
        uniform(bits)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_uniform_nearest_rounding_only_at_8_bits(bits):
    with pytest.raises(ValueError, match=rf"8 bits only, got {bits}"):
        uniform(bits, stochastic=False)


@pytest.mark.parametrize("bucket", [0, -1, 2.5, "8"])
def test_uniform_rejects_bad_bucket(bucket):
    with pytest.raises(ValueError, match=rf"bucket must be an integer >= 1, got {bucket!r}"):
        uniform(8, bucket=bucket)


def test_uniform_names_and_tags():
    assert uniform(4).name == "stochastic4"
    assert uniform(8, stochastic=False).name == "nearest8"
    assert uniform(8).tag != uniform(8, stochastic=False).tag
    assert (uniform(2, bucket=64).bits, uniform(2, bucket=64).bucket) == (2, 64)


# extreme ranges and float noise in counts (bugs found by these tests, now fixed)


def test_uniform_tiny_bucket_range_keeps_half_level_accuracy():
    values = np.array([0.0, 5e-39, 1e-38], np.float32)
    _, out = roundtrip(uniform(8, stochastic=False, bucket=3), values)
    half_step = 1e-38 / 255 / 2
    assert np.abs(out.astype(np.float64) - values).max() <= half_step * 1.01


def test_uniform_huge_bucket_range_keeps_half_level_accuracy():
    values = np.array([-3e38, 0.0, 3e38], np.float32)
    _, out = roundtrip(uniform(8, stochastic=False, bucket=3), values)
    half_step = 6e38 / 255 / 2
    assert np.abs(out.astype(np.float64) - values).max() <= half_step * 1.01


def test_uniform_decode_of_finite_huge_range_stays_within_bounds():
    data = struct.pack("<ff", -3e38, 3e38) + bytes([0b10])  # levels 0, 1
    out = uniform(1, bucket=2).decode(Reader(memoryview(data)), 2)
    np.testing.assert_array_equal(out, np.array([-3e38, 3e38], np.float32))


def test_a_huge_bucket_on_a_short_vector_is_one_bucket_not_a_huge_pad():
    vec = np.linspace(-3, 5, 100, dtype=np.float32)
    small = uniform(8, stochastic=False, bucket=100)
    huge = uniform(8, stochastic=False, bucket=1 << 24)
    payload_small, out_small = roundtrip(small, vec)
    payload_huge, out_huge = roundtrip(huge, vec)
    np.testing.assert_array_equal(out_huge, out_small)
    assert payload_huge == payload_small
