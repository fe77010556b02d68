"""The data owner's side: a client that joins a federation over HTTPS and trains when sampled.

It only opens outgoing connections. It long-polls the server for a task (the server
answers the moment one is published), downloads its task frame, runs
:class:`~fedlake.client.runtime.ClientRuntime` on its own data with its own folder store,
and uploads the reply, retrying with exponential backoff and jitter (a resent reply is
recognised by its digest and counted once). A heartbeat runs while it trains. Killed and
restarted, it continues from its store; when the server is unreachable it waits and
reconnects on its own.

A 100 MB model is not copied on its way through: the frame is read from the socket into
one numpy buffer (numpy asks the kernel for huge pages: a third of the page faults' cost
of a bytearray), the model is read in place from it, and the reply goes out as the pieces
of its frame, hashed once for its signature and sent as they are (``transfer``).
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fedlake.algorithms.spec import RecipeSpec, build_algorithm
from fedlake.backends.remote.auth import Credential, body_hasher
from fedlake.backends.remote.transfer import BodyTransfer, TransferError, TransferResponse
from fedlake.backends.remote.wire import (
    FrameError,
    model_checksum,
    reply_parts,
    stage_number,
    task_from_bytes,
)
from fedlake.client.folder_store import FolderStateStore
from fedlake.client.runtime import ClientRuntime
from fedlake.client.stores import ClientStateStore
from fedlake.core.extras import require
from fedlake.core.recycle import Recycler
from fedlake.core.task import ClientFailure, ClientReply, Instructions
from fedlake.data.base import ClientData
from fedlake.models.registry import trainer_from_config

__all__ = ["RemoteClient", "ServerError", "plan_work"]

RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
UPLOAD_MARGIN_S = 2.0  # kept free before the deadline for the upload


class ServerError(RuntimeError):
    """The server refused a request for good (4xx other than a retry): what it said."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"server answered {status}: {reason}")
        self.status, self.reason = status, reason


@dataclass
class Backoff:
    """Exponential backoff with full jitter: base * 2^n, capped, times a uniform draw."""

    base_s: float = 0.5
    cap_s: float = 30.0
    tries: int = 0

    def wait(self) -> float:
        """The next pause, in seconds."""
        span = min(self.cap_s, self.base_s * 2**self.tries)
        self.tries += 1
        return random.uniform(0.0, span)

    def reset(self) -> None:
        """Back to the shortest pause."""
        self.tries = 0


class RemoteClient:
    """One client of a federation served at ``server`` (``https://host:port``).

    Args:
        server: the server's base URL (``http://`` only for a loopback ``--insecure`` one).
        credential: this client's signing key (and the CA that signed the server's cert).
        data: this client's data (its own rows; ``data.load(credential.client_id)``), or a
            function of the federation's data hints that opens it.
        state_dir: where the client keeps its state between rounds (created if needed).
        store: keep the state there instead (a test's shared store).
        runtime: build the client runtime from the federation's description yourself
            (None: from its recipe spec and model config, over ``data`` and the store).
        ca_file: the CA to trust instead of the credential's (None: the credential's).
        proxy_token: a bearer token for a proxy in front of the server (a Databricks App
            lets in only workspace identities); sent as ``Authorization`` on every request,
            beside this client's own signature, which the server still checks.
        log: where progress lines go.
    """

    def __init__(
        self,
        server: str,
        credential: Credential,
        data: ClientData | Callable[[dict[str, Any]], ClientData],
        *,
        state_dir: str | Path | None = None,
        store: ClientStateStore | None = None,
        runtime: Callable[[dict[str, Any]], ClientRuntime] | None = None,
        ca_file: str | Path | None = None,
        proxy_token: str | None = None,
        long_poll_s: float = 25.0,
        heartbeat_s: float = 5.0,
        max_wait_s: float | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        httpx = require("httpx", extra="client", purpose="a networked fedlake client")
        self.server = server.rstrip("/")
        self.credential = credential
        self.data = data
        if store is None and state_dir is None:
            raise ValueError("give the client a state_dir (or a store) to keep its state in")
        self.store = store if store is not None else FolderStateStore(state_dir)  # type: ignore[arg-type]
        self.make_runtime = runtime
        self.long_poll_s = long_poll_s
        self.heartbeat_s = heartbeat_s
        self.max_wait_s = max_wait_s
        self.log = log
        self.client_id = credential.client_id
        self._rate: float | None = None  # local steps per second, measured last round
        self._buffers = Recycler(keep=1)  # downloads: last round's, once nothing uses it
        self.policy = "keep"
        verify: Any = True
        if urlsplit(self.server).scheme == "https":
            verify = _ssl_context(ca_file, credential.ca_pem)
        base = {"authorization": f"Bearer {proxy_token}"} if proxy_token else {}
        self.http = httpx.Client(
            verify=verify, timeout=httpx.Timeout(30.0, read=60.0), headers=base
        )
        self._httpx = httpx
        # task and reply frames: straight between the socket and the frame's buffers
        context = verify if isinstance(verify, ssl.SSLContext) else None
        self._bodies = BodyTransfer(self.server, context, base, timeout_s=60.0)

    # -- requests ---------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | Sequence[bytes | memoryview] = b"",
        timeout: float | None = None,
        retry: bool = True,
        ok: tuple[int, ...] = (200,),
    ) -> Any:
        """A signed request, retried (backoff with jitter) on network errors and 429/5xx.

        ``body``: bytes, or the pieces of one body, sent one after another without joining.
        """
        query = urlencode(params or {})
        target = path + (f"?{query}" if query else "")
        url = self.server + target
        pieces = [body] if isinstance(body, bytes) else list(body)
        size = sum(len(p) for p in pieces)
        digest = _digest(pieces)  # once: a retry signs the same body again
        backoff = Backoff()
        started = time.monotonic()
        while True:
            headers = self.credential.headers(method, path, query, digest=digest)
            if size:
                headers["content-type"] = "application/octet-stream"
            try:
                if isinstance(body, bytes):  # small: a JSON document, or nothing
                    response = self.http.request(
                        method, url, content=body or None, headers=headers, timeout=timeout
                    )
                else:  # a frame's pieces, sent as they are (a length, not chunked)
                    response = self._bodies.upload(method, target, headers, pieces)
            except (self._httpx.TransportError, TransferError) as exc:
                response, problem = None, f"{type(exc).__name__}: {exc}"
            else:
                problem = f"HTTP {response.status_code}"
            if response is not None and (response.status_code in ok or not retry):
                return response
            if response is not None and response.status_code not in RETRYABLE:
                raise ServerError(response.status_code, _reason(response))
            waited = time.monotonic() - started
            if self.max_wait_s is not None and waited > self.max_wait_s:
                raise ConnectionError(f"{method} {path}: {problem} for {waited:.0f} s; giving up")
            pause = backoff.wait()
            if response is not None and response.headers.get("retry-after", "").isdigit():
                pause = max(pause, float(response.headers["retry-after"]))
            self.log(f"{method} {path}: {problem}; retrying in {pause:.1f} s")
            time.sleep(pause)

    def download(self, path: str, query: str = "") -> memoryview:
        """A binary body, streamed into one buffer of its announced size (no second copy).

        The buffer is a numpy array (huge pages: ~15 ms to fill with 100 MB where a
        bytearray takes ~80), last round's when nothing uses it any more (no page faults);
        the bytes come back as a view of it.
        """
        backoff = Backoff()
        while True:
            headers = self.credential.headers("GET", path, query)
            target = path + (f"?{query}" if query else "")
            try:
                status, body = self._bodies.download(target, headers, self._buffer)
            except TransferError as exc:
                problem = str(exc)
            else:
                if status == 200:
                    assert isinstance(body, memoryview)
                    return body
                if status not in RETRYABLE:
                    raise ServerError(status, _reason(TransferResponse(status, {}, bytes(body))))
                problem = f"HTTP {status}"
            pause = backoff.wait()
            self.log(f"GET {path}: {problem}; retrying in {pause:.1f} s")
            time.sleep(pause)

    def _buffer(self, size: int) -> memoryview:
        """A writable buffer of ``size`` bytes for a download (last round's, when free)."""
        return self._buffers.empty(size).data

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> str:
        """Answer the federation's tasks until it finishes; the reason it finished."""
        info = self.request("GET", "/v1/federation").json()
        self.run_id = info["run"]
        self.policy = str(info.get("straggler_policy", "keep"))
        if self.make_runtime is not None:
            runtime = self.make_runtime(info)
        else:
            trainer = trainer_from_config(info["model_config"])
            algorithm = build_algorithm(RecipeSpec.from_json(json.dumps(info["spec"])))
            data = self.data(info.get("data", {})) if callable(self.data) else self.data
            runtime = ClientRuntime(data, trainer, algorithm, self.store)
        self.log(f"{self.client_id}: joined run {self.run_id} ({info.get('name', '')})")
        while True:
            response = self.request(
                "GET",
                "/v1/task",
                params={"wait": self.long_poll_s},
                timeout=self.long_poll_s + 30,
                ok=(200, 204, 410),
            )
            if response.status_code == 410:
                reason = response.json().get("finished", "finished")
                self.log(f"{self.client_id}: the federation finished ({reason})")
                return str(reason)
            if response.status_code == 204:
                continue
            self._answer(runtime, response.json())

    def _answer(self, runtime: ClientRuntime, offer: dict[str, Any]) -> None:
        """Fetch the offered task, train, and send the reply (or the failure)."""
        r, a = int(offer["round"]), int(offer["attempt"])
        stage = int(offer.get("stage", 0))  # a secure attempt's stage (wire.stage_number)
        base = f"/v1/rounds/{r}/attempts/{a}"
        params = {"stage": stage} if stage else None
        try:
            frame = self.download(base + "/task", urlencode(params or {}))
            task, client, run = task_from_bytes(frame)
            if model_checksum(task.model) != offer["model_xxh3_128"]:
                raise FrameError("the model's checksum does not match the offer's")
            if stage_number(task) != stage:
                raise FrameError(f"a task of stage {stage_number(task)} offered as stage {stage}")
        except (FrameError, ServerError) as exc:
            self.log(f"{self.client_id}: round {r}: task not received: {exc}")
            return
        if client != self.client_id or run != self.run_id:
            self.log(f"{self.client_id}: round {r}: a task for {client!r} of run {run!r}: ignored")
            return
        work = self._plan(runtime, client, float(offer.get("deadline_in_s", float("inf"))))
        if work is not None:  # it cannot finish everything by the deadline
            task = task.with_instructions({client: work})
        what = "training" if task.stage is None else f"secure stage {task.stage.value}"
        self.log(f"{self.client_id}: round {r} attempt {a}: {what}")
        started = time.monotonic()
        with _Heartbeat(self, self.heartbeat_s):
            outcome = runtime.handle(task, client)
        if isinstance(outcome, ClientReply) and outcome.metrics.get("steps"):
            self._rate = outcome.metrics["steps"] / max(1e-6, time.monotonic() - started)
        try:
            if isinstance(outcome, ClientReply):
                parts, _ = reply_parts(
                    outcome, round_=task.round, attempt=a, run_id=run, stage=stage
                )
                answer = self.request("PUT", base + "/reply", params=params, body=parts).json()
                self.log(f"{self.client_id}: round {r}: reply {answer.get('status')}")
            else:
                assert isinstance(outcome, ClientFailure)
                doc = {"reason": outcome.reason.value, "message": outcome.message}
                self.request(
                    "POST", base + "/failure", params=params, body=json.dumps(doc).encode()
                )
                self.log(f"{self.client_id}: round {r}: {outcome.status}: {outcome.message}")
        except ServerError as exc:  # the attempt closed meanwhile, or a refusal: go on
            self.log(f"{self.client_id}: round {r}: not taken: {exc.reason}")

    def _plan(self, runtime: ClientRuntime, client: str, left_s: float) -> Instructions | None:
        """The part of its work this client can do by the deadline (None: all of it).

        From its speed in its last round on this machine; the server's straggler policy
        says whether partial work is sent (``keep``) or nothing (``drop``).
        """
        if self._rate is None:
            return None
        total = runtime.total_steps(runtime.data.load(client).num_train)
        return plan_work(total, self._rate, left_s - UPLOAD_MARGIN_S, self.policy)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()
        self._bodies.close()


class _Heartbeat:
    """Posts a heartbeat every ``every_s`` seconds while the client trains."""

    def __init__(self, client: RemoteClient, every_s: float) -> None:
        self.client, self.every_s = client, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.client.request("POST", "/v1/heartbeat", body=b"{}", retry=False)
            except Exception:  # a missed heartbeat is harmless; the reply matters
                continue


def plan_work(total: int, rate: float, left_s: float, policy: str) -> Instructions | None:
    """A step cap for ``total`` steps at ``rate`` steps/s with ``left_s`` seconds left.

    None when everything fits; else the steps that fit, with ``drop_partial`` under the
    ``drop`` policy (the client then sends nothing: a straggler).
    """
    if not (rate > 0) or total / rate <= left_s:
        return None
    return Instructions(
        max_steps=max(0, int(rate * max(0.0, left_s))), drop_partial=policy == "drop"
    )


def _digest(pieces: Sequence[bytes | memoryview]) -> str:
    """The body digest of the pieces, one after another."""
    digest = body_hasher()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


def _reason(response: Any) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text[:500]


def _ssl_context(ca_file: str | Path | None, ca_pem: bytes | None) -> ssl.SSLContext:
    """Trust ``ca_file``, or the CA the credential carries, or the system's."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    if ca_pem:
        return ssl.create_default_context(cadata=ca_pem.decode())
    return ssl.create_default_context()
