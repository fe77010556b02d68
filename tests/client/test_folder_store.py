"""FolderStateStore: exact round trips, refusals, atomic saves, damaged files, odd client ids."""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import random
import re
import tempfile
import zipfile
from collections import OrderedDict, namedtuple
from pathlib import Path
from types import MappingProxyType
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedlake.client import folder_store
from fedlake.client.folder_store import FolderStateStore, StoreError
from fedlake.client.stores import ClientStateStore

FAST = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def same(a: Any, b: Any) -> bool:
    """Exactly the same value: types, structure, dtypes, shapes and bits."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray | np.generic):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return a.hex() == b.hex()
    return bool(a == b)


@pytest.fixture
def store(tmp_path: Path) -> FolderStateStore:
    return FolderStateStore(tmp_path / "state")


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def doc(record: Any, client_id: str = "c", version: Any = 1) -> bytes:
    body = {"format": "fedlake-client-record", "version": version, "client_id": client_id}
    return json.dumps({**body, "record": record}).encode()


def npy(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=allow_pickle)
    return out.getvalue()


# --- round trips ---------------------------------------------------------------------------

EVERYTHING = {
    "none": None,
    "bools": [True, False],
    "ints": [0, -1, 2**63 - 1, 2**63, -(2**63), -(2**200) - 7, 10**5000],
    "floats": (0.0, -0.0, 1.5, 1e-310, 1e300, math.nan, math.inf, -math.inf, 0.1),
    "text": ["", "ünïcödé ☃", "a\x00b", "\ud800"],
    "nested": {"list": [[], (), {}, [(1,), [2]]], "tuple": ((), ([],), ({"x": None},))},
    "arrays": {
        "f32": np.array([1.5, -0.0, np.nan, np.inf, 1e-40], dtype=np.float32),
        "f16": np.array([[1, 2], [3, 4]], dtype=np.float16),
        "f64_big_endian": np.array([1.0, -2.5], dtype=">f8"),
        "longdouble": np.array([1.0, 2.0], dtype=np.longdouble),
        "c64": np.array([1 + 2j, -0.0 - 1j], dtype=np.complex64),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u64": np.array([2**64 - 1], dtype=np.uint64),
        "bool": np.array([[True], [False]]),
        "zero_d": np.array(3.25),
        "empty": np.zeros((0, 3), dtype=np.int32),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": np.arange(10)[::3],
    },
    "scalars": [np.float32(1.5), np.float64(-0.0), np.int64(3), np.bool_(True), np.uint8(255)],
    "complex_scalar": np.complex128(1j),
}


def test_every_supported_type_round_trips_exactly(store: FolderStateStore) -> None:
    store.save("c", EVERYTHING)
    loaded = store.load("c")
    assert same(loaded, EVERYTHING)
    assert loaded is not None
    assert type(loaded["scalars"][0]) is np.float32  # numpy scalars keep their numpy type
    fortran = loaded["arrays"]["fortran"]
    assert fortran.flags.writeable and np.array_equal(fortran, EVERYTHING["arrays"]["fortran"])


def test_is_a_client_state_store_and_a_mapping_record_loads_as_a_dict(store: FolderStateStore):
    assert isinstance(store, ClientStateStore)
    assert store.load("nobody") is None
    assert not store.root.exists()  # the folder is made on first save
    store.save("c", {"x": 1})
    store.save("c", {"y": [2]})  # replaces
    assert store.load("c") == {"y": [2]}
    store.save("c", MappingProxyType({"z": 3}))
    assert same(store.load("c"), {"z": 3})  # any top-level Mapping loads as a dict


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(),
    st.text(max_size=5),
    hnp.arrays(
        st.sampled_from(["?", "i1", "u2", "<i8", ">i4", "f2", "<f4", ">f8", "c8", "c16"]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3),
    ),
    hnp.from_dtype(np.dtype("f4")).map(np.float32),
    hnp.from_dtype(np.dtype("i8")).map(np.int64),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=8,
)
records = st.dictionaries(st.text(max_size=6), values, max_size=4)


@FAST
@given(record=records)
def test_generated_records_round_trip_exactly(record: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = FolderStateStore(root)
        store.save("c", record)
        assert same(store.load("c"), record)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"pending": {"states": {"x": {1, 2}}}},
            "record['pending']['states']['x']: unsupported type set",
        ),
        ({"a": [1, b"raw"]}, "record['a'][1]: unsupported type bytes"),
        ({"a": {1: 2}}, "record['a']: dict keys must be str, got int 1"),
        ({3: 2}, "record: dict keys must be str, got int 3"),
        ({"a": (object(),)}, "record['a'][0]: unsupported type object"),
        ({"a": np.array([None, 1], dtype=object)}, "record['a']: numpy dtype object"),
        ({"a": np.array(["x"])}, "record['a']: numpy dtype <U1"),
        ({"a": np.datetime64("2024-01-01")}, "record['a']: numpy dtype datetime64[D]"),
        ({"a": np.zeros(2, dtype=[("f", "f4")])}, "record['a']: numpy dtype"),
        ({"a": 1j}, "record['a']: unsupported type complex"),
        ({"a": OrderedDict(b=1)}, "record['a']: unsupported type OrderedDict"),
        ({"a": namedtuple("Point", "x")(1)}, "record['a']: unsupported type Point"),
        ({"a": np.ma.masked_array([1])}, "record['a']: unsupported type MaskedArray"),
    ],
)
def test_unsupported_values_are_refused_naming_their_path(
    store: FolderStateStore, record: dict[Any, Any], message: str
) -> None:
    store.save("c", {"old": 1})
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        store.save("c", record)
    assert store.load("c") == {"old": 1}  # nothing was written
    assert os.listdir(store.root) == ["client-c.zip"]


def test_a_record_must_be_a_mapping(store: FolderStateStore) -> None:
    with pytest.raises(ValueError, match="record must be a mapping with str keys, got list"):
        store.save("c", [1])  # type: ignore[arg-type]


@pytest.mark.parametrize("client_id", ["", None, 3, b"c"])
def test_client_ids_must_be_non_empty_strings(store: FolderStateStore, client_id: Any) -> None:
    for call in (store.load, store.delete, lambda cid: store.save(cid, {})):
        with pytest.raises(ValueError, match="client_id must be a non-empty str, got"):
            call(client_id)
    assert client_id not in store


# --- atomic saves --------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_crash_before_the_replace_keeps_the_old_record(
    store: FolderStateStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store.save("c", {"w": np.ones(3)})

    def crash(*args: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(folder_store.os, failing, crash)
    with pytest.raises(OSError, match="power cut"):
        store.save("c", {"w": np.zeros(3)})
    monkeypatch.undo()
    assert same(store.load("c"), {"w": np.ones(3)})
    assert os.listdir(store.root) == ["client-c.zip"]  # the temporary file was removed


def test_stray_temporary_files_are_ignored(store: FolderStateStore) -> None:
    store.save("c", {"x": 1})
    (store.root / ".tmp-abc.partial").write_bytes(b"PK\x03\x04 half a record")
    (store.root / "notes.txt").write_text("mine")
    (store.root / "client-%zz.zip").write_bytes(b"not canonical")
    (store.root / "client-d.zip").mkdir()
    assert store.client_ids() == ["c"]
    assert store.load("c") == {"x": 1}
    store.save("c", {"x": 2})
    assert store.load("c") == {"x": 2}


def test_files_are_private_to_the_client(store: FolderStateStore) -> None:
    store.save("c", {})
    if os.name == "posix":
        assert store.path("c").stat().st_mode & 0o077 == 0
        assert store.root.stat().st_mode & 0o077 == 0


# --- damaged, foreign and future files -----------------------------------------------------


def test_every_truncation_and_random_damage_gives_store_error(store: FolderStateStore) -> None:
    record = {"a": np.arange(4.0), "b": (np.int8(1), [2**70, math.nan]), "c": "text"}
    store.save("c", record)
    path = store.path("c")
    good = path.read_bytes()
    rng = random.Random(0)
    damaged = [good[:n] for n in range(len(good))]
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        damaged.append(bytes(data))
    for data in damaged:
        path.write_bytes(data)
        try:
            loaded = store.load("c")
        except StoreError as err:
            assert str(err).startswith(str(path))
            assert "delete it to start that client fresh" in str(err)
        else:
            assert same(loaded, record)  # a harmless change (a timestamp): never a wrong record


@pytest.mark.parametrize(
    "members",
    [
        {"record.json": b"{}"},
        {"record.json": b"[1, 2]"},
        {"record.json": b"\xff\xfe not json"},
        {"other.txt": b"hello"},
        {"record.json": doc({"dict": {}}).replace(b"fedlake-client-record", b"something-else")},
        {"record.json": doc({"list": []})},
        {"record.json": doc([1])},
        {"record.json": doc({"dict": {"a": {"array": "arrays/0.npy"}}})},
        {"record.json": doc({"dict": {"a": {"dict": {}, "tuple": []}}})},
        {"record.json": doc({"dict": {"a": {"float": "1.5"}}})},
        {"record.json": doc({"dict": {"a": {"float": ["nan"]}}})},
        {"record.json": doc({"dict": {"a": {"int": "zz"}}})},
        {
            "record.json": doc({"dict": {"a": {"scalar": "arrays/0.npy"}}}),
            "arrays/0.npy": npy(np.ones(2)),
        },
        {
            "record.json": doc({"dict": {"a": {"array": "arrays/0.npy"}}}),
            "arrays/0.npy": b"\x93NUMPY",
        },
        {
            "record.json": doc({"dict": {"a": {"array": "arrays/0.npy"}}}),
            "arrays/0.npy": npy(np.array(["s"])),
        },
        {
            "record.json": doc({"dict": {"a": {"array": "arrays/0.npy"}}}),
            "arrays/0.npy": npy(np.ones(3))[:-8],
        },
        {"record.json": doc({"dict": {}}, client_id="")},
        {"record.json": doc({"dict": {}}, client_id=None)},
    ],
)
def test_foreign_files_give_store_error(store: FolderStateStore, members: dict[str, bytes]) -> None:
    store.root.mkdir()
    write_zip(store.path("c"), members)
    with pytest.raises(StoreError, match="is not a fedlake client record .*; delete it to start"):
        store.load("c")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(["nan", "0x1f", "arrays/0.npy"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["dict", "tuple", "int", "float", "array", "scalar", "x"]),
            inner,
            max_size=2,
        )
    ),
    max_leaves=6,
)


@FAST
@given(node=json_values)
def test_any_json_structure_loads_or_gives_store_error(node: Any) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = FolderStateStore(root)
        members = {"record.json": doc(node), "arrays/0.npy": npy(np.arange(2))}
        write_zip(store.path("c"), members)
        try:
            loaded = store.load("c")
        except StoreError as err:
            assert "is not a fedlake client record" in str(err)
        else:
            assert type(loaded) is dict


def test_other_files_give_store_error(store: FolderStateStore) -> None:
    store.root.mkdir()
    for data in (b"", b"hello", b"PK\x05\x06" + bytes(18), npy(np.ones(2))):
        store.path("c").write_bytes(data)
        with pytest.raises(StoreError, match=r"client-c\.zip is not a fedlake client record"):
            store.load("c")
    write_zip(store.path("c"), {"record.json": doc({"dict": {}})}, zipfile.ZIP_DEFLATED)
    with pytest.raises(StoreError, match="record.json is compressed"):
        store.load("c")


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_an_unknown_version_is_named(store: FolderStateStore, version: Any) -> None:
    store.root.mkdir()
    write_zip(store.path("c"), {"record.json": doc({"dict": {}}, version=version)})
    with pytest.raises(StoreError, match=f"of version {version!r}, which this fedlake cannot"):
        store.load("c")


def test_a_record_under_another_clients_name_is_refused(store: FolderStateStore) -> None:
    store.save("a", {"x": 1})
    os.replace(store.path("a"), store.path("b"))
    with pytest.raises(StoreError, match="holds the record of client 'a', not 'b'"):
        store.load("b")
    assert store.client_ids() == ["b"]  # listed by its name; loading is what checks the inside


class Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(BOOM_MARKER),))


BOOM_MARKER = os.path.join(tempfile.gettempdir(), f"fedlake-unpickled-{os.getpid()}")


@pytest.mark.parametrize("tag", ["array", "scalar"])
def test_a_pickled_object_array_is_refused_never_unpickled(store: FolderStateStore, tag: str):
    evil = np.array([Boom()], dtype=object)
    assert pickle.loads(pickle.dumps(Boom())) is None and os.path.exists(BOOM_MARKER)  # armed
    os.unlink(BOOM_MARKER)
    store.root.mkdir()
    payload = evil if tag == "array" else evil.reshape(())
    members = {
        "record.json": doc({"dict": {"a": {tag: "arrays/0.npy"}}}),
        "arrays/0.npy": npy(payload, allow_pickle=True),
    }
    write_zip(store.path("c"), members)
    with pytest.raises(StoreError, match="holds an array of dtype object"):
        store.load("c")
    assert not os.path.exists(BOOM_MARKER)


def test_saved_files_are_plain_zip_json_and_npy(store: FolderStateStore) -> None:
    store.save("c", {"w": np.arange(3.0), "s": np.float32(2), "n": [1, (2,)]})
    with zipfile.ZipFile(store.path("c")) as archive:
        assert archive.namelist() == ["record.json", "arrays/0.npy", "arrays/1.npy"]
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
        body = json.loads(archive.read("record.json"))
        array = np.load(io.BytesIO(archive.read("arrays/0.npy")), allow_pickle=False)
    assert body == {
        "format": "fedlake-client-record",
        "version": 1,
        "client_id": "c",
        "record": {
            "dict": {
                "w": {"array": "arrays/0.npy"},
                "s": {"scalar": "arrays/1.npy"},
                "n": [1, {"tuple": [2]}],
            }
        },
    }
    assert np.array_equal(array, np.arange(3.0))


# --- client ids ----------------------------------------------------------------------------

SAFE_NAME = re.compile(r"client-([a-z0-9_-]|%[0-9A-F]{2}){0,160}(~[0-9a-f]{64})?\.zip")
WEIRD_IDS = [
    "a",
    "A",
    "Alice",
    "alice",
    "..",
    ".",
    "../../etc/passwd",
    "a/b",
    "with space",
    "100%",
    "%41",
    "~x",
    "CON",
    "ünï ☃ 客户",
    "\x00",
    "\ud800",
    "x" * 161,
    "x" * 5000,
    "é" * 300,
    "y" * 99 + "é" * 30,
    "y" * 98 + "é" * 30,
]


def test_weird_client_ids_round_trip(store: FolderStateStore) -> None:
    for i, client_id in enumerate(WEIRD_IDS):
        store.save(client_id, {"i": i})
    assert store.client_ids() == sorted(WEIRD_IDS)
    for i, client_id in enumerate(WEIRD_IDS):
        assert client_id in store
        assert store.load(client_id) == {"i": i}
        assert SAFE_NAME.fullmatch(store.path(client_id).name)
    names = {store.path(cid).name.casefold() for cid in WEIRD_IDS}
    assert len(names) == len(WEIRD_IDS)  # distinct even on case-blind file systems


@FAST
@given(client_id=st.text(min_size=1, max_size=200))
def test_generated_client_ids_map_to_safe_distinct_names(client_id: str) -> None:
    with tempfile.TemporaryDirectory() as root:
        store = FolderStateStore(root)
        store.save(client_id, {"id": client_id})
        store.save(client_id + "x", {})
        assert store.client_ids() == sorted([client_id, client_id + "x"])
        assert store.load(client_id) == {"id": client_id}
        names = sorted(store.path(cid).name for cid in (client_id, client_id + "x"))
        assert sorted(os.listdir(root)) == names
        assert all(SAFE_NAME.fullmatch(name) for name in names)


def test_a_damaged_file_with_a_hashed_name_is_reported_by_client_ids(
    store: FolderStateStore,
) -> None:
    long_id = "q" * 200
    store.save(long_id, {})
    store.path(long_id).write_bytes(b"garbage")
    with pytest.raises(StoreError, match="is not a fedlake client record"):
        store.client_ids()
    store.delete(long_id)
    assert store.client_ids() == []


def test_delete(store: FolderStateStore) -> None:
    store.delete("never")  # no folder yet: nothing happens
    long_id = "z" * 400
    store.save("a", {})
    store.save(long_id, {})
    store.delete("a")
    store.delete("a")  # already gone: nothing happens
    assert "a" not in store and store.load("a") is None
    assert store.client_ids() == [long_id]
    store.delete(long_id)
    assert store.client_ids() == []
