"""examples/network/loopback.sh as a user runs it, and fedlake certs as an operator uses it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.network.harness import EXAMPLE, FEDLAKE, ROOT

pytestmark = pytest.mark.integration


def test_loopback_example_ends_with_the_simulated_model(tmp_path: Path) -> None:
    """Credentials, a TLS server and four client processes, the digits federation to the
    end: exit 0 only when the served model is the simulated one; the accuracy comes last."""
    env = {**os.environ, "PYTHON": sys.executable, "MLFLOW_DISABLE_TELEMETRY": "true"}
    out = subprocess.run(
        ["bash", str(EXAMPLE / "loopback.sh"), str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("final accuracy: "), last
    assert float(last.removeprefix("final accuracy: ").split("%")[0]) > 90.0


def certs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``fedlake certs ...`` in ``cwd``."""
    return subprocess.run([*FEDLAKE, "certs", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)  # fmt: skip


def test_certs_makes_enrols_and_revokes(tmp_path: Path) -> None:
    made = certs("--out", "certs", "--clients", "a,b", "--host", "fl.example.com", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "certs"
    for name in ("ca.pem", "ca.key", "server.pem", "server.key", "clients.json",
                 "operator.token", "clients/a.json", "clients/b.json"):  # fmt: skip
        assert (root / name).is_file(), name
    for secret in ("ca.key", "server.key", "operator.token", "clients/a.json"):
        assert (root / secret).stat().st_mode & 0o077 == 0, f"{secret} is readable by others"
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((root / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "fl.example.com" in names.get_values_for_type(x509.DNSName)
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    token = (root / "operator.token").read_text().strip()
    assert token not in made.stdout + made.stderr, "the operator token is never printed"

    more = certs("--out", "certs", "--clients", "c", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    registry = json.loads((root / "clients.json").read_text())["clients"]
    assert sorted(registry) == ["a", "b", "c"]
    assert all("private" not in json.dumps(e) for e in registry.values())

    again = certs("--out", "certs", "--clients", "a", cwd=tmp_path)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "already" in (again.stdout + again.stderr)

    gone = certs("--out", "certs", "--revoke", "b", cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    registry = json.loads((root / "clients.json").read_text())["clients"]
    assert registry["b"].get("revoked") and not registry["a"].get("revoked")

    unknown = certs("--out", "certs", "--revoke", "zz", cwd=tmp_path)
    assert unknown.returncode != 0 and "not enrolled" in unknown.stdout + unknown.stderr
    assert "Traceback" not in unknown.stderr
