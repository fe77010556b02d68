"""Wire format: every message round-trips canonically; malformed bytes are refused."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.secagg.config import SecAggConfig
from fedlake.secagg.errors import MalformedMessage
from fedlake.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    ShareBundle,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode,
)

ids = st.integers(1, 2**32 - 1)
blobs = st.dictionaries(ids, st.binary(max_size=40), max_size=5)
messages = st.one_of(
    st.builds(
        AdvertiseKeys, ids, st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)
    ),
    st.builds(
        KeyDirectory,
        ids,
        st.lists(ids, unique=True, max_size=4).map(
            lambda xs: tuple(AdvertiseKeys(x, bytes([x % 256]) * 32, bytes(32)) for x in sorted(xs))
        ),
    ),
    st.builds(ShareKeys, ids, blobs),
    st.builds(ShareDelivery, ids, blobs),
    st.builds(
        MaskedInput,
        ids,
        st.binary(max_size=64),
        st.lists(ids, unique=True).map(lambda x: tuple(sorted(x))),
    ),
    st.builds(UnmaskRequest, ids, st.lists(ids, unique=True).map(lambda x: tuple(sorted(x)))),
    st.builds(UnmaskResponse, ids, blobs, blobs),
)


@settings(max_examples=25, deadline=None)
@given(message=messages)
def test_round_trip_through_decode(message):
    raw = message.to_bytes()
    assert decode(raw) == message
    assert type(message).from_bytes(raw) == message
    assert decode(raw).to_bytes() == raw  # canonical


@settings(max_examples=25, deadline=None)
@given(message=messages, data=st.data())
def test_truncated_or_extended_bytes_are_refused(message, data):
    raw = message.to_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MalformedMessage):
        decode(raw[:cut])
    with pytest.raises(MalformedMessage, match="trailing bytes"):
        decode(raw + b"\x00")


def test_wrong_tag_version_and_order_are_refused():
    raw = MaskedInput(3, b"abc", (1, 2)).to_bytes()
    with pytest.raises(MalformedMessage, match="expected a ShareKeys message"):
        ShareKeys.from_bytes(raw)
    with pytest.raises(MalformedMessage, match="unknown message tag 99"):
        decode(b"\x63\x01")
    with pytest.raises(MalformedMessage, match="version 1, got 2"):
        decode(raw[:1] + b"\x02" + raw[2:])
    unsorted = bytearray(UnmaskRequest(1, (2, 3)).to_bytes())
    unsorted[-8:] = (3).to_bytes(4, "little") + (2).to_bytes(4, "little")
    with pytest.raises(MalformedMessage, match="strictly increasing"):
        decode(bytes(unsorted))
    keys = bytearray(ShareKeys(1, {2: b"", 3: b""}).to_bytes())
    keys[10:14], keys[18:22] = keys[18:22], keys[10:14]
    with pytest.raises(MalformedMessage, match="map keys must be strictly increasing"):
        decode(bytes(keys))


def test_share_bundle_hides_its_secrets_in_repr():
    bundle = ShareBundle(1, 2, b"seed-share", b"key-share")
    assert ShareBundle.from_bytes(bundle.to_bytes()) == bundle
    assert "seed-share" not in repr(bundle)


def test_config_round_trips_and_refuses_garbage():
    config = SecAggConfig(
        run_id=b"run",
        round=4,
        clients=(9, 3, 5, 7),
        degree=2,
        threshold=2,
        bits=32,
        length=10,
        graph_seed=b"seed",
    )
    assert config.clients == (3, 5, 7, 9)
    assert SecAggConfig.from_bytes(config.to_bytes()) == config
    with pytest.raises(MalformedMessage, match="not a SecAgg configuration"):
        SecAggConfig.from_bytes(config.to_bytes()[:-1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clients": (0, 1, 2)}, "client ids must be integers in \\[1, 2\\^32\\)"),
        ({"clients": (1, 1, 2)}, "client ids must be distinct"),
        ({"threshold": 1}, "t must exceed k / 2"),
        ({"bits": 8}, "bits must be one of"),
        ({"length": 0}, "length must be an integer >= 1"),
        ({"degree": 3}, "k \\* n even"),
    ],
)
def test_config_refuses_bad_parameters(kwargs, match):
    args = {
        "run_id": b"r",
        "round": 0,
        "clients": (1, 2, 3, 4, 5),
        "degree": 2,
        "threshold": 2,
        "bits": 32,
        "length": 3,
        "graph_seed": b"",
    } | kwargs
    with pytest.raises(ValueError, match=match):
        SecAggConfig(**args)
