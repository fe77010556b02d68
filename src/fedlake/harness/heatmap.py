"""The grid's results as a heat map: final accuracy per attack x defence, one panel per
malicious fraction, backdoor success written under the accuracy where it applies."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedlake.harness.tables import ordered


def plot_heatmap(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> Path:
    """Write the heat map PNG to ``path``."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure  # its own Agg canvas: no pyplot global state

    attacks = ordered([r["attack"] for r in rows])
    defences = ordered([r["defence"] for r in rows])
    fractions = sorted({r["fraction"] for r in rows})
    width = 1.2 + 1.05 * len(defences)
    height = 0.6 + (0.55 * len(attacks) + 1.3) * len(fractions)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(len(fractions), 1, squeeze=False)
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="lightgrey")
    image = None
    for ax, fraction in zip(axes[:, 0], fractions, strict=True):
        at = {(r["attack"], r["defence"]): r for r in rows if r["fraction"] == fraction}
        values = np.full((len(attacks), len(defences)), np.nan)
        for i, attack in enumerate(attacks):
            for j, defence in enumerate(defences):
                row = at.get((attack, defence))
                acc = row.get("final_accuracy") if row else None
                if acc is not None:
                    values[i, j] = 100 * float(acc)
                ax.text(j, i, _annotation(row), ha="center", va="center", fontsize=7)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(defences)), defences, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
        ax.set_title(f"{100 * fraction:g}% of each cohort malicious", fontsize=9)
    fig.suptitle(f"{title}: final clean accuracy (%)", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label="accuracy (%)")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _annotation(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return ""
    if row.get("status") == "n/a":
        return "n/a"
    acc = row.get("final_accuracy")
    text = "failed" if acc is None else f"{100 * float(acc):.0f}"
    if acc is not None and row.get("status") == "stopped":
        text += "*"
    bd = row.get("backdoor_success")
    if bd is not None and not math.isnan(float(bd)):
        text += f"\nbd {100 * float(bd):.0f}"
    return text
