"""`fedlake server`: serve a federation to clients over HTTPS."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer

from fedlake.cli.common import fail, friendly_errors, print_table
from fedlake.config import parse_config, read_raw


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server(
    config: Annotated[Path, typer.Option("--config", "-c", help="Run config (scenario remote).")],
    certs: Annotated[Path, typer.Option(help="Credentials folder made by fedlake certs.")] = Path(
        "certs"
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8443,
    resume: Annotated[
        bool, typer.Option(help="Continue the run from its last completed round.")
    ] = False,
    insecure: Annotated[
        bool, typer.Option(help="Plain HTTP, loopback only (tests and demos).")
    ] = False,
    behind_proxy: Annotated[
        bool,
        typer.Option(
            help="Plain HTTP behind a proxy that terminates TLS (a Databricks App); requests "
            "are still signed by each client."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Serve a federation: clients join with fedlake client, train when sampled, reply.

    TLS by default (the certificate in --certs); every client request is signed with its
    enrolled key. Rounds, checkpoints, MLflow and Delta as with fedlake run; a killed
    server continues with --resume. The operator's status page is at /status.
    """
    with friendly_errors(debug):
        port = int(os.environ.get("DATABRICKS_APP_PORT", port)) if behind_proxy else port
        tls = not (insecure or behind_proxy)
        if insecure and not _loopback(host):
            fail("--insecure serves plain HTTP on loopback only (127.0.0.1, ::1)", code=2)
        cfg = parse_config(read_raw(config))
        from fedlake.cli.progress import QuietObserver, RichObserver
        from fedlake.run.deploy import serve

        scheme = "https" if tls else "http"
        print(f"fedlake server: {scheme}://{host}:{port} (status page: /status)", flush=True)
        if quiet:
            outcome = serve(
                cfg, certs, host=host, port=port, tls=tls, resume=resume, observer=QuietObserver()
            )
        else:
            with RichObserver() as obs:
                outcome = serve(cfg, certs, host=host, port=port, tls=tls, resume=resume,
                                observer=obs)  # fmt: skip
        res = outcome.result
        rows = [("stop reason", res.stop_reason), ("rounds", str(res.state.round))]
        rows.append(("run folder", str(outcome.run_dir)))
        if outcome.model_version:
            rows.append(("registered model", f"version {outcome.model_version}"))
        print_table(rows, title=f"fedlake server {cfg.name}")
        if res.stop_reason == "insufficient_updates":
            raise typer.Exit(1)
