"""Flower's side of bench/network.py: a Flower App for Flower's deployment runtime.

bench/network.py copies this file into a Flower App folder beside a ``pyproject.toml``
naming it (``network.flower_pyproject``) and starts, with .venv-flower's binaries,
``flower-superlink`` (its Fleet, Control and ServerAppIo APIs on one HTTP port, since
Flower 1.42 over HTTP; TLS with fedlake's local CA and
server certificate unless the cell runs insecure), N ``flower-supernode`` processes (each
with its own ClientApp runtime port) and ``flwr run`` of this app: the SuperLink's
SuperExec starts the ServerApp in its own process, each SuperNode's the ClientApp, as a
deployment does by default (``--isolation subprocess``).

* ServerApp: Flower's message-API ``FedAvg`` (``flwr.serverapp.strategy``) on every
  connected node each round (``fraction_train = 1``, ``min_train_nodes =
  min_available_nodes = N``), no client-side evaluation (``fraction_evaluate = 0``); the
  model is an ``ArrayRecord`` of two float32 arrays shaped like fedlake's logistic
  regression of the same size, (classes, features) and (classes,). Timed on
  ``time.perf_counter``: a round starts when ``configure_train`` is called (its messages
  are then sent), its replies are in when ``aggregate_train`` is called, and it ends when
  the ``evaluate_fn`` hook (which evaluates nothing) is called after the aggregation.
* ClientApp: returns the received arrays scaled by 0.999 (one pass over the parameters,
  no training), with ``num-examples`` 1.

Writes the JSON named by the run config's ``out``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client_app = ClientApp()
server_app = ServerApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """The received parameters, changed a little (a deterministic step of no cost)."""
    arrays = msg.content["arrays"].to_numpy_ndarrays()
    changed = [a * np.float32(0.999) for a in arrays]
    content = RecordDict(
        {"arrays": ArrayRecord(changed), "metrics": MetricRecord({"num-examples": 1})}
    )
    return Message(content=content, reply_to=msg)


class TimedFedAvg(FedAvg):
    """FedAvg that notes when each round starts and when its replies are in."""

    def __init__(self, log: dict[str, Any], **kw: Any) -> None:
        super().__init__(**kw)
        self.log = log

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.log["rounds"].append({"round": server_round, "start": time.perf_counter()})
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        replies = list(replies)
        rec = self.log["rounds"][-1]
        rec["replies_in"] = time.perf_counter()
        rec["replies"] = len(replies)
        rec["errors"] = sum(1 for m in replies if m.has_error())
        return super().aggregate_train(server_round, replies)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    n = int(cfg["clients"])
    classes, features = int(cfg["classes"]), int(cfg["features"])
    log: dict[str, Any] = {"rounds": [], "started": time.perf_counter()}
    strategy = TimedFedAvg(
        log,
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=n,
        min_available_nodes=n,
    )

    def round_end(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round > 0:
            log["rounds"][-1]["end"] = time.perf_counter()
            rec = log["rounds"][-1]
            print(f"round {server_round}: {rec['end'] - rec['start']:.3f} s", flush=True)
        return None

    initial = ArrayRecord(
        [np.zeros((classes, features), np.float32), np.zeros(classes, np.float32)]
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=int(cfg["rounds"]),
        timeout=float(cfg["timeout"]),
        evaluate_fn=round_end,
    )
    final = result.arrays.to_numpy_ndarrays() if result.arrays is not None else []
    log["model_bytes"] = int(sum(a.nbytes for a in final))
    log["finished"] = time.perf_counter()
    out = Path(str(cfg["out"]))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=1))
    tmp.replace(out)
