"""Every request the server must refuse is refused, with a clear status, and audited.

In process (fast): the FastAPI app over a real Coordinator and a Registry of credentials
made with ``make_certs``, driven through httpx's ASGI transport on an event loop of its own,
each request signed with a client's Credential (or tampered with). Each refusal must answer
its status and reason, appear in ``Coordinator.refusals`` and in ``drain_audit()``.

With real processes (the harness): a TLS server, good clients, and clients holding another
client's key or a made-up one; the bad ones are refused, the run completes with the others,
and the refusals are in the run's Delta ``audit`` table.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import secrets
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization

from fedlake.backends.remote.app import Limits, create_app
from fedlake.backends.remote.auth import HEADERS, Credential, Registry, body_digest, canonical
from fedlake.backends.remote.certs import REGISTRY, TOKEN, make_certs, revoke
from fedlake.backends.remote.coordinator import Coordinator
from fedlake.backends.remote.executor import RemoteExecutor
from fedlake.backends.remote.wire import PREFIX, REPLY_MAGIC, VERSION, reply_to_bytes
from fedlake.compression.messages import encode_model
from fedlake.core.task import ClientFailure, ClientReply, ClientTask, FailureReason

RUN = "run-refusals"
BASE = "http://fedlake.test"
CLIENTS = ("alice", "bob", "carol")


# -- an app in process ---------------------------------------------------------------------------
class Site:
    """Credentials, a coordinator, the app, and a client to it on an event loop of its own."""

    def __init__(self, folder: Path, limits: Limits | None = None) -> None:
        self.certs = make_certs(folder / "certs", CLIENTS)
        self.coordinator = Coordinator(RUN)
        self.registry = Registry(self.certs / REGISTRY)
        self.token = (self.certs / TOKEN).read_text().strip()
        self.app = create_app(
            self.coordinator,
            self.registry,
            operator_token=self.token,
            federation_info={"run": RUN, "name": "refusals"},
            limits=limits or Limits(),
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        transport = httpx.ASGITransport(self.app, raise_app_exceptions=False)  # a crash: a 500
        self.http = httpx.AsyncClient(transport=transport, base_url=BASE)
        self.lifespan = self.app.router.lifespan_context(self.app)
        self.call(self.lifespan.__aenter__())  # binds the coordinator to this loop

    def credential(self, client: str) -> Credential:
        return Credential.load(self.certs / "clients" / f"{client}.json")

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return self.submit(coro).result(timeout)

    def send(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: bytes = b"",
        as_: Credential | str | None = None,
        headers: dict[str, Any] | None = None,
        later: bool = False,
    ) -> Any:
        """One request, signed by ``as_`` (a Credential or an enrolled client's id), with
        ``headers`` laid over the signed ones; its response (a future when ``later``)."""
        sent: dict[str, Any] = {}
        if as_ is not None:
            cred = self.credential(as_) if isinstance(as_, str) else as_
            sent.update(cred.headers(method, path, query, body))
        if body:
            sent["content-type"] = "application/octet-stream"
        sent.update(headers or {})
        url = path + (f"?{query}" if query else "")
        coro = self.http.request(method, url, content=body or None, headers=sent)
        return self.submit(coro) if later else self.call(coro)

    def open(self, cohort: tuple[str, ...] = ("alice", "bob"), timeout_s: float = 60.0) -> Any:
        return self.coordinator.open_attempt(TASK, cohort, timeout_s)

    def close(self) -> None:
        self.call(self.lifespan.__aexit__(None, None, None))
        self.call(self.http.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[Any]:
    """A site with limits of the test's own."""
    made: list[Site] = []

    def make(**limits: Any) -> Site:
        made.append(Site(tmp_path / f"site{len(made)}", Limits(**limits)))
        return made[-1]

    yield make
    for s in made:
        s.close()


# -- tasks, replies, signatures -----------------------------------------------------------------
MODEL = encode_model(np.arange(8, dtype=np.float32), None, None, np.random.default_rng(0))
TASK = ClientTask(round=0, attempt=0, seed=0, model=MODEL)  # round 1 attempt 0 in every URL
REPLY = "/v1/rounds/1/attempts/0/reply"
TASK_FRAME = "/v1/rounds/1/attempts/0/task"
FAILURE = "/v1/rounds/1/attempts/0/failure"


def reply(
    client: str = "alice",
    *,
    round_: int = 0,
    attempt: int = 0,
    run: str = RUN,
    delta: bytes = b"\x01" * 32,
    weight: float = 3.0,
) -> bytes:
    """A reply frame (its round 0-based, as the task's)."""
    answer = ClientReply(client, {"delta": delta}, weight, {"train_loss": 0.5})
    return reply_to_bytes(answer, round_=round_, attempt=attempt, run_id=run)


def sign_as(
    cred: Credential,
    method: str,
    path: str,
    *,
    query: str = "",
    body: bytes = b"",
    stamp: str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers signed by ``cred``'s key with a timestamp and a nonce of the test's choice."""
    stamp = f"{time.time():.3f}" if stamp is None else stamp
    nonce = secrets.token_hex(16) if nonce is None else nonce
    digest = body_digest(body)
    message = canonical(method, path, query, digest, stamp, nonce, cred.client_id)
    return {
        HEADERS["client"]: cred.client_id,
        HEADERS["timestamp"]: stamp,
        HEADERS["nonce"]: nonce,
        HEADERS["signature"]: base64.b64encode(cred.private_key.sign(message)).decode(),
        HEADERS["body"]: digest,
    }


def made_up(client: str) -> Credential:
    """A credential with a key no registry knows."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Credential(client, Ed25519PrivateKey.generate())


# -- what a refusal must leave behind ------------------------------------------------------------
def refused(
    site: Site,
    response: httpx.Response,
    status: int,
    reason: str,
    *,
    client: str | None,
    where: str | None = None,
) -> dict[str, Any]:
    """Check ``response`` is the refusal (status, reason) and that it was recorded and
    audited, once; the audit row."""
    assert response.status_code == status, (response.status_code, response.text)
    where = where or f"{response.request.method} {response.request.url.path}"
    last = site.coordinator.refusals[-1]
    assert (last["status"], last["client"], last["where"]) == (status, client, where), last
    error = last["reason"]
    assert reason in error, error
    if response.headers.get("content-type") == "application/json":
        assert response.json()["error"] == error
    if status in (429, 503):
        assert response.headers.get("retry-after", "").isdigit(), response.headers
    rows = [r for r in site.coordinator.drain_audit() if r["action"] == "request.refused"]
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["actor"], row["object"]) == (client or "unknown", where), row
    assert json.loads(row["details"]) == {"status": status, "reason": error}
    return row


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else None


# -- who is asking ------------------------------------------------------------------------------
def test_a_signed_request_of_an_enrolled_client_is_answered(site: Site) -> None:
    assert ok(site.send("GET", "/v1/federation", as_="alice")) == {"run": RUN, "name": "refusals"}
    assert ok(site.send("POST", "/v1/heartbeat", body=b"{}", as_="bob"))["status"] == "ok"
    assert ok(site.send("GET", "/v1/health"))["status"] == "ok"  # the only unsigned route
    assert not site.coordinator.refusals
    joins = [r["actor"] for r in site.coordinator.drain_audit() if r["action"] == "client.join"]
    assert joins == ["alice", "bob"]


def test_an_unsigned_request_is_refused(site: Site) -> None:
    response = site.send("GET", "/v1/federation")
    refused(site, response, 401, "unsigned request", client=None)
    # a request missing one header is unsigned too
    headers = site.credential("alice").headers("GET", "/v1/federation", "")
    del headers[HEADERS["nonce"]]
    response = site.send("GET", "/v1/federation", headers=headers)
    refused(site, response, 401, f"missing {HEADERS['nonce']}", client="alice")


def test_a_client_that_is_not_enrolled_is_refused(site: Site) -> None:
    response = site.send("GET", "/v1/federation", as_=made_up("mallory"))
    refused(site, response, 401, "'mallory' is not enrolled", client="mallory")


def test_a_wrong_signature_is_refused(site: Site) -> None:
    alice = site.credential("alice")
    headers = alice.headers("GET", "/v1/federation", "")
    headers[HEADERS["signature"]] = base64.b64encode(b"\x00" * 64).decode()
    refused(
        site,
        site.send("GET", "/v1/federation", headers=headers),
        401,
        "bad signature",
        client="alice",
    )
    headers = alice.headers("GET", "/v1/federation", "")
    headers[HEADERS["signature"]] = "not base64 at all!"
    refused(
        site,
        site.send("GET", "/v1/federation", headers=headers),
        401,
        "bad signature",
        client="alice",
    )
    # a signature of another request (another path) does not carry over
    headers = alice.headers("GET", "/v1/status", "")
    refused(
        site,
        site.send("GET", "/v1/federation", headers=headers),
        401,
        "bad signature",
        client="alice",
    )


def test_a_client_cannot_sign_as_another_client(site: Site) -> None:
    """A client acts only as itself: bob's key under alice's name, or bob's own signature
    with the client header changed to alice, are refused."""
    bob = site.credential("bob")
    as_alice = Credential("alice", bob.private_key)  # alice's credential file with bob's key
    refused(
        site, site.send("GET", "/v1/federation", as_=as_alice), 401, "bad signature", client="alice"
    )
    headers = bob.headers("GET", "/v1/federation", "")
    headers[HEADERS["client"]] = "alice"
    refused(
        site,
        site.send("GET", "/v1/federation", headers=headers),
        401,
        "bad signature",
        client="alice",
    )
    assert ok(site.send("GET", "/v1/federation", as_=bob))  # bob as bob is fine


def test_a_client_revoked_while_the_server_runs_is_refused_at_once(site: Site) -> None:
    assert ok(site.send("POST", "/v1/heartbeat", as_="alice"))
    revoke(site.certs, "alice")
    response = site.send("POST", "/v1/heartbeat", as_="alice")
    refused(site, response, 403, "'alice' is revoked", client="alice")
    assert ok(site.send("POST", "/v1/heartbeat", as_="bob"))  # the others go on
    # a revoked client in the cohort cannot fetch its task nor reply
    site.open(("alice", "bob"))
    refused(site, site.send("GET", TASK_FRAME, as_="alice"), 403, "revoked", client="alice")
    refused(
        site,
        site.send("PUT", REPLY, body=reply("alice"), as_="alice"),
        403,
        "revoked",
        client="alice",
    )


def test_a_replayed_request_is_refused(site: Site) -> None:
    site.open()
    body = reply("alice")
    headers = site.credential("alice").headers("PUT", REPLY, "", body)
    assert ok(site.send("PUT", REPLY, body=body, headers=headers)) == {"status": "accepted"}
    response = site.send("PUT", REPLY, body=body, headers=headers)
    refused(site, response, 401, "replayed request", client="alice")
    headers = site.credential("bob").headers("POST", "/v1/heartbeat", "")
    assert ok(site.send("POST", "/v1/heartbeat", headers=headers))
    refused(
        site, site.send("POST", "/v1/heartbeat", headers=headers), 401, "replayed", client="bob"
    )


@pytest.mark.parametrize("offset_s", [-400.0, 400.0, -1e9])
def test_a_stale_or_future_timestamp_is_refused(site: Site, offset_s: float) -> None:
    stamp = f"{time.time() + offset_s:.3f}"
    headers = sign_as(site.credential("alice"), "GET", "/v1/federation", stamp=stamp)
    response = site.send("GET", "/v1/federation", headers=headers)
    refused(site, response, 401, "from the server's", client="alice")


@pytest.mark.parametrize("stamp", ["yesterday", "", "0x10", "nan", "NaN", "inf", "-inf"])
def test_a_timestamp_that_is_not_a_time_is_refused(site: Site, stamp: str) -> None:
    """Signed by alice's own key: a timestamp that is not a finite time must not pass. A
    NaN timestamp is never "stale", so once its nonce is forgotten (after twice the skew)
    the same signed request could be replayed for ever."""
    headers = sign_as(site.credential("alice"), "GET", "/v1/federation", stamp=stamp)
    response = site.send("GET", "/v1/federation", headers=headers)
    assert response.status_code == 401, (stamp, response.status_code, response.text)
    assert "timestamp" in response.json()["error"]
    site.coordinator.drain_audit()


def test_a_body_that_does_not_match_its_digest_is_refused(site: Site) -> None:
    site.open()
    alice = site.credential("alice")
    signed_body, sent_body = reply("alice", weight=1.0), reply("alice", weight=1000.0)
    headers = alice.headers("PUT", REPLY, "", signed_body)
    response = site.send("PUT", REPLY, body=sent_body, headers=headers)
    refused(site, response, 401, "does not match its signed digest", client="alice")
    # the digest header changed to match the new body: the signature no longer does
    headers = alice.headers("PUT", REPLY, "", signed_body)
    headers[HEADERS["body"]] = body_digest(sent_body)
    response = site.send("PUT", REPLY, body=sent_body, headers=headers)
    refused(site, response, 401, "bad signature", client="alice")
    assert site.coordinator.offer("alice") is not None  # nothing was taken


@pytest.mark.parametrize("field", sorted(HEADERS))
def test_a_non_ascii_auth_header_is_refused_not_a_crash(site: Site, field: str) -> None:
    """HTTP allows header bytes 0x80-0xFF (obs-text); the app reads them as latin-1."""
    headers: dict[str, Any] = dict(site.credential("alice").headers("GET", "/v1/federation", ""))
    headers[HEADERS[field]] = b"\xe9" * (1 if field == "client" else 64)
    response = site.send("GET", "/v1/federation", headers=headers)
    assert response.status_code in (401, 403), (response.status_code, response.text)
    assert site.coordinator.refusals[-1]["status"] == response.status_code
    assert any(r["action"] == "request.refused" for r in site.coordinator.drain_audit())


def test_refused_requests_from_one_address_are_slowed_down(site: Site) -> None:
    """After a burst of refusals (20, refilled at 5 a second) from one address, 429 with
    Retry-After; each refusal audited."""
    statuses = []
    while 429 not in statuses and len(statuses) < 500:
        statuses.append(site.send("GET", "/v1/federation").status_code)
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401} and len(statuses) > 20
    rows = [r for r in site.coordinator.drain_audit() if r["action"] == "request.refused"]
    assert len(rows) == len(statuses)
    assert "too many refused requests" in json.loads(rows[-1]["details"])["reason"]
    assert site.send("GET", "/v1/federation", as_="alice").status_code == 200  # signed: fine


# -- limits ---------------------------------------------------------------------------------------
def test_an_oversized_body_is_refused_with_413(make_site: Any) -> None:
    site = make_site(max_body_mb=0.001)  # 1000 bytes
    site.open()
    big = reply("alice", delta=b"\x00" * 2000)
    response = site.send("PUT", REPLY, body=big, as_="alice")
    refused(site, response, 413, "body of", client="alice")
    # a Content-Length that lies (says 10) does not get a bigger body in
    response = site.send("PUT", REPLY, body=big, as_="alice", headers={"content-length": "10"})
    refused(site, response, 413, "body over the limit of 1000 bytes", client="alice")
    # the limit counts for every route, signed or not
    response = site.send("POST", "/v1/heartbeat", body=b"{" * 2000)
    refused(site, response, 413, "over the limit", client=None)
    # and a reply under the limit is taken
    small = reply("alice", delta=b"\x00" * 16)
    assert len(small) <= 1000
    assert ok(site.send("PUT", REPLY, body=small, as_="alice")) == {"status": "accepted"}


def test_too_many_requests_per_second_are_refused_with_429(make_site: Any) -> None:
    site = make_site(requests_per_s=1.0)  # a burst of 4
    for _ in range(4):
        assert ok(site.send("POST", "/v1/heartbeat", as_="alice"))
    response = site.send("POST", "/v1/heartbeat", as_="alice")
    refused(site, response, 429, "over 1 requests per second", client="alice")
    assert ok(site.send("POST", "/v1/heartbeat", as_="bob"))  # per client
    time.sleep(1.1)  # a token back
    assert ok(site.send("POST", "/v1/heartbeat", as_="alice"))


def test_a_slow_request_rate_still_lets_a_client_in(make_site: Any) -> None:
    """requests_per_s below 1/4 (the config allows any rate > 0): a client's first request
    must go through, and the next one be a 429, not every request refused for ever."""
    site = make_site(requests_per_s=0.2)
    assert ok(site.send("POST", "/v1/heartbeat", as_="alice"))
    response = site.send("POST", "/v1/heartbeat", as_="alice")
    refused(site, response, 429, "requests per second", client="alice")


def test_too_many_waiting_long_polls_are_refused_with_503_and_nothing_sticks(
    make_site: Any,
) -> None:
    site = make_site(max_waiting=1, long_poll_s=10.0)
    waiting = site.send("GET", "/v1/task", query="wait=10", as_="alice", later=True)
    end = time.monotonic() + 5
    while "alice" not in site.coordinator._events and time.monotonic() < end:  # she waits
        time.sleep(0.01)
    response = site.send("GET", "/v1/task", query="wait=1", as_="bob")
    refused(site, response, 503, "too many clients waiting", client="bob")
    site.open(("alice",))  # a task wakes alice's long-poll at once
    offer = ok(waiting.result(timeout=5))
    assert (offer["run"], offer["round"], offer["attempt"]) == (RUN, 1, 0)
    # the slot is free again: bob's next long-poll waits and ends normally
    assert site.send("GET", "/v1/task", query="wait=0.05", as_="bob").status_code == 204
    site.coordinator.finish("done")
    assert site.send("GET", "/v1/task", query="wait=1", as_="bob").status_code == 410


# -- replies ---------------------------------------------------------------------------------------
def test_a_good_reply_is_accepted_and_audited(site: Site) -> None:
    attempt = site.open()
    frame = site.send("GET", TASK_FRAME, as_="alice")
    assert frame.status_code == 200 and frame.headers["content-type"] == "application/octet-stream"
    assert ok(site.send("PUT", REPLY, body=reply("alice"), as_="alice")) == {"status": "accepted"}
    got = attempt.outcomes.get_nowait()
    assert isinstance(got, ClientReply) and got.client_id == "alice"
    assert bytes(got.payloads["delta"]) == b"\x01" * 32 and got.weight == 3.0
    actions = [r["action"] for r in site.coordinator.drain_audit()]
    assert actions == ["client.join", "reply.submit"]
    assert not site.coordinator.refusals


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _frame(header: bytes, sections: bytes = b"") -> bytes:
    return PREFIX.pack(REPLY_MAGIC, VERSION, len(header)) + header + sections


def _header(frame: bytes) -> dict[str, Any]:
    _, _, size = PREFIX.unpack_from(frame)
    header: dict[str, Any] = json.loads(frame[PREFIX.size : PREFIX.size + size])
    return header


GOOD = _header(reply("alice"))
MALFORMED = {
    "empty": b"",
    "garbage": b"hello, server",
    "cut short": reply("alice")[:-5],
    "bytes after its end": reply("alice") + b"\x00",
    "a task frame": b"FLTK" + reply("alice")[4:],
    "another version": reply("alice")[:4] + b"\x02" + reply("alice")[5:],
    "header not JSON": _frame(b"{not json"),
    "header nested too deep": _frame(_deep(5000)),
    "a 5000-digit number": _frame(b'{"round":' + b"1" * 5000 + b"}"),
    "weight past float's range": _frame(
        json.dumps({**GOOD, "weight": 10**400, "sections": []}).encode()
    ),
    "metric past float's range": _frame(
        json.dumps({**GOOD, "metrics": {"m": 10**400}, "sections": []}).encode()
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_reply_frame_is_refused_with_400(site: Site, name: str) -> None:
    site.open()
    response = site.send("PUT", REPLY, body=MALFORMED[name], as_="alice")
    refused(site, response, 400, "unreadable reply", client="alice")
    # the client may still send a good one
    assert ok(site.send("PUT", REPLY, body=reply("alice"), as_="alice")) == {"status": "accepted"}


def test_a_reply_for_the_wrong_round_attempt_or_run_is_refused_with_409(site: Site) -> None:
    site.open()
    alice = "alice"
    for url, body, reason in [
        ("/v1/rounds/2/attempts/0/reply", reply(alice, round_=1), "round 2 attempt 0 is not open"),
        ("/v1/rounds/1/attempts/1/reply", reply(alice, attempt=1), "round 1 attempt 1 is not open"),
        ("/v1/rounds/0/attempts/0/reply", reply(alice), "round 0 attempt 0 is not open"),
        ("/v1/rounds/-5/attempts/-1/reply", reply(alice), "is not open"),
        (REPLY, reply(alice, run="another-run"), "reply for run 'another-run'"),
        (REPLY, reply(alice, round_=1), "the reply's round and attempt differ from its URL's"),
        (REPLY, reply(alice, attempt=3), "the reply's round and attempt differ from its URL's"),
    ]:
        response = site.send("PUT", url, body=body, as_=alice)
        refused(site, response, 409, reason, client=alice, where=f"PUT {url}")
    # the task frame and the failure route refuse the wrong round too
    response = site.send("GET", "/v1/rounds/2/attempts/0/task", as_=alice)
    refused(site, response, 409, "round 2 attempt 0 is not open", client=alice)
    doc = json.dumps({"reason": "error", "message": "x"}).encode()
    response = site.send("POST", "/v1/rounds/1/attempts/5/failure", body=doc, as_=alice)
    refused(site, response, 409, "round 1 attempt 5 is not open", client=alice)
    # after all that, alice's right reply is still taken
    assert ok(site.send("PUT", REPLY, body=reply(alice), as_=alice)) == {"status": "accepted"}


def test_a_reply_after_the_attempt_closed_is_refused_with_409(site: Site) -> None:
    attempt = site.open()
    site.coordinator.close_attempt(attempt)
    response = site.send("PUT", REPLY, body=reply("alice"), as_="alice")
    refused(site, response, 409, "round 1 attempt 0 is not open", client="alice")


def test_a_reply_naming_another_client_is_refused_with_403(site: Site) -> None:
    attempt = site.open()
    response = site.send("PUT", REPLY, body=reply("alice"), as_="bob")
    refused(site, response, 403, "a reply signed by 'bob' names client 'alice'", client="bob")
    assert attempt.outcomes.empty()
    # neither alice nor bob is marked answered: both may still reply as themselves
    assert ok(site.send("PUT", REPLY, body=reply("alice"), as_="alice")) == {"status": "accepted"}
    assert ok(site.send("PUT", REPLY, body=reply("bob"), as_="bob")) == {"status": "accepted"}


def test_a_client_outside_the_cohort_is_refused_with_403(site: Site) -> None:
    attempt = site.open(("alice", "bob"))
    assert site.send("GET", "/v1/task", as_="carol").status_code == 204  # nothing offered
    reason = "client 'carol' is not in this attempt's cohort"
    refused(site, site.send("GET", TASK_FRAME, as_="carol"), 403, reason, client="carol")
    refused(
        site, site.send("PUT", REPLY, body=reply("carol"), as_="carol"), 403, reason, client="carol"
    )
    doc = json.dumps({"reason": "error", "message": "x"}).encode()
    refused(site, site.send("POST", FAILURE, body=doc, as_="carol"), 403, reason, client="carol")
    assert attempt.outcomes.empty() and "carol" not in attempt.fetched


def test_a_resent_reply_counts_once_and_a_different_one_is_refused(site: Site) -> None:
    """Idempotent submissions: the executor yields one outcome for a reply sent twice."""
    executor = RemoteExecutor(site.coordinator, round_timeout_s=1.5)
    outcomes: list[Any] = []
    rounds = threading.Thread(
        target=lambda: outcomes.extend(executor.map_clients(TASK, ["alice", "bob"]))
    )
    rounds.start()
    end = time.monotonic() + 5
    while site.coordinator.offer("alice") is None and time.monotonic() < end:
        time.sleep(0.01)
    body = reply("alice")
    assert ok(site.send("PUT", REPLY, body=body, as_="alice")) == {"status": "accepted"}
    assert ok(site.send("PUT", REPLY, body=body, as_="alice")) == {"status": "duplicate"}
    assert ok(site.send("PUT", REPLY, body=body, as_="alice")) == {"status": "duplicate"}
    submits = [r for r in site.coordinator.drain_audit() if r["action"] == "reply.submit"]
    assert len(submits) == 1 and submits[0]["actor"] == "alice"
    response = site.send("PUT", REPLY, body=reply("alice", weight=9.0), as_="alice")
    refused(
        site,
        response,
        409,
        "a different reply to this attempt was already received",
        client="alice",
    )
    doc = json.dumps({"reason": "error", "message": "changed my mind"}).encode()
    response = site.send("POST", FAILURE, body=doc, as_="alice")
    refused(site, response, 409, "already answered", client="alice")
    rounds.join(timeout=10)
    assert not rounds.is_alive()
    by_client: dict[str, list[Any]] = {}
    for outcome in outcomes:
        by_client.setdefault(outcome.client_id, []).append(outcome)
    assert [type(o) for o in by_client["alice"]] == [ClientReply]
    assert by_client["alice"][0].weight == 3.0
    assert [(type(o), o.reason) for o in by_client["bob"]] == [
        (ClientFailure, FailureReason.UNAVAILABLE)
    ]


MALFORMED_FAILURES = {
    "not JSON": b"{oops",
    "not an object": b"[1, 2]",
    "no reason": b'{"message": "x"}',
    "a reason that is not a string": b'{"reason": 5}',
    "an unknown reason": b'{"reason": "bored"}',
    "nested too deep": _deep(5000),
    "a 5000-digit number": b'{"reason": ' + b"1" * 5000 + b"}",
}


@pytest.mark.parametrize("name", list(MALFORMED_FAILURES), ids=list(MALFORMED_FAILURES))
def test_a_malformed_failure_report_is_refused_with_400(site: Site, name: str) -> None:
    site.open()
    response = site.send("POST", FAILURE, body=MALFORMED_FAILURES[name], as_="alice")
    assert response.status_code == 400, (response.status_code, response.text)
    refused(site, response, 400, response.json()["error"], client="alice")
    doc = json.dumps({"reason": "refused", "message": "budget spent"}).encode()
    assert ok(site.send("POST", FAILURE, body=doc, as_="alice")) == {"status": "recorded"}


def test_a_request_fastapi_finds_invalid_is_refused_and_audited(site: Site) -> None:
    """A path or query parameter of the wrong type: 422, and audited like every refusal."""
    for method, path, query in [
        ("GET", "/v1/task", "wait=-1"),
        ("GET", "/v1/task", "wait=soon"),
        ("PUT", "/v1/rounds/one/attempts/0/reply", ""),
    ]:
        response = site.send(method, path, query=query, as_="alice")
        assert response.status_code == 422, (response.status_code, response.text)
        assert site.coordinator.refusals, "a 422 is not recorded among the refusals"
        last = site.coordinator.refusals[-1]
        assert (last["status"], last["where"], last["client"]) == (422, f"{method} {path}", "alice")
        rows = [r for r in site.coordinator.drain_audit() if r["action"] == "request.refused"]
        assert len(rows) == 1 and json.loads(rows[0]["details"])["status"] == 422


# -- the operator's endpoints ---------------------------------------------------------------------
def test_the_operator_endpoints_need_the_operator_token(site: Site) -> None:
    reason = "the status page needs the operator's token"
    for path in ("/v1/status", "/status"):
        refused(site, site.send("GET", path), 401, reason, client=None)
        response = site.send("GET", path, headers={"authorization": "Bearer wrong"})
        refused(site, response, 401, reason, client=None)
        response = site.send("GET", path, headers={"authorization": site.token})  # no "Bearer"
        refused(site, response, 401, reason, client=None)
        response = site.send("GET", path, headers={"cookie": "fedlake_operator=wrong"})
        refused(site, response, 401, reason, client=None)
        # a client's signature is not the operator's token
        response = site.send("GET", path, as_="alice")
        assert response.status_code == 401 and site.coordinator.refusals[-1]["status"] == 401
        assert [r["action"] for r in site.coordinator.drain_audit()] == ["request.refused"]
    good = {"authorization": f"Bearer {site.token}"}
    status = ok(site.send("GET", "/v1/status", headers=good))
    assert status["run"] == RUN and len(status["refusals"]) == 10
    assert site.send("GET", "/status", headers=good).status_code == 200
    response = site.send(
        "POST",
        "/status/login",
        body=b"token=wrong",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    refused(site, response, 401, "wrong operator token", client=None)
    body = f"token={site.token}".encode()
    response = site.send(
        "POST",
        "/status/login",
        body=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 303 and "fedlake_operator=" in response.headers["set-cookie"]


# -- real processes over TLS ----------------------------------------------------------------------
@pytest.mark.integration
def test_clients_with_a_wrong_key_are_refused_and_the_run_completes(tmp_path: Path) -> None:
    """A TLS server and its four clients; beside them client-001's credential file with
    client-000's key in it, and 'mallory' with a made-up id and key. Both impostors are
    refused (their processes stop with the server's reason), the run completes with the
    real clients, and the refusals are in the run's Delta audit table."""
    from fedlake.lakehouse.delta_store import DeltaStore
    from fedlake.orchestration.checkpoint import load_checkpoint
    from tests.network.harness import FEDLAKE, free_port, prepare, processes, url, write_config

    ids = prepare(tmp_path)
    assert ids == ["client-000", "client-001", "client-002", "client-003"]
    clients = tmp_path / "certs" / "clients"
    bad = tmp_path / "bad"
    bad.mkdir()
    doc = json.loads((clients / "client-001.json").read_text())
    theirs = json.loads((clients / "client-000.json").read_text())
    (bad / "client-001.json").write_text(json.dumps({**doc, "private_key": theirs["private_key"]}))
    pem = made_up("mallory").private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (bad / "mallory.json").write_text(
        json.dumps({**doc, "client_id": "mallory", "private_key": pem.decode()})
    )
    config = write_config(
        tmp_path, federation__rounds=1, deployment__round_timeout_s=90, deployment__linger_s=6
    )
    port = free_port()
    impostors = {"impostor-001": "client-001.json", "mallory": "mallory.json"}
    with processes(tmp_path) as procs:
        procs.server(config, port)
        for name, credential in impostors.items():
            args = ["client", "--server", url(port, True), "--credential", str(bad / credential),
                    "--data", "data/client-001", "--state", f"state/{name}"]  # fmt: skip
            procs.start(name, [*FEDLAKE, *args])
        for name in impostors:  # refused before the round can end: their rows are in it
            assert procs.wait(name, timeout=60) != 0, procs.log(name)
        assert "401" in procs.log("impostor-001") and "bad signature" in procs.log("impostor-001")
        assert "401" in procs.log("mallory") and "not enrolled" in procs.log("mallory")
        for cid in ids:
            procs.client(cid, port)
        for cid in ids:
            assert procs.wait(cid, timeout=120) == 0, procs.log(cid)
            assert "the federation finished (max_rounds)" in procs.log(cid)
        # the rounds are over and the server lingers: a refusal now is audited all the same
        late = httpx.get(url(port, True) + "/v1/federation", verify=ssl.create_default_context(
            cafile=str(tmp_path / "certs" / "ca.pem")), timeout=10)  # fmt: skip
        assert late.status_code == 401
        assert procs.wait("server", timeout=120) == 0, procs.log("server")
    run = tmp_path / "runs" / "digits-served"
    ckpt = load_checkpoint(run)
    assert ckpt is not None and ckpt.finished and ckpt.state.round == 1
    rows = DeltaStore(run / "lakehouse").read("audit")
    refusals = [r for r in rows if r["action"] == "request.refused"]
    assert {r["run_id"] for r in refusals} == {ckpt.run_id}
    seen = {(r["actor"], r["object"], json.loads(r["details"])["reason"]) for r in refusals}
    assert seen == {
        ("client-001", "GET /v1/federation", "bad signature"),
        ("mallory", "GET /v1/federation", "client 'mallory' is not enrolled"),
        (
            "unknown",
            "GET /v1/federation",
            "unsigned request: missing " + ", ".join(HEADERS.values()),
        ),
    }
    # the real clients' replies made the round, client-001's included
    assert {r["actor"] for r in rows if r["action"] == "reply.submit"} == set(ids)
