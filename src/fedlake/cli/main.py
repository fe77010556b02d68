"""The `fedlake` command line: one command per module, thin calls into the library."""

from __future__ import annotations

import typer

from fedlake.cli.attack_eval import attack_eval
from fedlake.cli.certs import certs
from fedlake.cli.client import client
from fedlake.cli.doctor import doctor
from fedlake.cli.plan import plan
from fedlake.cli.privacy import privacy
from fedlake.cli.report import report
from fedlake.cli.run import run
from fedlake.cli.server import server

app = typer.Typer(
    name="fedlake",
    help="Federated learning on the lakehouse: the model goes to the data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run)
app.command("report")(report)
app.command("attack-eval")(attack_eval)
app.command("privacy")(privacy)
app.command("plan")(plan)
app.command("certs")(certs)
app.command("server")(server)
app.command("client")(client)
app.command("doctor")(doctor)


def main() -> None:
    """Entry point of the `fedlake` script."""
    app()


if __name__ == "__main__":
    main()
