"""FedBuff with the deployed server: a server process and client processes over TLS.

With K = concurrency = every client and no staleness, a FedBuff step is a synchronous
FedAvg round (the model matches the simulated run to float tolerance: the sum's order is
the arrival order). With K < concurrency, clients train on stale versions, the steps
weight them, the run survives ``kill -9`` of its server, and the model learns. Central DP
composes with it, accounted without amplification by sampling.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedlake.orchestration.checkpoint import load_checkpoint
from tests.network.harness import free_port, processes, write_config
from tests.network.test_federation import _rounds, _wait, fresh, served_model, simulated, site

pytestmark = pytest.mark.integration
__all__ = ["site"]  # the module fixture, shared with test_federation


def steps(folder: Path) -> list[dict]:
    ckpt = load_checkpoint(folder / "runs" / "digits-served")
    assert ckpt is not None
    return [h for h in ckpt.history if h["status"] == "completed"]


def serve(folder: Path, config: Path, ids: list[str]) -> None:
    """A server and every client on loopback until the run ends."""
    port = free_port()
    with processes(folder) as procs:
        procs.server(config, port)
        for cid in ids:
            procs.client(cid, port)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")


def fedbuff_config(folder: Path, **keys: object) -> Path:
    """digits_served.toml with ``keys`` (section__key) and no clients_per_round."""
    config = write_config(folder, **keys)
    config.write_text(config.read_text().replace("clients_per_round = 4\n", ""))
    return config


def digits_accuracy(params: np.ndarray) -> float:
    """The digits MLP's accuracy with ``params`` on all 1,797 digits."""
    from fedlake.config import ModelConfig
    from fedlake.data import load_digits_xy
    from fedlake.models.registry import trainer_from_config
    from fedlake.run.scenarios import Scenario, model_config

    x, y = load_digits_xy()
    mcfg = model_config(ModelConfig(kind="mlp", hidden=(64,)), Scenario(None, (64,), 10))  # type: ignore[arg-type]
    return float(trainer_from_config(mcfg).evaluate(params, x, y)["accuracy"])


def test_fedbuff_with_k_equal_to_every_client_is_fedavg(site, tmp_path) -> None:
    folder = fresh(site, tmp_path)
    config = fedbuff_config(
        folder, federation__rounds=3, deployment__linger_s=2,
        fedbuff__concurrency=4, fedbuff__buffer=4, fedbuff__max_staleness=0,
    )  # fmt: skip
    serve(folder, config, site[1])
    done = steps(folder)
    assert [h["num_completed"] for h in done] == [4, 4, 4]
    assert all(h["staleness_max"] == 0 and h["stale_dropped"] == 0 for h in done)
    np.testing.assert_allclose(served_model(folder), simulated(3), rtol=1e-5, atol=1e-6)


def test_fedbuff_trains_on_stale_versions_and_survives_kill_9_of_the_server(site, tmp_path):
    folder = fresh(site, tmp_path)
    config = fedbuff_config(
        folder, federation__rounds=10, deployment__linger_s=3, deployment__round_timeout_s=90,
        fedbuff__concurrency=4, fedbuff__buffer=2, fedbuff__max_staleness=3,
    )  # fmt: skip
    port = free_port()
    run = folder / "runs" / "digits-served"
    with processes(folder) as procs:
        procs.server(config, port)
        for cid in site[1]:
            procs.client(cid, port)
        _wait(lambda: _rounds(run) >= 4, 120, "four server steps")
        procs.kill("server")
        killed_at = _rounds(run)
        procs.server(config, port, resume=True)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
        heard = 0
        for cid in site[1]:
            try:  # a client still in its reconnect backoff when the steps ran out is not
                code = procs.wait(cid, timeout=10)  # waited for: FedBuff needs K of them
            except subprocess.TimeoutExpired:
                assert "Connection refused" in procs.log(cid), procs.log(cid)
                continue
            assert code == 0 and "the federation finished" in procs.log(cid), procs.log(cid)
            heard += 1
        assert heard >= 2
    done = steps(folder)
    assert [h["round"] for h in done] == list(range(1, 11)) and killed_at < 10
    assert all(h["num_completed"] == 2 for h in done)
    # 4 clients train at once and a step takes 2: half of each step's updates are stale
    assert max(h["staleness_max"] for h in done) >= 1
    assert digits_accuracy(served_model(folder)) > 0.8


def test_fedbuff_with_central_dp_is_accounted_as_if_every_client_were_in_every_step(
    site, tmp_path
) -> None:
    import dp_accounting

    folder = fresh(site, tmp_path)
    config = fedbuff_config(
        folder, federation__rounds=3, deployment__linger_s=2,
        fedbuff__concurrency=4, fedbuff__buffer=2,
        privacy__mechanism="central", privacy__noise_multiplier=1.0, privacy__clip=1.0,
        privacy__adaptive=False, privacy__sampling="fixed", privacy__noise="seeded",
    )  # fmt: skip
    serve(folder, config, site[1])
    done = steps(folder)
    assert len(done) == 3
    # every client in every step (q = 1), a fixed denominator: replace-one neighbours, so
    # one client moves the clipped sum by up to 2 C, and noise z C is z / 2 per unit moved
    rdp = dp_accounting.rdp.RdpAccountant()
    rdp.compose(dp_accounting.GaussianDpEvent(1.0 / 2), 3)
    assert done[-1]["epsilon"] == pytest.approx(rdp.get_epsilon(1e-5), rel=1e-6)
