"""`fedlake privacy`: epsilon of a planned DP-FedAvg run, or the noise a target needs."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from fedlake.cli.common import fail, print_table
from fedlake.privacy.accounting import ACCOUNTANTS
from fedlake.privacy.calibration import plan_epsilon, plan_noise

SAMPLINGS = ("poisson", "fixed")


def privacy(
    clients: Annotated[int, typer.Option("--clients", help="Users in the population (N).")],
    per_round: Annotated[
        int, typer.Option("--per-round", help="Clients per round (m; expected m for poisson).")
    ],
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of training (T).")],
    delta: Annotated[
        float, typer.Option("--delta", help="Target delta; keep it well below 1 / clients.")
    ] = 1e-5,
    noise: Annotated[
        float | None,
        typer.Option("--noise", help="Noise multiplier z (noise std / clip): print epsilon."),
    ] = None,
    target: Annotated[
        float | None,
        typer.Option("--epsilon", help="Target epsilon: print the noise multiplier it needs."),
    ] = None,
    sampling: Annotated[
        str,
        typer.Option(
            help="poisson (each client joins with rate m/N, add/remove one user) or fixed "
            "(m of N without replacement, replace one user: sensitivity 2 x clip)."
        ),
    ] = "poisson",
    accountant: Annotated[
        str,
        typer.Option(help="pld (tight) or rdp; fixed-size samples are accounted by rdp."),
    ] = "pld",
) -> None:
    """Epsilon after T rounds of DP-FedAvg with noise z, or the z a target epsilon needs.

    User-level guarantee for m of N users per round, computed by dp_accounting.
    """
    if (noise is None) == (target is None):
        fail("give exactly one of --noise (to get epsilon) or --epsilon (to get the noise)", 2)
    problem = _problem(clients, per_round, rounds, delta, noise, target, sampling, accountant)
    if problem:
        fail(problem, 2)
    plan = {
        "num_clients": clients,
        "clients_per_round": per_round,
        "delta": delta,
        "sampling": sampling,
        "accountant": accountant,
    }
    try:
        if noise is not None:
            _print_epsilons(plan, noise, rounds)
        else:
            assert target is not None
            _print_noise(plan, target, rounds)
    except ValueError as exc:
        fail(str(exc), 2)
    if delta >= 1 / clients:
        Console().print(
            f"note: delta {delta:g} is not below 1 / clients ({1 / clients:.2g}); a mechanism "
            "that publishes one random user's data outright would meet it",
            highlight=False,
            soft_wrap=True,
        )


def _problem(
    clients: int,
    per_round: int,
    rounds: int,
    delta: float,
    noise: float | None,
    target: float | None,
    sampling: str,
    accountant: str,
) -> str | None:
    """What is wrong with the options, in their own names (None when nothing is)."""
    checks = [
        (clients >= 1, f"--clients must be >= 1, got {clients}"),
        (
            1 <= per_round <= max(clients, 1),
            f"--per-round must be in [1, --clients={clients}], got {per_round}",
        ),
        (rounds >= 1, f"--rounds must be >= 1, got {rounds}"),
        (0 < delta < 1, f"--delta must be in (0, 1), got {delta:g}"),
        (noise is None or noise > 0, f"--noise must be > 0, got {noise}"),
        (target is None or target > 0, f"--epsilon must be > 0, got {target}"),
        (sampling in SAMPLINGS, f"--sampling must be poisson or fixed, got {sampling!r}"),
        (accountant in ACCOUNTANTS, f"--accountant must be pld or rdp, got {accountant!r}"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _checkpoints(rounds: int) -> list[int]:
    """T/4, T/2, 3T/4 and T rounds (distinct, at least 1)."""
    return sorted({max(1, round(rounds * k / 4)) for k in (1, 2, 3, 4)})


def _print_epsilons(plan: dict[str, Any], noise: float, rounds: int) -> None:
    """The epsilon table after a quarter, half, three quarters and all of the rounds."""
    table = Table(title="epsilon", title_justify="left")
    table.add_column("rounds", justify="right")
    table.add_column("epsilon", justify="right")
    used = plan["accountant"]
    for t in _checkpoints(rounds):
        spent = plan_epsilon(noise_multiplier=noise, rounds=t, **plan)
        table.add_row(str(t), f"{spent.epsilon:.4g}")
        used = spent.accountant
    Console().print(table)
    Console().print(
        f"delta {plan['delta']:g}, noise multiplier {noise:g}, "
        f"{plan['clients_per_round']} of {plan['num_clients']} users per round, "
        f"{plan['sampling']} sampling, accountant {used}",
        highlight=False,
        soft_wrap=True,
    )


def _print_noise(plan: dict[str, Any], target: float, rounds: int) -> None:
    """The noise multiplier a target epsilon needs, and its epsilon as a check."""
    z = plan_noise(
        target,
        plan["delta"],
        num_clients=plan["num_clients"],
        clients_per_round=plan["clients_per_round"],
        rounds=rounds,
        sampling=plan["sampling"],
        accountant=plan["accountant"],
    )
    spent = plan_epsilon(noise_multiplier=z, rounds=rounds, **plan)
    per_coordinate = z / plan["clients_per_round"]
    print_table(
        [
            ("noise multiplier", f"{z:.4g}"),
            ("noise std / clip per averaged coordinate", f"{per_coordinate:.4g}"),
            ("epsilon at that noise", f"{spent.epsilon:.4g} (delta {plan['delta']:g})"),
            ("rounds", str(rounds)),
            (
                "sampling",
                f"{plan['clients_per_round']} of {plan['num_clients']}, {plan['sampling']}",
            ),
            ("accountant", spent.accountant),
        ],
        title=f"fedlake privacy: noise for epsilon {target:g}",
    )
