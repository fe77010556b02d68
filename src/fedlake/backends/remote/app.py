"""The federation's HTTP server (FastAPI, the ``server`` extra): clients fetch tasks and send
replies over HTTPS.

Every ``/v1`` route but ``/v1/health`` is signed by an enrolled client (``auth.py``);
``/v1/status`` and the status page take the operator's token. Task frames stream out in
chunks straight from the shared model bytes; reply frames stream in up to a size limit,
hashed as they arrive. Past a limit (body size, requests per client per second, waiting
clients) a clear 4xx or 503 with ``Retry-After``; every refusal is audited. The routes and
their schemas are in ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi import responses as responses
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError

from fedlake.backends.remote import body as incoming
from fedlake.backends.remote.auth import HEADERS, AuthError, Registry, check_token
from fedlake.backends.remote.coordinator import Coordinator, Refusal
from fedlake.backends.remote.status_page import STATUS_HTML
from fedlake.backends.remote.wire import STAGES

__all__ = ["Limits", "create_app"]

CHUNK = 1 << 20  # bytes per streamed chunk
# a secure attempt's stage (1-4, wire.stage_number), 0: a plain attempt
STAGE = Query(0, ge=0, le=len(STAGES), description="the secure stage (0: a plain attempt)")


@dataclass(frozen=True)
class Limits:
    """What one server accepts before it answers 413, 429 or 503."""

    max_body_mb: float = 512.0  # a reply frame, in MB
    requests_per_s: float = 50.0  # per client, averaged over a burst of 4 s
    max_waiting: int = 10_000  # clients long-polling at once
    long_poll_s: float = 25.0  # the longest a task request waits

    @property
    def max_body(self) -> int:
        """The largest request body, in bytes."""
        return int(self.max_body_mb * 1e6)


class _Buckets:
    """Token buckets per key (a client, or an address for unauthenticated requests)."""

    def __init__(self, rate: float, burst_s: float = 4.0) -> None:
        self.rate, self.capacity = rate, max(1.0, rate * burst_s)  # one request at least
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 when a request may go on, else the seconds to wait."""
        now = time.monotonic()
        tokens, then = self._state.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._state[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._state[key] = (tokens - 1, now)
        return 0.0

    def full(self, key: str) -> bool:
        """Whether ``key`` has no request left right now (nothing is taken)."""
        tokens, then = self._state.get(key, (self.capacity, time.monotonic()))
        return min(self.capacity, tokens + (time.monotonic() - then) * self.rate) < 1


def create_app(
    coordinator: Coordinator,
    registry: Registry,
    *,
    operator_token: str,
    federation_info: dict[str, Any],
    limits: Limits | None = None,
    on_start: Callable[[], None] | None = None,
) -> Any:
    """The ASGI app; ``on_start`` runs once the event loop is up (it starts the rounds)."""
    limits = limits or Limits()
    buckets = _Buckets(limits.requests_per_s)
    strangers = _Buckets(5.0)
    waiting = [0]

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        coordinator.bind(asyncio.get_running_loop())
        if on_start is not None:
            on_start()
        yield

    app = FastAPI(
        title="fedlake federation server",
        version="1",
        lifespan=lifespan,
        description="Federated learning rounds over HTTPS: signed requests, binary frames.",
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Any:
        """A parameter of the wrong type: 422, recorded and audited like every refusal."""
        errors = jsonable_encoder(exc.errors())
        reason = "invalid request: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors
        )
        client = request.headers.get("x-fedlake-client")
        coordinator.refuse(client, f"{request.method} {request.url.path}", 422, reason)
        return responses.JSONResponse({"error": reason, "detail": errors}, status_code=422)

    def refuse(
        request: Request, client: str | None, status: int, reason: str, retry_s: float = 1.0
    ) -> Any:
        coordinator.refuse(client, f"{request.method} {request.url.path}", status, reason)
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = str(max(1, math.ceil(retry_s)))
        return responses.JSONResponse({"error": reason}, status_code=status, headers=headers)

    async def read_body(request: Request) -> tuple[bytes | memoryview, str]:
        """The body (under the size limit) and its digest, hashed as it arrives."""
        declared = request.headers.get("content-length") or ""
        size = int(declared) if declared.isascii() and declared.isdigit() else None
        if size is not None and size > limits.max_body:
            raise Refusal(413, f"body of {declared} bytes over the limit {limits.max_body}")
        try:
            return await incoming.read_body(request.stream(), size, limits.max_body)
        except incoming.BodyTooLarge as exc:
            raise Refusal(413, str(exc)) from None
        except incoming.BodyLengthMismatch as exc:
            raise Refusal(400, str(exc)) from None

    async def authenticate(request: Request) -> tuple[str, bytes | memoryview]:
        """The signing client and the request body (read once, under the size limit).

        The signature (over the body's declared digest) is checked before the body is
        read, so no one unenrolled makes the server take in a large body; the body's hash
        is then checked against the signed one.
        """
        address = request.client.host if request.client else "unknown"
        declared = request.headers.get("content-length") or ""
        if declared.isascii() and declared.isdigit() and int(declared) > limits.max_body:
            raise Refusal(413, f"body of {declared} bytes over the limit {limits.max_body}")
        signed = request.headers.get(HEADERS["body"]) or ""
        try:
            client = registry.verify(
                request.method, request.url.path, request.url.query, request.headers, signed
            )
        except AuthError as exc:
            if strangers.take(address):
                raise Refusal(429, "too many refused requests from this address") from None
            raise Refusal(exc.status, exc.reason) from None
        wait = buckets.take(client)
        if wait:
            raise Refusal(429, f"over {limits.requests_per_s:g} requests per second", wait)
        body, digest = await read_body(request)
        if not hmac.compare_digest(digest.encode(), signed.encode()):
            raise Refusal(401, "the body does not match its signed digest")
        coordinator.seen(client)
        return client, body

    def guarded(handler: Callable[..., Any]) -> Callable[..., Any]:
        async def run(request: Request, **kw: Any) -> Any:
            client = request.headers.get("x-fedlake-client")
            try:
                return await handler(request, **kw)
            except Refusal as exc:
                return refuse(request, client, exc.status, exc.reason, exc.retry_after_s)

        run.__name__ = handler.__name__
        run.__doc__ = handler.__doc__
        run.__signature__ = _signature(handler)  # type: ignore[attr-defined]
        return run

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        """Liveness (no authentication): the server answers, and whether the run finished."""
        return {"status": "ok", "finished": coordinator.finished}

    @app.get("/v1/federation")
    @guarded
    async def federation(request: Request) -> Any:
        """What a client needs to join: the recipe spec, the model config, the run."""
        await authenticate(request)
        return responses.JSONResponse(federation_info)

    @app.get("/v1/task", responses={200: {"description": "a task"}, 204: {}, 410: {}})
    @guarded
    async def next_task(request: Request, wait: float = Query(0.0, ge=0, le=60)) -> Any:
        """The task waiting for this client; waits up to ``wait`` s for one (long-poll)."""
        client, _ = await authenticate(request)
        if waiting[0] >= limits.max_waiting:
            raise Refusal(503, "too many clients waiting; retry shortly")
        waiting[0] += 1
        try:
            end = time.monotonic() + min(wait, limits.long_poll_s)
            while True:
                event = coordinator.waiter(client)
                if coordinator.finished is not None:
                    body = {"finished": coordinator.finished, "run": coordinator.run_id}
                    return responses.JSONResponse(body, status_code=410)
                offer = coordinator.offer(client)
                if offer is not None:
                    return responses.JSONResponse(offer)
                left = end - time.monotonic()
                if left <= 0:
                    return responses.Response(status_code=204)
                with suppress(TimeoutError):  # woken by a task, or the wait is over
                    await asyncio.wait_for(event.wait(), timeout=left)
        finally:
            waiting[0] -= 1

    @app.get(
        "/v1/rounds/{round_}/attempts/{attempt}/task",
        response_class=responses.Response,
        responses={
            200: {
                "description": "this client's task frame",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },  # fmt: skip
            }
        },
    )
    @guarded
    async def task(request: Request, round_: int, attempt: int, stage: int = STAGE) -> Any:
        """This client's task frame (binary, streamed); ``stage``: a secure attempt's stage."""
        client, _ = await authenticate(request)
        parts = coordinator.task_frame(client, round_ - 1, attempt, stage)
        size = sum(len(p) for p in parts)

        async def chunks() -> Any:
            # views of the one shared model: no copy per client, and no thread hop per
            # chunk (a sync iterator costs one); the transport writes straight from them
            for part in parts:
                view = memoryview(part)
                for start in range(0, len(view), CHUNK):
                    yield view[start : start + CHUNK]

        return responses.StreamingResponse(
            chunks(),
            media_type="application/octet-stream",
            headers={"content-length": str(size)},
        )

    @app.put(
        "/v1/rounds/{round_}/attempts/{attempt}/reply",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },  # fmt: skip
            }
        },
    )
    @guarded
    async def reply(request: Request, round_: int, attempt: int, stage: int = STAGE) -> Any:
        """This client's reply frame (binary): accepted once; an identical resend is a no-op.
        ``stage``: the secure stage it answers (another stage's reply is refused, 409)."""
        client, body = await authenticate(request)
        signed = request.headers[HEADERS["body"]]  # checked against the body: its digest
        status = coordinator.submit(client, round_ - 1, attempt, body, signed, stage)
        return {"status": status}

    @app.post("/v1/rounds/{round_}/attempts/{attempt}/failure")
    @guarded
    async def failure(request: Request, round_: int, attempt: int, stage: int = STAGE) -> Any:
        """This client will not answer this attempt: ``{"reason": ..., "message": ...}``."""
        client, body = await authenticate(request)
        doc = _json_object(body)
        reason, message = doc.get("reason"), doc.get("message", "")
        if not isinstance(reason, str) or not isinstance(message, str):
            raise Refusal(400, "failure needs a string reason and message")
        coordinator.fail(client, round_ - 1, attempt, reason, message, stage)
        return {"status": "recorded"}

    @app.post("/v1/heartbeat")
    @guarded
    async def heartbeat(request: Request) -> Any:
        """The client is alive (and training, when it says so)."""
        await authenticate(request)
        return {"status": "ok", "server_time": time.time()}

    def operator(request: Request) -> None:
        address = request.client.host if request.client else "unknown"
        if strangers.full(address):  # guessing the token floods no audit log
            raise Refusal(429, "too many refused requests from this address")
        given = request.headers.get("authorization", "")
        token = given.removeprefix("Bearer ") if given.startswith("Bearer ") else None
        token = token or request.cookies.get("fedlake_operator")
        if not check_token(token, operator_token):
            strangers.take(address)
            raise Refusal(401, "the status page needs the operator's token")

    @app.get("/v1/status")
    @guarded
    async def status(request: Request) -> Any:
        """The federation's state (operator token): round, clients, metrics, refusals."""
        operator(request)
        return responses.JSONResponse(coordinator.status())

    @app.get("/status", response_class=responses.HTMLResponse)
    @guarded
    async def status_page(request: Request) -> Any:
        """The operator's status page (operator token as a bearer header or a cookie).

        Without the token the page still loads (it holds no data) with status 401: its own
        request for the data is refused and it shows the login form.
        """
        try:
            operator(request)
        except Refusal as refusal:
            refuse(request, None, refusal.status, refusal.reason)
            return responses.HTMLResponse(STATUS_HTML, status_code=refusal.status)
        return responses.HTMLResponse(STATUS_HTML)

    @app.post("/status/login")
    async def login(request: Request) -> Any:
        """Exchange the operator's token (form field ``token``) for a session cookie."""
        body = (await request.body())[:4096].decode(errors="replace")
        fields = dict(p.split("=", 1) for p in body.split("&") if "=" in p)
        from urllib.parse import unquote_plus

        token = unquote_plus(fields.get("token", ""))
        address = request.client.host if request.client else "unknown"
        if strangers.full(address):
            return refuse(request, None, 429, "too many refused requests from this address")
        if not check_token(token, operator_token):
            strangers.take(address)
            return refuse(request, None, 401, "wrong operator token")
        response = responses.RedirectResponse("/status", status_code=303)
        response.set_cookie(
            "fedlake_operator", token, httponly=True, secure=True, samesite="strict"
        )
        return response

    return app


def _json_object(data: bytes | memoryview) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(data) or b"{}")
    except (ValueError, RecursionError):  # not UTF-8 or JSON, a huge number, too deep
        raise Refusal(400, "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise Refusal(400, "the body must be a JSON object")
    return doc


def _signature(handler: Callable[..., Any]) -> Any:
    import inspect

    return inspect.signature(handler)
