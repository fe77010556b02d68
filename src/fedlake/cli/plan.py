"""`fedlake plan`: a tailored plan for a federation, as Markdown, before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedlake.cli.common import fail
from fedlake.guidance import SCENARIOS, PlanInputs, make_plan, model_params, render


def plan(
    scenario: Annotated[
        str, typer.Option(help="cross-silo (few organisations) or cross-device (many devices).")
    ],
    clients: Annotated[int, typer.Option("--clients", help="Clients in the population (N).")],
    per_round: Annotated[int, typer.Option("--per-round", help="Clients per round (m).")],
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of training (T).")],
    model: Annotated[
        str | None,
        typer.Option(help="logreg, mlp or cnn1d: its size from fedlake's model registry."),
    ] = None,
    params: Annotated[
        int | None, typer.Option("--params", help="The model's weights, instead of --model.")
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(help="Example shape for --model, e.g. 40 or 4,128 (default: activity's)."),
    ] = None,
    classes: Annotated[
        int | None, typer.Option(help="Classes for --model (default: activity's 5).")
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option(help="Target epsilon: plan central DP's noise for it.")
    ] = None,
    delta: Annotated[float, typer.Option(help="Target delta.")] = 1e-5,
    link_mbps: Annotated[
        float, typer.Option("--link-mbps", help="A client's link speed in Mbit/s.")
    ] = 10.0,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the Markdown here instead of stdout.")
    ] = None,
) -> None:
    """Recommended algorithm and settings, bytes, privacy noise, server size and risks."""
    if scenario not in SCENARIOS:
        fail(f"--scenario must be one of {', '.join(SCENARIOS)}, got {scenario!r}", 2)
    if (model is None) == (params is None):
        fail("give exactly one of --model (logreg, mlp, cnn1d) or --params (the weights)", 2)
    try:
        if params is None:
            assert model is not None
            params = model_params(model, input_shape=_shape(input_shape), num_classes=classes)
        inputs = PlanInputs(
            scenario=scenario,
            clients=clients,
            per_round=per_round,
            params=params,
            rounds=rounds,
            epsilon=epsilon,
            delta=delta,
            link_mbps=link_mbps,
            model=model,
        )
        text = render(make_plan(inputs))
    except (ValueError, ImportError) as exc:
        fail(str(exc), 2)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror or exc}", 2)
    typer.echo(f"plan written to {out}")


def _shape(text: str | None) -> tuple[int, ...] | None:
    """``"4,128"`` as ``(4, 128)``; None stays None."""
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"--input-shape must be integers separated by commas, got {text!r}"
        ) from None
