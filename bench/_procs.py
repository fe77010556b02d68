"""Process trees for the benchmarks: their members, proportional memory, and a watched run.

Shared by bench/secagg.py and bench/scale.py (each cell runs in a fresh process tree).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any


def pss_bytes(pid: int) -> int:
    """Proportional set size of ``pid`` in bytes (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def watched(
    args: list[str], timeout: float, mem_limit: float, env: dict[str, str], cwd: Path
) -> dict[str, Any]:
    """Run ``args`` in its own session, sampling its process tree's PSS; kill the tree
    past ``timeout`` seconds or ``mem_limit`` bytes. Its stdout, peak PSS and wall time,
    or ``error`` (with the tail of its stderr)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        peak = [0]
        over = threading.Event()
        done = threading.Event()

        def kill() -> None:
            for pid in reversed(tree(proc.pid)):  # Ray's processes too
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], sum(pss_bytes(p) for p in tree(proc.pid)))
                if peak[0] > mem_limit and not over.is_set():
                    over.set()
                    kill()

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill()
            proc.communicate()
            return {"error": f"did not finish in {timeout:g} s", "kind": "timeout"}
        finally:
            done.set()
            sampler.join()
            with contextlib.suppress(OSError):  # stragglers of its session (Ray's daemons)
                os.killpg(proc.pid, signal.SIGKILL)
        wall = time.perf_counter() - t0
        if over.is_set():
            return {"error": f"past {mem_limit / 1e9:.1f} GB of memory (killed)", "kind": "memory"}
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:]
            return {"error": f"exit {proc.returncode}", "kind": "failed", "stderr_tail": tail}
    return {"stdout": stdout, "tree_peak_pss": peak[0], "wall_s": wall}
