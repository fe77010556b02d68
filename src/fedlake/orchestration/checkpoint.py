"""Atomic checkpoints of a run, written after every completed round."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from fedlake.core.state import ServerState
from fedlake.orchestration.sinks import RunSinks

CHECKPOINT = "checkpoint.pkl"
FLUSHED = "checkpoint.flushed"  # the token of the checkpoint whose pending rows are written
HISTORY = "history.json"  # the rounds so far, as JSON: readable without unpickling anything
FORMAT_VERSION = 3  # 2: client_states (error-feedback residuals); 3: no client state


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    state: ServerState
    history: list[dict[str, Any]]
    run_id: str
    tracker_run_id: str | None = None
    best_round: int | None = None
    best_accuracy: float | None = None
    best_loss: float | None = None
    best_params: Any = None
    finished: bool = False
    stop_reason: str | None = None
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # snapshots of the components that must resume with the run (the simulator's client
    # stores), by name; the server itself keeps no client's state
    components: dict[str, bytes] = field(default_factory=dict)
    # per client, the (round, attempt) of its last contribution the server aggregated
    acks: dict[str, tuple[int, int]] = field(default_factory=dict)
    # a format-2 checkpoint's client states, for the simulator's stores to take over
    legacy_client_states: dict[str, Any] | None = None
    version: int = FORMAT_VERSION
    # names this save's pending rows: FLUSHED holding it says they were written (a marker
    # of a few bytes instead of saving the whole checkpoint, model included, again)
    pending_token: str | None = None


def _write_atomically(
    path: Path,
    data: bytes | Callable[[BinaryIO], None],
    *,
    durable: bool = True,
    reuse: bool = False,
) -> Path:
    """Write ``data`` to ``path`` via a temp file and a rename: a kill never leaves half a file.

    ``data`` is the bytes, or a function that writes them to the open file (a pickle
    streamed straight to disk: a 100 MB model is not first copied into one bytes object).
    ``durable`` also waits for the disk (fsync): for the checkpoint, not for derived files.
    ``reuse``: write over the file the previous save replaced (kept as ``.spare``), not a
    new one: its cached pages are written again instead of the kernel freeing 100 MB of
    page cache and finding 100 MB more every round (~0.25 s per 100 MB on a VM whose
    memory is backed on first touch, a few ms elsewhere).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    spare = path.with_suffix(".spare")
    if reuse and spare.exists():
        if _same_file(spare, path):  # a kill between link and rename: it IS the checkpoint
            spare.unlink()
        else:
            os.replace(spare, tmp)
    with open(tmp, "r+b") if reuse and tmp.exists() else open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data)
        f.truncate()  # what an older, longer file held past the end goes
        f.flush()
        if durable:
            os.fsync(f.fileno())
    if reuse and path.exists():
        # the file being replaced becomes the next save's spare; where there are no hard
        # links (some mounted volumes) the next save writes a new file
        with contextlib.suppress(OSError):
            os.link(path, spare)
    os.replace(tmp, path)
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file (hard links of one inode)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def history_json(history: list[dict[str, Any]]) -> bytes:
    """The history as a JSON array, one round per line (json's fast C encoder, no indent)."""
    lines = ",\n".join(json.dumps(h, default=str) for h in history)
    return f"[\n{lines}\n]\n".encode()


HISTORY_EVERY_S = 1.0  # history.json is refreshed at most this often during a run
_history_written: dict[Path, float] = {}  # run folder -> when its history.json was written
_history_behind: dict[Path, int] = {}  # run folder -> rounds its last checkpoint holds, when
# history.json was left behind by the throttle


def save_checkpoint(ckpt: Checkpoint, run_dir: Path, *, history: bool = True) -> Path:
    """Write ``ckpt`` atomically, and its history as JSON beside it (for reports and people).

    ``history=False`` skips the JSON when the caller knows it has not changed since the
    last save (e.g. a save that only clears the pending rows). During a run the JSON is
    refreshed at most every second (rewriting it every round of a fast simulation cost
    more than the rounds); a finished run's is always complete.
    """
    now = time.monotonic()
    if (
        history
        and not ckpt.finished
        and now - _history_written.get(run_dir, -1e9) < HISTORY_EVERY_S
    ):
        _history_behind[run_dir] = len(ckpt.history)
        history = False
    if history:
        _history_written[run_dir] = now
        _history_behind.pop(run_dir, None)
        _write_atomically(run_dir / HISTORY, history_json(ckpt.history), durable=False)
    return _write_atomically(
        run_dir / CHECKPOINT,
        lambda f: pickle.dump(ckpt, f, protocol=pickle.HIGHEST_PROTOCOL),
        reuse=True,
    )


def catch_up_history(ckpt: Checkpoint, run_dir: Path) -> None:
    """Bring history.json up to the last saved checkpoint if the throttle left it behind.

    Only rounds a checkpoint holds are written (never rows of an unsaved round), and a
    failure to write is ignored: the checkpoint is the record, and :func:`read_history`
    prefers it when it is newer.
    """
    saved = _history_behind.pop(run_dir, None)
    if saved is None:
        return
    try:
        _write_atomically(run_dir / HISTORY, history_json(ckpt.history[:saved]), durable=False)
        _history_written[run_dir] = time.monotonic()
    except OSError:
        pass


def read_history(run_dir: Path) -> list[dict[str, Any]] | None:
    """A run folder's history: history.json, or the checkpoint's when that is newer (a run
    killed within a second of its last rounds); None when the folder has neither."""
    path, ckpt_path = run_dir / HISTORY, run_dir / CHECKPOINT
    if ckpt_path.exists() and (
        not path.exists() or ckpt_path.stat().st_mtime > path.stat().st_mtime
    ):
        ckpt = load_checkpoint(run_dir)
        if ckpt is not None:
            return list(ckpt.history)
    if not path.exists():
        return None
    history: list[dict[str, Any]] = json.loads(path.read_text())
    return history


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """Read the checkpoint of ``run_dir``, or None when there is none."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    with open(path, "rb") as f:
        ckpt = pickle.load(f)  # our own file, written by save_checkpoint
    if not isinstance(ckpt, Checkpoint) or ckpt.version not in (1, 2, FORMAT_VERSION):
        raise ValueError(f"{path} is not a fedlake checkpoint of format {FORMAT_VERSION}")
    if ckpt.version < FORMAT_VERSION:
        _upgrade(ckpt)
    token = getattr(ckpt, "pending_token", None)
    if ckpt.pending and token is not None and _flushed(run_dir) == token:
        ckpt.pending = {}  # written before the run stopped: nothing to replay
    return ckpt


def _flushed(run_dir: Path) -> str | None:
    try:
        return (run_dir / FLUSHED).read_text().strip()
    except OSError:
        return None


def _upgrade(ckpt: Checkpoint) -> None:
    """Bring a format-1 or -2 checkpoint to format 3, in place.

    Format 2 kept the simulated clients' states in the checkpoint and SCAFFOLD's control
    in ``ServerState.control``; format 3 keeps the control as the ``scaffold`` server
    plugin's state and hands the clients' states to the simulator's stores.
    """
    state = ckpt.state
    legacy = state.__dict__
    control = legacy.pop("control", None)
    if "plugins" not in legacy:
        object.__setattr__(state, "plugins", {} if control is None else {"scaffold": control})
    clients = ckpt.__dict__.pop("client_states", None) or {}
    ckpt.__dict__.setdefault("components", {})
    ckpt.__dict__.setdefault("acks", {})
    ckpt.legacy_client_states = clients or None
    ckpt.version = FORMAT_VERSION


def commit(
    ckpt: Checkpoint,
    state: ServerState,
    pending: dict[str, list[dict[str, Any]]],
    sinks: RunSinks,
    run_dir: Path,
) -> None:
    """Checkpoint with the rows pending, write them, then mark them as written.

    A kill between the checkpoint and the mark replays the rows on resume (the rounds
    table is checked for them). With no store and no tracker there is nothing to lose
    between the two: one save, no mark.
    """
    ckpt.state = state
    if sinks.store is None and sinks.tracker is None:
        ckpt.pending, ckpt.pending_token = {}, None
        save_checkpoint(ckpt, run_dir)
        return
    ckpt.pending, ckpt.pending_token = pending, uuid.uuid4().hex
    save_checkpoint(ckpt, run_dir)
    sinks.flush(pending)
    _write_atomically(run_dir / FLUSHED, ckpt.pending_token.encode())
    ckpt.pending = {}


def open_sinks(
    sinks: RunSinks | None, ckpt: Checkpoint, name: str, params: dict[str, Any], *, resume: bool
) -> RunSinks:
    """The run's sinks, started: tracker run opened or resumed, rows a kill left replayed,
    and the start (or resume) in the audit log."""
    sinks = sinks or RunSinks(run_id=ckpt.run_id)
    sinks.run_id = ckpt.run_id
    if sinks.tracker is not None:
        ckpt.tracker_run_id = sinks.tracker.start(name, params, resume_id=ckpt.tracker_run_id)
    if ckpt.pending:  # killed between checkpoint and flush: replay, never lose rows
        sinks.flush(ckpt.pending, replay=True)
        ckpt.pending = {}
    action = "resume" if resume else "start"
    row = sinks.audit_row(f"run.{action}", name, {"round": ckpt.state.round, **params})
    sinks.flush({"audit": [row]})
    return sinks
