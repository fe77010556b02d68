"""The tutorials under docs/tutorials/, followed start to finish as a reader would.

Every ```bash block of a tutorial runs, in order, in one bash session (``set -euo
pipefail``) in a temporary folder holding a copy of ``examples/``: the commands shown,
with only the interpreter swapped (``.venv/bin/fedlake`` becomes this interpreter's
``-m fedlake.cli.main`` on this tree's ``src``, ``.venv/bin/python`` this interpreter),
so nothing is written into the repository. Then the outcomes each tutorial promises.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "docs" / "tutorials"
TIMEOUT_S = 420
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
VENV = re.compile(r"(?<![\w./-])\.venv/bin/(fedlake|python)\b")

pytestmark = pytest.mark.integration


def bash_blocks(page: Path) -> list[str]:
    """The page's ```bash blocks, in order."""
    return BLOCK.findall(page.read_text())


def as_ci(block: str) -> str:
    """The block with the reader's ``.venv/bin/...`` swapped for this interpreter."""
    return VENV.sub(
        lambda m: (
            '"$TUTORIAL_PYTHON" -m fedlake.cli.main'
            if m.group(1) == "fedlake"
            else '"$TUTORIAL_PYTHON"'
        ),
        block,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def follow(page: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """Run every bash block of ``page`` in ``work`` (a copy of examples/ beside it)."""
    blocks = bash_blocks(page)
    assert blocks, f"{page} shows no ```bash block"
    shutil.copytree(ROOT / "examples", work / "examples",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    script = "set -euo pipefail\n" + "\n".join(as_ci(b) for b in blocks)
    env = {
        **os.environ,
        "TUTORIAL_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "PORT": str(_free_port()),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "COLUMNS": "120",
    }
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the server and clients too
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{page.name} did not finish in {TIMEOUT_S} s; output:\n{out[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # anything left in the background
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"{page.name} failed (exit {proc.returncode}):\n{out[-4000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def _rounds(run: Path, schema: str) -> list[dict]:
    from deltalake import DeltaTable

    table = DeltaTable(str(run / "lakehouse" / "fedlake" / schema / "rounds"))
    return sorted(table.to_pyarrow_table().to_pylist(), key=lambda r: r["round"])


def test_the_swap_touches_only_the_interpreter() -> None:
    assert as_ci(".venv/bin/fedlake run --config x.toml") == (
        '"$TUTORIAL_PYTHON" -m fedlake.cli.main run --config x.toml'
    )
    assert as_ci(".venv/bin/python examples/a.py --out work/.venv/bin/python") == (
        '"$TUTORIAL_PYTHON" examples/a.py --out work/.venv/bin/python'
    )


def test_cross_silo_churn(tmp_path: Path) -> None:
    page = TUTORIALS / "cross-silo-churn.md"
    out = follow(page, tmp_path).stdout
    clubs = ("club-downtown", "club-suburb", "club-campus")
    churn = tmp_path / "work" / "churn"
    for club in clubs:  # one Delta table per club, holding that club's rows only
        assert (churn / "clubs" / club / "_delta_log").is_dir()
        log = (churn / f"{club}.log").read_text()
        assert "the federation finished (max_rounds)" in log, log[-2000:]
        assert f"{club}: accuracy" in out
    run = tmp_path / "runs" / "churn-served"
    config = json.loads((run / "config.json").read_text())
    rounds = [r for r in _rounds(run, "churn") if r["status"] == "completed"]
    assert len(rounds) == config["federation"]["rounds"] == 10
    assert all(r["num_completed"] == 3 for r in rounds)
    accuracy = [float(a) for a in re.findall(r"accuracy (\d+\.\d)%", out)]
    assert len(accuracy) == 3 and all(a > 60 for a in accuracy), accuracy
    assert "fedlake report churn-served" in out


def test_cross_device_activity(tmp_path: Path) -> None:
    page = TUTORIALS / "cross-device-activity.md"
    out = follow(page, tmp_path).stdout
    assert "noise multiplier" in out  # fedlake privacy planned the budget first
    run = tmp_path / "runs" / "activity-tutorial"
    config = json.loads((run / "config.json").read_text())
    budget = config["privacy"]["epsilon"]
    rounds = [r for r in _rounds(run, "activity_tutorial") if r["status"] == "completed"]
    assert len(rounds) == config["federation"]["rounds"]
    assert 0 < rounds[-1]["epsilon"] <= budget
    assert sum(r["num_dropped"] for r in rounds) > 0  # the simulated dropouts happened
    assert all(3.5 < r["upload_ratio"] < 4.1 for r in rounds)  # 8-bit: about 4x
    assert rounds[-1]["eval_accuracy"] > 0.3  # well above chance (5 classes: 0.2)
    spent = re.findall(r"privacy spent\s*│\s*epsilon (\d+\.\d+)", out)  # the run's summary
    assert spent and float(spent[-1]) <= budget, out[-3000:]
