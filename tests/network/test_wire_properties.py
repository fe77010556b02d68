"""The server's decoders see untrusted bytes and headers: a task or reply frame decodes to a
valid task or reply or raises FrameError, nothing else; the registry's verify returns the
signing client or raises AuthError, nothing else. Valid tasks and replies round-trip exactly.

Inputs: arbitrary bytes, bytes behind a valid prefix, and valid frames mutated (cut short,
bytes flipped or inserted, a header field replaced by any JSON value or raw JSON text,
section lengths wrong or huge, a huge declared header length).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fedlake.backends.remote.auth import HEADERS, AuthError, Credential, Registry, body_digest
from fedlake.backends.remote.certs import make_certs, revoke
from fedlake.backends.remote.wire import (
    MAX_HEADER,
    PREFIX,
    REPLY_MAGIC,
    TASK_MAGIC,
    VERSION,
    FrameError,
    reply_from_bytes,
    reply_to_bytes,
    task_from_bytes,
    task_parts,
)
from fedlake.core.task import ClientReply, ClientTask, Instructions

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported in seconds
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- valid tasks and replies --------------------------------------------------------------------
names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**70)
finite = st.floats(allow_nan=False, allow_infinity=False)
blobs = st.binary(max_size=64)
works = st.builds(
    Instructions,
    fraction=st.floats(min_value=0, max_value=1, exclude_min=True),
    max_steps=st.none() | counts,
    drop_partial=st.booleans(),
)


@st.composite
def tasks(draw: st.DrawFn) -> tuple[ClientTask, str, str]:
    """A task as one client receives it (its instructions and ack only), its client and run."""
    client, run = draw(ids), draw(st.text(max_size=12))
    work = draw(st.none() | works)
    ack = draw(st.none() | st.tuples(counts, counts))
    task = ClientTask(
        round=draw(counts),
        attempt=draw(counts),
        seed=draw(counts),
        model=draw(blobs),
        extras=draw(
            st.dictionaries(st.from_regex(r"[a-z0-9_]{0,8}", fullmatch=True), blobs, max_size=3)
        ),
        instructions={} if work is None else {client: work},
        acks={} if ack is None else {client: ack},
    )
    return task, client, run


@st.composite
def replies(draw: st.DrawFn) -> tuple[ClientReply, int, int, str]:
    """A reply, and the round, attempt and run it answers."""
    reply = ClientReply(
        draw(ids),
        draw(st.dictionaries(names, blobs, max_size=4)),
        draw(finite),
        draw(st.dictionaries(st.text(max_size=8), finite, max_size=4)),
    )
    return reply, draw(counts), draw(counts), draw(st.text(max_size=12))


def task_bytes(task: ClientTask, client: str, run: str) -> bytes:
    return b"".join(bytes(p) for p in task_parts(task, client, run))


def frame(magic: bytes, header: bytes, sections: bytes = b"", *, size: int | None = None) -> bytes:
    """A frame with this header text (and declared header length) and these section bytes."""
    return PREFIX.pack(magic, VERSION, len(header) if size is None else size) + header + sections


def split(data: bytes) -> tuple[bytes, dict[str, Any], bytes]:
    """A valid frame's magic, header and section bytes."""
    magic, _, size = PREFIX.unpack_from(data)
    start = PREFIX.size + size
    return magic, json.loads(data[PREFIX.size : start]), data[start:]


# -- what a decoder may answer -----------------------------------------------------------------
BYTES = (bytes, bytearray, memoryview)


def task_or_frame_error(data: bytes) -> tuple[ClientTask, str, str] | None:
    """The decoded task (checked to be valid), or None when the decoder raised FrameError."""
    try:
        task, client, run = task_from_bytes(data)
    except FrameError:
        return None
    assert isinstance(task, ClientTask) and isinstance(run, str)
    assert isinstance(client, str) and client
    for value in (task.round, task.attempt, task.seed):
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0
    assert isinstance(task.model, BYTES)  # bytes, or a view into the frame
    assert all(isinstance(k, str) and isinstance(v, BYTES) for k, v in task.extras.items())
    assert set(task.instructions) <= {client} and set(task.acks) <= {client}
    for work in task.instructions.values():
        assert isinstance(work, Instructions) and 0 < work.fraction <= 1
        assert work.max_steps is None or (isinstance(work.max_steps, int) and work.max_steps >= 0)
    for ack in task.acks.values():
        assert all(isinstance(v, int) and v >= 0 for v in ack) and len(ack) == 2
    # what the decoder accepted, the encoder writes again, and that decodes to the same task
    assert task_from_bytes(task_bytes(task, client, run)) == (task, client, run)
    return task, client, run


def reply_or_frame_error(data: bytes) -> tuple[ClientReply, dict[str, Any]] | None:
    """The decoded reply (checked to be valid), or None when the decoder raised FrameError."""
    try:
        reply, header = reply_from_bytes(data)
    except FrameError:
        return None
    assert isinstance(reply, ClientReply)
    assert isinstance(reply.client_id, str) and reply.client_id
    assert all(isinstance(k, str) and isinstance(v, BYTES) for k, v in reply.payloads.items())
    assert isinstance(reply.weight, float)  # NaN and the infinities too: screening rejects them
    if not math.isfinite(reply.weight):
        return reply, header  # (json reads NaN and Infinity; the encoder never writes them)
    assert all(
        isinstance(k, str) and isinstance(v, float) and math.isfinite(v)
        for k, v in reply.metrics.items()
    )
    for key in ("round", "attempt"):
        assert isinstance(header[key], int) and header[key] >= 0
    assert isinstance(header["run"], str)
    again = reply_to_bytes(
        reply, round_=header["round"], attempt=header["attempt"], run_id=header["run"]
    )
    assert reply_from_bytes(again)[0] == reply
    return reply, header


# -- round trips ---------------------------------------------------------------------------------
@FUZZ
@given(tasks())
def test_a_task_round_trips_exactly(case: tuple[ClientTask, str, str]) -> None:
    task, client, run = case
    data = task_bytes(task, client, run)
    assert task_from_bytes(data) == (task, client, run)
    assert task_from_bytes(bytearray(data)) == (task, client, run)
    assert task_from_bytes(memoryview(data)) == (task, client, run)


def test_a_task_frame_carries_only_its_clients_instructions_and_ack() -> None:
    task = ClientTask(
        round=3,
        attempt=1,
        seed=7,
        model=b"\x00\x01model",
        extras={"c": b"cv"},
        instructions={"a": Instructions(0.5, 3, True), "b": Instructions(0.25)},
        acks={"a": (2, 0), "b": (1, 1)},
    )
    got, client, run = task_from_bytes(task_bytes(task, "a", "run-1"))
    assert (client, run) == ("a", "run-1")
    assert got == task.only(["a"])


@FUZZ
@given(replies())
def test_a_reply_round_trips_exactly(case: tuple[ClientReply, int, int, str]) -> None:
    reply, round_, attempt, run = case
    data = reply_to_bytes(reply, round_=round_, attempt=attempt, run_id=run)
    got, header = reply_from_bytes(data)
    assert got == reply
    assert all(got.payloads[k] == v for k, v in reply.payloads.items())
    assert math.copysign(1, got.weight) == math.copysign(1, reply.weight)  # -0.0 stays -0.0
    assert (header["round"], header["attempt"], header["run"]) == (round_, attempt, run)


# -- arbitrary bytes -----------------------------------------------------------------------------
@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_task_or_a_frame_error(data: bytes) -> None:
    task_or_frame_error(data)
    reply_or_frame_error(data)


@FUZZ
@given(st.sampled_from([TASK_MAGIC, REPLY_MAGIC]), st.integers(0, 2**32 - 1), st.binary())
def test_arbitrary_bytes_behind_a_valid_prefix_decode_or_are_a_frame_error(
    magic: bytes, size: int, rest: bytes
) -> None:
    data = frame(magic, b"", rest, size=min(size, len(rest)) if size % 2 else size)
    task_or_frame_error(data)
    reply_or_frame_error(data)


# -- valid frames, mutated ------------------------------------------------------------------------
@st.composite
def valid_frames(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return task_bytes(*draw(tasks()))
    reply, round_, attempt, run = draw(replies())
    return reply_to_bytes(reply, round_=round_, attempt=attempt, run_id=run)


def decode_either(data: bytes) -> None:
    task_or_frame_error(data)
    reply_or_frame_error(data)


@FUZZ
@given(valid_frames(), st.data())
def test_a_cut_short_or_overlong_frame_is_a_frame_error(data: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, max(0, len(data) - 1)))
    longer = data + draw.draw(st.binary(min_size=1, max_size=8))
    for wrong in (data[:cut], longer):
        with pytest.raises(FrameError):
            task_from_bytes(wrong)
        with pytest.raises(FrameError):
            reply_from_bytes(wrong)


@FUZZ
@given(valid_frames(), st.data())
def test_a_frame_with_flipped_or_inserted_bytes_decodes_or_is_a_frame_error(
    data: bytes, draw: st.DataObject
) -> None:
    raw = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        at = draw.draw(st.integers(0, len(raw) - 1))
        if draw.draw(st.booleans()):
            raw[at] ^= draw.draw(st.integers(1, 255))
        else:
            raw[at:at] = draw.draw(st.binary(min_size=1, max_size=4))
    decode_either(bytes(raw))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**1023, max_value=10**400).flatmap(lambda n: st.sampled_from([n, -n]))
    | st.floats()  # NaN and the infinities too: Python's json reads and writes them
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
# JSON text json.dumps never writes but a peer may: a number too long for int(), a number
# too large for a float, nesting deeper than the parser's recursion limit
raw_json = st.sampled_from(
    [
        "1" * 5000,
        "-" + "9" * 4400,
        "1e999",
        "-1e999",
        "Infinity",
        "NaN",
        "1" + "0" * 400,
        "[" * 3000 + "]" * 3000,
        '{"a":' * 3000 + "0" + "}" * 3000,
        "1.5",
        '"\\ud800"',
    ]
)
KEYS = {
    TASK_MAGIC: [
        "client",
        "run",
        "round",
        "attempt",
        "seed",
        "instructions",
        "ack",
        "sections",
        ("instructions", "fraction"),
        ("instructions", "max_steps"),
        ("instructions", "drop"),
        ("ack", 0),
        ("ack", 1),
    ],
    REPLY_MAGIC: [
        "client",
        "run",
        "round",
        "attempt",
        "weight",
        "metrics",
        "sections",
        ("metrics", "m"),
    ],
}
RAW = "\x00raw\x00"


def edited(data: bytes, key: Any, value: Any, raw: str | None) -> bytes:
    """``data`` with header field ``key`` set to ``value`` (or to the JSON text ``raw``)."""
    magic, header, sections = split(data)
    parent, name = (header, key) if isinstance(key, str) else (header, key[0])
    if not isinstance(key, str):
        if not isinstance(header.get(key[0]), dict | list):
            header[key[0]] = {} if isinstance(key[1], str) else [0, 0]
        parent, name = header[key[0]], key[1]
    parent[name] = RAW if raw is not None else value
    text = json.dumps(header)
    if raw is not None:
        text = text.replace(json.dumps(RAW), raw)
    return frame(magic, text.encode(), sections)


TASK = task_bytes(
    ClientTask(0, 0, 0, b"model", {}, {"a": Instructions(0.5, 2)}, {"a": (0, 0)}), "a", "r"
)
REPLY = reply_to_bytes(
    ClientReply("a", {"delta": b"d"}, 1.0, {"m": 0.5}), round_=0, attempt=0, run_id="r"
)


@FUZZ
@given(valid_frames(), st.data())
def test_a_frame_with_an_edited_header_decodes_or_is_a_frame_error(
    data: bytes, draw: st.DataObject
) -> None:
    magic = data[:4]
    key = draw.draw(st.sampled_from(KEYS[magic]))
    if draw.draw(st.booleans()):
        decode_either(edited(data, key, None, draw.draw(raw_json)))
    else:
        decode_either(edited(data, key, draw.draw(json_values), None))
    if draw.draw(st.booleans()):  # and one more field, edited at the top level
        other = draw.draw(st.sampled_from([k for k in KEYS[magic] if isinstance(k, str)]))
        decode_either(edited(edited(data, key, 1, None), other, draw.draw(json_values), None))


HOSTILE = {  # one header field set to JSON text that a peer may send, and that must not crash
    "task max_steps = Infinity": (TASK, ("instructions", "max_steps"), "Infinity"),
    "task max_steps = 1e999": (TASK, ("instructions", "max_steps"), "1e999"),
    "task fraction = a 400-digit integer": (TASK, ("instructions", "fraction"), "1" + "0" * 400),
    "task round = a 5000-digit literal": (TASK, "round", "1" * 5000),
    "task seed nested 3000 deep": (TASK, "seed", "[" * 3000 + "]" * 3000),
    "reply weight = a 400-digit integer": (REPLY, "weight", "1" + "0" * 400),
    "reply metric = a 400-digit integer": (REPLY, ("metrics", "m"), "1" + "0" * 400),
    "reply metrics nested 3000 deep": (REPLY, "metrics", '{"a":' * 3000 + "0" + "}" * 3000),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_a_hostile_header_field_is_a_frame_error(case: str) -> None:
    data, key, raw = HOSTILE[case]
    with pytest.raises(FrameError):
        (task_from_bytes if data[:4] == TASK_MAGIC else reply_from_bytes)(
            edited(data, key, None, raw)
        )


@FUZZ
@given(valid_frames(), st.data())
def test_wrong_or_huge_section_lengths_are_a_frame_error(data: bytes, draw: st.DataObject) -> None:
    magic, header, sections = split(data)
    listed = header["sections"]
    if not listed:
        listed.append(["model" if magic == TASK_MAGIC else "delta", 0])
    i = draw.draw(st.integers(0, len(listed) - 1))
    listed[i][1] = draw.draw(
        st.integers(-5, len(sections) + 5)
        | st.sampled_from([2**31, 2**32, 2**63, 2**64 + 1, 10**30, 10**100])
        | st.floats(0, 100)
        | st.sampled_from([None, "3", True, [1]])
    )
    if draw.draw(st.booleans()):  # a section listed twice, or one not listed
        listed.append(list(listed[0]) if draw.draw(st.booleans()) else ["spare", 2])
    decode_either(frame(magic, json.dumps(header).encode(), sections))


@FUZZ
@given(valid_frames(), st.integers(0, 2**32 - 1), st.integers(0, 255))
def test_a_wrong_declared_header_length_or_version_is_a_frame_error(
    data: bytes, size: int, version: int
) -> None:
    magic, _, _ = PREFIX.unpack_from(data)
    body = data[PREFIX.size :]
    decode_either(PREFIX.pack(magic, VERSION, size) + body)
    decode_either(PREFIX.pack(magic, version, len(body)) + body)


def test_the_header_limit_is_enforced_on_both_sides() -> None:
    big = MAX_HEADER + 1
    with pytest.raises(FrameError, match="does not fit"):
        task_from_bytes(frame(TASK_MAGIC, b" " * big))
    with pytest.raises(ValueError, match="exceeds"):
        reply_to_bytes(ClientReply("a", {}, 1.0, {"m" * big: 1.0}), round_=0, attempt=0, run_id="r")


def test_frames_are_not_interchangeable() -> None:
    with pytest.raises(FrameError, match="not a fedlake task frame"):
        task_from_bytes(REPLY)
    with pytest.raises(FrameError, match="not a fedlake reply frame"):
        reply_from_bytes(TASK)
    assert struct.unpack_from("<4s", TASK)[0] == TASK_MAGIC


# -- the registry's verify -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Credential]:
    certs = make_certs(tmp_path_factory.mktemp("certs") / "certs", ["alice", "bob"])
    revoke(certs, "bob")
    return Registry(certs / "clients.json"), Credential.load(certs / "clients" / "alice.json")


# what an ASGI server hands the app: header bytes read as latin-1 (no CR, LF or NUL)
header_text = st.text(st.characters(max_codepoint=255, exclude_characters="\r\n\x00"), max_size=90)
request_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)


@FUZZ
@given(
    st.data(),
    st.sampled_from(["alice", "bob", "carol", ""]) | header_text,
    st.sampled_from(["GET", "PUT", "POST"]) | request_text,
    request_text,
    request_text,
    st.binary(max_size=20),
)
def test_verify_answers_a_client_or_an_auth_error(
    registry: tuple[Registry, Credential],
    draw: st.DataObject,
    client: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
) -> None:
    reg, alice = registry
    signed = alice.headers(method, path, query, body)
    headers: dict[str, str] = {}
    for field, name in HEADERS.items():
        choice = draw.draw(st.sampled_from(["signed", "arbitrary", "absent"]), label=field)
        if choice == "signed":
            headers[name] = client if field == "client" else signed[name]
        elif choice == "arbitrary":
            headers[name] = draw.draw(header_text, label=field)
    try:
        got = reg.verify(method, path, query, headers, body_digest(body))
    except AuthError as exc:
        assert exc.status in (401, 403, 503) and exc.reason
        return
    # accepted: only alice's own signature over exactly this request does that
    assert got == "alice" and headers == signed


@pytest.mark.parametrize("field", list(HEADERS))
def test_verify_refuses_a_non_ascii_header_value_with_an_auth_error(
    registry: tuple[Registry, Credential], field: str
) -> None:
    """HTTP carries header bytes 0x80-0xFF (obs-text); the app reads them as latin-1."""
    reg, alice = registry
    headers = alice.headers("GET", "/v1/heartbeat", "", b"")
    headers[HEADERS[field]] = "\xe9" * (1 if field == "client" else 64)
    with pytest.raises(AuthError):
        reg.verify("GET", "/v1/heartbeat", "", headers, body_digest(b""))


def test_verify_accepts_a_good_request_once(registry: tuple[Registry, Credential]) -> None:
    reg, alice = registry
    headers = alice.headers("PUT", "/v1/x", "a=1", b"body")
    assert reg.verify("PUT", "/v1/x", "a=1", headers, body_digest(b"body")) == "alice"
    with pytest.raises(AuthError, match="replayed"):
        reg.verify("PUT", "/v1/x", "a=1", headers, body_digest(b"body"))


def test_an_unreadable_credential_file_is_a_value_error(tmp_path: Path) -> None:
    for text in ("", "{}", '{"client_id": "a", "private_key": "nope"}', "[1]"):
        (tmp_path / "c.json").write_text(text)
        with pytest.raises(ValueError):
            Credential.load(tmp_path / "c.json")
