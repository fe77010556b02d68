"""`fedlake client`: join a federation with this machine's own data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from fedlake.cli.common import friendly_errors


def client(
    server: Annotated[str, typer.Option(help="The server's URL, e.g. https://host:8443.")],
    credential: Annotated[
        Path, typer.Option(help="This client's credential file (certs/clients/<id>.json).")
    ],
    data: Annotated[Path, typer.Option(help="This client's table (Delta, Parquet or CSV).")],
    format: Annotated[
        str, typer.Option("--format", help="The table's format: delta, parquet or csv.")
    ] = "parquet",
    state: Annotated[
        Path | None,
        typer.Option(help="Where the client keeps its state (default: .fedlake-state/<id>)."),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option(help="CA to trust for the server (default: the credential's).")
    ] = None,
    proxy_token_env: Annotated[
        str | None,
        typer.Option(
            help="Environment variable holding a bearer token for a proxy in front of the "
            "server (a Databricks App: a service principal's OAuth token)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Join a federation: wait for tasks, train on local data when sampled, reply.

    Only outgoing connections; the data never leaves this machine, only updates do.
    The client's state (control variates, residuals, personal models, its privacy
    history) stays in --state. Exits when the federation ends; rerun it after a crash
    and it continues.
    """
    from fedlake.backends.remote.auth import Credential
    from fedlake.backends.remote.client import RemoteClient
    from fedlake.data.sources import TableClientData

    with friendly_errors(debug):
        cred = Credential.load(credential)
        token = None
        if proxy_token_env is not None:
            token = os.environ.get(proxy_token_env)
            if not token:
                raise ValueError(f"--proxy-token-env {proxy_token_env}: that variable is not set")

        def open_table(hints: dict[str, Any]) -> TableClientData:
            table = TableClientData(
                data,
                format=format,
                client_column=hints.get("client_column", "client_id"),
                label_column=hints.get("label_column", "label"),
                feature_columns=hints.get("feature_columns"),
                test_fraction=hints.get("test_fraction", 0.2),
            )
            if cred.client_id not in table.client_ids():
                raise ValueError(
                    f"{data} holds no rows of client {cred.client_id!r} "
                    f"(its {table.client_column} values: {', '.join(table.client_ids()[:5])})"
                )
            if table.needs_preprocessing():
                raise ValueError(
                    f"{data} has category columns; a deployed federation takes model-ready "
                    "numeric tables (federated preprocessing over the network is not there yet)"
                )
            return table

        folder = state or Path(".fedlake-state") / cred.client_id
        remote = RemoteClient(server, cred, open_table, state_dir=folder, ca_file=ca,
                              proxy_token=token,
                              log=lambda line: print(line, flush=True))  # fmt: skip
        try:
            remote.run()
        finally:
            remote.close()
