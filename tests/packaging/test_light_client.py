"""A client install is light: numpy and pydantic answer a task; the rest are extras.

``pip install fedlake`` must be enough for a data owner's machine to answer a round with
the numpy trainer. The check runs in a fresh interpreter in which every heavy package
(numba, scipy, scikit-learn, matplotlib, torch, MLflow, Delta, pandas, pyarrow,
dp-accounting, cryptography, PyYAML, typer, rich) fails to import, as on a machine
without them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "numba", "scipy", "sklearn", "matplotlib", "torch", "opacus", "mlflow", "deltalake",
    "pyarrow", "pandas", "dp_accounting", "cryptography", "yaml", "typer", "rich",
)  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys
    HEAVY = set(sys.argv[1].split(","))

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {name!r} (not installed)")
            return None

    sys.meta_path.insert(0, Missing())
    import tempfile
    import numpy as np
    from fedlake.algorithms.spec import RecipeSpec, build_algorithm
    from fedlake.client.folder_store import FolderStateStore
    from fedlake.client.logreg import LogRegTrainer
    from fedlake.client.runtime import ClientRuntime
    from fedlake.compression.messages import encode_model
    from fedlake.core import ClientDataset, ClientReply, ClientTask
    from fedlake.data.base import InMemoryClientData

    spec = RecipeSpec.from_json(sys.argv[2])
    algorithm = build_algorithm(spec)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    data = InMemoryClientData({"club-1": ClientDataset(x, y, x[:4], y[:4])})
    trainer = LogRegTrainer(5, 2)
    model = encode_model(trainer.init_params(0), None, None, rng)
    with tempfile.TemporaryDirectory() as folder:
        store = FolderStateStore(folder)
        runtime = ClientRuntime(data, trainer, algorithm, store)
        reply = runtime.handle(ClientTask(0, 0, 7, model), "club-1")
        assert isinstance(reply, ClientReply), reply
        assert store.load("club-1")["states"]["error_feedback"].shape == (12,)
    loaded = sorted(m.split(".")[0] for m in sys.modules)
    print("heavy loaded:", sorted(set(loaded) & HEAVY))
    """
)


def test_base_dependencies_are_numpy_and_pydantic() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in meta["dependencies"]}
    assert names == {"numpy", "pydantic"}
    extras = meta["optional-dependencies"]
    for heavy in ("numba", "scipy", "scikit-learn", "matplotlib", "dp-accounting", "cryptography"):
        assert any(heavy in d for d in extras["sim"] + extras["crypto"]), heavy


def test_a_client_answers_a_task_with_numpy_and_pydantic_alone() -> None:
    from fedlake.algorithms.spec import RecipeSpec
    from fedlake.config import CompressionConfig

    spec = RecipeSpec(
        compression=CompressionConfig.model_validate(
            {"upload": [{"kind": "topk", "ratio": 0.5}], "error_feedback": True}
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(HEAVY), spec.to_json()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "heavy loaded: []" in proc.stdout


def test_the_command_says_how_to_install_it_on_a_light_install() -> None:
    code = SCRIPT.split("import tempfile")[0] + "from fedlake.cli.entry import script\nscript()\n"
    proc = subprocess.run(
        [sys.executable, "-c", code, ",".join(HEAVY), "{}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pip install 'fedlake[cli]'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_extra_names_the_extra_and_what_needs_it() -> None:
    import pytest

    from fedlake.core.extras import require

    assert require("json", extra="cli", purpose="x").dumps([]) == "[]"
    with pytest.raises(ImportError, match=r"secure DP noise needs the optional package "):
        require("no_such_package_xyz.sub", extra="crypto", purpose="secure DP noise")
    with pytest.raises(ImportError, match=r"pip install 'fedlake\[crypto\]'"):
        require("no_such_package_xyz", extra="crypto", purpose="secure DP noise")
