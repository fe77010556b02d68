"""The remote executor passes the executor conformance suite every executor passes.

Each executor here is a real server (the FastAPI app under uvicorn, plain HTTP on
127.0.0.1) and one :class:`RemoteClient` per client of the suite's toy fleet, in threads,
talking over loopback sockets; their states go to the suite's store.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from fedlake.backends.remote.app import create_app
from fedlake.backends.remote.auth import Credential, Registry
from fedlake.backends.remote.certs import CLIENTS, REGISTRY, make_certs
from fedlake.backends.remote.client import RemoteClient, plan_work
from fedlake.backends.remote.coordinator import Coordinator
from fedlake.backends.remote.executor import RemoteExecutor
from fedlake.client.fleet import ClientFleet
from fedlake.client.stores import ClientStateStore
from fedlake.core.task import ClientOutcome, ClientTask, Instructions
from fedlake.testing import ExecutorConformance
from tests.network.harness import free_port, url, wait_healthy

pytestmark = pytest.mark.integration


class LoopbackRemote:
    """A RemoteExecutor with its server and its fleet's clients running on loopback.

    ``wrap``: each client's runtime passes through ``wrap(client_id, runtime)`` (a test
    double around it), None: the fleet's runtime as it is.
    """

    def __init__(
        self,
        fleet: ClientFleet,
        store: ClientStateStore,
        *,
        round_timeout_s: float = 60,
        wrap: Callable[[str, Any], Any] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory()
        folder = Path(self._tmp.name)  # type: ignore[union-attr]
        ids = list(fleet.data.client_ids())
        make_certs(folder, ids)
        self.coordinator = Coordinator("conformance")
        self.executor = RemoteExecutor(self.coordinator, round_timeout_s=round_timeout_s)
        port = free_port()
        app = create_app(
            self.coordinator,
            Registry(folder / REGISTRY),
            operator_token="t",
            federation_info={"run": "conformance"},
        )
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                    log_level="warning"))  # fmt: skip
        self.threads = [threading.Thread(target=self.server.run, daemon=True)]
        self.threads[0].start()
        wait_healthy(url(port, False), folder / "ca.pem", timeout=30)
        self.clients = [
            RemoteClient(
                url(port, False),
                Credential.load(folder / CLIENTS / f"{cid}.json"),
                fleet.data,
                store=store,
                runtime=lambda info, cid=cid: (
                    fleet.runtime(store) if wrap is None else wrap(cid, fleet.runtime(store))
                ),
                long_poll_s=5,
                log=lambda line: None,
            )
            for cid in ids
        ]
        for client in self.clients:
            thread = threading.Thread(target=client.run, daemon=True)
            thread.start()
            self.threads.append(thread)

    def map_clients(self, task: ClientTask, cohort: Sequence[str]) -> Iterator[ClientOutcome]:
        """The real remote executor's map."""
        return self.executor.map_clients(task, cohort)

    def close(self) -> None:
        """Tell the clients the run ended, stop the server, wait for every thread."""
        if self._tmp is None:  # closed already (a Federation closes its executor)
            return
        self.coordinator.finish("closed")
        time.sleep(0.3)
        self.server.should_exit = True
        for thread in self.threads:
            thread.join(timeout=30)
        for client in self.clients:
            client.close()
        self._tmp.cleanup()
        self._tmp = None


class TestRemoteExecutor(ExecutorConformance):
    def make_executor(self, fleet: ClientFleet, store: ClientStateStore) -> Any:
        return LoopbackRemote(fleet, store)


def test_a_client_plans_partial_work_it_can_finish_by_the_deadline() -> None:
    assert plan_work(100, 50.0, 10.0, "keep") is None  # 2 s of work, 10 s left
    assert plan_work(100, 10.0, 4.0, "keep") == Instructions(max_steps=40, drop_partial=False)
    assert plan_work(100, 10.0, 4.0, "drop") == Instructions(max_steps=40, drop_partial=True)
    assert plan_work(100, 10.0, -3.0, "keep") == Instructions(max_steps=0, drop_partial=False)
    assert plan_work(100, 0.0, 4.0, "keep") is None  # no speed known: all of it
    assert np.isfinite(plan_work(10**9, 1e-3, 1.0, "keep").max_steps)  # type: ignore[union-attr]
