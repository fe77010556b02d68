"""Personalisation settings: which kind, its hyperparameters, and which weights stay local.

Three kinds are supported:

- ``"finetune"``: every client fine-tunes the global model on its own train split before
  using it (evaluation only; training is plain federated averaging).
- ``"fedper"``: the tensors named in ``layers`` never leave the client; only the rest is
  federated. Arivazhagan, Aggarwal, Singh and Choudhary, "Federated Learning with
  Personalization Layers", arXiv:1912.00818, 2019.
- ``"ditto"``: every client keeps its own model ``v``, trained each round on its data
  with a proximal pull ``lam * (v - w_global)`` towards the global model. Li, Hu,
  Beirami and Smith, "Ditto: Fair and Robust Federated Learning Through
  Personalization", ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Real

import numpy as np

from fedlake.core.local import LocalConfig
from fedlake.core.params import ParamSpec

__all__ = ["KINDS", "Personalization", "mask_for", "personal_config", "personal_mask"]

KINDS = ("finetune", "fedper", "ditto")


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Personalization:
    """How clients personalise the federated model.

    Args:
        kind: one of ``"finetune"``, ``"fedper"``, ``"ditto"`` (see the module docstring).
        layers: fedper only (required there, refused elsewhere): names of tensors of the
            trainer's :class:`~fedlake.core.params.ParamSpec` that never leave the client.
        lam: Ditto's lambda, the strength of the pull towards the global model (>= 0;
            0 trains the personal model on local data alone).
        epochs: Ditto's personal epochs per round, and the fine-tuning epochs of
            ``"finetune"`` evaluation (>= 1).
        lr: learning rate of personal training (> 0; None: the client's local lr).
    """

    kind: str
    layers: tuple[str, ...] = ()
    lam: float = 0.1
    epochs: int = 1
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"personalization kind must be one of {list(KINDS)}, got {self.kind!r}"
            )
        layers = self.layers
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise ValueError(f"personal layers must be a sequence of tensor names, got {layers!r}")
        object.__setattr__(self, "layers", tuple(layers))  # accept lists (e.g. from YAML)
        if self.kind == "fedper":
            if not self.layers:
                raise ValueError(
                    "fedper needs at least one personal layer (tensor names that stay on "
                    "the client), got none"
                )
            dupes = sorted({n for n in self.layers if self.layers.count(n) > 1})
            if dupes:
                raise ValueError(f"fedper personal layers must be distinct, got {dupes} twice")
        elif self.layers:
            raise ValueError(
                f"personal layers apply to fedper only, got layers={list(self.layers)} "
                f"for kind {self.kind!r}"
            )
        if not (_is_real(self.lam) and math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"ditto lam must be a finite number >= 0, got {self.lam!r}")
        if not (isinstance(self.epochs, int) and not isinstance(self.epochs, bool)):
            raise ValueError(f"personal epochs must be an integer >= 1, got {self.epochs!r}")
        if self.epochs < 1:
            raise ValueError(f"personal epochs must be an integer >= 1, got {self.epochs!r}")
        if self.lr is not None and not (
            _is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0
        ):
            raise ValueError(
                f"personal lr must be a finite number > 0 (or None: the client lr), got {self.lr!r}"
            )


def personal_mask(spec: ParamSpec, layers: Sequence[str]) -> np.ndarray:
    """Boolean mask over the flat parameter vector, True at the positions of ``layers``.

    Raises:
        ValueError: a layer is not a tensor of ``spec`` (the message lists the model's
            tensors), or every tensor is personal (nothing would be federated).
    """
    slices = spec.slices()
    mask = np.zeros(spec.size, dtype=bool)
    for name in layers:
        if name not in slices:
            raise ValueError(
                f"personal layer {name!r} is not in the model; its tensors are: "
                f"{', '.join(spec.names)}"
            )
        mask[slices[name]] = True
    if mask.size and mask.all():
        raise ValueError(
            f"every tensor of the model is personal ({', '.join(spec.names)}): nothing is "
            "left to federate; keep at least one tensor shared"
        )
    return mask


def mask_for(p: Personalization, spec: ParamSpec) -> np.ndarray | None:
    """The personal mask ``p`` needs: ``personal_mask(spec, p.layers)`` for fedper, else None."""
    return personal_mask(spec, p.layers) if p.kind == "fedper" else None


def personal_config(p: Personalization, config: LocalConfig) -> LocalConfig:
    """The local config of personal training (Ditto's ``v`` update, fine-tuning).

    ``p.epochs`` epochs at ``p.lr`` (or the client lr), no step cap (a straggler cap
    applies to the federated work only), and no DP-SGD: the personal model never leaves
    the client, so it spends no privacy budget.

    Raises:
        ValueError: for Ditto, ``lam * lr > 2``: the proximal part of each plain SGD
            step, ``v <- v - lr * lam * (v - w)``, would overshoot the global model by a
            growing amount and the personal model would diverge.
    """
    lr = config.lr if p.lr is None else float(p.lr)
    if p.kind == "ditto" and p.lam * lr > 2:
        raise ValueError(
            f"ditto lam * lr must be <= 2 for plain SGD to stay stable, got "
            f"lam={p.lam} * lr={lr} = {p.lam * lr:g}; lower lam or the personal lr"
        )
    return replace(config, epochs=p.epochs, lr=lr, max_steps=None, dp=None)
