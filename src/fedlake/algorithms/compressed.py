"""A recipe with its updates and models compressed: codecs, pruning, error feedback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from fedlake.compression.pipeline import SPARSIFIERS, codec_from_stages
from fedlake.compression.pruning import MagnitudePruning
from fedlake.core.algorithm import Algorithm, with_plugins
from fedlake.core.codec import Compression
from fedlake.plugins.error_feedback import error_feedback as feedback

__all__ = ["compressed"]


def compressed(
    algorithm: Algorithm,
    *,
    upload: Sequence[Mapping[str, Any]] = (),
    download: Sequence[Mapping[str, Any]] = (),
    error_feedback: bool = False,
    prune: Mapping[str, Any] | None = None,
) -> Algorithm:
    """``algorithm`` with its updates and models compressed as described."""
    if any(stage.get("kind") in SPARSIFIERS for stage in download):
        raise ValueError(
            "download sparsification would zero most of the model's weights every round; "
            "the download accepts quantize or float16 (use prune for a sparse model)"
        )
    pruning = MagnitudePruning(**prune) if prune else None
    codec = codec_from_stages(upload)
    out = replace(
        algorithm,
        compression=Compression(
            upload=codec, download=codec_from_stages(download), pruning=pruning
        ),
    )
    if not error_feedback:
        return out
    return with_plugins(out, client=(feedback(codec),))
