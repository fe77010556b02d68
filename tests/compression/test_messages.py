import struct

import numpy as np
import pytest

from fedlake.compression.codec import make_codec
from fedlake.compression.messages import (
    MODEL_HEADER,
    decode_delta,
    decode_model,
    decode_reply,
    encode_delta,
    encode_model,
)
from fedlake.compression.sparsify import top_k
from fedlake.compression.values import float16, uniform
from fedlake.compression.wire import HEADER_BYTES
from fedlake.core.codec import CodecError
from fedlake.core.task import ClientReply
from fedlake.core.update import ClientUpdate


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


PARAMS = np.array([0.5, -1.0, 2.0, 0.0, -3.5, 0.25, 1.5, -0.75, 4.0, 1.0], np.float32)
MASK = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1, 0], bool)  # 4 of 10 survive


# model (download)


def test_model_header_is_13_bytes():
    assert MODEL_HEADER.size == 13


def test_model_round_trip_without_mask():
    data = encode_model(PARAMS, None, None, rng())
    assert data[:3] == b"FLM"
    assert struct.unpack_from("<BBQ", data, 3) == (1, 0, 10)
    assert len(data) == 13 + HEADER_BYTES + 4 * 10
    params, mask = decode_model(data, 10, None)
    assert mask is None
    assert params.dtype == np.float32
    np.testing.assert_array_equal(params, PARAMS)


def test_model_round_trip_with_mask():
    data = encode_model(PARAMS, MASK, None, rng())
    assert struct.unpack_from("<BBQ", data, 3) == (1, 1, 10)
    # the 10-bit bitmap (2 bytes) then only the 4 surviving values
    assert data[13:15] == bytes([0b00010110, 0b00000001])
    assert len(data) == 13 + 2 + HEADER_BYTES + 4 * 4
    params, mask = decode_model(data, 10, None)
    np.testing.assert_array_equal(mask, MASK)
    assert mask.dtype == bool
    np.testing.assert_array_equal(params[MASK], PARAMS[MASK])
    assert (params[~MASK] == 0).all()
    assert not np.signbit(params[~MASK]).any()  # exactly +0


def test_model_round_trip_with_lossy_codec():
    codec = make_codec(None, float16())
    params = np.random.default_rng(1).standard_normal(100).astype(np.float32)
    mask = np.random.default_rng(2).random(100) < 0.5
    out, got_mask = decode_model(encode_model(params, mask, codec, rng()), 100, codec)
    np.testing.assert_array_equal(got_mask, mask)
    np.testing.assert_array_equal(out[mask], params[mask].astype(np.float16).astype(np.float32))
    assert (out[~mask] == 0).all()


def test_model_with_everything_pruned():
    mask = np.zeros(10, bool)
    params, got = decode_model(encode_model(PARAMS, mask, None, rng()), 10, None)
    np.testing.assert_array_equal(got, mask)
    assert not params.any()


def test_decode_model_rejects_wrong_dim():
    data = encode_model(PARAMS, None, None, rng())
    with pytest.raises(CodecError, match="for 10 parameters, expected 11"):
        decode_model(data, 11, None)


@pytest.mark.parametrize("flags", [2, 3, 255])
def test_decode_model_rejects_bad_flags(flags):
    data = bytearray(encode_model(PARAMS, MASK, None, rng()))
    data[4] = flags
    with pytest.raises(CodecError, match=f"unknown model message flags {flags}"):
        decode_model(bytes(data), 10, None)


@pytest.mark.parametrize("bit", [10, 12, 15])
def test_decode_model_rejects_mask_bits_past_the_end(bit):
    data = bytearray(encode_model(PARAMS, MASK, None, rng()))
    data[13 + bit // 8] |= 1 << (bit % 8)
    with pytest.raises(CodecError, match="pruning mask has bits set past the model's end"):
        decode_model(bytes(data), 10, None)


def test_decode_model_rejects_bad_magic_or_version():
    data = encode_model(PARAMS, None, None, rng())
    with pytest.raises(CodecError, match="not a fedlake model message"):
        decode_model(b"FLX" + data[3:], 10, None)
    with pytest.raises(CodecError, match="not a fedlake model message"):
        decode_model(data[:3] + bytes([2]) + data[4:], 10, None)


def test_decode_model_rejects_every_truncation():
    for mask in (None, MASK):
        data = encode_model(PARAMS, mask, None, rng())
        for n in range(len(data)):
            with pytest.raises(CodecError):
                decode_model(data[:n], 10, None)


def test_decode_model_rejects_a_cut_inside_the_mask():
    data = encode_model(PARAMS, MASK, None, rng())
    with pytest.raises(CodecError, match="cut short inside the pruning mask"):
        decode_model(data[:14], 10, None)


def test_decode_model_rejects_a_mask_that_disagrees_with_the_payload():
    data = bytearray(encode_model(PARAMS, MASK, None, rng()))
    data[13] |= 0b00000001  # one more survivor than the inner payload carries
    with pytest.raises(CodecError, match="vector of 4 values, expected 5"):
        decode_model(bytes(data), 10, None)


def test_decode_model_rejects_another_codec():
    data = encode_model(PARAMS, None, make_codec(None, float16()), rng())
    with pytest.raises(CodecError, match="another codec"):
        decode_model(data, 10, None)


# delta (upload)


def test_delta_with_mask_sends_only_the_surviving_values():
    delta = np.arange(1, 11, dtype=np.float32)
    payload, residual = encode_delta(delta, MASK, None, rng())
    assert residual is None
    assert len(payload) == HEADER_BYTES + 4 * int(MASK.sum())
    out = decode_delta(payload, 10, MASK, None)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.where(MASK, delta, 0))


def test_delta_without_mask_round_trip():
    delta = np.arange(1, 11, dtype=np.float32)
    payload, residual = encode_delta(delta, None, None, rng())
    assert residual is None
    assert len(payload) == HEADER_BYTES + 40
    np.testing.assert_array_equal(decode_delta(payload, 10, None, None), delta)


def test_delta_with_mask_and_lossy_codec():
    codec = make_codec(top_k(0.5))  # keeps 2 of the 4 survivors
    delta = np.array([9, 1, -2, 9, 3, 9, 9, 9, 0.5, 9], np.float32)
    payload, _ = encode_delta(delta, MASK, codec, rng())
    out = decode_delta(payload, 10, MASK, codec)
    np.testing.assert_array_equal(out, [0, 0, -2, 0, 3, 0, 0, 0, 0, 0])


def test_delta_residual_is_zero_at_pruned_positions():
    codec = make_codec(top_k(0.5))
    delta = np.array([9, 1, -2, 9, 3, 9, 9, 9, 0.5, 9], np.float32)
    old = np.array([7, 0.5, 0, 7, 0, 7, 7, 7, 0.25, 7], np.float32)
    payload, residual = encode_delta(delta, MASK, codec, rng(), residual=old)
    # survivors + residual: [1.5, -2, 3, 0.75]; top-2 sends -2 and 3 and keeps the rest
    np.testing.assert_array_equal(
        decode_delta(payload, 10, MASK, codec), [0, 0, -2, 0, 3, 0, 0, 0, 0, 0]
    )
    assert residual.dtype == np.float32
    np.testing.assert_array_equal(residual, np.float32([0, 1.5, 0, 0, 0, 0, 0, 0, 0.75, 0]))
    assert (residual[~MASK] == 0).all()


def test_delta_residual_without_mask_is_full_length():
    codec = make_codec(top_k(0.25))
    delta = np.array([1.0, -4.0, 0.5, 3.0], np.float32)
    payload, residual = encode_delta(delta, None, codec, rng(), residual=np.zeros(4, np.float32))
    np.testing.assert_array_equal(decode_delta(payload, 4, None, codec), [0, -4, 0, 0])
    np.testing.assert_array_equal(residual, [1.0, 0, 0.5, 3.0])


def test_decode_delta_rejects_payload_for_another_mask():
    payload, _ = encode_delta(np.ones(10, np.float32), MASK, None, rng())
    with pytest.raises(CodecError, match="vector of 4 values, expected 10"):
        decode_delta(payload, 10, None, None)


# replies


def test_decode_reply_of_a_float32_reply_is_the_delta_it_carries():
    # without an upload codec the server sees exactly the client's vector (all positions)
    delta = PARAMS.copy()
    reply = ClientReply("c1", {"delta": encode_delta(delta, None, None, rng())[0]}, weight=3.0)
    out = decode_reply(reply, 10, None, None)
    assert isinstance(out, ClientUpdate)
    assert out.delta.dtype == np.float32
    np.testing.assert_array_equal(out.delta, delta)
    assert (out.client_id, out.weight, dict(out.metrics)) == ("c1", 3.0, {})


def test_decode_reply_decodes_every_payload():
    codec = make_codec(None, uniform(8, stochastic=False, bucket=4))
    delta = np.array([0, 1, 2, 3, 0, 0, 0, 0, 6, 0], np.float32)
    control = np.arange(10, dtype=np.float32)
    payloads = {
        "delta": encode_delta(delta, MASK, codec, rng())[0],
        "control": encode_delta(control, MASK, None, rng())[0],  # other vectors: float32
    }
    reply = ClientReply("c1", dict(payloads), weight=2.0, metrics={"loss": 0.5})
    out = decode_reply(reply, 10, MASK, codec)
    assert set(out.vectors) == {"delta", "control"}
    np.testing.assert_array_equal(out.vectors["control"], np.where(MASK, control, 0))
    # survivors [1, 2, 0, 6] quantised at 8 bits: 1, 2 and 6 are within half a level of 6 / 255
    np.testing.assert_allclose(out.delta, np.where(MASK, delta, 0), atol=3 / 255)
    assert out.delta[4] == 0 and out.delta[8] == 6
    assert (out.client_id, out.weight, out.metrics) == ("c1", 2.0, {"loss": 0.5})
    assert reply.payloads == payloads  # the reply is untouched


def test_decode_reply_rejects_non_mapping_payloads():
    reply = ClientReply("c1", [b"x"], weight=1.0)
    with pytest.raises(CodecError, match="must be a mapping, got list"):
        decode_reply(reply, 10, None, None)


def test_decode_reply_rejects_a_corrupt_payload():
    reply = ClientReply("c1", {"delta": b"garbage"}, weight=1.0)
    with pytest.raises(CodecError):
        decode_reply(reply, 10, None, None)


@pytest.mark.parametrize("junk", ["abc" * 20, None, 5, [1, 2, 3]])
def test_decode_model_refuses_what_is_not_bytes(junk):
    with pytest.raises(CodecError, match="model message must be bytes"):
        decode_model(junk, 9, None)
