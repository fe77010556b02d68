"""Who is asking: every request signed by one enrolled client's Ed25519 key, replays refused.

A client signs ``method, path, query, BLAKE3 of the body, timestamp, nonce and its id``
(one canonical string) and sends the signature with the timestamp and nonce in headers.
The server checks the client is enrolled and not revoked (the registry file is re-read
when it changes, so a revocation takes effect at once), the timestamp is within
:data:`SKEW_S` of its clock, the nonce was not seen from that client within that window,
and the signature. Signatures rather than TLS client certificates, because a Databricks
App (and most proxies) terminate TLS in front of the app: a signature reaches it intact.
The operator's status page uses a bearer token of its own.

Written on ``cryptography``'s Ed25519 (no home-made primitive); the canonical string and
the replay window are ours.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlake.core.extras import require

__all__ = [
    "HEADERS",
    "SKEW_S",
    "AuthError",
    "Credential",
    "Registry",
    "body_digest",
    "canonical",
]

NONCE = re.compile(r"[0-9a-f]{16,64}")
SKEW_S = 300.0  # the most a request's timestamp may differ from the server's clock
HEADERS = {
    "client": "x-fedlake-client",
    "timestamp": "x-fedlake-timestamp",
    "nonce": "x-fedlake-nonce",
    "signature": "x-fedlake-signature",
    "body": "x-fedlake-body-blake3",
}


class AuthError(Exception):
    """A request refused: ``status`` (401, 403) and the reason, for the client and the audit."""

    def __init__(self, status: int, reason: str, client_id: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.client_id = status, reason, client_id


def body_hasher() -> Any:
    """A new hasher of request bodies (``update``, ``hexdigest``): BLAKE3, a cryptographic
    hash at 3.6 GB/s a core here where SHA-256 (with the CPU's SHA instructions) does
    1.6 GB/s; every 100 MB upload is hashed by its client and by the server."""
    blake3 = require("blake3", extra="client", purpose="signing request bodies")
    return blake3.blake3()


def body_digest(body: bytes | bytearray | memoryview) -> str:
    """The hex BLAKE3 of a request body."""
    hasher = body_hasher()
    hasher.update(body)
    return str(hasher.hexdigest())


def canonical(
    method: str, path: str, query: str, digest: str, timestamp: str, nonce: str, client: str
) -> bytes:
    """The string a request's signature covers."""
    return "\n".join(
        ["fedlake-v1", method.upper(), path, query, digest, timestamp, nonce, client]
    ).encode()


def _ed25519() -> Any:
    return require(
        "cryptography.hazmat.primitives.asymmetric.ed25519",
        extra="client",
        purpose="signing fedlake requests",
    )


@dataclass(frozen=True)
class Credential:
    """One client's identity: its id, its Ed25519 private key, and the CA it trusts."""

    client_id: str
    private_key: Any
    ca_pem: bytes | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Credential:
        """Read a credential file made by ``fedlake certs`` (JSON: id, key, CA)."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
            serialization = require(
                "cryptography.hazmat.primitives.serialization", extra="client", purpose="keys"
            )
            key = serialization.load_pem_private_key(doc["private_key"].encode(), password=None)
        except FileNotFoundError:
            raise ValueError(f"credential file not found: {p}") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{p} is not a fedlake client credential: {exc}") from None
        if not isinstance(key, _ed25519().Ed25519PrivateKey):
            raise ValueError(f"{p} does not hold an Ed25519 key")
        ca = doc.get("ca")
        return cls(str(doc["client_id"]), key, ca.encode() if ca else None)

    def headers(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes | bytearray | memoryview = b"",
        *,
        digest: str | None = None,
    ) -> dict[str, str]:
        """The headers that authenticate one request.

        ``digest``: the body's :func:`body_digest`, when the caller has it already (a body
        sent in pieces, hashed once for every retry), in place of ``body``.
        """
        if digest is None:
            digest = body_digest(body)
        elif len(body):
            raise ValueError("give the body or its digest, not both")
        # microseconds: rounded to the millisecond, a request signed just after the server
        # started could read as signed before it (and be refused, 503: sign it again)
        stamp = f"{time.time():.6f}"
        nonce = secrets.token_hex(16)
        message = canonical(method, path, query, digest, stamp, nonce, self.client_id)
        signature = base64.b64encode(self.private_key.sign(message)).decode()
        return {
            HEADERS["client"]: self.client_id,
            HEADERS["timestamp"]: stamp,
            HEADERS["nonce"]: nonce,
            HEADERS["signature"]: signature,
            HEADERS["body"]: digest,
        }


class Registry:
    """The enrolled clients (``clients.json``: id -> public key, revoked) and replay state."""

    def __init__(self, path: str | os.PathLike[str], *, skew_s: float = SKEW_S) -> None:
        self.path = Path(path)
        self.skew_s = skew_s
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._clients: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, Any] = {}
        self._nonces: dict[str, OrderedDict[str, float]] = {}
        # the nonces seen live in memory: a request signed before this server started
        # could be a replay the lost cache would not catch, so it is refused (retryably:
        # an honest client signs again)
        self.started = time.time()
        self._reload()

    def _reload(self) -> None:
        """Re-read the registry when its file changed (a revocation counts at once)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            raise ValueError(f"client registry not found: {self.path}") from None
        if mtime == self._mtime:
            return
        try:
            doc = json.loads(self.path.read_text())
            clients = doc["clients"]
            if not isinstance(clients, dict):
                raise TypeError("clients must be an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path} is not a fedlake client registry: {exc}") from None
        ed = _ed25519()
        keys = {}
        for cid, entry in clients.items():
            raw = base64.b64decode(entry["public_key"])
            keys[cid] = ed.Ed25519PublicKey.from_public_bytes(raw)
        self._clients, self._keys, self._mtime = clients, keys, mtime

    def enrolled(self) -> list[str]:
        """The enrolled clients that are not revoked, sorted."""
        with self._lock:
            self._reload()
            return sorted(c for c, e in self._clients.items() if not e.get("revoked"))

    def entry(self, client: str) -> dict[str, Any]:
        """``client``'s registry entry without its key (enrolment time, revocation)."""
        with self._lock:
            self._reload()
            return {k: v for k, v in self._clients[client].items() if k != "public_key"}

    def verify(
        self, method: str, path: str, query: str, headers: Mapping[str, str], digest: str
    ) -> str:
        """The id of the client that signed this request; raises AuthError otherwise.

        ``digest`` is the :func:`body_digest` of the body the server received.
        """
        get = {k: headers.get(v) for k, v in HEADERS.items()}
        client = get["client"]
        if not all(get.values()):
            missing = [HEADERS[k] for k, v in get.items() if not v]
            raise AuthError(401, f"unsigned request: missing {', '.join(missing)}", client)
        assert client is not None
        with self._lock:
            self._reload()
            entry = self._clients.get(client)
            if entry is None:
                raise AuthError(401, f"client {client!r} is not enrolled", client)
            if entry.get("revoked"):
                raise AuthError(403, f"client {client!r} is revoked", client)
            if not hmac.compare_digest(str(get["body"]).encode(), digest.encode()):
                raise AuthError(401, "the body does not match its signed digest", client)
            try:
                stamp = float(str(get["timestamp"]))
            except ValueError:
                raise AuthError(401, "malformed timestamp", client) from None
            if not math.isfinite(stamp):  # NaN is never stale: replayable once its nonce goes
                raise AuthError(401, "malformed timestamp", client)
            now = time.time()
            if abs(now - stamp) > self.skew_s:
                raise AuthError(401, f"timestamp {now - stamp:+.0f} s from the server's", client)
            if not NONCE.fullmatch(str(get["nonce"])):  # bounded: the replay cache keeps them
                raise AuthError(401, "malformed nonce (16 to 64 hex digits)", client)
            message = canonical(
                method, path, query, digest, str(get["timestamp"]), str(get["nonce"]), client
            )
            try:
                self._keys[client].verify(base64.b64decode(str(get["signature"])), message)
            except Exception:  # InvalidSignature, or base64 garbage: the same answer
                raise AuthError(401, "bad signature", client) from None
            if stamp < self.started:
                raise AuthError(503, "signed before the server started: sign it again", client)
            seen = self._nonces.setdefault(client, OrderedDict())
            while seen and next(iter(seen.values())) < now - 2 * self.skew_s:
                seen.popitem(last=False)
            nonce = str(get["nonce"])
            if nonce in seen:
                raise AuthError(401, "replayed request (nonce already used)", client)
            seen[nonce] = now
            return client


def check_token(given: str | None, token: str) -> bool:
    """Whether ``given`` is the operator's token (constant-time)."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
