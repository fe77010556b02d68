"""Build codecs and compressed recipes from a chain of stages (plain mappings or config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedlake.compression.codec import make_codec
from fedlake.compression.sparsify import Sparsifier, random_mask, top_k
from fedlake.compression.values import ValueCoder, float16, uniform
from fedlake.core.codec import Codec

SPARSIFIERS = ("topk", "random_mask", "structured_mask")
CODERS = ("quantize", "float16")
STAGES = SPARSIFIERS + CODERS


KEYS: dict[str, tuple[set[str], set[str]]] = {  # kind: (required, optional) keys
    "topk": ({"ratio"}, set()),
    "random_mask": ({"ratio"}, {"unbiased"}),
    "structured_mask": ({"ratio"}, set()),
    "quantize": (set(), {"bits", "stochastic", "bucket"}),
    "float16": (set(), set()),
}


def _check_keys(stage: Mapping[str, Any]) -> None:
    required, optional = KEYS[stage["kind"]]
    given = set(stage) - {"kind"}
    missing, unknown = required - given, given - required - optional
    if missing or unknown:
        accepted = ", ".join(sorted(required | optional)) or "none"
        what = f"missing {', '.join(sorted(missing))}" if missing else ""
        what += ("; " if what and unknown else "") + (
            f"unknown {', '.join(sorted(unknown))}" if unknown else ""
        )
        raise ValueError(f"compression stage {stage['kind']!r}: {what} (accepted: {accepted})")


def _sparsifier(stage: Mapping[str, Any]) -> Sparsifier:
    if stage["kind"] == "topk":
        return top_k(stage["ratio"])
    if stage["kind"] == "structured_mask":
        return random_mask(stage["ratio"], unbiased=False, structured=True)
    return random_mask(stage["ratio"], unbiased=stage.get("unbiased", True))


def _coder(stage: Mapping[str, Any]) -> ValueCoder:
    if stage["kind"] == "float16":
        return float16()
    return uniform(
        stage.get("bits", 8),
        stochastic=stage.get("stochastic", True),
        bucket=stage.get("bucket", 512),
    )


def chain_ok(kinds: Sequence[str]) -> bool:
    """Whether stage ``kinds`` chain: at most one sparsifier, first, then at most one coder."""
    sparse = [k for k in kinds if k in SPARSIFIERS]
    coders = [k for k in kinds if k in CODERS]
    return len(sparse) <= 1 and len(coders) <= 1 and (not sparse or kinds[0] == sparse[0])


def codec_from_stages(stages: Sequence[Mapping[str, Any]]) -> Codec | None:
    """One codec from a chain like ``[{"kind": "topk", "ratio": 0.01}, {"kind": "quantize"}]``.

    A chain holds at most one sparsifier (``topk``, ``random_mask``, ``structured_mask``),
    first, and at most
    one value coder (``quantize``, ``float16``) after it. An empty chain is None: float32.

    Raises:
        ValueError: an unknown stage, or stages in an order that cannot be chained.
    """
    if not stages:
        return None
    kinds = [s.get("kind") for s in stages]
    unknown = [k for k in kinds if k not in STAGES]
    if unknown:
        raise ValueError(f"unknown compression stage {unknown[0]!r}; accepted: {', '.join(STAGES)}")
    for stage in stages:
        _check_keys(stage)
    sparse = [s for s in stages if s["kind"] in SPARSIFIERS]
    coders = [s for s in stages if s["kind"] in CODERS]
    if not chain_ok([s["kind"] for s in stages]):
        raise ValueError(
            f"cannot chain {' -> '.join(map(str, kinds))}: a chain is at most one sparsifier "
            f"({', '.join(SPARSIFIERS)}) followed by at most one value coder ({', '.join(CODERS)})"
        )
    return make_codec(
        _sparsifier(sparse[0]) if sparse else None, _coder(coders[0]) if coders else None
    )
