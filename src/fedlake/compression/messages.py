"""The two messages of a round: the global model down, a client's delta up.

Down: ``"FLM" | version u8 | flags u8 | dim u64`` then, when the model is pruned, a
bitmap of the surviving weights, then the download codec's payload of the surviving
values. Up: the upload codec's payload of the delta at the surviving positions only
(the client got the mask with the model, so positions cost nothing).

A 100 MB model is copied once to encode it and not at all to decode it where its raw
float32 values lie 16-byte aligned in the receiver's buffer (:func:`values_offset` says
where they start; the task frame lays itself out so): :func:`decode_model` then returns a
read-only view of them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

from fedlake.compression.bitpack import pack_mask, unpack_mask
from fedlake.compression.codec import encode_with_feedback, plain, plain_parts, read_plain
from fedlake.compression.sparsify import DENSE
from fedlake.compression.values import FLOAT32
from fedlake.compression.wire import HEADER, HEADER_BYTES, MAGIC
from fedlake.core.codec import Codec, CodecError
from fedlake.core.recycle import SMALLEST, TRAINING
from fedlake.core.task import ClientReply
from fedlake.core.update import DELTA, ClientUpdate

MODEL_MAGIC = b"FLM"
MODEL_VERSION = 1
MODEL_HEADER = struct.Struct("<3sBBQ")
HAS_MASK = 1
ALIGN = 16  # numpy's own arrays are at least this aligned: views as aligned as copies


def _codec(codec: Codec | None) -> Codec:
    return codec if codec is not None else _PLAIN


_PLAIN = plain()


def encode_model(
    params: np.ndarray, mask: np.ndarray | None, codec: Codec | None, rng: np.random.Generator
) -> bytes:
    """The download message: the model (only its surviving weights when ``mask`` is set)."""
    d = params.size
    flags = HAS_MASK if mask is not None else 0
    parts: list[bytes | memoryview] = [MODEL_HEADER.pack(MODEL_MAGIC, MODEL_VERSION, flags, d)]
    values = params
    if mask is not None:
        parts.append(pack_mask(mask))
        values = params[mask]
    if codec is None:  # the plain payload's pieces: its values are copied once, here
        parts.extend(plain_parts(values, rng))
    else:
        parts.append(codec.encode(values, rng))
    return b"".join(parts)


def decode_model(
    data: bytes | bytearray | memoryview, dim: int, codec: Codec | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Inverse of :func:`encode_model`: ``(params, mask)``; validates every field.

    ``params`` is read-only: a view into ``data`` when the plain codec's values lie
    :data:`ALIGN`-byte aligned there (no copy; ``data`` stays alive with it), else an array
    of its own.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"model message must be bytes, got {type(data).__name__}")
    if len(data) < MODEL_HEADER.size:
        raise CodecError(f"model message of {len(data)} bytes is shorter than its header")
    magic, version, flags, d = MODEL_HEADER.unpack_from(data)
    if magic != MODEL_MAGIC or version != MODEL_VERSION:
        raise CodecError(f"not a fedlake model message of version {MODEL_VERSION}")
    if d != dim:
        raise CodecError(f"model message is for {d} parameters, expected {dim}")
    if flags not in (0, HAS_MASK):
        raise CodecError(f"unknown model message flags {flags}")
    pos = MODEL_HEADER.size
    mask = None
    if flags & HAS_MASK:
        n = (dim + 7) // 8
        if len(data) < pos + n:
            raise CodecError("model message cut short inside the pruning mask")
        mask = unpack_mask(memoryview(data)[pos : pos + n], dim)
        if mask is None:
            raise CodecError("pruning mask has bits set past the model's end")
        pos += n
    body = memoryview(data)[pos:]  # a view, not a copy
    count = dim if mask is None else int(mask.sum())
    if codec is None:
        inner = read_plain(body, count)  # a read-only view of ``data``
        if mask is None:
            inner = _aligned_view(inner)
    else:
        inner = codec.decode(body, count)
    if mask is None:
        params = inner
    else:
        params = np.zeros(dim, dtype=np.float32)
        params[mask] = inner
    params.flags.writeable = False
    return params, mask


def values_offset(data: bytes | bytearray | memoryview) -> int | None:
    """Where the raw float32 values of model message ``data`` start (a plain payload's);
    None for another codec's or for bytes that are no model message. Nothing is validated
    beyond what finding them needs: :func:`decode_model` checks the message."""
    if len(data) < MODEL_HEADER.size:
        return None
    magic, version, flags, dim = MODEL_HEADER.unpack_from(data)
    if magic != MODEL_MAGIC or version != MODEL_VERSION or flags not in (0, HAS_MASK):
        return None
    pos = MODEL_HEADER.size + ((dim + 7) // 8 if flags & HAS_MASK else 0)
    inner = payload_values_offset(memoryview(data)[pos:])
    return None if inner is None else pos + inner


def encode_delta(
    delta: np.ndarray,
    mask: np.ndarray | None,
    codec: Codec | None,
    rng: np.random.Generator,
    residual: np.ndarray | None = None,
) -> tuple[bytes | memoryview, np.ndarray | None]:
    """The upload message of ``delta``; with ``residual``, error feedback (new residual back).

    Only surviving positions are encoded; what compression drops at them is carried in
    the residual, and the residual of pruned positions is discarded with the weights. A
    large plain message is a read-only view of a recycled buffer (see :func:`_joined`).
    """
    kept = delta if mask is None else delta[mask]
    if residual is None and codec is None:
        return _joined(plain_parts(kept, rng)), None
    if residual is None:
        return _codec(codec).encode(kept, rng), None
    res_kept = residual if mask is None else residual[mask]
    payload, left = encode_with_feedback(_codec(codec), kept, res_kept, rng)
    if mask is None:
        return payload, left
    new_residual = np.zeros_like(delta, dtype=np.float32)
    new_residual[mask] = left
    return payload, new_residual


def _joined(parts: list[bytes | memoryview]) -> bytes | memoryview:
    """The pieces as one message: a large one written into an array that an earlier
    message no longer uses (``core.recycle``; joining into a new ``bytes`` costs its page
    faults: 60 ms for 100 MB where the copy itself takes 14), as a read-only view."""
    size = sum(len(p) for p in parts)
    if size < SMALLEST:
        return b"".join(parts)
    out = TRAINING.empty(size)
    pos = 0
    for part in parts:
        n = len(part)
        out[pos : pos + n] = np.frombuffer(part, dtype=np.uint8)
        pos += n
    return out.data.toreadonly()


def decode_delta(
    data: bytes | bytearray | memoryview, dim: int, mask: np.ndarray | None, codec: Codec | None
) -> np.ndarray:
    """Inverse of :func:`encode_delta` on the server: a full-length delta.

    Read-only: a view into ``data`` when the plain codec's values lie :data:`ALIGN`-byte
    aligned there (no copy of a 100 MB update; reply frames lay themselves out so), else
    an array of its own.
    """
    if mask is None and codec is None:
        return _aligned_view(read_plain(data, dim))
    if mask is None:
        delta = _codec(codec).decode(data, dim)
    else:
        delta = np.zeros(dim, dtype=np.float32)
        delta[mask] = _codec(codec).decode(data, int(mask.sum()))
    delta.flags.writeable = False
    return delta


def _aligned_view(values: np.ndarray) -> np.ndarray:
    """``values`` (a read-only view) as they are when aligned, else one aligned copy."""
    if values.ctypes.data % ALIGN:
        values = values.copy()
    values.flags.writeable = False
    return values


def payload_values_offset(data: bytes | bytearray | memoryview) -> int | None:
    """Where a plain payload's float32 values start in ``data`` (None for another codec's,
    or bytes that are no payload). Nothing is validated beyond what finding them needs."""
    if len(data) < HEADER_BYTES:
        return None
    fields = HEADER.unpack_from(data, 0)
    if fields[0] != MAGIC or (fields[2], fields[3]) != (DENSE, FLOAT32):
        return None
    return HEADER_BYTES


def decode_reply(
    reply: ClientReply, dim: int, mask: np.ndarray | None, codec: Codec | None
) -> ClientUpdate:
    """The update a reply carries: its payloads decoded into full-length vectors.

    ``delta`` is decoded with the upload ``codec``, every other vector as plain float32;
    ``mask`` marks the positions uploads carry. Raises CodecError on anything malformed.
    """
    if not isinstance(reply.payloads, Mapping):
        raise CodecError(f"payloads must be a mapping, got {type(reply.payloads).__name__}")
    vectors = {
        name: decode_delta(data, dim, mask, codec if name == DELTA else None)
        for name, data in reply.payloads.items()
    }
    return ClientUpdate(reply.client_id, vectors, reply.weight, reply.metrics)


def model_mask(data: bytes, dim: int) -> np.ndarray | None:
    """The pruning mask of a model message (None when unpruned), without decoding values."""
    if len(data) < MODEL_HEADER.size:
        raise CodecError(f"model message of {len(data)} bytes is shorter than its header")
    magic, version, flags, d = MODEL_HEADER.unpack_from(data)
    if magic != MODEL_MAGIC or version != MODEL_VERSION or d != dim:
        raise CodecError(f"not a fedlake model message of version {MODEL_VERSION} for {dim}")
    if not flags & HAS_MASK:
        return None
    n = (dim + 7) // 8
    mask = unpack_mask(memoryview(data)[MODEL_HEADER.size : MODEL_HEADER.size + n], dim)
    if mask is None:
        raise CodecError("pruning mask has bits set past the model's end")
    return mask
