"""API fuzzing with schemathesis against the server's own OpenAPI schema, in process.

Every operation of ``/openapi.json`` (read from the ASGI app) gets generated requests, valid
and invalid ones, sent twice over: signed by an enrolled client that is in the open
attempt's cohort (a ``requests`` auth hook signs each request as schemathesis prepared it:
method, path, query and body), and unsigned. No answer may be a 5xx, and an answer must
match the schema where the schema documents its status (content type, body, headers). The
binary routes (the task frame, the reply frame) and the failure route are also fuzzed with
their path pinned to the open attempt, so generated bodies reach the frame decoder, and get
explicit cases: the task frame of the open attempt, a valid reply, its resend.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")
requests = pytest.importorskip("requests")

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from fedlake.backends.remote.app import Limits, create_app  # noqa: E402
from fedlake.backends.remote.auth import Credential, Registry  # noqa: E402
from fedlake.backends.remote.certs import REGISTRY, TOKEN, make_certs  # noqa: E402
from fedlake.backends.remote.coordinator import Coordinator  # noqa: E402
from fedlake.backends.remote.wire import reply_to_bytes, task_from_bytes  # noqa: E402
from fedlake.compression.messages import encode_model  # noqa: E402
from fedlake.core.task import ClientReply, ClientTask  # noqa: E402

RUN = "run-fuzz"
# what "conforms to the schema" means here: the statuses the schema documents are checked
# for their content type, body and headers; refusals (401, 403, 409, 413, 429, 503) are not
# documented, so schemathesis' status_code_conformance and positive_data_acceptance are off
CHECKS = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


class Signed(requests.auth.AuthBase):
    """Signs a prepared request as ``credential``'s client (what the server verifies)."""

    def __init__(self, credential: Credential) -> None:
        self.credential = credential

    def __call__(self, request: Any) -> Any:
        parts = urlsplit(request.url)
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        request.headers.update(
            self.credential.headers(request.method, unquote(parts.path), parts.query, body)
        )
        return request


class Fuzzed:
    """The app under fuzzing: one open attempt (round 1, attempt 0) with alice in it."""

    def __init__(self, folder: Path) -> None:
        certs = make_certs(folder / "certs", ["alice", "bob"])
        self.coordinator = Coordinator(RUN)
        model = encode_model(np.ones(6, np.float32), None, None, np.random.default_rng(0))
        self.task = ClientTask(round=0, attempt=0, seed=1, model=model, extras={"c": b"cv"})
        self.coordinator.open_attempt(self.task, ["alice"], 3600.0)
        self.app = create_app(
            self.coordinator,
            Registry(certs / REGISTRY),
            operator_token=(certs / TOKEN).read_text().strip(),
            federation_info={"run": RUN, "name": "fuzz"},
            # long-polls end at once; no client is slowed down by the fuzzing's pace
            limits=Limits(max_body_mb=1.0, requests_per_s=10_000.0, long_poll_s=0.01),
        )
        self.alice = Credential.load(certs / "clients" / "alice.json")
        self.signed = requests.Session()
        self.signed.auth = Signed(self.alice)
        self.unsigned = requests.Session()


# schemathesis' lazy loader (schemathesis.pytest.from_fixture) does not run on pytest 9
# (it sets Function._nodeid), so the app and its schema are made when the module loads
_folder = tempfile.TemporaryDirectory(prefix="fedlake-fuzz-")
FUZZED = Fuzzed(Path(_folder.name))
schema = schemathesis.openapi.from_asgi("/openapi.json", FUZZED.app)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    yield FUZZED
    _folder.cleanup()


@pytest.fixture(scope="module")
def api_schema() -> Any:
    return schema


def check(case: Any, response: Any) -> None:
    assert response.status_code < 500, (
        case.method,
        case.formatted_path,
        response.status_code,
        response.text[:500],
    )
    case.validate_response(response, checks=CHECKS)


@schema.parametrize()
@FUZZ
def test_signed_requests_get_no_5xx_and_conform(case: Any, fuzzed: Fuzzed) -> None:
    check(case, case.call(session=fuzzed.signed))


@schema.parametrize()
@FUZZ
def test_unsigned_requests_get_no_5xx_and_conform(case: Any, fuzzed: Fuzzed) -> None:
    response = case.call(session=fuzzed.unsigned)
    check(case, response)
    if case.path.startswith("/v1/") and case.path != "/v1/health":  # refused, whatever else
        assert not 200 <= response.status_code < 300, (case.method, case.formatted_path)


# -- the binary routes, reached past the authentication ------------------------------------------
TASK_PATH = "/v1/rounds/{round_}/attempts/{attempt}/task"
REPLY_PATH = "/v1/rounds/{round_}/attempts/{attempt}/reply"


FAILURE_PATH = "/v1/rounds/{round_}/attempts/{attempt}/failure"
OPEN = {"round_": 1, "attempt": 0}  # the open attempt, as the URLs count it


@pytest.mark.parametrize(
    ("path", "method"), [(TASK_PATH, "GET"), (REPLY_PATH, "PUT"), (FAILURE_PATH, "POST")]
)
@FUZZ
@given(data=st.data())
def test_the_open_attempts_routes_get_no_5xx_and_conform(
    path: str, method: str, data: st.DataObject
) -> None:
    """Generated requests to the open attempt itself (random reply bodies included), signed
    by a client of its cohort: they reach the frame decoders, not only the signature check."""
    case = data.draw(schema[path][method].as_strategy(path_parameters=OPEN))
    response = case.call(session=FUZZED.signed)
    check(case, response)
    assert response.status_code in (200, 400, 409, 422), (response.status_code, response.text)


def test_the_task_frame_is_served_as_its_schema_says(api_schema: Any, fuzzed: Fuzzed) -> None:
    case = api_schema[TASK_PATH]["GET"].Case(path_parameters={"round_": 1, "attempt": 0})
    response = case.call(session=fuzzed.signed)
    assert response.status_code == 200, response.text
    task, client, run = task_from_bytes(response.content)
    assert (task, client, run) == (fuzzed.task, "alice", RUN)
    case.validate_response(response, checks=CHECKS)


def test_a_reply_frame_is_taken_once_as_its_schema_says(api_schema: Any, fuzzed: Fuzzed) -> None:
    frame = reply_to_bytes(
        ClientReply("alice", {"delta": b"\x00" * 24}, 2.0, {"loss": 0.1}),
        round_=0,
        attempt=0,
        run_id=RUN,
    )
    operation = api_schema[REPLY_PATH]["PUT"]
    for expected in ("accepted", "duplicate"):
        case = operation.Case(
            path_parameters={"round_": 1, "attempt": 0},
            body=frame,
            media_type="application/octet-stream",
        )
        response = case.call(session=fuzzed.signed)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": expected}
        case.validate_response(response, checks=CHECKS)
    garbage = operation.Case(
        path_parameters={"round_": 1, "attempt": 0},
        body=b"\xff" * 40,
        media_type="application/octet-stream",
    )
    response = garbage.call(session=fuzzed.signed)
    assert response.status_code == 409  # alice already answered: a different reply is refused
    check(garbage, response)


def test_the_schema_lists_every_route(api_schema: Any) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {
        "/v1/health",
        "/v1/federation",
        "/v1/task",
        TASK_PATH,
        REPLY_PATH,
        "/v1/heartbeat",
        "/v1/rounds/{round_}/attempts/{attempt}/failure",
        "/v1/status",
    } <= paths
    body = api_schema.raw_schema["paths"][REPLY_PATH]["put"]["requestBody"]
    assert "application/octet-stream" in body["content"]
