"""The replay cache lives in memory: a restarted server must not accept a request signed
before it started (it could be a replay the lost cache no longer knows)."""

from __future__ import annotations

import time

import pytest

from fedlake.backends.remote.auth import AuthError, Credential, Registry, body_digest
from fedlake.backends.remote.certs import REGISTRY, make_certs


def test_a_request_signed_before_the_server_started_is_refused_retryably(tmp_path) -> None:
    make_certs(tmp_path, ["a"], hosts=["localhost"])
    cred = Credential.load(tmp_path / "clients" / "a.json")
    old = cred.headers("GET", "/v1/task", "", b"")
    time.sleep(0.01)
    registry = Registry(tmp_path / REGISTRY)  # the server (re)starts
    with pytest.raises(AuthError) as refused:
        registry.verify("GET", "/v1/task", "", old, body_digest(b""))
    assert refused.value.status == 503 and "sign it again" in refused.value.reason
    fresh = cred.headers("GET", "/v1/task", "", b"")
    assert registry.verify("GET", "/v1/task", "", fresh, body_digest(b"")) == "a"
    with pytest.raises(AuthError, match="replayed"):
        registry.verify("GET", "/v1/task", "", fresh, body_digest(b""))
