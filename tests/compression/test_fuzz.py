"""Decoders see untrusted bytes: they return a vector of the requested shape or raise
CodecError, nothing else (pytest turns numpy warnings into errors, so those count too)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fedlake.compression.codec import make_codec
from fedlake.compression.messages import decode_model, encode_model
from fedlake.compression.sparsify import random_mask, top_k
from fedlake.compression.values import float16, uniform
from fedlake.compression.wire import MAGIC, VERSION, Header
from fedlake.core.codec import CodecError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

CODECS = {
    "float32": lambda: make_codec(),
    "float16": lambda: make_codec(None, float16()),
    "uniform1": lambda: make_codec(None, uniform(1, bucket=3)),
    "uniform2": lambda: make_codec(None, uniform(2, bucket=4)),
    "uniform4": lambda: make_codec(None, uniform(4, bucket=5)),
    "uniform8": lambda: make_codec(None, uniform(8, bucket=8)),
    "nearest8": lambda: make_codec(None, uniform(8, stochastic=False, bucket=8)),
    "topk": lambda: make_codec(top_k(0.3)),
    "random_mask": lambda: make_codec(random_mask(0.5)),
    "topk_uniform4": lambda: make_codec(top_k(0.3), uniform(4, bucket=4)),
}

dims = st.integers(min_value=0, max_value=40)
# valid inputs are any finite float32 values, tiny and huge spans included; the fuzzing
# of the decoder comes from the mutations
vectors = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=40).map(
    lambda xs: np.array(xs, np.float32)
)


@st.composite
def header_shaped(draw, dim: int) -> bytes:
    """A payload with the right magic and version and plausible, often wrong, fields."""
    small = st.integers(0, 6)
    body = draw(st.binary(max_size=200))
    header = Header(
        sparsifier=draw(small),
        coder=draw(small),
        bits=draw(st.sampled_from([0, 1, 2, 4, 8, 16, 32, 255])),
        index_mode=draw(small),
        bucket=draw(st.sampled_from([0, 1, 3, 4, 5, 8, 512, 2**32 - 1])),
        dim=draw(st.sampled_from([dim, dim + 1, 0])),
        count=draw(st.integers(0, dim + 1)),
        body_length=draw(st.sampled_from([len(body), len(body) + 1])),
    )
    return header.pack() + body


@st.composite
def mutated(draw, payload: bytes) -> bytes:
    """``payload`` with a few flips, truncations, appends and random splices."""
    data = bytearray(payload)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "append", "splice"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=16))
        else:
            i = draw(st.integers(0, len(data)))
            j = draw(st.integers(i, len(data)))
            data[i:j] = draw(st.binary(max_size=16))
    return bytes(data)


def check_vector(decode, data: bytes, dim: int) -> None:
    try:
        out = decode(data, dim)
    except CodecError as exc:
        assert str(exc)
        return
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == (dim,)


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(data=st.data(), dim=dims)
def test_decode_arbitrary_bytes(name, data, dim):
    codec = CODECS[name]()
    raw = data.draw(st.one_of(st.binary(max_size=300), header_shaped(dim)))
    check_vector(codec.decode, raw, dim)


@pytest.mark.parametrize("name", sorted(CODECS))
@FUZZ
@given(data=st.data(), vec=vectors, seed=st.integers(0, 2**32 - 1))
def test_decode_mutated_payload(name, data, vec, seed):
    codec = CODECS[name]()
    try:
        payload = codec.encode(vec, np.random.default_rng(seed))
    except ValueError as exc:  # a documented refusal (beyond float16, rescaling overflow)
        assert "float16" in str(exc) or "overflows float32" in str(exc)
        assume(False)
    check_vector(codec.decode, data.draw(mutated(payload)), vec.size)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_unmutated_payload_decodes(name):
    codec = CODECS[name]()
    vec = np.linspace(-1, 1, 25, dtype=np.float32)
    assert codec.decode(codec.encode(vec, np.random.default_rng(0)), 25).shape == (25,)


MODEL_CODECS = [None, make_codec(None, float16()), make_codec(None, uniform(4, bucket=4))]


def check_model(data: bytes, dim: int, codec) -> None:
    try:
        params, mask = decode_model(data, dim, codec)
    except CodecError as exc:
        assert str(exc)
        return
    assert params.dtype == np.float32
    assert params.shape == (dim,)
    if mask is not None:
        assert mask.dtype == bool
        assert mask.shape == (dim,)
        assert not params[~mask].any()


@pytest.mark.parametrize("codec", MODEL_CODECS, ids=["plain", "float16", "uniform4"])
@FUZZ
@given(raw=st.binary(max_size=300), prefix=st.sampled_from([b"", b"FLM\x01\x00", b"FLM\x01\x01"]))
def test_decode_model_arbitrary_bytes(codec, raw, prefix):
    dim = 12
    if prefix:  # a plausible header for dim 12, then random bytes
        raw = prefix + dim.to_bytes(8, "little") + raw
    check_model(raw, dim, codec)


@pytest.mark.parametrize("codec", MODEL_CODECS, ids=["plain", "float16", "uniform4"])
@FUZZ
@given(data=st.data(), vec=vectors, masked=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_decode_model_mutated_message(codec, data, vec, masked, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random(vec.size) < 0.5 if masked else None
    try:
        message = encode_model(vec, mask, codec, rng)
    except ValueError as exc:  # float16's documented refusal of values beyond +-65504
        assert "float16" in str(exc)
        assume(False)
    check_model(data.draw(mutated(message)), vec.size, codec)


def test_magic_and_version_used_by_header_shaped_payloads():
    assert Header(0, 1, 32, 0, 0, 0, 0, 0).pack()[:4] == MAGIC + bytes([VERSION])
