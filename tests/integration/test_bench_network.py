"""bench/network.py still runs (--quick, fedlake and raw only: no Flower needed) and records
positive, finite round latencies and throughputs, and leaves no process behind."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def positive(x):
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def tagged_processes(run):
    """Processes still carrying this benchmark run's environment tag."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if f"FEDLAKE_NET_BENCH={run}-".encode() in Path(entry.path, "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_network_bench_quick(tmp_path):
    out = tmp_path / "network.json"
    cmd = [sys.executable, "bench/network.py", "--quick", "--no-flower", "--out", str(out)]
    cmd += ["--timeout", "120"]
    run = f"test{os.getpid()}"
    env = {**os.environ, "FEDLAKE_NET_BENCH_ID": run}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["flower_version"] is None
    assert report["sides"] == ["raw", "raw_tls", "fedlake"]
    assert report["machine"]["cpus"] >= 1 and positive(report["seconds"])
    (cell,) = report["cells"]
    assert (cell["size_mb"], cell["clients"], cell["rounds"], cell["warmup"]) == (1, 2, 2, 1)
    assert abs(cell["bytes"] - 1_000_000) < 10_000  # a model of ~1 MB
    for name in ("raw", "raw_tls", "fedlake"):
        side = cell[name]
        assert "error" not in side, side
        assert len(side["latency_s_rounds"]) == 2 and side["rounds_timed"] == 1
        assert all(positive(x) for x in side["latency_s_rounds"])
        for key in ("latency_s", "period_s", "throughput_MBps", "peak_pss_mb", "wall_s"):
            assert positive(side[key]), (name, key, side[key])
        moved = 2 * cell["clients"] * cell["bytes"] / 1e6
        assert side["throughput_MBps"] == pytest.approx(moved / side["latency_s"])
    fed = cell["fedlake"]
    assert fed["tls"] is True and fed["stop_reason"] == "max_rounds"
    assert fed["completed"] == [2, 2] and positive(fed["duration_s"])
    assert cell["raw_tls"]["tls"] is True and cell["raw"]["tls"] is False
    v = cell["verdict"]
    assert positive(v["fedlake_over_raw"]) and v["vs_raw"] in (True, False)
    assert v["flower_over_fedlake"] is None and v["vs_flower"] is None
    assert not tagged_processes(run)
    rendered = subprocess.run(
        [sys.executable, "bench/network.py", "--render", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert "| 1 MB | 2 |" in rendered.stdout and "fedlake / raw" in rendered.stdout
