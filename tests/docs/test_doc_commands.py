"""Every shell command the documentation pages show runs (docs/**/*.md ```bash blocks;
the tutorials, which run as whole sessions, are tests/docs/test_tutorials.py's)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def _commands() -> list[tuple[str, str]]:
    out = []
    for page in sorted(DOCS.rglob("*.md")):
        if "tutorials" in page.relative_to(DOCS).parts:
            continue
        for block in BLOCK.findall(page.read_text()):
            for line in block.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    out.append((str(page.relative_to(ROOT)), line.strip()))
    return out


def _runnable(command: str) -> str:
    """The command as CI runs it: this interpreter for the repository's .venv paths."""
    fedlake = f"{sys.executable} -m fedlake.cli.main"
    command = re.sub(r"(?<![\w/.])\.venv/bin/python\b", sys.executable, command)
    return re.sub(r"(?<![\w/.])\.venv/bin/fedlake\b", fedlake, command)


def test_the_docs_show_commands() -> None:
    assert _commands(), "no ```bash block found in docs/: the test would check nothing"


@pytest.mark.parametrize(("page", "command"), _commands(), ids=lambda x: x[:60])
def test_every_command_in_the_docs_runs(page: str, command: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run(
        ["bash", "-c", f"cd {ROOT} && {_runnable(command)}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, f"{page}: {command}\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
    assert "Traceback" not in proc.stderr
