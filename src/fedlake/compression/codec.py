"""Compose a sparsifier and a value coder into one wire codec, with error feedback."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedlake.compression.sparsify import Sparsifier, dense
from fedlake.compression.values import ValueCoder, float32
from fedlake.compression.wire import Header, expect, read_header
from fedlake.core.codec import Codec, CodecError

Buffer = bytes | bytearray | memoryview


def make_codec(sparsifier: Sparsifier | None = None, coder: ValueCoder | None = None) -> Codec:
    """The codec that keeps ``sparsifier``'s positions and writes them with ``coder``.

    ``make_codec(top_k(0.01), uniform(8))`` sends the top 1% of entries as 8-bit values;
    ``make_codec()`` is the lossless float32 baseline.
    """
    sp = sparsifier or dense()
    vc = coder or float32()

    parts = _parts(sp, vc)

    def encode(vec: np.ndarray, rng: np.random.Generator) -> bytes:
        return b"".join(parts(vec, rng))  # the one copy of the values (float32)

    read = _reader(sp, vc)

    def decode(data: bytes | bytearray | memoryview, dim: int) -> np.ndarray:
        values = read(data, dim)
        # an array of the caller's own: a read-only view of ``data`` is copied, once
        return values if values.flags.writeable else values.copy()

    name = vc.name if sp.name == "dense" else f"{sp.name}+{vc.name}"
    # top-k (or a biased mask) leaves ||x - kept||^2 + ||kept||^2 = ||x||^2 and the coder
    # adds at most contraction * ||kept||^2: contractive when contraction < 1
    contractive = sp.contractive and vc.contraction < 1.0
    return Codec(name, encode, decode, sp.lossless and vc.lossless, contractive, sp.train_positions)


def _parts(
    sp: Sparsifier, vc: ValueCoder
) -> Callable[[np.ndarray, np.random.Generator], list[bytes | memoryview]]:
    """The encoder of ``sp`` and ``vc`` returning the payload's pieces unjoined: header,
    positions and values (plain float32: a view of the vector's own bytes)."""

    def parts(vec: np.ndarray, rng: np.random.Generator) -> list[bytes | memoryview]:
        v = np.asarray(vec)
        if v.ndim != 1 or v.dtype.kind != "f":
            raise ValueError(f"codecs encode flat float vectors, got {v.dtype} {v.shape}")
        v = v.astype(np.float32, copy=False)
        sel = sp.select(v, rng)
        kept = v if sel.positions is None else v[sel.positions]
        if sel.scale != 1.0:
            with np.errstate(over="ignore"):
                kept = kept * np.float32(sel.scale)
            if not np.isfinite(kept).all():
                raise ValueError(
                    f"rescaling the kept values by {sel.scale:g} overflows float32; "
                    "use unbiased = false or clip the update first"
                )
        values = vc.encode(kept, rng)
        header = Header(
            sparsifier=sp.tag,
            coder=vc.tag,
            bits=vc.bits,
            index_mode=sel.index_mode,
            bucket=vc.bucket,
            dim=v.size,
            count=kept.size,
            body_length=len(sel.index_bytes) + len(values),
        )
        return [header.pack(), sel.index_bytes, values]

    return parts


def _reader(sp: Sparsifier, vc: ValueCoder) -> Callable[[Buffer, int], np.ndarray]:
    """The decoder of ``sp`` and ``vc``'s payloads, without the copy of a plain float32 one:
    it returns a new array, or a read-only view into the payload."""

    def read(data: Buffer, dim: int) -> np.ndarray:
        header, reader = read_header(data)
        expect(header, sparsifier=sp.tag, coder=vc.tag, bits=vc.bits, bucket=vc.bucket, dim=dim)
        positions = sp.positions(reader, header.index_mode, dim, header.count)
        values = vc.decode(reader, header.count)
        reader.finish()
        if positions is None:
            return values
        out = np.zeros(dim, dtype=np.float32)
        out[positions] = values
        return out

    return read


def plain() -> Codec:
    """The default codec: every value as float32 (lossless, 4 bytes per value + header)."""
    return make_codec()


_PLAIN_PARTS, _READ_PLAIN = _parts(dense(), float32()), _reader(dense(), float32())


def plain_parts(vec: np.ndarray, rng: np.random.Generator) -> list[bytes | memoryview]:
    """The pieces of ``plain().encode(vec, rng)``, to join once with a message's own header:
    the last is a view of ``vec``'s bytes when it is contiguous float32 (read it first)."""
    return _PLAIN_PARTS(vec, rng)


def read_plain(data: Buffer, dim: int) -> np.ndarray:
    """The values of a :func:`plain` payload as a read-only float32 view into ``data`` (no
    copy, but on a big-endian machine), checked as ``plain().decode`` checks them: raises
    CodecError on anything malformed."""
    return _READ_PLAIN(data, dim)


def encode_with_feedback(
    codec: Codec, vec: np.ndarray, residual: np.ndarray, rng: np.random.Generator
) -> tuple[bytes, np.ndarray]:
    """Encode ``vec + residual``; return the payload and what it failed to carry.

    Error feedback (Stich et al., NeurIPS 2018; Karimireddy et al., ICML 2019): the
    new residual is exactly ``vec + residual - decode(payload)``, so nothing a client
    computed is lost, only delayed.
    """
    if residual.shape != vec.shape:
        raise ValueError(f"residual shape {residual.shape} does not match {vec.shape}")
    corrected = (vec + residual).astype(np.float32)
    payload = codec.encode(corrected, rng)
    try:
        sent = codec.decode(payload, corrected.size)
    except CodecError as exc:  # a codec that cannot read its own output is a bug
        raise RuntimeError(f"codec {codec.name} cannot decode its own payload: {exc}") from exc
    return payload, corrected - sent
