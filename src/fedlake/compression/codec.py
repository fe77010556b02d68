"""Compose a sparsifier and a value coder into one wire codec, with error feedback."""

from __future__ import annotations

import numpy as np

from fedlake.compression.sparsify import Sparsifier, dense
from fedlake.compression.values import ValueCoder, float32
from fedlake.compression.wire import Header, expect, read_header
from fedlake.core.codec import Codec, CodecError


def make_codec(sparsifier: Sparsifier | None = None, coder: ValueCoder | None = None) -> Codec:
    """The codec that keeps ``sparsifier``'s positions and writes them with ``coder``.

    ``make_codec(top_k(0.01), uniform(8))`` sends the top 1% of entries as 8-bit values;
    ``make_codec()`` is the lossless float32 baseline.
    """
    sp = sparsifier or dense()
    vc = coder or float32()

    def encode(vec: np.ndarray, rng: np.random.Generator) -> bytes:
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
        body = sel.index_bytes + vc.encode(kept, rng)
        header = Header(
            sparsifier=sp.tag,
            coder=vc.tag,
            bits=vc.bits,
            index_mode=sel.index_mode,
            bucket=vc.bucket,
            dim=v.size,
            count=kept.size,
            body_length=len(body),
        )
        return header.pack() + body

    def decode(data: bytes | bytearray | memoryview, dim: int) -> np.ndarray:
        header, reader = read_header(data)
        expect(header, sparsifier=sp.tag, coder=vc.tag, bits=vc.bits, bucket=vc.bucket, dim=dim)
        positions = sp.positions(reader, header.index_mode, dim, header.count)
        values = vc.decode(reader, header.count)
        reader.finish()
        if positions is None:
            return np.array(values, dtype=np.float32)
        out = np.zeros(dim, dtype=np.float32)
        out[positions] = values
        return out

    name = vc.name if sp.name == "dense" else f"{sp.name}+{vc.name}"
    # top-k (or a biased mask) leaves ||x - kept||^2 + ||kept||^2 = ||x||^2 and the coder
    # adds at most contraction * ||kept||^2: contractive when contraction < 1
    contractive = sp.contractive and vc.contraction < 1.0
    return Codec(name, encode, decode, sp.lossless and vc.lossless, contractive, sp.train_positions)


def plain() -> Codec:
    """The default codec: every value as float32 (lossless, 4 bytes per value + header)."""
    return make_codec()


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
