"""`fedlake run` with no --config runs the packaged default federation from any folder."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fedlake.config import read_raw
from fedlake.defaults import DEFAULT_CONFIG, default_config, default_config_text

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_default_is_the_example_users_read():
    # one federation, two places: examples/ for readers, the package for `fedlake run`
    assert default_config_text() == (ROOT / "examples" / DEFAULT_CONFIG).read_text()
    assert default_config() == read_raw(ROOT / "examples" / DEFAULT_CONFIG)


@pytest.mark.integration
def test_run_without_config_works_outside_the_repository(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fedlake.cli.main", "run", "--rounds", "1", "-q",
         "--no-mlflow", "--no-delta", "--output-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "activity-fedavg" in proc.stdout  # the default federation's name
    assert (tmp_path / "runs" / "activity-fedavg" / "checkpoint.pkl").exists()


@pytest.mark.integration
def test_wheel_ships_the_default_config(tmp_path):
    # what `pip install fedlake` gets: the built wheel must hold the config as package data
    # (built from a copy: a build writes build/ and *.egg-info beside the sources)
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("fedlake-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert f"fedlake/defaults/{DEFAULT_CONFIG}" in z.namelist()
