"""Secure aggregation (SecAgg+) cost against the number of clients n and the vector length
d, with and without dropouts: fedlake's ``fedlake.secagg`` against Flower's SecAgg+
workflow on the same n, d, dropout, degree k and threshold t, in the same run.

Grid: n in {10, 100, 1,000} clients, d in {10^4, 10^5, 10^6} values, 0% and 10% of the
clients dropping out after sharing their keys and before sending their masked input (the
costly case: the survivors reveal shares of each dropped client's mask key and the server
removes its k dangling pairwise masks). Graphs: SecAgg+ with (k, t) from
``choose_parameters(n, dropout_rate=max(--design-dropout, dropout))`` (k = O(log n), the
same k and t at 0% and 10%: a deployment provisions for the dropouts it expects; at n = 10
no k meets the default 2^-20 abort bound, so the bound is relaxed until one does, and
recorded), and, for n <= --complete-max, the complete graph k = n - 1, t = k // 2 + 1
(Bonawitz et al.'s original SecAgg).

Every cell runs in a fresh subprocess (fedlake: this interpreter with ``src`` first on the
path; Flower: .venv-flower's), so memory and timings do not leak between cells. Every
client's input is the same stand-in for a model update on both sides: d float32 values
from ``default_rng([seed, client]).random() * 2 - 1`` (clip 8; a 32-bit ring on both
sides), generated inside the round (within the client's time), weight 1.

fedlake (one process, one core: a sequential in-memory round; every message goes through
its byte encoding): the four stages run client by client and the server in between, as
``fedlake.secagg.protocol.run_round`` does, each call timed. After a tiny warm-up round,
rounds run until 2 s of them or 5; the median round is reported (a big cell runs once).
* client time per client: the sum of every client's stage times (key generation, input
  generation, fixed-point encoding, masking, its messages' encoding and its decoding of
  the server's) / n;
* server time: the server's receive and close calls (decoding and encoding included);
* round: wall time of the whole round (the verification's bookkeeping subtracted);
* bytes per client up and down: the lengths of the message byte strings, / n; expansion:
  a surviving client's bytes sent / its plaintext at 32-bit values (4 d bytes). Bonawitz
  et al. (CCS 2017) report 1.73x for 2^10 users and 2^20 16-bit values (complete graph).

Flower (bench/_flower_secagg.py; simulation engine, Ray backend, n supernodes, 1 CPU per
ClientApp, so 2 run at once on 2 cores): a legacy ServerApp running ``DefaultWorkflow(
fit_workflow=SecAggPlusWorkflow(num_shares=k + 1, reconstruction_threshold=t, ...))`` (its
num_shares counts the client's own share: k + 1 for k neighbours; n for the complete
graph), ClientApp ``mods=[secaggplus_mod]``; max_weight 1, clipping_range 8,
modulus_range 2^32, quantization_range the largest power of two q with n q < 2^32 (2^22,
Flower's default, at n = 1,000). Dropped clients raise in their fit, i.e. at the
masked-input stage, after sharing keys; Flower's engine turns the exception into an error
reply, the workflow leaves the client out and unmasks its pairwise masks from its
neighbours' shares of its key (the aggregate is checked against the survivors' mean).
* round (one): from the fit workflow's start to the aggregate (Ray's start-up excluded: a
  warm-up message round first; its time is reported);
* client time per client: each ClientApp call's time (inside the Ray worker) summed / n;
* server time: the round less the time spent waiting in ``send_and_receive``;
* bytes: every message's serialized objects (``deflate()``, what Flower's gRPC transport
  pushes and pulls), counted around ``send_and_receive``, the counting time subtracted;
* no-op stage: before the round, one get_properties message to every node and back, the
  engine's floor for one stage (its in-memory message store is scanned per node, so this
  grows faster than n).

The ratio is Flower's round / fedlake's round; target: at least 5x. fedlake's round is
single-threaded and does no transport, Flower's has 2 worker processes and its engine's
message passing: the ratio compares the two frameworks' SecAgg+ rounds as each runs on
one machine. A Flower cell that does not finish in --timeout (or exceeds --mem-limit-gb)
is recorded as such, and cells with larger n and d of its graph and dropout are not tried.

    python bench/secagg.py                    # the grid (see --help; long on 2 cores)
    python bench/secagg.py --quick            # n 10, d 10^4: about a minute (smoke test)
    python bench/secagg.py --ns 100 --lengths 100000 --dropouts 0.1
    python bench/secagg.py --render bench/results/secagg.json

Writes bench/results/secagg.json (or --out).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from _procs import watched
from _secagg_report import REPEAT_MAX, REPEAT_S, TARGET, render

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results" / "secagg.json"
FLOWER_HELPER = BENCH / "_flower_secagg.py"
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
CLIP = 8.0  # fedlake's fixed-point clip and Flower's clipping_range
BITS = 32  # fedlake's ring Z_{2^32} and Flower's modulus_range 2^32
RUN_ID = b"bench/secagg"
STARTUP_ALLOWANCE = 120.0  # s on top of --timeout for Flower's Ray start-up and shut-down


# -- shared with bench/_flower_secagg.py (numpy only) ----------------------------------------


def client_vector(client: int, length: int, seed: int) -> np.ndarray:
    """Client ``client``'s (0-based) input: ``length`` float32 values in [-1, 1)."""
    rng = np.random.default_rng([seed, client])
    return rng.random(length, dtype=np.float32) * np.float32(2) - np.float32(1)


def drop_set(n: int, rate: float, seed: int) -> list[int]:
    """The 0-based clients that vanish before sending their masked input."""
    m = round(rate * n)
    rng = np.random.default_rng([seed, n, 7])
    return sorted(int(i) for i in rng.choice(n, size=m, replace=False))


def quantization_range(n: int) -> int:
    """Flower's quantization_range: the largest power of two with n of them < 2^BITS."""
    return 1 << int(math.floor(math.log2(((1 << BITS) - 1) // n)))


# -- fedlake's cell (runs in a subprocess: bench/secagg.py --cell JSON) ----------------------


def fedlake_cell(job: dict[str, Any]) -> dict[str, Any]:
    """fedlake's rounds of one cell: after a tiny warm-up round (first-call costs), rounds
    until REPEAT_S seconds or REPEAT_MAX rounds have run; the median round's numbers, and
    every round's time."""
    sys.path.insert(0, job["src"])
    fedlake_round({**job, "n": 5, "length": 8, "k": 4, "t": 3, "dropout": 0.2}, 0)
    rounds: list[dict[str, Any]] = []
    while len(rounds) < REPEAT_MAX and sum(r["round_s"] for r in rounds) < REPEAT_S:
        rounds.append(fedlake_round(job, len(rounds) + 1))
    ranked = sorted(rounds, key=lambda r: r["round_s"])
    median = ranked[(len(ranked) - 1) // 2]
    return {**median, "rounds_s": [r["round_s"] for r in rounds], "maxrss_kb": _maxrss_kb()}


def fedlake_round(job: dict[str, Any], round_: int) -> dict[str, Any]:
    """One fedlake round: per-stage client and server times, bytes, and the check."""
    from fedlake.secagg import (
        AdvertiseKeys,
        ClientSession,
        KeyDirectory,
        MaskedInput,
        SecAggConfig,
        ServerSession,
        ShareDelivery,
        ShareKeys,
        UnmaskRequest,
        UnmaskResponse,
        fixed_point,
    )

    n, length, seed = job["n"], job["length"], job["seed"]
    clients = tuple(range(1, n + 1))  # client u is 0-based input u - 1
    dropped = {c + 1 for c in drop_set(n, job["dropout"], seed)}
    config = SecAggConfig(
        run_id=RUN_ID,
        round=round_,
        clients=clients,
        degree=job["k"],
        threshold=job["t"],
        bits=BITS,
        length=length,
        graph_seed=seed.to_bytes(8, "little"),
    )
    encoding = fixed_point(clip=CLIP, bits=BITS, clients=n)
    client_s: dict[int, float] = defaultdict(float)
    stage_client = [0.0] * 4
    stage_server = [0.0] * 4
    up: dict[int, int] = defaultdict(int)
    down: dict[int, int] = defaultdict(int)
    expected = np.zeros(length, dtype=np.float64)
    bookkeeping = 0.0
    clock = time.perf_counter

    start = clock()
    server = ServerSession(config)
    stage_server[0] += clock() - start
    sessions: dict[int, ClientSession] = {}

    def client_step(stage: int, u: int, fn: Any) -> bytes:
        t0 = clock()
        raw: bytes = fn()
        dt = clock() - t0
        client_s[u] += dt
        stage_client[stage] += dt
        up[u] += len(raw)
        return raw

    def server_step(stage: int, fn: Any) -> Any:
        t0 = clock()
        out = fn()
        stage_server[stage] += clock() - t0
        return out

    def send_down(stage: int, messages: dict[int, Any]) -> dict[int, bytes]:
        t0 = clock()
        out = {u: m.to_bytes() for u, m in messages.items()}
        stage_server[stage] += clock() - t0
        for u, raw in out.items():
            down[u] += len(raw)
        return out

    # stage 0: keys
    for u in clients:

        def advertise(u: int = u) -> bytes:
            sessions[u] = ClientSession(config, u)
            return sessions[u].advertise().to_bytes()

        raw = client_step(0, u, advertise)
        server_step(0, lambda raw=raw: server.receive(AdvertiseKeys.from_bytes(raw)))
    directories = send_down(0, server_step(0, server.close_advertise))
    # stage 1: shares
    for u, directory in directories.items():
        raw = client_step(
            1,
            u,
            lambda u=u, d=directory: sessions[u].share_keys(KeyDirectory.from_bytes(d)).to_bytes(),
        )
        server_step(1, lambda raw=raw: server.receive(ShareKeys.from_bytes(raw)))
    deliveries = send_down(1, server_step(1, server.close_share_keys))
    # stage 2: masked inputs (the dropped clients vanish here)
    for u, delivery in deliveries.items():
        if u in dropped:
            continue
        inputs: list[np.ndarray] = []

        def masked(u: int = u, d: bytes = delivery, inputs: list[np.ndarray] = inputs) -> bytes:
            x = client_vector(u - 1, length, seed)
            inputs.append(x)
            q = encoding.encode(x, weight=1.0, rng=np.random.default_rng([seed, u, 1]))
            return sessions[u].masked_input(ShareDelivery.from_bytes(d), q.values).to_bytes()

        raw = client_step(2, u, masked)
        t0 = clock()
        np.add(expected, np.clip(inputs[0], -CLIP, CLIP), out=expected)
        bookkeeping += clock() - t0
        server_step(2, lambda raw=raw: server.receive(MaskedInput.from_bytes(raw)))
    requests = send_down(2, server_step(2, server.close_masked_input))
    # stage 3: unmasking
    for u, request in requests.items():
        raw = client_step(
            3, u, lambda u=u, r=request: sessions[u].unmask(UnmaskRequest.from_bytes(r)).to_bytes()
        )
        server_step(3, lambda raw=raw: server.receive(UnmaskResponse.from_bytes(raw)))
    aggregate = server_step(3, server.close_unmask)
    round_s = clock() - start - bookkeeping

    survivors = aggregate.survivors
    mean = encoding.decode(aggregate.total, total_weight=float(len(survivors)))
    error = float(np.max(np.abs(mean - expected / len(survivors))))
    bound = encoding.error_bound(clients=len(survivors), total_weight=float(len(survivors)))
    plain = 4 * length  # the client's vector at 32-bit values
    sent = [up[u] for u in survivors]
    return {
        "round_s": round_s,
        "client_s_per_client": sum(client_s.values()) / n,
        "client_s_max": max(client_s.values()),
        "server_s": sum(stage_server),
        "stage_client_s": stage_client,
        "stage_server_s": stage_server,
        "up_per_client": sum(up.values()) / n,
        "down_per_client": sum(down.values()) / n,
        "up_per_survivor": sum(sent) / len(sent),
        "expansion": sum(sent) / len(sent) / plain,
        "survivors": len(survivors),
        "dropped": len(aggregate.dropped),
        "stage_sizes": list(aggregate.stage_sizes),
        "rejected": aggregate.rejected,
        "scale": encoding.scale,
        "max_abs_error": error,
        "error_bound": bound,
        "correct": error <= bound,
    }


def _maxrss_kb() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# -- running cells ---------------------------------------------------------------------------


def run_fedlake(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """fedlake's round in a fresh process (this interpreter, ``src`` first on the path)."""
    job = {**cell, "src": str(ROOT / "src")}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    ran = watched(
        [sys.executable, str(Path(__file__).resolve()), "--cell", json.dumps(job)],
        args.timeout,
        args.mem_limit_gb * 1e9,
        env,
        cwd=ROOT,
    )
    if "error" in ran:
        return {k: v for k, v in ran.items() if k != "stdout"}
    res: dict[str, Any] = json.loads(ran["stdout"].strip().splitlines()[-1])
    res["tree_peak_pss"] = ran["tree_peak_pss"]
    res["process_wall_s"] = ran["wall_s"]
    return res


def run_flower(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Flower's SecAgg+ round in its simulation engine (bench/_flower_secagg.py)."""
    with tempfile.TemporaryDirectory(prefix="secagg-flower-") as tmp:
        job = {
            **cell,
            "clip": CLIP,
            "modulus_range": 1 << BITS,
            "quantization_range": quantization_range(cell["n"]),
            "ray_num_cpus": os.cpu_count() or 2,
            "client_cpus": 1.0,
            "timeout": args.timeout,
            "noop_round": True,
            "out": f"{tmp}/flower.json",
        }
        path = Path(tmp) / "job.json"
        path.write_text(json.dumps(job))
        env = {**os.environ, "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
        limit = args.timeout + STARTUP_ALLOWANCE
        ran = watched(
            [str(args.flower_python), str(FLOWER_HELPER), str(path)],
            limit,
            args.mem_limit_gb * 1e9,
            env,
            cwd=ROOT,
        )
        progress = Path(job["out"] + ".progress")
        if "error" in ran:
            res = {k: v for k, v in ran.items() if k != "stdout"}
            if progress.exists():  # how far it got
                res["progress"] = json.loads(progress.read_text())
            done = list(res.get("progress", {}).get("stages", {}))
            reached = f"; stages finished: {', '.join(done) or 'none'}" if "progress" in res else ""
            if res.get("progress", {}).get("timed_out"):
                res["error"] = f"did not finish in {args.timeout:g} s{reached}"
                res["kind"] = "timeout"
                res.pop("stderr_tail", None)
            elif res["kind"] == "timeout":
                res["error"] = f"did not finish in {limit:g} s, Ray's start-up included{reached}"
            else:
                res["error"] += reached
            return res
        res = json.loads(Path(job["out"]).read_text())
    res["tree_peak_pss"] = ran["tree_peak_pss"]
    res["process_wall_s"] = ran["wall_s"]
    if not res.get("completed"):
        res.setdefault("error", "the workflow halted without an aggregate")
        res.setdefault("kind", "halted")
    elif res["round_s"] > args.timeout:
        res["error"] = f"finished in {res['round_s']:.0f} s, past the {args.timeout:g} s timeout"
        res["kind"] = "timeout"
    return res


def parameters(n: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """SecAgg+'s (k, t) from ``choose_parameters`` for ``n`` clients, relaxing the abort
    bound (2^-20 first) until some k meets it."""
    sys.path.insert(0, str(ROOT / "src"))
    from fedlake.secagg import choose_parameters

    design = max(args.design_dropout, rate)
    for bits in (20, 16, 12, 10, 8, 6, 4, 3, 2, 1):
        try:
            p = choose_parameters(
                n, dropout_rate=design, corrupt_rate=args.corrupt, failure_bits=bits
            )
        except ValueError:
            continue
        return {
            "k": p.degree,
            "t": p.threshold,
            "abort_bound": p.abort_bound,
            "leak_bound": p.leak_bound,
            "failure_bits": bits,
            "design_dropout": design,
        }
    raise SystemExit(f"no (k, t) for n={n} at dropout {design} (corrupt {args.corrupt})")


def complete(n: int, rate: float) -> dict[str, Any]:
    """The complete graph (SecAgg): k = n - 1, the smallest safe t = k // 2 + 1."""
    sys.path.insert(0, str(ROOT / "src"))
    from fedlake.secagg import abort_probability, check_parameters

    k = n - 1
    t = k // 2 + 1
    check_parameters(n, k, t, expected_dropouts=round(rate * n))
    return {"k": k, "t": t, "abort_bound": abort_probability(n, k, t, rate)}


def code_state(use_git: bool) -> dict[str, Any]:
    """Which code was measured: a hash of the SecAgg sources and this benchmark, and
    (unless --no-git) the checkout's HEAD and uncommitted changes."""
    files = sorted((ROOT / "src" / "fedlake" / "secagg").glob("*.py"))
    files += [BENCH / "secagg.py", FLOWER_HELPER]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    state: dict[str, Any] = {"sources_sha256": digest.hexdigest()[:16]}
    if use_git:
        sys.path.insert(0, str(BENCH))
        from _git import git_state

        head, changed = git_state(
            ROOT, "src/fedlake/secagg", "bench/secagg.py", "bench/_flower_secagg.py"
        )
        state |= {"head": head, "uncommitted": changed}
    return state


def environment() -> dict[str, Any]:
    """The machine and the fedlake side's libraries."""
    import cryptography

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "mem_total_GB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "load_avg_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
    }


def dominated(failed: list[dict[str, Any]], cell: dict[str, Any]) -> dict[str, Any] | None:
    """A failed cell of the same graph and dropout with n and d at most ``cell``'s."""
    for f in failed:
        if (
            f["graph"] == cell["graph"]
            and f["dropout"] == cell["dropout"]
            and f["n"] <= cell["n"]
            and f["length"] <= cell["length"]
        ):
            return f
    return None


# -- rendering -------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="10,100,1000", help="clients per round")
    ap.add_argument("--lengths", default="10000,100000,1000000", help="vector lengths d")
    ap.add_argument("--dropouts", default="0,0.1", help="fractions dropping before stage 2")
    ap.add_argument(
        "--complete-max",
        type=int,
        default=100,
        help="also run the complete graph (k = n - 1) for n up to this",
    )
    ap.add_argument(
        "--design-dropout",
        type=float,
        default=0.1,
        help="the dropout rate (k, t) are chosen for (at least the cell's)",
    )
    ap.add_argument(
        "--corrupt",
        type=float,
        default=0.0,
        help="corrupt-client rate for choose_parameters' leak bound",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="per cell and side (s); Flower gets Ray's start-up on top",
    )
    ap.add_argument(
        "--mem-limit-gb",
        type=float,
        default=round(0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        help="kill a cell whose process tree exceeds this (default 75%% of RAM)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="n 10, d 10^4 only (smoke test)")
    ap.add_argument("--no-flower", action="store_true", help="fedlake's side only")
    ap.add_argument(
        "--flower-python",
        type=Path,
        default=FLOWER_PYTHON,
        help="Flower's interpreter (.venv-flower)",
    )
    ap.add_argument("--no-git", action="store_true", help="do not record the git HEAD")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, help="print a recorded JSON as Markdown, exit")
    ap.add_argument("--cell", help=argparse.SUPPRESS)  # internal: one fedlake cell
    args = ap.parse_args()
    if args.cell:
        print(json.dumps(fedlake_cell(json.loads(args.cell))))
        return 0
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    if args.quick:
        args.ns, args.lengths = "10", "10000"
    ns = sorted(int(x) for x in args.ns.split(","))
    lengths = sorted(int(float(x)) for x in args.lengths.split(","))
    rates = sorted(float(x) for x in args.dropouts.split(","))
    use_flower = not args.no_flower
    if use_flower and not args.flower_python.exists():
        print(f"no Flower interpreter at {args.flower_python} (--flower-python, --no-flower)")
        return 2
    cells = []
    for n in ns:
        for rate in rates:
            graphs = [("secagg+", parameters(n, rate, args))]
            if n <= args.complete_max and graphs[0][1]["k"] != n - 1:
                graphs.append(("complete", complete(n, rate)))
            for graph, p in graphs:
                for length in lengths:
                    cells.append(
                        {
                            "n": n,
                            "length": length,
                            "dropout": rate,
                            "graph": graph,
                            **p,
                            "seed": args.seed,
                        }
                    )
    cells.sort(key=lambda c: (c["n"], c["graph"] != "secagg+", c["length"], c["dropout"]))
    data: dict[str, Any] = {
        "environment": environment(),
        "code": code_state(not args.no_git),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "quick": args.quick,
        "settings": {
            "design_dropout": args.design_dropout,
            "corrupt": args.corrupt,
            "timeout_s": args.timeout,
            "mem_limit_gb": args.mem_limit_gb,
            "clip": CLIP,
            "bits": BITS,
            "seed": args.seed,
            "target": TARGET,
        },
        "cells": [],
    }
    failed: dict[str, list[dict[str, Any]]] = {"fedlake": [], "flower": []}
    started = time.perf_counter()
    for cell in cells:
        label = (
            f"n {cell['n']:,} d {cell['length']:,} dropout {cell['dropout']:.0%} "
            f"{cell['graph']} k={cell['k']} t={cell['t']}"
        )
        record: dict[str, Any] = dict(cell)
        for side, run in (("fedlake", run_fedlake), ("flower", run_flower)):
            if side == "flower" and not use_flower:
                continue
            print(f"{label}: {side} ...", flush=True)
            prior = dominated(failed[side], cell)
            if prior is not None:
                res = {
                    "error": f"not tried: n {prior['n']:,}, d {prior['length']:,} did not finish",
                    "kind": "skipped",
                }
            else:
                res = run(cell, args)
                if "error" in res:
                    failed[side].append(cell)
            record[side] = res
            brief = {
                k: res[k]
                for k in ("round_s", "client_s_per_client", "server_s", "expansion", "error")
                if k in res
            }
            print(f"  {json.dumps(brief)}", flush=True)
        data["cells"].append(record)
    data["total_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(render(data))
    print(f"\nwrote {args.out} ({data['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
