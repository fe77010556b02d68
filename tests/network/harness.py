"""Real processes on loopback for the deployment's tests: credentials, tables, a server,
clients, and signed requests. Every process is bounded in time and killed at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "network"
FEDLAKE = [sys.executable, "-m", "fedlake.cli.main"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(folder: Path) -> list[str]:
    """Each digits client's table and the credentials (examples/network/prepare.py)."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLE / "prepare.py"), "--out", str(folder)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout.split()


def write_config(folder: Path, source: Path | None = None, **federation: Any) -> Path:
    """digits_served.toml (or ``source``) with its section keys overridden (``section__key``)."""
    import tomllib

    raw = tomllib.loads((source or EXAMPLE / "digits_served.toml").read_text())
    for key, value in federation.items():
        section, _, name = key.partition("__")
        raw.setdefault(section, {})[name] = value
    raw["output_dir"] = str(folder / "runs")
    raw["lakehouse"] = {"delta": True, "mlflow": False}
    lines = []
    for k, v in raw.items():
        if not isinstance(v, dict):
            lines.append(f"{k} = {_toml(v)}")
    for section, values in raw.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path = folder / "served.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


class Processes:
    """Started processes, killed (their groups) when the test ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.logs: list[Any] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start ``args`` (output to ``<folder>/<name>.log``; ``env`` added to ours)."""
        log = open(self.folder / f"{name}.log", "a")  # noqa: SIM115 (closed by stop_all)
        self.logs.append(log)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
               **(env or {})}  # fmt: skip
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, text=True, cwd=self.folder, env=env,
            start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def server(self, config: Path, port: int, *, tls: bool = True, resume: bool = False) -> None:
        """Start ``fedlake server`` and wait until it answers."""
        args = [*FEDLAKE, "server", "--config", str(config), "--certs", "certs",
                "--port", str(port), "--quiet"]  # fmt: skip
        if not tls:
            args.append("--insecure")
        if resume:
            args.append("--resume")
        self.start("server", args)
        wait_healthy(url(port, tls), self.folder / "certs" / "ca.pem", timeout=60)

    def client(self, cid: str, port: int, *, tls: bool = True) -> subprocess.Popen[str]:
        """Start ``fedlake client`` for ``cid`` with its own table and state folder."""
        return self.start(
            cid,
            [*FEDLAKE, "client", "--server", url(port, tls), "--credential",
             f"certs/clients/{cid}.json", "--data", f"data/{cid}", "--state", f"state/{cid}"],
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """kill -9 the process group of ``name``."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def wait(self, name: str, timeout: float) -> int:
        """Wait for ``name`` to exit; its exit code."""
        return self.procs[name].wait(timeout=timeout)

    def log(self, name: str) -> str:
        """What ``name`` printed."""
        return (self.folder / f"{name}.log").read_text()

    def stop_all(self) -> None:
        """kill -9 every process still running."""
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(name)
        for log in self.logs:
            log.close()


@contextlib.contextmanager
def processes(folder: Path) -> Iterator[Processes]:
    """Processes killed when the block ends, whatever happens."""
    procs = Processes(folder)
    try:
        yield procs
    finally:
        procs.stop_all()


def url(port: int, tls: bool) -> str:
    """The server's base URL on loopback."""
    return f"{'https://localhost' if tls else 'http://127.0.0.1'}:{port}"


def wait_healthy(base: str, ca: Path, *, timeout: float) -> None:
    """Wait until ``base/v1/health`` answers 200."""
    end = time.monotonic() + timeout
    verify: Any = ssl.create_default_context(cafile=str(ca)) if base.startswith("https") else False
    while time.monotonic() < end:
        try:
            if httpx.get(base + "/v1/health", verify=verify, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no server answered at {base} within {timeout} s")


def signed(credential_file: Path) -> Any:
    """A credential that signs requests (``.headers(method, path, query, body)``)."""
    from fedlake.backends.remote.auth import Credential

    return Credential.load(credential_file)
