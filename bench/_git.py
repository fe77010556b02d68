"""Which code a benchmark measured: the checkout's HEAD and its uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_state(cwd: Path, *paths: str) -> tuple[str, list[str]]:
    """HEAD of the checkout at ``cwd`` and ``git status --porcelain`` lines under ``paths``.

    Both are empty outside a git checkout (a benchmark still runs from an unpacked copy).
    """

    def git(*cmd: str) -> str:
        proc = subprocess.run(["git", *cmd], cwd=cwd, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", *paths).splitlines()
    return git("rev-parse", "HEAD"), [line.strip() for line in changed]
