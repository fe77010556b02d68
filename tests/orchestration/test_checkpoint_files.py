"""The checkpoint is written over the previous save's file (its pages reused), and a kill
at any point of a save leaves a whole checkpoint behind: the old one or the new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedlake.orchestration import checkpoint as cp


def _save(path: Path, data: bytes) -> None:
    cp._write_atomically(path, data, reuse=True)


def test_the_replaced_file_is_written_again(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pkl"
    _save(path, b"a" * 5000)
    _save(path, b"b" * 3000)
    spare = path.with_suffix(".spare")
    assert path.read_bytes() == b"b" * 3000 and spare.read_bytes() == b"a" * 5000
    first = spare.stat().st_ino
    _save(path, b"c" * 4000)  # into the spare's file, cut to its new length
    assert path.read_bytes() == b"c" * 4000 and path.stat().st_ino == first
    assert spare.read_bytes() == b"b" * 3000


def test_a_kill_between_link_and_rename_never_overwrites_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pkl"
    _save(path, b"old" * 1000)

    def killed(src: object, dst: object) -> None:  # the process dies before the rename
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(cp.os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            _save(path, b"new" * 1000)
    spare = path.with_suffix(".spare")
    assert os.path.samefile(spare, path)  # the spare is the checkpoint itself now
    _save(path, b"next" * 10)  # must not write into the checkpoint's own file
    assert path.read_bytes() == b"next" * 10
    assert not spare.exists() or spare.read_bytes() == b"old" * 1000


def test_a_kill_while_writing_leaves_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pkl"
    _save(path, b"one" * 1000)
    _save(path, b"two" * 1000)

    def half(f: object) -> None:
        f.write(b"garbage")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cp._write_atomically(path, half, reuse=True)
    assert path.read_bytes() == b"two" * 1000
    _save(path, b"three" * 10)
    assert path.read_bytes() == b"three" * 10


def test_without_hard_links_a_new_file_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError("operation not permitted")

    monkeypatch.setattr(cp.os, "link", no_links)
    path = tmp_path / "checkpoint.pkl"
    for i in range(3):
        _save(path, bytes([i]) * 100)
        assert path.read_bytes() == bytes([i]) * 100
    assert not path.with_suffix(".spare").exists()
