"""A real deployed federation on loopback: a server process and client processes over TLS.

The served run must end with the simulated run's model bit for bit (same seed, same
data, every client one at a time), survive ``kill -9`` of a client and of the server, and
keep each client's state in its own store.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from fedlake.config import load_config
from fedlake.orchestration.checkpoint import load_checkpoint
from fedlake.run import run_experiment
from tests.network.harness import EXAMPLE, free_port, prepare, processes, write_config

pytestmark = pytest.mark.integration


@functools.cache
def simulated(rounds: int, recipe: tuple[tuple[str, object], ...] = ()) -> np.ndarray:
    """The final model of digits_simulated.toml with ``rounds`` rounds (cached)."""
    import tempfile

    cfg = load_config(EXAMPLE / "digits_simulated.toml")
    algorithm = cfg.algorithm.model_copy(update=dict(recipe))
    with tempfile.TemporaryDirectory() as out:
        cfg = cfg.model_copy(
            update={
                "output_dir": out,
                "federation": cfg.federation.model_copy(update={"rounds": rounds}),
                "algorithm": algorithm,
            }
        )
        return np.array(run_experiment(cfg).result.state.params)


def served_model(folder: Path, name: str = "digits-served") -> np.ndarray:
    ckpt = load_checkpoint(folder / "runs" / name)
    assert ckpt is not None and ckpt.finished, "the served run did not finish"
    return np.array(ckpt.state.params)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("site")
    return folder, prepare(folder)


def fresh(site: tuple[Path, list[str]], tmp_path: Path) -> Path:
    """A test folder with the site's tables and credentials (read-only, shared)."""
    folder, _ = site
    for name in ("data", "certs"):
        (tmp_path / name).symlink_to(folder / name)
    return tmp_path


def test_a_served_federation_ends_with_the_simulated_model(site, tmp_path) -> None:
    folder = fresh(site, tmp_path)
    config = write_config(folder, federation__rounds=4, deployment__linger_s=2)
    port = free_port()
    with processes(folder) as procs:
        procs.server(config, port)
        for cid in site[1]:
            procs.client(cid, port)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
        for cid in site[1]:
            assert procs.wait(cid, timeout=30) == 0, procs.log(cid)
            assert "the federation finished (max_rounds)" in procs.log(cid)
    got = served_model(folder)
    assert got.tobytes() == simulated(4).tobytes()


def test_scaffold_with_error_feedback_keeps_client_state_across_the_network(site, tmp_path) -> None:
    """SCAFFOLD's c_i and error feedback's residual live in each client's own folder; the
    acks travel in the tasks; the served model is still the simulated one."""
    folder = fresh(site, tmp_path)
    config = write_config(
        folder,
        federation__rounds=3,
        deployment__linger_s=2,
        algorithm__name="scaffold",
    )
    port = free_port()
    with processes(folder) as procs:
        procs.server(config, port)
        for cid in site[1]:
            procs.client(cid, port)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
    assert served_model(folder).tobytes() == simulated(3, (("name", "scaffold"),)).tobytes()
    from fedlake.client.folder_store import FolderStateStore

    for cid in site[1]:
        record = FolderStateStore(folder / "state" / cid).load(cid)
        assert record is not None and "scaffold" in record["pending"]["states"]


def test_clients_and_the_server_survive_kill_9(site, tmp_path) -> None:
    """A client killed mid-run and restarted continues from its store; the server killed
    mid-run and restarted with --resume continues from its last completed round, and the
    clients reconnect on their own. The model is still the simulated one."""
    folder = fresh(site, tmp_path)
    config = write_config(
        folder, federation__rounds=6, deployment__linger_s=3, deployment__round_timeout_s=90
    )
    port = free_port()
    ids = site[1]
    with processes(folder) as procs:
        procs.server(config, port)
        for cid in ids:
            procs.client(cid, port)
        run = folder / "runs" / "digits-served"
        _wait(lambda: _rounds(run) >= 2, 120, "two completed rounds")
        procs.kill(ids[0])  # a client dies; another process takes over its folder
        procs.client(ids[0], port)
        _wait(lambda: _rounds(run) >= 4, 120, "four completed rounds")
        procs.kill("server")  # the server dies mid-run
        done = _rounds(run)
        procs.server(config, port, resume=True)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
        for cid in ids:
            assert procs.wait(cid, timeout=30) == 0, procs.log(cid)
    ckpt = load_checkpoint(run)
    assert ckpt is not None and ckpt.state.round == 6 and done < 6
    assert [h["round"] for h in ckpt.history if h["status"] == "completed"] == list(range(1, 7))
    assert served_model(folder).tobytes() == simulated(6).tobytes()


def _rounds(run: Path) -> int:
    try:
        ckpt = load_checkpoint(run)
    except Exception:  # being written: try again
        return 0
    return 0 if ckpt is None else ckpt.state.round


def _wait(condition, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"no {what} within {timeout} s")


def test_secrets_never_reach_logs_mlflow_or_delta(site, tmp_path) -> None:
    """The operator's token (used on the status page mid-run, and wrongly guessed) and the
    clients' private keys appear nowhere in what the run writes: logs, MLflow, Delta."""
    import json
    import ssl

    import httpx

    folder = fresh(site, tmp_path)
    config = write_config(folder, federation__rounds=2, deployment__linger_s=2)
    config.write_text(config.read_text().replace("mlflow = false", "mlflow = true"))
    token = (folder / "certs" / "operator.token").read_text().strip()
    port = free_port()
    with processes(folder) as procs:
        procs.server(config, port)
        verify = ssl.create_default_context(cafile=str(folder / "certs" / "ca.pem"))
        base = f"https://localhost:{port}"
        ok = httpx.get(f"{base}/status", headers={"authorization": f"Bearer {token}"},
                       verify=verify)  # fmt: skip
        assert ok.status_code == 200
        bad = httpx.get(f"{base}/status", headers={"authorization": f"Bearer {token[:-2]}xx"},
                        verify=verify)  # fmt: skip
        assert bad.status_code in (401, 403)
        for cid in site[1]:
            procs.client(cid, port)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
        for cid in site[1]:
            assert procs.wait(cid, timeout=30) == 0, procs.log(cid)
    secrets = {"operator token": token, "guessed token": f"{token[:-2]}xx"}
    for cid in site[1]:
        key = json.loads((folder / "certs" / "clients" / f"{cid}.json").read_text())
        body = "".join(key["private_key"].splitlines()[1:-1])  # the PEM's base64
        secrets[f"{cid}'s key"] = body
    written = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
               and not {"certs", "data"} & set(p.relative_to(folder).parts)]  # fmt: skip
    assert any("mlflow" in str(p) or p.suffix == ".db" for p in written), "MLflow wrote nothing"
    assert any(p.suffix == ".parquet" for p in written), "Delta wrote nothing"
    for path in written:
        blob = path.read_bytes()
        for what, secret in secrets.items():
            assert secret.encode() not in blob, f"{what} found in {path.relative_to(folder)}"


def test_a_served_secure_federation_ends_within_the_bound_of_the_plain_one(site, tmp_path) -> None:
    """``fedlake server`` and 4 ``fedlake client`` processes over TLS with SecAgg+: the
    server never sees an update, and the model stays within the encoding's bound."""
    pytest.importorskip("cryptography")
    from fedlake.orchestration.secure import SecureSettings, secure_encoding

    folder = fresh(site, tmp_path)
    config = write_config(
        folder,
        federation__rounds=2,
        federation__secure_aggregation=True,
        deployment__linger_s=2,
    )
    port = free_port()
    with processes(folder) as procs:
        procs.server(config, port)
        for cid in site[1]:
            procs.client(cid, port)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
        for cid in site[1]:
            assert procs.wait(cid, timeout=30) == 0, procs.log(cid)
            assert "secure stage share_keys" in procs.log(cid)
    ckpt = load_checkpoint(folder / "runs" / "digits-served")
    assert ckpt is not None and ckpt.finished
    for row in ckpt.history:
        metrics = json.loads(row["metrics"])
        assert row["num_completed"] == 4 and metrics["secagg_masked"] == 4
        assert metrics["secagg_clipped"] == 0  # the bound holds for unclipped updates
    # each round's error is at most clients / (scale * total weight) <= 1 / scale (every
    # client has an example); the second round trains from a model off by the first's
    # error, which its local steps may grow: a margin of 10 per round
    encoding = secure_encoding(SecureSettings(), 4, weighted=True)
    per_round = 1 / encoding.scale
    got, want = served_model(folder), simulated(2)
    eps = 4 * np.finfo(np.float32).eps * max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= 2 * 10 * per_round + eps
