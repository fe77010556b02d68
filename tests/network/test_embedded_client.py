"""README's "in your own code" client: the snippet itself, run as one of a federation's
four clients (the other three are fedlake client processes), on loopback over TLS."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.network.harness import ROOT, free_port, prepare, processes, write_config

pytestmark = pytest.mark.integration


def readme_snippet() -> str:
    """The README's Python block that builds a RemoteClient."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if "RemoteClient(" in b]
    assert len(found) == 1, "README shows one embedded-client snippet"
    return found[0]


def test_the_readme_snippet_joins_a_federation(tmp_path: Path) -> None:
    ids = prepare(tmp_path)
    config = write_config(tmp_path, federation__rounds=2, deployment__linger_s=2)
    port = free_port()
    code = readme_snippet().replace("https://fl.example.com:8443", f"https://localhost:{port}")
    code = code.replace("client-000", ids[0])
    (tmp_path / "embedded.py").write_text(code)
    with processes(tmp_path) as procs:
        procs.server(config, port)
        procs.start(ids[0], [sys.executable, "embedded.py"])
        for cid in ids[1:]:
            procs.client(cid, port)
        assert procs.wait("server", timeout=180) == 0, procs.log("server")
        assert procs.wait(ids[0], timeout=30) == 0, procs.log(ids[0])
        assert "the federation finished (max_rounds)" in procs.log(ids[0])
