"""A small multilayer perceptron (flattens its input)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

__all__ = ["mlp"]


def mlp(
    in_features: int, num_classes: int, *, hidden: Sequence[int] = (64,), dropout: float = 0.0
) -> nn.Module:
    """Flatten -> [Linear -> ReLU -> Dropout] per hidden width -> Linear to class logits.

    Args:
        in_features: number of input features after flattening.
        num_classes: number of output logits.
        hidden: widths of the hidden layers; ``()`` gives multinomial logistic regression.
        dropout: dropout probability after every hidden layer (0 disables it).
    """
    widths = tuple(hidden)
    if in_features < 1:
        raise ValueError(f"in_features must be >= 1, got {in_features}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ValueError(f"hidden widths must be positive integers, got {widths}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    width = in_features
    for i, w in enumerate(widths, start=1):
        layers[f"fc{i}"] = nn.Linear(width, w)
        layers[f"relu{i}"] = nn.ReLU()
        if dropout:
            layers[f"drop{i}"] = nn.Dropout(dropout)
        width = w
    layers["out"] = nn.Linear(width, num_classes)
    return nn.Sequential(layers)
