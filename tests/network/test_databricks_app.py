"""The server as a Databricks App: examples/network/databricks_app/app.yaml's command runs
as Databricks runs it (no shell, its env, DATABRICKS_APP_PORT), behind a proxy that would
terminate TLS, and a federation of real client processes runs through it to the end."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml

from fedlake.backends.remote.auth import Credential
from fedlake.backends.remote.client import RemoteClient
from fedlake.orchestration.checkpoint import load_checkpoint
from tests.network.harness import (
    EXAMPLE,
    FEDLAKE,
    free_port,
    prepare,
    processes,
    wait_healthy,
    write_config,
)

pytestmark = pytest.mark.integration
APP = EXAMPLE / "databricks_app"


def app_command(folder: Path, port: int, token: str) -> tuple[list[str], dict[str, str]]:
    """app.yaml's command and env as the App runtime would give them (host: loopback)."""
    spec = yaml.safe_load((folder / "app.yaml").read_text())
    command = list(spec["command"])
    assert all(isinstance(a, str) for a in command), "app.yaml's command is a list of strings"
    assert command[:2] == ["fedlake", "server"] and "--behind-proxy" in command
    host = command.index("--host") + 1
    assert command[host] == "0.0.0.0", "an App listens on all interfaces"
    command[host] = "127.0.0.1"  # tests talk to loopback only
    env = {"DATABRICKS_APP_PORT": str(port)}
    for item in spec["env"]:
        if "valueFrom" in item:  # a secret the App resolves: the test's own
            assert item["name"] == "FEDLAKE_OPERATOR_TOKEN"
            env[item["name"]] = token
        else:
            env[item["name"]] = str(item["value"])
    return [*FEDLAKE, *command[1:]], env


def test_the_app_command_serves_a_federation_behind_a_proxy(tmp_path) -> None:
    clients = prepare(tmp_path)
    app = tmp_path / "app"
    shutil.copytree(APP, app)
    shutil.copy(tmp_path / "certs" / "clients.json", app / "credentials" / "clients.json")
    config = write_config(tmp_path, APP / "federation.toml", federation__rounds=2,
                          deployment__linger_s=2)  # fmt: skip
    config.replace(app / "federation.toml")
    assert tomllib.loads((app / "federation.toml").read_text())["federation"]["rounds"] == 2
    port, token = free_port(), secrets.token_urlsafe(32)
    command, env = app_command(app, port, token)
    base = f"http://127.0.0.1:{port}"
    with processes(app) as procs:
        procs.start("server", command, env=env)
        wait_healthy(base, app / "ca.pem", timeout=60)
        page = httpx.get(f"{base}/status", headers={"authorization": f"Bearer {token}"})
        assert page.status_code == 200, "the operator's token comes from the App's secret"
        assert httpx.get(f"{base}/status").status_code in (401, 403)
        for cid in clients:
            procs.start(cid, [*FEDLAKE, "client", "--server", base, "--credential",
                              str(tmp_path / "certs" / "clients" / f"{cid}.json"),
                              "--data", str(tmp_path / "data" / cid), "--state", f"state/{cid}",
                              "--proxy-token-env", "WORKSPACE_TOKEN"],
                        env={"WORKSPACE_TOKEN": "dapi-proxy-token"})  # fmt: skip
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
        for cid in clients:
            assert procs.wait(cid, timeout=30) == 0, procs.log(cid)
            assert "the federation finished (max_rounds)" in procs.log(cid)
    ckpt = load_checkpoint(tmp_path / "runs" / "digits-served")
    assert ckpt is not None and ckpt.finished and ckpt.state.round == 2


def test_a_client_sends_the_proxy_token_beside_its_signature(tmp_path) -> None:
    cid = prepare(tmp_path)[0]
    cred = Credential.load(tmp_path / "certs" / "clients" / f"{cid}.json")
    remote = RemoteClient("http://127.0.0.1:9", cred, lambda hints: None,  # type: ignore[arg-type]
                          state_dir=tmp_path / "state", proxy_token="dapi-abc")  # fmt: skip
    try:
        assert remote.http.headers["authorization"] == "Bearer dapi-abc"
    finally:
        remote.close()


def test_a_client_without_its_proxy_token_says_which_variable_is_missing(tmp_path) -> None:
    cid = prepare(tmp_path)[0]
    out = subprocess.run(
        [*FEDLAKE, "client", "--server", "http://127.0.0.1:9", "--credential",
         str(tmp_path / "certs" / "clients" / f"{cid}.json"), "--data", str(tmp_path / "data"),
         "--proxy-token-env", "FEDLAKE_TEST_UNSET_TOKEN"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode != 0
    assert "FEDLAKE_TEST_UNSET_TOKEN" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
