"""Shared test setup: keep MLflow quiet and offline, make tests/ importable."""

import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(Path(__file__).parent))
