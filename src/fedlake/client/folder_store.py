"""Client state in a folder on the client's own machine: one file per client, atomic, no pickle.

A record file is an uncompressed zip: ``record.json`` holds the structure (with a format
marker, a version and the exact client id) and ``arrays/<i>.npy`` the numpy arrays and numpy
scalars it refers to. The format is handwritten rather than taken from a library because
pickle (and what builds on it: ``np.save`` of object arrays, joblib, ``torch.save``) runs code
from the file, which is unsafe for files this process may not have written, and ``np.savez``
alone cannot hold nested dicts, lists and tuples.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_to_bytes

import numpy as np
from numpy.lib import format as npy

from fedlake.client.stores import Record

__all__ = ["FolderStateStore", "StoreError"]

FORMAT = "fedlake-client-record"
VERSION = 1
_DOC = "record.json"
_KINDS = "biufc"  # numpy dtype kinds kept: bool, signed and unsigned int, float, complex
# Upper case is escaped too, so that ids differing only in case stay apart on case-blind disks.
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_STEM = 160  # longer encodings are cut and end in a sha256 of the id
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
# What reading a damaged or foreign file can raise (RuntimeError covers RecursionError).
_DAMAGE = (zipfile.BadZipFile, KeyError, ValueError, TypeError, EOFError, OSError, RuntimeError)


class StoreError(ValueError):
    """A file in the store that cannot be read as a fedlake client record."""


def _check_id(client_id: object) -> None:
    if not isinstance(client_id, str) or not client_id:
        raise ValueError(f"client_id must be a non-empty str, got {client_id!r}")


def _file_name(client_id: str) -> str:
    """The record file's name: ``client-<percent-encoded id>.zip``, hashed past 160 characters."""
    _check_id(client_id)
    raw = client_id.encode("utf-8", "surrogatepass")
    stem = "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)
    if len(stem) > _MAX_STEM:
        head = stem[:100]
        head = head[: head.rindex("%")] if "%" in head[-2:] else head  # no cut escapes
        stem = f"{head}~{hashlib.sha256(raw).hexdigest()}"
    return f"client-{stem}.zip"


def _id_in_name(name: str) -> str | None:
    """The client id a record file's name spells out; None for other names and hashed ones."""
    if not (name.startswith("client-") and name.endswith(".zip")) or "~" in name:
        return None
    try:
        client_id = unquote_to_bytes(name[7:-4]).decode("utf-8", "surrogatepass")
        return client_id if _file_name(client_id) == name else None  # only canonical names
    except ValueError:
        return None


def _encode(value: Any, path: str, arrays: list[np.ndarray]) -> Any:
    """The JSON node for ``value``; its arrays and numpy scalars are appended to ``arrays``."""
    kind = type(value)
    if value is None or kind in (bool, str):
        return value
    if kind is int:
        return value if -(2**63) < value < 2**63 else {"int": hex(value)}
    if kind is float:
        return value if math.isfinite(value) else {"float": repr(value)}
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise ValueError(f"{path}: dict keys must be str, got {type(key).__name__} {key!r}")
        return {"dict": {k: _encode(v, f"{path}[{k!r}]", arrays) for k, v in value.items()}}
    if kind in (list, tuple):
        items = [_encode(item, f"{path}[{i}]", arrays) for i, item in enumerate(value)]
        return items if kind is list else {"tuple": items}
    if kind is np.ndarray or isinstance(value, np.generic):
        if value.dtype.kind not in _KINDS:
            raise ValueError(
                f"{path}: numpy dtype {value.dtype} is not supported "
                "(expected a numeric or bool dtype)"
            )
        arrays.append(np.asarray(value))
        return {"array" if kind is np.ndarray else "scalar": f"arrays/{len(arrays) - 1}.npy"}
    raise ValueError(
        f"{path}: unsupported type {kind.__name__} (expected dict, list, tuple, "
        "numpy array or scalar, int, float, bool, str or None)"
    )


def _decode(node: Any, read: Callable[[str], np.ndarray]) -> Any:
    """The value a JSON node stands for; ``read`` gives the array in a zip member."""
    if node is None or type(node) in (bool, int, float, str):
        return node
    if type(node) is list:
        return [_decode(item, read) for item in node]
    if type(node) is dict and len(node) == 1:
        ((tag, body),) = node.items()
        if tag == "dict" and type(body) is dict:
            return {key: _decode(value, read) for key, value in body.items()}
        if tag == "tuple" and type(body) is list:
            return tuple(_decode(item, read) for item in body)
        if tag == "int" and type(body) is str:
            return int(body, 16)
        if tag == "float" and type(body) is str and body in _NONFINITE:
            return _NONFINITE[body]
        if tag in ("array", "scalar") and type(body) is str:
            array = read(body)
            if tag == "array" or array.ndim == 0:
                return array if tag == "array" else array[()]
    raise ValueError(f"unexpected node {json.dumps(node)[:60]}")


def _member(archive: zipfile.ZipFile, name: str) -> IO[bytes]:
    if archive.getinfo(name).compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"member {name} is compressed")
    return archive.open(name)


def _read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """The array in member ``name``: checked numeric and whole before reading, never unpickled."""
    with _member(archive, name) as fh:
        version = npy.read_magic(fh)
        header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}[version]
        shape, _, dtype = header(fh)
        if dtype.kind not in _KINDS:
            raise ValueError(f"member {name} holds an array of dtype {dtype}")
        if fh.tell() + math.prod(shape) * dtype.itemsize != archive.getinfo(name).file_size:
            raise ValueError(f"member {name} is not the size its header says")
        fh.seek(0)
        return npy.read_array(fh, allow_pickle=False)


def _read(path: Path, *, with_record: bool) -> tuple[str, dict[str, Any] | None]:
    """The client id and (if asked) the record in the file at ``path``."""
    with open(path, "rb") as fh:  # a missing or unreadable file is not a damaged one
        try:
            with zipfile.ZipFile(fh) as archive, _member(archive, _DOC) as doc_fh:
                doc = json.load(doc_fh)
                if type(doc) is not dict or doc.get("format") != FORMAT:
                    raise ValueError("no fedlake format marker")
                if doc.get("version") != VERSION:
                    raise StoreError(
                        f"{path} is a fedlake client record of version {doc.get('version')!r}, "
                        f"which this fedlake cannot read (it reads version {VERSION}); upgrade "
                        "fedlake, or delete the file to start that client fresh"
                    )
                client_id, record = doc["client_id"], None
                _check_id(client_id)
                if with_record:
                    record = _decode(doc["record"], lambda name: _read_npy(archive, name))
                    if type(record) is not dict:
                        raise ValueError("the record is not a dict")
                return client_id, record
        except StoreError:
            raise
        except _DAMAGE as err:
            raise StoreError(
                f"{path} is not a fedlake client record ({type(err).__name__}: {err}); "
                "delete it to start that client fresh"
            ) from err


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX: Windows cannot open a folder to sync it)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # some file systems (network ones) cannot sync a folder
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


class FolderStateStore:
    """Each client's record in its own file under ``root``; saves are atomic and durable.

    Records hold dicts (str keys), lists, tuples, numpy arrays and scalars of numeric or bool
    dtype, int, float, bool, str and None, nested; they load back exactly: tuples as tuples,
    arrays with their dtype, shape and bits (as fresh writable arrays), numpy scalars as the
    same numpy scalar type (``np.float32(1.5)`` loads as ``np.float32(1.5)``, not a float). A
    top-level Mapping loads as a dict. Subclasses of these types are refused: they would load
    as their base type. The folder (mode 0o700) and each file (0o600) are the client's alone.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"FolderStateStore({str(self.root)!r})"

    def path(self, client_id: str) -> Path:
        """The file that holds (or would hold) ``client_id``'s record."""
        return self.root / _file_name(client_id)

    def load(self, client_id: str) -> Record | None:
        """The client's record, or None; StoreError if its file is damaged or foreign."""
        path = self.path(client_id)
        try:
            stored, record = _read(path, with_record=True)
        except FileNotFoundError:
            return None
        if stored != client_id:
            raise StoreError(
                f"{path} holds the record of client {stored!r}, not {client_id!r}; "
                "delete it to start that client fresh"
            )
        return record

    def save(self, client_id: str, record: Record) -> None:
        """Replace the client's record: a crash at any point leaves the old or the new one."""
        path = self.path(client_id)
        if not isinstance(record, Mapping):
            raise ValueError(f"record must be a mapping with str keys, got {type(record).__name__}")
        arrays: list[np.ndarray] = []
        node = _encode(dict(record), "record", arrays)
        doc = {"format": FORMAT, "version": VERSION, "client_id": client_id, "record": node}
        text = json.dumps(doc, allow_nan=False)
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            _fsync_dir(self.root.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".partial", dir=self.root)
        try:
            with open(fd, "wb") as fh:
                with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as archive:
                    archive.writestr(_DOC, text)
                    for i, array in enumerate(arrays):
                        big = array.nbytes > 2**30  # zip64 sizes, decided before writing
                        with archive.open(f"arrays/{i}.npy", "w", force_zip64=big) as out:
                            npy.write_array(out, array, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.root)

    def delete(self, client_id: str) -> None:
        """Remove the client's record (nothing happens when it has none)."""
        try:
            self.path(client_id).unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.root)

    def client_ids(self) -> list[str]:
        """The ids of the clients with a record, sorted; stray temporary files are ignored."""
        if not self.root.is_dir():
            return []
        ids = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.is_file():
                    continue
                client_id = _id_in_name(entry.name)
                if client_id is None and entry.name.startswith("client-") and "~" in entry.name:
                    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                        client_id, _ = _read(Path(entry.path), with_record=False)  # hashed name
                if client_id is not None and _file_name(client_id) == entry.name:
                    ids.append(client_id)
        return sorted(ids)

    def __contains__(self, client_id: object) -> bool:
        return isinstance(client_id, str) and client_id != "" and self.path(client_id).is_file()
