"""Round latency and throughput of a deployed federation on loopback: fedlake against Flower's
deployment runtime and against the raw time to move the same bytes over a plain socket.

Cells: models of 1, 10 and 100 MB (a flat float32 parameter vector of that many bytes,
MB = 10^6) with 2, 10 and 50 clients, every client in every round (FedAvg). Local
training is nearly free on both sides, so a round measures the framework: what it costs
to publish the model, move it to every client, take every reply back and aggregate.

* fedlake: ``fedlake.run.deploy.serve`` (what ``fedlake server`` runs) in its own process,
  TLS on (the default), signed requests, the run config of bench/_net_fedlake.py: a
  logistic regression of 1,000 inputs and as many classes as make the cell's size
  ((999 + 1) x classes float32), FedAvg, one SGD step on one example per client; N
  ``fedlake client`` processes, each with its own 2-row Parquet table, credential and state
  folder. Lakehouse (Delta, MLflow) off; the checkpoint is written every round as always.
* Flower 1.42 (.venv-flower): ``flower-superlink`` (TLS with the same local CA and server
  certificate), N ``flower-supernode`` processes and ``flwr run`` of bench/_flower_deploy.py:
  its ServerApp runs Flower's ``FedAvg`` on an ``ArrayRecord`` of the same two float32 arrays,
  its ClientApp returns them scaled by 0.999. Flower's defaults otherwise (``subprocess``
  isolation: the SuperLink starts the ServerApp in a process of its own, each SuperNode a
  ClientApp process per message).
* raw: bench/_net_raw.py: one server thread per client sends the model's bytes over a
  persistent plain TCP connection and reads back a payload of the same size, discarding
  both (the kernel's copy and nothing else). A TLS variant of the same is a diagnostic.

A round's latency is the server's wall time from the round's start (fedlake: the attempt
opens, its task is published to the long-polling clients; Flower: ``configure_train`` is
called; raw: the first byte is sent) to its end (fedlake: the ``round_finished`` event,
once the aggregate is applied and the round's checkpoint written; Flower: after
``aggregate_train``; raw: the last reply's last byte read).
Reported: the median over the rounds after the first (a warm-up: joins, connections,
first calls). Also recorded: fedlake's own ``duration_s`` of each round (the rounds
table's column, which stops before the checkpoint), each side's round period (end to end
of consecutive rounds: for fedlake it adds encoding the next model), peak memory of each side's
processes (PSS), and its start-up. Throughput: model bytes moved per round, both directions
(2 x clients x size), per second of round latency.

Every process runs on 127.0.0.1 and is killed at the end of its side (found by an
environment tag and as a descendant of this process, which reaps them). A side that
drives available memory under MEMORY_FLOOR_GB is stopped, and its cell says so; so is
one that runs past --timeout.

    python bench/network.py                 # every cell (~40 min on 2 cores)
    python bench/network.py --quick         # 1 MB x 2 clients, 2 rounds (seconds)
    python bench/network.py --quick --no-flower
    python bench/network.py --cells 10x10,100x2 --sides fedlake,raw
    python bench/network.py --render bench/results/network.json

Writes bench/results/network.json (or --out).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _git import git_state  # noqa: E402  (bench/, beside this script)
from _procs import pss_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "network.json"
FLOWER_BIN = ROOT / ".venv-flower" / "bin"
SIZES_MB = (1, 10, 100)
CLIENTS = (2, 10, 50)
MEASURED = {1: 5, 10: 5, 100: 5}  # rounds timed after the warm-up, by model size (MB)
MEASURED_HUGE = 2  # 100 MB x 50 clients: 10 GB a round
WARMUP = 1
TARGET_FLOWER = 5.0  # fedlake's round latency at least this many times lower than Flower's
TARGET_RAW = 2.0  # and at most this many times the raw byte-moving time
MEMORY_FLOOR_GB = 3.0  # stop a side when the machine's available memory falls below this
SAMPLE_S = 0.5  # how often a side's progress and the machine's free memory are checked
# how often its memory (PSS) is sampled: reading PSS walks each process's page tables
# (0.2-0.9 s of CPU for ten 100 MB clients); every 0.5 s it took a sixth of the machine
# from the sides being measured
PSS_EVERY_S = 2.0
MB = 1e6
SIDES = ("raw", "raw_tls", "fedlake", "flower")
TAG = "FEDLAKE_NET_BENCH"  # every process of a side carries TAG=<run>-<side>-<random>
RUN_ID = os.environ.get("FEDLAKE_NET_BENCH_ID") or uuid.uuid4().hex[:8]
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# ---------------------------------------------------------------------------------------
# processes


def become_subreaper() -> None:
    """Orphans of the processes started here are re-parented to this process (Linux), so
    they stay in its tree, are killed with it and are reaped."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap() -> None:
    """Collect the exit status of every finished orphan (no zombies left behind)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def descendants(root: int) -> list[int]:
    """The processes below ``root`` (not ``root`` itself)."""
    kids = _children()
    out, todo = [], list(kids.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def tagged(tag: str) -> list[int]:
    """The processes whose environment carries ``TAG=tag`` (started by one side)."""
    needle = f"{TAG}={tag}".encode()
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if needle in Path(entry.path, "environ").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, timeout: float, alive: Any = None) -> None:
    """Wait until something listens on 127.0.0.1:``port``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"exited with {alive.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f} s")


LIVE: set[Side] = set()  # the sides whose processes may still run


def _kill_live() -> None:
    """At exit (a SIGTERM included): no side's server or clients left behind."""
    for side in list(LIVE):
        side.kill()


atexit.register(_kill_live)


class Side:
    """The processes of one side of one cell: started with a tag, watched, killed."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tag = f"{RUN_ID}-{name}-{uuid.uuid4().hex[:10]}"
        self.next_sample = 0.0  # perf_counter time of the next PSS sample
        LIVE.add(self)  # killed at exit, even when the benchmark itself is stopped
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        env = dict(os.environ)
        env.update({v: "1" for v in BLAS_VARS})
        env.update(
            {
                TAG: self.tag,
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                            env.get("PYTHONPATH")])),
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true",
                "FLWR_TELEMETRY_ENABLED": "0",
                "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PATH": os.pathsep.join([str(FLOWER_BIN), env.get("PATH", "")]),
            }
        )  # fmt: skip
        self.env = env
        self.peak_pss = 0
        self.max_procs = 0
        self.t0 = time.perf_counter()

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 (closed at exit)
        proc = subprocess.Popen(
            [str(a) for a in args], cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
            env={**self.env, **env}, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        return proc

    def pids(self) -> list[int]:
        mine = set(tagged(self.tag))
        for proc in self.procs.values():
            if proc.poll() is None:
                mine.add(proc.pid)
                mine.update(descendants(proc.pid))
        mine.discard(os.getpid())
        return sorted(mine)

    def sample(self) -> None:
        pids = self.pids()
        self.peak_pss = max(self.peak_pss, sum(pss_bytes(p) for p in pids))
        self.max_procs = max(self.max_procs, len(pids))

    def watch(self, done: Any, timeout: float, what: str) -> None:
        """Wait for ``done()``; raise on timeout, low memory, or a process that failed."""
        end = time.perf_counter() + timeout
        floor = MEMORY_FLOOR_GB * 1e9
        while not done():
            if time.perf_counter() > end:
                raise SideError(f"{what} ran past {timeout:.0f} s")
            avail = mem_available()
            if avail < floor:
                self.sample()
                raise SideError(
                    f"stopped: the machine's available memory fell to {avail / 1e9:.1f} GB "
                    f"(floor {MEMORY_FLOOR_GB:g} GB), this side's processes held "
                    f"{self.peak_pss / 1e9:.1f} GB (PSS)"
                )
            if time.perf_counter() >= self.next_sample:
                self.sample()
                self.next_sample = time.perf_counter() + PSS_EVERY_S
            for name in self.procs:
                if self.failed(name) and not done():
                    raise SideError(
                        f"{name} exited with {self.procs[name].returncode} while {what} "
                        f"ran: {self.log_tail(name, 600)}"
                    )
            time.sleep(SAMPLE_S)

    def failed(self, name: str) -> bool:
        proc = self.procs[name]
        return proc.poll() is not None and proc.returncode != 0

    def log_tail(self, name: str, chars: int = 1200) -> str:
        try:
            text = (self.folder / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return text[-chars:]

    def kill(self) -> None:
        """SIGKILL every process of this side (by pid), until none is left; reap them."""
        LIVE.discard(self)
        for _ in range(20):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            for proc in self.procs.values():
                with contextlib.suppress(Exception):
                    proc.wait(timeout=0.1)
            reap()
        reap()

    def stats(self) -> dict[str, Any]:
        return {
            "peak_pss_mb": self.peak_pss / MB,
            "max_processes": self.max_procs,
            "wall_s": time.perf_counter() - self.t0,
        }


class SideError(RuntimeError):
    """A side that did not finish: why."""


# ---------------------------------------------------------------------------------------
# the sides


def raw_side(cell: dict[str, Any], folder: Path, certs: Path, *, tls: bool,
             timeout: float) -> dict[str, Any]:  # fmt: skip
    side = Side(folder, "raw-tls" if tls else "raw")
    out = folder / "raw.json"
    (port,) = free_ports(1)
    common = ["--port", port, "--clients", cell["clients"], "--bytes", cell["bytes"],
              "--certs", certs] + (["--tls"] if tls else [])  # fmt: skip
    try:
        server = side.start("server", [sys.executable, BENCH / "_net_raw.py", "server", *common,
                                       "--rounds", cell["rounds"], "--out", out])  # fmt: skip
        side.start("clients", [sys.executable, BENCH / "_net_raw.py", "clients", *common])
        side.watch(lambda: server.poll() is not None, timeout, "the raw server")
        if server.returncode != 0 or side.failed("clients"):
            raise SideError(f"raw failed: {side.log_tail('server')} {side.log_tail('clients')}")
        report = json.loads(out.read_text())
    except (SideError, OSError, ValueError, RuntimeError) as exc:
        side.kill()
        return {"error": str(exc), "tls": tls, **side.stats()}
    side.kill()
    return summary(report["rounds"], cell, side, t_start=side.t0) | {"tls": tls}


def fedlake_side(cell: dict[str, Any], folder: Path, cfg_path: Path, ids: list[str], *,
                 timeout: float, phases: bool = False) -> dict[str, Any]:  # fmt: skip
    side = Side(folder, "fedlake")
    if phases:
        side.env["FEDLAKE_NET_PHASES"] = str(folder / "phases")
    client = [BENCH / "_net_phases.py"] if phases else ["-m", "fedlake.cli.main", "client"]
    out = folder / "fedlake.json"
    (port,) = free_ports(1)
    job = {"config": str(cfg_path), "certs": str(folder / "certs"), "port": port, "tls": True,
           "out": str(out)}  # fmt: skip
    (folder / "job.json").write_text(json.dumps(job))
    url = f"https://localhost:{port}"
    try:
        server = side.start("server", [sys.executable, BENCH / "_net_fedlake.py", "job.json"])
        wait_port(port, 120, alive=server)
        for cid in ids:
            side.start(cid, [sys.executable, *client, "--server", url,
                             "--credential", f"certs/clients/{cid}.json", "--data",
                             f"data/{cid}", "--state", f"state/{cid}"])  # fmt: skip
        side.watch(lambda: server.poll() is not None, timeout, "the fedlake server")
        if server.returncode != 0 or not out.exists():
            raise SideError(f"fedlake server exit {server.returncode}: {side.log_tail('server')}")
        report = json.loads(out.read_text())
    except (SideError, OSError, ValueError, RuntimeError) as exc:
        side.kill()
        return {"error": str(exc), "tls": True, **side.stats()}
    side.kill()
    rounds = report["rounds"]
    res = summary(rounds, cell, side, t_start=side.t0)
    timed = rounds[WARMUP:]
    res["duration_s"] = _median([r["duration_s"] for r in timed])
    res["duration_s_rounds"] = [r["duration_s"] for r in rounds]
    res["stop_reason"] = report.get("stop_reason")
    res["completed"] = [r.get("num_completed") for r in rounds]
    if phases:
        res["phases"] = phase_summary(folder / "phases", rounds)
    return res | {"tls": True}


PHASE_NAMES = ("wake", "download", "unpack", "train", "pack", "upload", "sign", "tail")


def phase_summary(folder: Path, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a fedlake round's time goes, from the clients' timestamps (bench/_net_phases.py).

    Per timed round, the median over clients of: ``wake`` (the round's start on the server
    to the client holding its offer), ``download`` (the task frame), ``unpack`` (reading
    the frame, checking the model's xxh3 checksum), ``train`` (``ClientRuntime.handle``: decode,
    one SGD step, encode), ``pack`` (the reply frame), ``upload`` (the PUT, signing
    included), ``sign`` (the part of it that signs: the body's BLAKE3); and ``tail``: the
    last upload's end to the round's end on the server (taking the last reply in,
    aggregating, the server step). Then the median over the timed rounds.
    """
    recs: dict[int, list[dict[str, Any]]] = {}
    for f in sorted(folder.glob("*.json")):
        for rec in json.loads(f.read_text()):
            recs.setdefault(int(rec["round"]), []).append(rec)
    per_round: dict[str, list[float]] = {k: [] for k in PHASE_NAMES}
    for rnd in rounds[WARMUP:]:
        got = [r for r in recs.get(int(rnd["round"]), []) if r.get("upload_end") is not None]
        if not got:
            continue
        spans = {
            "wake": [r["offered"] - rnd["start"] for r in got if r.get("offered")],
            "download": [r["download_end"] - r["download_start"] for r in got],
            "unpack": [r["train_start"] - r["download_end"] for r in got],
            "train": [r["train_end"] - r["train_start"] for r in got],
            "pack": [r["upload_start"] - r["train_end"] for r in got],
            "upload": [r["upload_end"] - r["upload_start"] for r in got],
            "sign": [r.get("sign_s", 0.0) for r in got],
        }
        for k, v in spans.items():
            if v:
                per_round[k].append(statistics.median(v))
        per_round["tail"].append(rnd["end"] - max(r["upload_end"] for r in got))
    return {k: _median(v) for k, v in per_round.items()}


def flower_pyproject(*, clients: int, classes: int, features: int, rounds: int,
                     timeout: float, out: str) -> str:  # fmt: skip
    """The Flower App's pyproject.toml; its module is bench/_flower_deploy.py, copied."""
    return f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "netbench"
version = "1.0.0"
description = "fedlake's bench/network.py workload"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedlake"

[tool.flwr.app.components]
serverapp = "_flower_deploy:server_app"
clientapp = "_flower_deploy:client_app"

[tool.flwr.app.config]
clients = {clients}
classes = {classes}
features = {features}
rounds = {rounds}
timeout = {float(timeout)}
out = {json.dumps(out)}
"""


def flower_side(cell: dict[str, Any], folder: Path, certs: Path, *, tls: bool,
                timeout: float) -> dict[str, Any]:  # fmt: skip
    from _net_fedlake import model_shape

    side = Side(folder, "flower")
    n = cell["clients"]
    features, classes = model_shape(cell["bytes"])
    out = folder / "flower.json"
    app = folder / "app"
    app.mkdir(parents=True, exist_ok=True)
    shutil.copy(BENCH / "_flower_deploy.py", app / "_flower_deploy.py")
    (app / "pyproject.toml").write_text(
        flower_pyproject(
            clients=n,
            classes=classes,
            features=features,
            rounds=cell["rounds"],
            timeout=timeout,
            out=str(out),
        )  # fmt: skip
    )
    home = folder / "flwr-home"
    home.mkdir(exist_ok=True)
    port, *node_ports = free_ports(n + 1)
    security = f'root-certificates = "{certs / "ca.pem"}"' if tls else "insecure = true"
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{port}"\n'
        f"{security}\n"
    )
    link_tls = (
        ["--ssl-certfile", certs / "server.pem", "--ssl-keyfile", certs / "server.key",
         "--ssl-ca-certfile", certs / "ca.pem"] if tls else ["--insecure"]
    )  # fmt: skip
    node_tls = ["--root-certificates", certs / "ca.pem"] if tls else ["--insecure"]
    env = {"FLWR_HOME": str(home)}
    try:
        link = side.start("superlink", [FLOWER_BIN / "flower-superlink", "--port", port,
                                        "--disable-runtime-dependency-installation",
                                        *link_tls], **env)  # fmt: skip
        wait_port(port, 120, alive=link)
        for i, node_port in enumerate(node_ports):
            side.start(f"supernode{i:03d}", [FLOWER_BIN / "flower-supernode", "--superlink",
                                              f"localhost:{port}", *node_tls, "--port",
                                              node_port], **env)  # fmt: skip
        submit = side.start("flwr-run", [FLOWER_BIN / "flwr", "run", app, "bench"], **env)
        side.watch(lambda: submit.poll() is not None, 120, "flwr run")
        if submit.returncode != 0:
            raise SideError(f"flwr run exit {submit.returncode}: {side.log_tail('flwr-run')}")
        side.watch(out.exists, timeout, "Flower's ServerApp")
        report = json.loads(out.read_text())
    except (SideError, OSError, ValueError, RuntimeError) as exc:
        side.kill()
        return {"error": str(exc), "tls": tls, **side.stats()}
    side.kill()
    rounds = report["rounds"]
    res = summary(rounds, cell, side, t_start=side.t0)
    res["replies_in_s"] = _median([r["replies_in"] - r["start"] for r in rounds[WARMUP:]])
    res["errors"] = [r.get("errors") for r in rounds]
    return res | {"tls": tls}


# ---------------------------------------------------------------------------------------
# numbers


def _median(xs: list[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def summary(rounds: list[dict[str, Any]], cell: dict[str, Any], side: Side, *,
            t_start: float) -> dict[str, Any]:  # fmt: skip
    """Median latency and period of the rounds after the warm-up, throughput, the rest."""
    lat = [r["end"] - r["start"] for r in rounds]
    period = [b["end"] - a["end"] for a, b in zip(rounds, rounds[1:], strict=False)]
    timed = lat[WARMUP:]
    latency = _median(timed)
    moved = 2 * cell["clients"] * cell["bytes"]
    return {
        "latency_s": latency,
        "latency_s_rounds": lat,
        "period_s": _median(period),
        "throughput_MBps": None if not latency else moved / latency / MB,
        "rounds_timed": len(timed),
        "startup_s": rounds[0]["start"] - t_start if rounds else None,
        **side.stats(),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def verdict(cell: dict[str, Any]) -> dict[str, Any]:
    """The two targets on one cell: >= TARGET_FLOWER x Flower, <= TARGET_RAW x raw."""
    ours = (cell.get("fedlake") or {}).get("latency_s")
    flower = (cell.get("flower") or {}).get("latency_s")
    raw = (cell.get("raw") or {}).get("latency_s")
    vs_flower = ratio(flower, ours)
    vs_raw = ratio(ours, raw)
    return {
        "flower_over_fedlake": vs_flower,
        "fedlake_over_raw": vs_raw,
        "vs_flower": None if vs_flower is None else vs_flower >= TARGET_FLOWER,
        "vs_raw": None if vs_raw is None else vs_raw <= TARGET_RAW,
    }


def fmt(x: Any, spec: str = ".3f", suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:{spec}}{suffix}"


def seconds(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    fl = report.get("flower_version") or "-"
    lines = [
        f"Loopback (127.0.0.1), {m['platform']}, {m['cpus']} CPUs, {m['mem_total_GB']} GB. "
        f"Every client trains in every round; local training nearly free (fedlake: one SGD "
        f"step of a logistic regression on one example; Flower: the parameters x 0.999). "
        f"Round latency: the server's time from the round's start to its aggregate, median "
        f"of the rounds after a warm-up round. TLS: fedlake yes; Flower "
        f"{'yes' if report.get('flower_tls') else 'no'} (Flower {fl}, SuperLink + SuperNodes, "
        f"subprocess isolation); raw: plain TCP (no TLS). Throughput: model bytes moved per "
        f"round in both directions (2 x clients x size) per second of round latency.",
        "",
        "| model | clients | rounds | fedlake | Flower | raw | Flower / fedlake | fedlake / raw "
        "| MB/s fedlake | MB/s Flower | MB/s raw | >= 5x Flower | <= 2x raw |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    notes = []
    for cell in report["cells"]:
        a, b, c = (cell.get(k) or {} for k in ("fedlake", "flower", "raw"))
        v = verdict(cell)
        lines.append(
            f"| {cell['size_mb']:g} MB | {cell['clients']} | {WARMUP}+{cell['rounds'] - WARMUP} "
            f"| {seconds(a.get('latency_s'))} | {seconds(b.get('latency_s'))} "
            f"| {seconds(c.get('latency_s'))} "
            f"| {fmt(v['flower_over_fedlake'], '.1f', 'x')} "
            f"| {fmt(v['fedlake_over_raw'], '.1f', 'x')} "
            f"| {fmt(a.get('throughput_MBps'), '.0f')} | {fmt(b.get('throughput_MBps'), '.0f')} "
            f"| {fmt(c.get('throughput_MBps'), '.0f')} | {mark(v['vs_flower'])} "
            f"| {mark(v['vs_raw'])} |"
        )  # fmt: skip
        for key, label in (("fedlake", "fedlake"), ("flower", "Flower"), ("raw", "raw")):
            side = cell.get(key)
            if side is not None and "error" in side:
                notes.append(f"{cell['size_mb']:g} MB x {cell['clients']}, {label}: "
                             f"{side['error'][:300]}")  # fmt: skip
            elif side is None and key in report.get("sides", SIDES):
                notes.append(f"{cell['size_mb']:g} MB x {cell['clients']}, {label}: not run")
    passed = [verdict(c) for c in report["cells"]]
    n_f = sum(1 for v in passed if v["vs_flower"])
    n_r = sum(1 for v in passed if v["vs_raw"])
    judged_f = sum(1 for v in passed if v["vs_flower"] is not None)
    judged_r = sum(1 for v in passed if v["vs_raw"] is not None)
    lines += [
        "",
        f"Targets: >= {TARGET_FLOWER:g}x lower round latency than Flower: {n_f} of {judged_f} "
        f"cells measured; within {TARGET_RAW:g}x of raw: {n_r} of {judged_r}.",
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    lines += [
        "",
        "Details: fedlake's own round duration (`duration_s`), each side's round period "
        "(end to end of consecutive rounds), raw over TLS, start-up (first side process to "
        "the first round's start) and peak memory (PSS: shared pages divided among the "
        "processes that map them) summed over each side's processes, sampled every "
        f"{PSS_EVERY_S:g} s (a lower bound of the true peak).",
        "",
        "| model | clients | fedlake duration_s | fedlake period | Flower period | Flower "
        "replies in | raw TLS | fedlake start-up | Flower start-up | fedlake peak PSS "
        "| Flower peak PSS | raw peak PSS |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in report["cells"]:
        a, b, c, t = (cell.get(k) or {} for k in ("fedlake", "flower", "raw", "raw_tls"))
        lines.append(
            f"| {cell['size_mb']:g} MB | {cell['clients']} | {seconds(a.get('duration_s'))} "
            f"| {seconds(a.get('period_s'))} | {seconds(b.get('period_s'))} "
            f"| {seconds(b.get('replies_in_s'))} | {seconds(t.get('latency_s'))} "
            f"| {fmt(a.get('startup_s'), '.1f', ' s')} | {fmt(b.get('startup_s'), '.1f', ' s')} "
            f"| {fmt(gb(a), '.2f', ' GB')} | {fmt(gb(b), '.2f', ' GB')} "
            f"| {fmt(gb(c), '.2f', ' GB')} |"
        )  # fmt: skip
    with_phases = [c for c in report["cells"] if (c.get("fedlake") or {}).get("phases")]
    if with_phases:
        lines += [
            "",
            "Where fedlake's round goes (clients' timestamps, bench/_net_phases.py; median "
            "over clients, then over the timed rounds): wake = round start to the client "
            "holding its offer; unpack = reading the frame and checking the model's xxh3 checksum; "
            "train = ClientRuntime.handle (decode, one SGD step, encode); pack = the reply "
            "frame; upload = the PUT, of which sign = its BLAKE3 and signature; tail = the "
            "last upload's end to the round's end on the server.",
            "",
            "| model | clients | " + " | ".join(PHASE_NAMES) + " | round |",
            "|---:|---:|" + "---:|" * (len(PHASE_NAMES) + 1),
        ]
        for cell in with_phases:
            ph = cell["fedlake"]["phases"]
            lines.append(
                f"| {cell['size_mb']:g} MB | {cell['clients']} | "
                + " | ".join(seconds(ph.get(k)) for k in PHASE_NAMES)
                + f" | {seconds(cell['fedlake'].get('latency_s'))} |"
            )
    load = m.get("load_average_1min")
    lines += [
        "",
        f"Whole benchmark: {report['seconds'] / 60:.1f} min"
        + (f"; 1-minute load average {load[0]:g} before, {load[1]:g} after." if load else "."),
    ]
    if load and max(load) > m["cpus"]:
        lines[-1] += (
            f" Other work shared the machine's {m['cpus']} CPUs: the CPU-bound times (fedlake's, "
            "raw's) are inflated and vary from run to run; Flower's are dominated by its polling."
        )
    return "\n".join(lines)


def gb(side: dict[str, Any]) -> float | None:
    v = side.get("peak_pss_mb")
    return None if v is None else v / 1000


# ---------------------------------------------------------------------------------------
# main


def parse_cells(text: str) -> list[tuple[float, int]]:
    """``"1x2,100x50"`` as ``[(1, 2), (100, 50)]`` (MB x clients)."""
    cells = []
    for part in text.split(","):
        size, _, n = part.strip().lower().partition("x")
        cells.append((float(size), int(n)))
    return cells


def flower_version() -> str | None:
    python = FLOWER_BIN / "python"
    if not (python.exists() and (FLOWER_BIN / "flower-superlink").exists()):
        return None
    proc = subprocess.run([str(python), "-c", "import flwr; print(flwr.__version__)"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else None


def brief(name: str, side: dict[str, Any]) -> str:
    if "error" in side:
        return f"  {name}: {side['error'][:500]}"
    return (
        f"  {name}: latency {seconds(side['latency_s'])} (rounds "
        f"{', '.join(seconds(x) for x in side['latency_s_rounds'])}), "
        f"{fmt(side['throughput_MBps'], '.0f')} MB/s, peak PSS {side['peak_pss_mb']:.0f} MB"
    )


def run_cell(size_mb: float, clients: int, rounds: int, sides: list[str], tmp: Path,
             timeout: float, flower_tls: bool, phases: bool,
             footprints: dict[tuple[str, float], list[tuple[int, dict[str, Any]]]],
             ) -> dict[str, Any]:  # fmt: skip
    from _net_fedlake import prepare

    size = int(round(size_mb * MB))
    from _net_fedlake import model_shape

    features, classes = model_shape(size)
    size = (features + 1) * classes * 4  # what the model really holds
    cell: dict[str, Any] = {"size_mb": size_mb, "clients": clients, "bytes": size,
                            "rounds": rounds, "warmup": WARMUP}  # fmt: skip
    folder = tmp / f"{size_mb:g}MBx{clients}"
    t0 = time.perf_counter()
    cfg_path, ids = prepare(folder / "fedlake", clients=clients, model_bytes=size,
                            rounds=rounds, timeout_s=timeout)  # fmt: skip
    cell["prepare_s"] = time.perf_counter() - t0
    certs = folder / "fedlake" / "certs"
    print(f"{size_mb:g} MB x {clients} clients, {rounds} rounds ({WARMUP} warm-up):", flush=True)
    for name in sides:
        why = too_big(footprints, name, size_mb, clients)
        if why is not None:
            cell[name] = {"error": f"skipped: {why}", "skipped": True}
            print(f"  {name}: skipped: {why}", flush=True)
            continue
        if name in ("raw", "raw_tls"):
            cell[name] = raw_side(cell, folder / name, certs, tls=name == "raw_tls",
                                  timeout=timeout)  # fmt: skip
        elif name == "fedlake":
            cell[name] = fedlake_side(cell, folder / "fedlake", cfg_path, ids, timeout=timeout,
                                      phases=phases)  # fmt: skip
        elif name == "flower":
            cell[name] = flower_side(cell, folder / "flower", certs, tls=flower_tls,
                                     timeout=timeout)  # fmt: skip
        print(brief(name, cell[name]), flush=True)
        footprints.setdefault((name, size_mb), []).append((clients, cell[name]))
    shutil.rmtree(folder, ignore_errors=True)
    return cell


# run a side only if its estimated memory is under this share of what is free: the estimate
# is linear in clients, and Flower's 50 SuperNodes at 1 MB, estimated at 17 GB from 10 of
# them, drove the machine's available memory to the floor (over 20 GB) in a trial run
HEADROOM = 0.7


def too_big(footprints: dict[tuple[str, float], list[tuple[int, dict[str, Any]]]], name: str,
            size_mb: float, clients: int) -> str | None:  # fmt: skip
    """Why ``name`` at ``clients`` clients would not fit in memory, from the same side's runs
    of the same model size with fewer clients (scaled linearly per client), or None."""
    runs = [(n, side) for n, side in footprints.get((name, size_mb), []) if n < clients]
    for n, side in runs:
        if "memory" in side.get("error", "") and not side.get("skipped"):
            return f"at {n} clients it already {side['error'].removeprefix('stopped: ')}"
    measured = [(n, side["peak_pss_mb"] * MB) for n, side in runs if "error" not in side]
    if not measured:
        return None
    n, pss = max(measured)
    need = pss / n * clients
    free = mem_available() - MEMORY_FLOOR_GB * 1e9
    if need <= HEADROOM * free:
        return None
    return (
        f"memory: {pss / 1e9:.1f} GB (PSS) at {n} clients scales to ~{need / 1e9:.0f} GB at "
        f"{clients}; {free / 1e9:.0f} GB free above the {MEMORY_FLOOR_GB:g} GB floor "
        f"({mem_available() / 1e9:.0f} GB available on a {total_memory() / 1e9:.0f} GB machine)"
    )


def total_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # atexit then kills the sides
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 MB x 2 clients, 2 rounds")
    ap.add_argument("--no-flower", action="store_true", help="fedlake and raw only")
    ap.add_argument("--sides", help=f"comma-separated subset of {','.join(SIDES)}")
    ap.add_argument("--cells", help="e.g. 1x2,100x50 (MB x clients); default: all nine")
    ap.add_argument("--rounds", type=int, help="timed rounds per cell (after the warm-up)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per side and cell (s)")
    ap.add_argument("--flower-insecure", action="store_true", help="Flower without TLS")
    ap.add_argument(
        "--phases",
        action="store_true",
        help="fedlake's clients note when each step of a round starts and ends "
        "(bench/_net_phases.py): where a round's time goes",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help=f"JSON to write ({RESULTS})")
    ap.add_argument("--render", type=Path, help="print a recorded JSON as Markdown, exit")
    args = ap.parse_args()
    if args.render is not None:
        print(markdown(json.loads(args.render.read_text())))
        return 0
    started = time.perf_counter()
    load_before = os.getloadavg()
    become_subreaper()
    sides = args.sides.split(",") if args.sides else list(SIDES)
    unknown = set(sides) - set(SIDES)
    if unknown:
        ap.error(f"unknown sides {sorted(unknown)}; accepted: {', '.join(SIDES)}")
    version = None
    if "flower" in sides and not args.no_flower:
        version = flower_version()
        if version is None:
            print(f"Flower skipped: no flower-superlink in {FLOWER_BIN} (.venv-flower)")
    if args.no_flower or version is None:
        sides = [s for s in sides if s != "flower"]
    if args.quick:
        grid = parse_cells(args.cells) if args.cells else [(1.0, 2)]
    else:
        grid = parse_cells(args.cells) if args.cells else [
            (float(s), n) for s in SIZES_MB for n in CLIENTS
        ]  # fmt: skip
    cells: list[dict[str, Any]] = []
    footprints: dict[tuple[str, float], list[tuple[int, dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="fedlake-net-") as tmp_name:
        tmp = Path(tmp_name)
        for size_mb, n in grid:
            if args.rounds is not None:
                timed = args.rounds
            elif args.quick:
                timed = 1
            elif size_mb >= 100 and n >= 50:
                timed = MEASURED_HUGE
            else:
                timed = MEASURED.get(int(size_mb), 3)
            cells.append(run_cell(size_mb, n, WARMUP + timed, sides, tmp, args.timeout,
                                  flower_tls=not args.flower_insecure, phases=args.phases,
                                  footprints=footprints))  # fmt: skip
    import numpy as np

    head, changed = git_state(ROOT, "src", "bench")
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "mem_total_GB": round(
                os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1
            ),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "code": {"head": head, "uncommitted": changed},
        "flower_version": version,
        "flower_tls": not args.flower_insecure,
        "quick": args.quick,
        "phases": args.phases,
        "sides": sides,
        "warmup_rounds": WARMUP,
        "targets": {
            "flower_over_fedlake_at_least": TARGET_FLOWER,
            "fedlake_over_raw_at_most": TARGET_RAW,
        },  # fmt: skip
        "memory_floor_GB": MEMORY_FLOOR_GB,
        "cells": cells,
    }
    for cell in cells:
        cell["verdict"] = verdict(cell)
    report["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print()
    print(markdown(report))
    print(f"\nwrote {args.out}")
    failed = any(
        "error" in (c.get("fedlake") or {}) and not c["fedlake"].get("skipped") for c in cells
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
