"""Flower's side of bench/secagg.py: one round of Flower's SecAgg+ workflow in its
simulation engine.

Runs with the Flower interpreter (.venv-flower/bin/python, which has ``flwr[simulation]``
and so Ray; Flower is not installed in .venv). The client inputs and the dropped clients
come from bench/secagg.py's ``client_vector`` and ``drop_set`` (numpy only), so both sides
sum the same vectors.

* ServerApp (legacy): ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=k + 1,
  reconstruction_threshold=t, max_weight=1, clipping_range=clip, quantization_range,
  modulus_range=2^32))`` on a ``LegacyContext`` with one round and a FedAvg whose
  ``aggregate_fit`` returns the secure aggregate as it is (Flower hands every result the
  same unmasked aggregate; FedAvg would average n copies of it), every supernode sampled,
  no evaluation, a 1-value initial model (the fit instruction carries no d-sized model,
  as fedlake's round carries none). Flower's num_shares counts the client's own share:
  k + 1 for k neighbours (n: the complete graph).
* ClientApp (legacy): ``ClientApp(client_fn, mods=[timing_mod, secaggplus_mod])``; the
  NumPyClient's ``fit`` returns supernode ``partition-id``'s vector with num_examples 1,
  or raises for a dropped partition: at the masked-input stage, after sharing keys; the
  engine turns the exception into an error reply, which the workflow counts as a dropout.
  ``timing_mod`` times each ClientApp call inside the Ray worker.
* The fit workflow is timed from its start to the aggregate; its ``grid`` is wrapped to
  count every message's bytes (the sizes of its serialized objects, ``deflate()``: what
  the gRPC transport pushes and pulls) and the time spent waiting for replies; counting
  time is subtracted. Before it, a warm-up message to a few nodes waits out Ray's start-up
  (reported as ``ready_s``).
* Ray backend, ``num_supernodes = n``, each ClientApp 1 CPU, Ray given ``ray_num_cpus``.

    .venv-flower/bin/python bench/_flower_secagg.py JOB.json

JOB.json: {"n", "length", "dropout", "k", "t", "seed", "clip", "quantization_range",
"modulus_range", "ray_num_cpus", "client_cpus", "timeout", "out", optionally
"noop_round": true (time one get_properties round trip to every node first, the engine's
floor for a stage)}. Writes ``out``, and
``out.progress`` (Ray's start-up time and each finished stage) as it goes; a round still
running ``timeout`` s after the fit started is ended there (exit 3, Ray's processes killed).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

JOB: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text()) if __name__ == "__main__" else {}
if JOB:  # this directory (this module, secagg.py), here and through PYTHONPATH in Ray's workers
    _here = str(Path(__file__).resolve().parent)
    sys.path.insert(0, _here)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [_here, *filter(None, [os.environ.get("PYTHONPATH")])]
    )

import flwr  # noqa: E402
import numpy as np  # noqa: E402
from flwr.app import ConfigRecord, Context, Message  # noqa: E402
from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.client.mod import secaggplus_mod  # noqa: E402
from flwr.common import (  # noqa: E402
    GetPropertiesIns,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy  # noqa: E402
from flwr.compat.common import recorddict_compat as compat  # noqa: E402
from flwr.server import LegacyContext, ServerApp, ServerConfig  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow  # noqa: E402
from flwr.simulation import run_simulation  # noqa: E402
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects  # noqa: E402
from secagg import client_vector, drop_set, tree  # noqa: E402

TIMING_KEY = "bench-timing"  # the reply's config record with the ClientApp call's time
WARMUP_NODES = 4


# -- ClientApp ---------------------------------------------------------------------------


@functools.cache
def dropped(n: int, rate: float, seed: int) -> frozenset[int]:
    return frozenset(drop_set(n, rate, seed))


class BenchClient(NumPyClient):
    """Returns its stand-in update, or vanishes (raises) if it is a dropped partition."""

    def __init__(self, partition: int) -> None:
        self.partition = partition

    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"partition": self.partition}

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        n, length, seed = int(config["n"]), int(config["length"]), int(config["seed"])
        if self.partition in dropped(n, float(config["dropout"]), seed):
            raise RuntimeError(f"partition {self.partition} drops out (benchmark)")
        return [client_vector(self.partition, length, seed)], 1, {}


def client_fn(context: Context) -> Any:
    return BenchClient(int(context.node_config["partition-id"])).to_client()


def timing_mod(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Time the rest of the ClientApp (secaggplus_mod and the client) for this message."""
    t0 = time.perf_counter()
    out: Message = call_next(msg, ctxt)
    if out.has_content():
        out.content.config_records[TIMING_KEY] = ConfigRecord({"s": time.perf_counter() - t0})
    return out


def build_client_app() -> ClientApp:
    return ClientApp(client_fn=client_fn, mods=[timing_mod, secaggplus_mod])


# -- ServerApp ---------------------------------------------------------------------------


def wire_bytes(msg: Message) -> int:
    """The bytes of ``msg``'s serialized objects (what the gRPC transport moves)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(msg).values())


class CountingGrid:
    """The grid, counting bytes per node and the time spent waiting for replies."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.up: dict[int, int] = defaultdict(int)
        self.down: dict[int, int] = defaultdict(int)
        self.client_s = 0.0
        self.wait_s = 0.0
        self.count_s = 0.0
        self.answered: list[list[int]] = []  # per call: the nodes that replied with content

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        t0 = time.perf_counter()
        for m in messages:
            self.down[m.metadata.dst_node_id] += wire_bytes(m)
        t1 = time.perf_counter()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        t2 = time.perf_counter()
        self.answered.append(sorted(r.metadata.src_node_id for r in replies if r.has_content()))
        for r in replies:
            if r.has_content() and TIMING_KEY in r.content.config_records:
                self.client_s += float(r.content.config_records[TIMING_KEY]["s"])
                del r.content.config_records[TIMING_KEY]
            self.up[r.metadata.src_node_id] += wire_bytes(r)
        t3 = time.perf_counter()
        self.count_s += (t1 - t0) + (t3 - t2)
        self.wait_s += t2 - t1
        return replies


class TimedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, timed stage by stage on a counting grid."""

    def __init__(self, log: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log
        self.grid: CountingGrid | None = None

    def __call__(self, grid: Any, context: Context) -> None:
        self.grid = CountingGrid(grid)
        self.log["stages"] = {}
        t0 = time.perf_counter()
        self.log["fit_started"] = t0
        super().__call__(self.grid, context)
        self.log["round_s"] = time.perf_counter() - t0 - self.grid.count_s

    def _timed(self, name: str, stage: Any, grid: Any, context: Any, state: Any) -> bool:
        counted = grid.count_s
        t0 = time.perf_counter()
        ok = bool(stage(grid, context, state))
        self.log["stages"][name] = {
            "s": time.perf_counter() - t0 - (grid.count_s - counted),
            "active_after": len(state.active_node_ids),
            "ok": ok,
        }
        write_progress(self.log)
        if name == "setup":
            self.log["num_shares"], self.log["threshold"] = state.num_shares, state.threshold
        return ok

    def setup_stage(self, grid: Any, context: Any, state: Any) -> bool:
        return self._timed("setup", super().setup_stage, grid, context, state)

    def share_keys_stage(self, grid: Any, context: Any, state: Any) -> bool:
        return self._timed("share_keys", super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(self, grid: Any, context: Any, state: Any) -> bool:
        return self._timed(
            "masked_vectors", super().collect_masked_vectors_stage, grid, context, state
        )

    def unmask_stage(self, grid: Any, context: Any, state: Any) -> bool:
        return self._timed("unmask", super().unmask_stage, grid, context, state)


class SecureMean(FedAvg):
    """FedAvg whose aggregate is the secure aggregate (every result carries it)."""

    def __init__(self, log: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        self.log["results"], self.log["failures"] = len(results), len(failures)
        self.log["failure_reasons"] = sorted({str(f)[:200] for f in failures})[:3]
        if not results:
            return None, {}
        self.log["aggregate"] = results[0][1].parameters
        return results[0][1].parameters, {}


def properties_round(grid: Any, nodes: list[int], group: str) -> None:
    """A get_properties message to each of ``nodes`` and their replies."""
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns({}))
    msgs = [
        Message(
            content=content,
            dst_node_id=nid,
            message_type=MessageTypeLegacy.GET_PROPERTIES,
            group_id=group,
        )
        for nid in nodes
    ]
    replies = list(grid.send_and_receive(msgs))
    bad = [r.error for r in replies if r.has_error()]
    if bad:
        raise RuntimeError(f"{group} failed: {bad[0]}")


def warm_up(grid: Any, n: int) -> None:
    """Wait for the n nodes, then a get_properties round trip to a few (Ray's start-up)."""
    while len(nodes := sorted(grid.get_node_ids())) < n:
        time.sleep(0.1)
    properties_round(grid, nodes[:WARMUP_NODES], "warm-up")


def noop_round(grid: Any) -> None:
    """A get_properties round trip to every node: the engine's cost of one stage's messages."""
    properties_round(grid, sorted(grid.get_node_ids()), "no-op")


def build_server_app(job: dict[str, Any], log: dict[str, Any], t0: float) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Context) -> None:
        n = job["n"]
        warm_up(grid, n)
        log["ready_s"] = time.perf_counter() - t0
        if job.get("noop_round"):  # the engine's floor: one message to every node and back
            t1 = time.perf_counter()
            noop_round(grid)
            log["noop_round_s"] = time.perf_counter() - t1
        write_progress(log)
        fit_config = {
            "n": n,
            "length": job["length"],
            "dropout": float(job["dropout"]),
            "seed": job["seed"],
        }
        strategy = SecureMean(
            log,
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_evaluate_clients=0,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([np.zeros(1, dtype=np.float32)]),
            on_fit_config_fn=lambda _round: fit_config,
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        workflow = TimedSecAggPlus(
            log,
            num_shares=job["k"] + 1,
            reconstruction_threshold=job["t"],
            max_weight=1.0,
            clipping_range=float(job["clip"]),
            quantization_range=int(job["quantization_range"]),
            modulus_range=int(job["modulus_range"]),
        )
        DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
        log["finished_s"] = time.perf_counter() - t0
        grid_ = workflow.grid
        if grid_ is not None:
            log["counting"] = {
                "up": dict(grid_.up),
                "down": dict(grid_.down),
                "client_s": grid_.client_s,
                "wait_s": grid_.wait_s,
                "count_s": grid_.count_s,
                "answered": grid_.answered,
            }

    return app


def write_progress(log: dict[str, Any]) -> None:
    """How far the round got, for bench/secagg.py to read if this process is killed."""
    keep = {k: log[k] for k in ("ready_s", "noop_round_s", "stages", "timed_out") if k in log}
    Path(log["progress_path"]).write_text(json.dumps(keep))


def watchdog(log: dict[str, Any], timeout: float) -> None:
    """End the process (and Ray's, below it) ``timeout`` s after the fit started."""
    while "fit_started" not in log:
        time.sleep(0.5)
    deadline = log["fit_started"] + timeout
    while "round_s" not in log:
        if time.perf_counter() > deadline:
            log["timed_out"] = True
            write_progress(log)
            me = os.getpid()
            for pid in reversed(tree(me)):
                if pid != me:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            os._exit(3)
        time.sleep(0.5)


def summary(job: dict[str, Any], log: dict[str, Any]) -> dict[str, Any]:
    """The round's numbers from the log, and the aggregate checked against the inputs."""
    n, length, seed = job["n"], job["length"], job["seed"]
    out: dict[str, Any] = {
        k: log[k]
        for k in (
            "ready_s",
            "noop_round_s",
            "round_s",
            "stages",
            "num_shares",
            "threshold",
            "results",
            "failures",
            "failure_reasons",
            "finished_s",
        )
        if k in log
    }
    counting = log.get("counting")
    out["completed"] = "aggregate" in log
    if counting:
        up, down = counting["up"], counting["down"]
        out["client_s_per_client"] = counting["client_s"] / n
        out["wait_s"] = counting["wait_s"]
        out["count_s"] = counting["count_s"]
        out["up_per_client"] = sum(up.values()) / n
        out["down_per_client"] = sum(down.values()) / n
        out["server_s"] = log.get("round_s", 0.0) - counting["wait_s"]
    if "aggregate" not in log:
        return out
    gone = set(drop_set(n, float(job["dropout"]), seed))
    survivors = [p for p in range(n) if p not in gone]
    expected = np.zeros(length, dtype=np.float64)
    for p in survivors:
        expected += client_vector(p, length, seed)
    got = parameters_to_ndarrays(log["aggregate"])
    out["survivors"] = log.get("stages", {}).get("masked_vectors", {}).get("active_after")
    out["aggregate_arrays"] = len(got)
    out["max_abs_error"] = float(np.max(np.abs(got[0].ravel() - expected / len(survivors))))
    if counting and len(counting["answered"]) >= 3:  # the nodes that sent masked vectors
        senders = counting["answered"][2]
        out["up_per_survivor"] = sum(up[u] for u in senders) / max(len(senders), 1)
        out["expansion"] = out["up_per_survivor"] / (4 * length)
    return out


def main() -> int:
    job = JOB
    logging.getLogger("flwr").setLevel(logging.WARNING)
    log: dict[str, Any] = {"progress_path": job["out"] + ".progress"}
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": job["client_cpus"], "num_gpus": 0.0},
        "init_args": {
            "num_cpus": job["ray_num_cpus"],
            "num_gpus": 0,
            "include_dashboard": False,
            "log_to_driver": False,
        },
    }
    # the apps come from this file imported as a module, not from __main__: Ray pickles
    # functions of __main__ by value, those of a module by reference (workers import it)
    import _flower_secagg as this

    threading.Thread(target=watchdog, args=(log, float(job["timeout"])), daemon=True).start()
    t0 = time.perf_counter()
    run_simulation(
        server_app=this.build_server_app(job, log, t0),
        client_app=this.build_client_app(),
        num_supernodes=job["n"],
        backend_config=backend_config,
    )
    wall = time.perf_counter() - t0
    import ray

    report = {
        "flwr": flwr.__version__,
        "ray": ray.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "backend_config": backend_config,
        "wall_s": wall,
        "driver_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        **summary(job, log),
    }
    Path(job["out"]).write_text(json.dumps(report, indent=1))
    return 0  # bench/secagg.py reads "completed"


if __name__ == "__main__":
    raise SystemExit(main())
