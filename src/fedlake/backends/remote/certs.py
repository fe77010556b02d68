"""Credentials for a federation (``fedlake certs``): a local CA, the server's TLS certificate,
one signing key per client, the client registry and the operator's token.

For testing and small deployments: a production server would use a certificate from the
organisation's CA; the client keys and the registry work the same either way.

    certs/
      ca.pem, ca.key            the local CA (the key stays with whoever enrols clients)
      server.pem, server.key    the server's certificate (SANs: the given host names)
      clients.json              the registry the server reads: id -> public key, revoked
      clients/<id>.json         each client's credential: id, private key, the CA to trust
      operator.token            the bearer token of the status page
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedlake.core.extras import require

__all__ = ["CLIENTS", "REGISTRY", "TOKEN", "enrol", "make_certs", "revoke"]

REGISTRY, CLIENTS, TOKEN = "clients.json", "clients", "operator.token"
VALID_DAYS = 365


def _crypto() -> tuple[Any, Any, Any, Any, Any, Any]:
    x509 = require("cryptography.x509", extra="client", purpose="fedlake certs")
    oid = require("cryptography.x509.oid", extra="client", purpose="fedlake certs")
    hashes = require("cryptography.hazmat.primitives.hashes", extra="client", purpose="certs")
    ser = require("cryptography.hazmat.primitives.serialization", extra="client", purpose="certs")
    ec = require("cryptography.hazmat.primitives.asymmetric.ec", extra="client", purpose="certs")
    ed = require(
        "cryptography.hazmat.primitives.asymmetric.ed25519", extra="client", purpose="certs"
    )
    return x509, oid, hashes, ser, ec, ed


def _write(path: Path, data: bytes, *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if secret:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _check_id(client_id: str) -> str:
    ok = client_id and all(c.isalnum() or c in "-_." for c in client_id) and len(client_id) <= 128
    if not ok or client_id.startswith("."):
        raise ValueError(
            f"client id must be 1-128 letters, digits, '-', '_' or '.', got {client_id!r}"
        )
    return client_id


def make_certs(
    out: str | os.PathLike[str], clients: Sequence[str], *, hosts: Sequence[str] = ("localhost",)
) -> Path:
    """A local CA, a server certificate for ``hosts`` (and loopback), keys for ``clients``."""
    x509, oid, hashes, ser, ec, _ = _crypto()
    root = Path(out)
    if (root / "ca.key").exists():
        raise ValueError(f"{root} already holds a CA; enrol more clients with --client")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "fedlake local CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[Any] = []
    for host in (*hosts, "localhost", "127.0.0.1", "::1"):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names = list(dict.fromkeys(names))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = ser.Encoding.PEM
    plain = ser.NoEncryption()
    pkcs8 = ser.PrivateFormat.PKCS8
    _write(root / "ca.key", ca_key.private_bytes(pem, pkcs8, plain), secret=True)
    _write(root / "ca.pem", ca.public_bytes(pem))
    _write(root / "server.key", key.private_bytes(pem, pkcs8, plain), secret=True)
    _write(root / "server.pem", cert.public_bytes(pem))
    _write(root / TOKEN, secrets.token_urlsafe(32).encode(), secret=True)
    _write(root / REGISTRY, json.dumps({"clients": {}}, indent=1).encode())
    for client in clients:
        enrol(root, client)
    return root


def _registry(root: Path) -> dict[str, Any]:
    path = root / REGISTRY
    if not path.exists():
        raise ValueError(f"no client registry in {root}: run fedlake certs there first")
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def enrol(out: str | os.PathLike[str], client_id: str) -> Path:
    """A new signing key for ``client_id``: its credential file, and its entry in the registry."""
    _, _, _, ser, _, ed = _crypto()
    root = Path(out)
    doc = _registry(root)
    _check_id(client_id)
    if client_id in doc["clients"] and not doc["clients"][client_id].get("revoked"):
        raise ValueError(f"client {client_id!r} is already enrolled")
    key = ed.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    credential = {
        "client_id": client_id,
        "private_key": pem.decode(),
        "ca": (root / "ca.pem").read_text() if (root / "ca.pem").exists() else None,
    }
    path = root / CLIENTS / f"{client_id}.json"
    _write(path, json.dumps(credential, indent=1).encode(), secret=True)
    doc["clients"][client_id] = {
        "public_key": base64.b64encode(raw).decode(),
        "enrolled_at": dt.datetime.now(dt.UTC).isoformat(),
        "revoked": False,
    }
    _write(root / REGISTRY, json.dumps(doc, indent=1, sort_keys=True).encode())
    return path


def revoke(out: str | os.PathLike[str], client_id: str) -> None:
    """Mark ``client_id`` revoked: a running server refuses its next request."""
    root = Path(out)
    doc = _registry(root)
    if client_id not in doc["clients"]:
        raise ValueError(f"client {client_id!r} is not enrolled in {root / REGISTRY}")
    doc["clients"][client_id]["revoked"] = True
    doc["clients"][client_id]["revoked_at"] = dt.datetime.now(dt.UTC).isoformat()
    _write(root / REGISTRY, json.dumps(doc, indent=1, sort_keys=True).encode())
