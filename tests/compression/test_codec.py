import struct

import numpy as np
import pytest

from fedlake.compression.codec import encode_with_feedback, make_codec, plain
from fedlake.compression.sparsify import dense, random_mask, top_k
from fedlake.compression.values import float16, float32, uniform
from fedlake.compression.wire import HEADER_BYTES
from fedlake.core.codec import Codec, CodecError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def vector(dim: int = 40, seed: int = 0) -> np.ndarray:
    return rng(seed).standard_normal(dim).astype(np.float32)


CODECS = {
    "float32": lambda: make_codec(),
    "float16": lambda: make_codec(None, float16()),
    "uniform4": lambda: make_codec(None, uniform(4, bucket=8)),
    "nearest8": lambda: make_codec(None, uniform(8, stochastic=False, bucket=16)),
    "topk": lambda: make_codec(top_k(0.25)),
    "topk_bitmap": lambda: make_codec(top_k(0.5)),
    "random_mask": lambda: make_codec(random_mask(0.5)),
    "topk_uniform2": lambda: make_codec(top_k(0.25), uniform(2, bucket=4)),
}


@pytest.fixture(params=sorted(CODECS))
def codec_payload(request) -> tuple[Codec, bytes, int]:
    codec = CODECS[request.param]()
    dim = 40
    return codec, codec.encode(vector(dim), rng(1)), dim


# exact round trips


def test_plain_float32_round_trip_is_exact():
    codec = plain()
    vec = vector(1000)
    payload = codec.encode(vec, rng())
    assert len(payload) == HEADER_BYTES + 4 * 1000
    out = codec.decode(payload, 1000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, vec)


def test_make_codec_defaults_are_lossless_float32():
    assert make_codec().lossless
    assert plain().lossless
    assert make_codec(dense(), float32()).lossless
    assert plain().name == "float32"


@pytest.mark.parametrize(
    ("codec", "name"),
    [
        (make_codec(None, float16()), "float16"),
        (make_codec(top_k(0.01), uniform(8)), "top0.01+stochastic8"),
        (make_codec(random_mask(0.5, unbiased=False)), "random0.5-biased+float32"),
    ],
)
def test_lossy_codecs_are_named_and_not_lossless(codec, name):
    assert codec.name == name
    assert not codec.lossless


def test_top_k_ratio_one_round_trip_is_exact():
    codec = make_codec(top_k(1.0))
    vec = vector(300)
    np.testing.assert_array_equal(codec.decode(codec.encode(vec, rng()), 300), vec)


def test_top_k_on_a_vector_with_at_most_k_non_zeros_is_exact():
    codec = make_codec(top_k(0.1))  # k = 10 of 100
    for n_nonzero in (0, 1, 5, 10):
        vec = np.zeros(100, np.float32)
        positions = rng(n_nonzero).choice(100, size=n_nonzero, replace=False)
        vec[positions] = rng(n_nonzero + 1).standard_normal(n_nonzero)
        np.testing.assert_array_equal(codec.decode(codec.encode(vec, rng()), 100), vec)


def test_random_mask_ratio_one_round_trip_is_exact():
    codec = make_codec(random_mask(1.0))
    vec = vector(200)
    np.testing.assert_array_equal(codec.decode(codec.encode(vec, rng()), 200), vec)


def test_empty_vector_round_trip(codec_payload):
    codec, _, _ = codec_payload
    out = codec.decode(codec.encode(np.zeros(0, np.float32), rng()), 0)
    assert out.shape == (0,)
    assert out.dtype == np.float32


def test_decode_returns_a_writable_float32_copy(codec_payload):
    codec, payload, dim = codec_payload
    out = codec.decode(payload, dim)
    assert out.dtype == np.float32
    assert out.shape == (dim,)
    out[0] = 123.0  # must not be a read-only view of the payload


def test_decode_accepts_bytearray_and_memoryview(codec_payload):
    codec, payload, dim = codec_payload
    out = codec.decode(payload, dim)
    np.testing.assert_array_equal(codec.decode(bytearray(payload), dim), out)
    np.testing.assert_array_equal(codec.decode(memoryview(payload), dim), out)


def test_float64_input_is_encoded_as_float32():
    codec = plain()
    vec = np.array([0.1, -2.5, 1e-3])
    np.testing.assert_array_equal(codec.decode(codec.encode(vec, rng()), 3), vec.astype(np.float32))


@pytest.mark.parametrize(
    "bad",
    [
        np.arange(5),  # integers
        np.array([True, False]),
        np.zeros((2, 3), np.float32),  # 2-D
        np.float32(1.0),  # 0-D
    ],
)
def test_encode_rejects_non_float_or_non_flat_input(bad):
    with pytest.raises(ValueError, match="flat float vectors"):
        plain().encode(bad, rng())


# header and framing checks


def test_decode_rejects_wrong_magic(codec_payload):
    codec, payload, dim = codec_payload
    with pytest.raises(CodecError, match="not a fedlake payload"):
        codec.decode(b"XLC" + payload[3:], dim)


def test_decode_rejects_wrong_version(codec_payload):
    codec, payload, dim = codec_payload
    with pytest.raises(CodecError, match="version 2 is not supported"):
        codec.decode(payload[:3] + bytes([2]) + payload[4:], dim)


def test_decode_rejects_wrong_dim(codec_payload):
    codec, payload, dim = codec_payload
    with pytest.raises(CodecError, match=f"vector of {dim} values, expected {dim + 1}"):
        codec.decode(payload, dim + 1)


def test_decode_rejects_every_truncation(codec_payload):
    codec, payload, dim = codec_payload
    for n in range(len(payload)):
        with pytest.raises(CodecError) as info:
            codec.decode(payload[:n], dim)
        assert str(info.value)


def test_decode_rejects_trailing_bytes(codec_payload):
    codec, payload, dim = codec_payload
    with pytest.raises(CodecError, match="header says"):
        codec.decode(payload + b"\0", dim)


def test_decode_rejects_trailing_bytes_counted_in_the_body_length(codec_payload):
    codec, payload, dim = codec_payload
    body = struct.unpack_from("<Q", payload, 28)[0]
    longer = payload[:28] + struct.pack("<Q", body + 3) + payload[HEADER_BYTES:] + b"\0\0\0"
    with pytest.raises(CodecError, match="3 unexpected bytes after"):
        codec.decode(longer, dim)


@pytest.mark.parametrize("delta", [-1, 1, 2**40])
def test_decode_rejects_body_length_mismatch(codec_payload, delta):
    codec, payload, dim = codec_payload
    body = struct.unpack_from("<Q", payload, 28)[0]
    bad = payload[:28] + struct.pack("<Q", body + delta) + payload[HEADER_BYTES:]
    with pytest.raises(CodecError, match=f"header says {body + delta}"):
        codec.decode(bad, dim)


def test_decode_rejects_more_values_than_dim(codec_payload):
    codec, payload, dim = codec_payload
    bad = payload[:20] + struct.pack("<Q", dim + 1) + payload[28:]
    with pytest.raises(CodecError, match=f"claims {dim + 1} values for a vector of {dim}"):
        codec.decode(bad, dim)


@pytest.mark.parametrize("data", ["FLC", None, 12, [1, 2, 3]])
def test_decode_rejects_non_bytes(data):
    with pytest.raises(CodecError, match="payload must be bytes"):
        plain().decode(data, 3)


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        (make_codec(top_k(0.5)), make_codec(None, uniform(8))),
        (make_codec(top_k(0.5)), make_codec(random_mask(0.5))),
        (make_codec(), make_codec(None, float16())),
        (make_codec(None, uniform(4)), make_codec(None, uniform(2))),  # bits
        (make_codec(None, uniform(4, bucket=8)), make_codec(None, uniform(4, bucket=16))),
        (make_codec(None, uniform(8)), make_codec(None, uniform(8, stochastic=False))),
        (make_codec(top_k(0.5), float16()), make_codec(top_k(0.5))),
    ],
)
def test_decode_rejects_another_codecs_payload(writer, reader):
    payload = writer.encode(vector(64), rng())
    with pytest.raises(CodecError, match="payload written by another codec"):
        reader.decode(payload, 64)


def test_top_k_decoder_refuses_more_values_than_its_budget():
    # a client cannot send a dense "top-k" payload to skip the compression budget
    payload = make_codec(top_k(0.5)).encode(vector(64), rng())
    with pytest.raises(CodecError, match="top-k payload carries 32 values, expected 7"):
        make_codec(top_k(0.1)).decode(payload, 64)


# error feedback


@pytest.mark.parametrize(
    "codec",
    [
        make_codec(top_k(0.1)),
        make_codec(top_k(0.1), uniform(4, bucket=16)),
        make_codec(random_mask(0.2, unbiased=False)),
        make_codec(None, uniform(8, bucket=32)),
    ],
    ids=lambda c: c.name,
)
def test_error_feedback_conserves_what_was_dropped(codec):
    # contractive compressors only: with unbiased (1 / ratio) random masks or 1-bit
    # stochastic rounding the residual grows round after round, and float32 rounding of
    # the large residual dominates the comparison
    dim, rounds = 200, 20
    gen = rng(42)
    residual = np.zeros(dim, np.float32)
    sent_total = np.zeros(dim, np.float64)
    input_total = np.zeros(dim, np.float64)
    for _ in range(rounds):
        vec = gen.standard_normal(dim).astype(np.float32)
        input_total += vec
        payload, residual = encode_with_feedback(codec, vec, residual, gen)
        assert residual.dtype == np.float32
        assert residual.shape == (dim,)
        sent_total += codec.decode(payload, dim)
    np.testing.assert_allclose(sent_total + residual, input_total, rtol=1e-5, atol=1e-5)


def test_error_feedback_residual_is_exactly_what_the_payload_missed():
    codec = make_codec(top_k(0.25))
    vec = np.array([1.0, -4.0, 0.5, 3.0, 0.0, -0.25, 2.0, 0.1], np.float32)
    residual = np.array([0.5, 0.0, 0.0, 0.0, 0.0, 0.0, -0.5, 0.0], np.float32)
    payload, left = encode_with_feedback(codec, vec, residual, rng())
    # vec + residual = [1.5, -4, 0.5, 3, 0, -0.25, 1.5, 0.1]: k = 2 keeps -4 and 3
    np.testing.assert_array_equal(codec.decode(payload, 8), [0, -4, 0, 3, 0, 0, 0, 0])
    np.testing.assert_array_equal(left, np.float32([1.5, 0, 0.5, 0, 0, -0.25, 1.5, 0.1]))


def test_error_feedback_with_lossless_codec_leaves_zero_residual():
    vec = vector(50)
    payload, left = encode_with_feedback(plain(), vec, np.zeros(50, np.float32), rng())
    assert not left.any()
    np.testing.assert_array_equal(plain().decode(payload, 50), vec)


def test_error_feedback_rejects_residual_of_wrong_shape():
    with pytest.raises(ValueError, match="residual shape"):
        encode_with_feedback(plain(), vector(5), np.zeros(4, np.float32), rng())


def test_error_feedback_reports_a_codec_that_cannot_read_its_own_output():
    def broken_decode(data, dim):
        raise CodecError("nope")

    broken = Codec("broken", plain().encode, broken_decode)
    with pytest.raises(RuntimeError, match="codec broken cannot decode its own payload: nope"):
        encode_with_feedback(broken, vector(5), np.zeros(5, np.float32), rng())
