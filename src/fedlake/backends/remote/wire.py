"""Tasks and replies as bytes: one self-describing frame each, never pickle, never JSON floats.

A frame is ``magic (4) | version (u8) | header length (u32 LE) | header | sections``: the
header is UTF-8 JSON (scalars, strings and the sections' names and lengths, at most
64 KiB), the sections are raw bytes one after another (the encoded model, its extras, the
upload payloads), so a 100 MB model travels as one unbroken section and is never copied
into JSON. :func:`task_parts` and :func:`reply_parts` return the pieces of a frame without
joining them, so the server streams one shared model to every client with no copy per
client and a client uploads its update with no copy at all. A frame's header ends in the
spaces (JSON whitespace) that put its first section's plain float32 values (a task's
model, a reply's first payload) 16-byte aligned in the frame, so the receiver decodes them
in place from the buffer it read the frame into. Every
decoder checks every length, name and type and raises :class:`FrameError` (a
``CodecError``) saying what is wrong.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Mapping
from typing import Any

from fedlake.compression.messages import ALIGN, payload_values_offset, values_offset
from fedlake.core.codec import CodecError
from fedlake.core.extras import require
from fedlake.core.task import ClientReply, ClientTask, Instructions, SecureStage

__all__ = [
    "REPLY_MAGIC",
    "TASK_MAGIC",
    "FrameError",
    "model_checksum",
    "reply_from_bytes",
    "reply_parts",
    "reply_to_bytes",
    "stage_number",
    "task_from_bytes",
    "task_parts",
]

TASK_MAGIC, REPLY_MAGIC = b"FLTK", b"FLRP"
VERSION = 1
PREFIX = struct.Struct("<4sBI")
MAX_HEADER = 64 * 1024
MAX_SECTIONS = 64
NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")  # fullmatch: no trailing newline
MODEL = "model"
INBOX = "inbox"  # the section of the client's own inbox entry (a secure stage's message)
STAGES = tuple(SecureStage)  # a secure attempt's stages, numbered 1.. on the wire (0: plain)


class FrameError(CodecError):
    """A task or reply frame that cannot be read (truncated, corrupt, another version)."""


def _frame(
    magic: bytes,
    header: dict[str, Any],
    sections: list[tuple[str, Any]],
    *,
    align: int | None = None,
) -> list[Any]:
    """The frame's pieces: its prefix and header as one bytes, then each section as a view.

    ``align``: an offset into the first section to place at a multiple of :data:`ALIGN`
    bytes into the frame (the header is padded with spaces to get there).
    """
    views = [(name, memoryview(data).cast("B")) for name, data in sections]
    header = {**header, "sections": [[name, len(view)] for name, view in views]}
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if align is not None:
        text += b" " * (-(PREFIX.size + len(text) + align) % ALIGN)
    if len(text) > MAX_HEADER:
        raise ValueError(f"frame header of {len(text)} bytes exceeds {MAX_HEADER}")
    return [PREFIX.pack(magic, VERSION, len(text)) + text, *(view for _, view in views)]


def _parse(
    data: bytes | bytearray | memoryview, magic: bytes
) -> tuple[dict[str, Any], dict[str, memoryview]]:
    view = memoryview(data)
    kind = "task" if magic == TASK_MAGIC else "reply"
    if len(view) < PREFIX.size:
        raise FrameError(f"{kind} frame of {len(view)} bytes is shorter than its prefix")
    got, version, size = PREFIX.unpack_from(view)
    if got != magic:
        raise FrameError(f"not a fedlake {kind} frame (magic {bytes(got)!r})")
    if version != VERSION:
        raise FrameError(f"{kind} frame of version {version}; this fedlake reads {VERSION}")
    if size > MAX_HEADER or PREFIX.size + size > len(view):
        raise FrameError(f"{kind} frame header of {size} bytes does not fit the frame")
    try:
        header = json.loads(bytes(view[PREFIX.size : PREFIX.size + size]))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, a number past
        # int()'s digit limit, nesting past the recursion limit
        raise FrameError(f"{kind} frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError(f"{kind} frame header must be an object")
    listed = header.pop("sections", None)
    if not isinstance(listed, list) or len(listed) > MAX_SECTIONS:
        raise FrameError(f"{kind} frame must list at most {MAX_SECTIONS} sections")
    sections: dict[str, memoryview] = {}
    pos = PREFIX.size + size
    for entry in listed:
        ok = isinstance(entry, list) and len(entry) == 2
        name, length = entry if ok else (None, None)
        if not (isinstance(name, str) and NAME.fullmatch(name) and _count(length)):
            raise FrameError(f"{kind} frame has a malformed section entry {entry!r}")
        if name in sections:
            raise FrameError(f"{kind} frame has section {name!r} twice")
        if pos + length > len(view):
            raise FrameError(f"{kind} frame is cut short inside section {name!r}")
        sections[name] = view[pos : pos + length]
        pos += length
    if pos != len(view):
        raise FrameError(f"{kind} frame has {len(view) - pos} bytes after its last section")
    return header, sections


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _float(value: Any) -> float | None:
    """A JSON number as a float; None for anything else, or an integer past a float's range."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _int(header: Mapping[str, Any], key: str, kind: str) -> int:
    value: Any = header.get(key)
    if not _count(value):
        raise FrameError(f"{kind} frame field {key!r} must be an integer >= 0, got {value!r}")
    return int(value)


def stage_number(task: ClientTask) -> int:
    """The wire's number of ``task``'s secure stage: 1 (advertise) to 4 (unmask), 0 for a
    plain task. The four stages of a secure attempt share its (round, attempt); this
    number tells their offers, URLs (``?stage=``) and replies apart."""
    stage = task.stage
    return 0 if stage is None else STAGES.index(stage) + 1


def _extra_section(name: str) -> bool:
    """Whether extra ``name`` travels as section ``x_<name>`` (else ``e<i>``, named in the
    header's ``extras`` list: names such as ``secagg.config`` are no section names)."""
    return NAME.fullmatch(f"x_{name}") is not None


def task_parts(task: ClientTask, client_id: str, run_id: str) -> list[Any]:
    """The frame of ``task`` for ``client_id`` as pieces (bytes and memoryviews) to send.

    It carries only that client's instructions, acknowledgement and inbox entry (a secure
    stage's message to it: never another client's).
    """
    work = task.instructions.get(client_id)
    ack = task.acks.get(client_id)
    extras = sorted(task.extras.items())
    plain = [(f"x_{k}", v) for k, v in extras if _extra_section(k)]
    named = [(k, v) for k, v in extras if not _extra_section(k)]
    sections = [(MODEL, task.model), *plain, *((f"e{i}", v) for i, (_, v) in enumerate(named))]
    mine = task.inbox.get(client_id)
    if mine is not None:
        sections.append((INBOX, mine))
    header = {
        "run": run_id,
        "client": client_id,
        "round": task.round,
        "attempt": task.attempt,
        "seed": task.seed,
        "instructions": None
        if work is None
        else {"fraction": work.fraction, "max_steps": work.max_steps, "drop": work.drop_partial},
        "ack": None if ack is None else list(ack),
    }
    if named:
        header["extras"] = [k for k, _ in named]
    return _frame(TASK_MAGIC, header, sections, align=values_offset(task.model))


def task_from_bytes(data: bytes | bytearray | memoryview) -> tuple[ClientTask, str, str]:
    """``(task, client_id, run_id)`` of a task frame."""
    header, sections = _parse(data, TASK_MAGIC)
    if MODEL not in sections:
        raise FrameError("task frame has no model section")
    client, run = header.get("client"), header.get("run")
    if not (isinstance(client, str) and client and isinstance(run, str)):
        raise FrameError("task frame must name its client and run")
    instructions: dict[str, Instructions] = {}
    work = header.get("instructions")
    if work is not None:
        try:
            instructions[client] = Instructions(
                fraction=float(work["fraction"]),
                max_steps=None if work["max_steps"] is None else int(work["max_steps"]),
                drop_partial=bool(work["drop"]),
            )
        except (TypeError, KeyError, ValueError, OverflowError) as exc:
            raise FrameError(f"task frame has malformed instructions: {exc}") from None
    acks = {}
    ack = header.get("ack")
    if ack is not None:
        if not (isinstance(ack, list) and len(ack) == 2 and all(_count(v) for v in ack)):
            raise FrameError(f"task frame has a malformed ack {ack!r}")
        acks[client] = (int(ack[0]), int(ack[1]))
    # views into ``data``: the model is not copied (the frame is kept alive by them)
    extras: dict[str, Any] = {k[2:]: v for k, v in sections.items() if k.startswith("x_")}
    named = header.get("extras", [])
    if not (isinstance(named, list) and all(isinstance(k, str) and k for k in named)):
        raise FrameError(f"task frame has a malformed extras list {named!r}")
    if len(named) > MAX_SECTIONS or len(set(named)) != len(named):
        raise FrameError("task frame names an extra twice")
    for i, name in enumerate(named):
        if f"e{i}" not in sections:
            raise FrameError(f"task frame lacks section 'e{i}' of extra {name!r}")
        if name in extras:
            raise FrameError(f"task frame has extra {name!r} twice")
        extras[name] = sections[f"e{i}"]
    inbox: dict[str, Any] = {} if INBOX not in sections else {client: sections[INBOX]}
    task = ClientTask(
        round=_int(header, "round", "task"),
        attempt=_int(header, "attempt", "task"),
        seed=_int(header, "seed", "task"),
        model=sections[MODEL],  # type: ignore[arg-type]  # a view: bytes-like, no copy
        extras=extras,
        instructions=instructions,
        acks=acks,
        inbox=inbox,
    )
    return task, client, run


def reply_parts(
    reply: ClientReply, *, round_: int, attempt: int, run_id: str, stage: int = 0
) -> tuple[list[bytes | memoryview], int]:
    """The frame of ``reply`` to attempt ``attempt`` of round ``round_`` of run ``run_id``, as
    pieces to send one after another (the header's bytes, then a view of each payload: no
    copy), and its length in bytes. ``stage``: the secure stage it answers (0: plain; see
    :func:`stage_number`)."""
    header: dict[str, Any] = {
        "run": run_id,
        "client": reply.client_id,
        "round": round_,
        "attempt": attempt,
        "weight": float(reply.weight),
        "metrics": {k: float(v) for k, v in reply.metrics.items()},
    }
    if stage:
        header["stage"] = int(stage)
    sections = sorted(reply.payloads.items())
    align = payload_values_offset(sections[0][1]) if sections else None
    parts = _frame(REPLY_MAGIC, header, sections, align=align)
    return parts, sum(len(p) for p in parts)


def reply_to_bytes(
    reply: ClientReply, *, round_: int, attempt: int, run_id: str, stage: int = 0
) -> bytes:
    """The frame of ``reply`` as one bytes (:func:`reply_parts`, joined)."""
    parts, _ = reply_parts(reply, round_=round_, attempt=attempt, run_id=run_id, stage=stage)
    return b"".join(parts)


def reply_from_bytes(data: bytes | bytearray | memoryview) -> tuple[ClientReply, dict[str, Any]]:
    """``(reply, header)`` of a reply frame; the header names its run, round, attempt and
    stage (0 when absent: a plain reply)."""
    header, sections = _parse(data, REPLY_MAGIC)
    client = header.get("client")
    if not (isinstance(client, str) and client):
        raise FrameError("reply frame must name its client")
    weight = _float(header.get("weight"))
    if weight is None:
        raise FrameError(f"reply weight must be a number, got {header.get('weight')!r}")
    metrics = header.get("metrics")
    if not isinstance(metrics, dict):
        raise FrameError("reply metrics must map names to finite numbers")
    values: dict[str, float] = {}
    for name, raw in metrics.items():
        value = _float(raw)
        if not isinstance(name, str) or value is None or not math.isfinite(value):
            raise FrameError("reply metrics must map names to finite numbers")
        values[name] = value
    for key in ("round", "attempt"):
        _int(header, key, "reply")
    header.setdefault("stage", 0)
    if _int(header, "stage", "reply") > len(STAGES):
        raise FrameError(f"reply frame names stage {header['stage']}; there are {len(STAGES)}")
    if not isinstance(header.get("run"), str):
        raise FrameError("reply frame must name its run")
    payloads: dict[str, Any] = dict(sections)  # views into ``data``: no copy of the update
    reply = ClientReply(client, payloads, weight, values)
    return reply, header


def model_checksum(model: bytes | bytearray | memoryview) -> str:
    """The task model's checksum: xxh3-128 (TLS and the signatures already give integrity
    against tampering; this catches a torn or mangled transfer at ~13 GB/s, where SHA-256
    cost 63 ms of every 100 MB round on the critical path)."""
    xxhash = require("xxhash", extra="client", purpose="checking a task's model")
    return str(xxhash.xxh3_128_hexdigest(model))
