"""A ``fedlake client`` that notes when each phase of its rounds starts and ends (diagnostic).

bench/network.py's ``--phases`` runs its fedlake clients through this file instead of
``python -m fedlake.cli.main client``: the same command line and the same code (the CLI's
``client`` command, with ``RemoteClient`` subclassed to keep the time around its steps),
on ``time.perf_counter``'s clock, which on Linux is the system's monotonic clock and so
comparable with the server's round starts and ends. Per round: when the long-poll
returned the offer, the task frame's download, local work (``ClientRuntime.handle``:
decoding the model, training, encoding the update), signing the reply (its BLAKE3) and
its upload (the PUT, signing included). Written to ``$FEDLAKE_NET_PHASES/<client>.json``
when the client exits.

    python bench/_net_phases.py --server URL --credential C.json --data T --state S
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import fedlake.backends.remote.client as remote
from fedlake.cli.client import client as client_command

PHASES: list[dict[str, Any]] = []


class _TimedRuntime:
    """The client's runtime, with ``handle`` timed."""

    def __init__(self, inner: Any, rec: dict[str, Any]) -> None:
        self.inner, self.rec = inner, rec

    def handle(self, *args: Any, **kw: Any) -> Any:
        self.rec["train_start"] = time.perf_counter()
        try:
            return self.inner.handle(*args, **kw)
        finally:
            self.rec["train_end"] = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _TimedCredential:
    """The client's credential, with the signing (the body's BLAKE3 and Ed25519) timed."""

    def __init__(self, inner: Any, owner: TimedClient) -> None:
        self.inner, self.owner = inner, owner

    def headers(
        self, method: str, path: str, query: str, body: Any = b"", **kw: Any
    ) -> dict[str, str]:
        t0 = time.perf_counter()
        out = self.inner.headers(method, path, query, body, **kw)
        if method == "PUT" and self.owner.current is not None:
            self.owner.current["sign_s"] = self.owner.current.get("sign_s", 0.0) + (
                time.perf_counter() - t0
            )
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class TimedClient(remote.RemoteClient):
    """RemoteClient keeping the time of each step of each round in ``PHASES``."""

    running: TimedClient | None = None

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.credential = _TimedCredential(self.credential, self)
        self.current: dict[str, Any] | None = None
        TimedClient.running = self

    def request(self, method: str, path: str, **kw: Any) -> Any:
        t0 = time.perf_counter()
        response = super().request(method, path, **kw)
        t1 = time.perf_counter()
        if method == "GET" and path == "/v1/task" and response.status_code == 200:
            self.offered = t1
        if method == "PUT" and self.current is not None:
            self.current.update(upload_start=t0, upload_end=t1)
        return response

    def download(self, path: str) -> Any:
        assert self.current is not None
        self.current["download_start"] = time.perf_counter()
        data = super().download(path)
        self.current["download_end"] = time.perf_counter()
        self.current["download_bytes"] = len(data)
        return data

    def _answer(self, runtime: Any, offer: dict[str, Any]) -> None:
        rec = {"round": int(offer["round"]), "offered": getattr(self, "offered", None)}
        self.current = rec
        rec["answer_start"] = time.perf_counter()
        try:
            super()._answer(_TimedRuntime(runtime, rec), offer)  # type: ignore[arg-type]
        finally:
            rec["answer_end"] = time.perf_counter()
            self.current = None
            PHASES.append(rec)


def _timed_digest(pieces: Any, _inner: Any = remote._digest) -> str:
    """The client's body digest (computed once per request, before signing), timed as sign."""
    t0 = time.perf_counter()
    out = _inner(pieces)
    client = TimedClient.running
    if client is not None and client.current is not None and sum(len(p) for p in pieces):
        client.current["sign_s"] = client.current.get("sign_s", 0.0) + time.perf_counter() - t0
    return str(out)


def _write(client_id: str) -> None:
    folder = os.environ.get("FEDLAKE_NET_PHASES")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{client_id}.json").write_text(json.dumps(PHASES, indent=1))


def main() -> int:
    args = sys.argv[1:]
    cred = Path(args[args.index("--credential") + 1])
    atexit.register(_write, cred.stem)
    remote.RemoteClient = TimedClient  # type: ignore[misc]  # the CLI imports it when run
    remote._digest = _timed_digest
    import typer

    typer.run(client_command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
