"""`fedlake certs`: credentials for a federation (a local CA, the server's certificate,
one signing key per client, the operator's token), enrolment and revocation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedlake.cli.common import friendly_errors, print_table


def certs(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the credentials.")] = Path(
        "certs"
    ),
    clients: Annotated[
        str | None,
        typer.Option(help="Comma-separated client ids to enrol (a new folder: with its CA)."),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(help="Host names of the server's certificate (loopback always)."),
    ] = None,
    revoke: Annotated[
        str | None, typer.Option(help="Revoke this client: the server refuses it at once.")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Make, extend or revoke a federation's credentials (for testing and small sites).

    A new folder gets a local CA, the server's TLS certificate, the client registry, the
    operator's token and one credential file per client (clients/<id>.json: give each to
    its client). On an existing folder, --clients enrols more and --revoke revokes one.
    """
    from fedlake.backends.remote.certs import REGISTRY, TOKEN, enrol, make_certs
    from fedlake.backends.remote.certs import revoke as revoke_client

    with friendly_errors(debug):
        ids = [c.strip() for c in (clients or "").split(",") if c.strip()]
        if revoke is not None:
            revoke_client(out, revoke)
            print_table([("revoked", revoke), ("registry", str(out / REGISTRY))], title="certs")
            return
        if (out / "ca.key").exists():
            made = [enrol(out, c) for c in ids]
        else:
            make_certs(out, ids, hosts=host or ["localhost"])
            made = [out / "clients" / f"{c}.json" for c in ids]
        rows = [
            ("CA", str(out / "ca.pem")),
            ("server certificate", f"{out / 'server.pem'} (key {out / 'server.key'})"),
            ("client registry", str(out / REGISTRY)),
            ("operator token", str(out / TOKEN)),
        ]
        rows += [(f"client {p.stem}", str(p)) for p in made]
        print_table(rows, title=f"fedlake certs {out}")
