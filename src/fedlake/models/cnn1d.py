"""A small 1-D CNN for multichannel windows shaped (n, channels, length)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

__all__ = ["cnn1d"]


def cnn1d(
    in_channels: int,
    length: int,
    num_classes: int,
    *,
    channels: Sequence[int] = (16, 32),
    kernel_size: int = 5,
) -> nn.Module:
    """[Conv1d -> ReLU -> MaxPool(2)] per width -> global average pool -> Linear to logits.

    No BatchNorm, so every tensor is a trained parameter and FedAvg averages
    them directly. Convolutions are "same"-padded, so ``kernel_size`` must be
    odd and ``length`` must survive one halving per block.

    Args:
        in_channels: input channels (e.g. accelerometer/gyroscope axes).
        length: time steps per window.
        num_classes: number of output logits.
        channels: output channels of each convolutional block.
        kernel_size: odd temporal kernel width of every convolution.
    """
    widths = tuple(channels)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not widths or not all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths
    ):
        raise ValueError(f"channels must be one or more positive integers, got {widths}")
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if length < 2 ** len(widths):
        raise ValueError(
            f"length must be >= {2 ** len(widths)} for {len(widths)} pooling blocks, got {length}"
        )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    width = in_channels
    for i, w in enumerate(widths, start=1):
        layers[f"conv{i}"] = nn.Conv1d(width, w, kernel_size, padding=kernel_size // 2)
        layers[f"relu{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool1d(2)
        width = w
    layers["gap"] = nn.AdaptiveAvgPool1d(1)
    layers["flatten"] = nn.Flatten()
    layers["out"] = nn.Linear(width, num_classes)
    return nn.Sequential(layers)
