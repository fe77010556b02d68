"""The mask PRG: AES-256-CTR keystream as uniform values mod 2^bits, pinned and fast."""

import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedlake.secagg.prg import PAIR_MASK, SELF_MASK, expand
from fedlake.secagg.ring import BITS, dtype_for

SEED = bytes(range(32))


def test_golden_values_pin_the_stream_across_versions():
    # Every client and the server must expand a seed identically, on any machine.
    assert expand(SEED, 4, bits=32, purpose=SELF_MASK).tolist() == [
        2828329257,
        4208955418,
        2652431782,
        152061243,
    ]
    assert expand(SEED, 3, bits=64, purpose=PAIR_MASK).tolist() == [
        7062727562780913680,
        31641020337349671,
        1314084954719570639,
    ]
    assert expand(SEED, 4, bits=24, purpose=PAIR_MASK).tolist() == [
        15380496,
        252236,
        9036839,
        7366999,
    ]


def test_matches_aes_on_the_counter_blocks():
    # Independent path: AES-256-ECB of (purpose || counter) for counters 0 and 1.
    blocks = b"".join(SELF_MASK + i.to_bytes(8, "big") for i in range(2))
    encryptor = Cipher(algorithms.AES(SEED), modes.ECB()).encryptor()
    stream = encryptor.update(blocks) + encryptor.finalize()
    expected = np.frombuffer(stream, dtype="<u4")
    np.testing.assert_array_equal(expand(SEED, 8, bits=32, purpose=SELF_MASK), expected)


@pytest.mark.parametrize("bits", BITS)
def test_values_in_range_of_the_right_dtype_and_writable(bits):
    values = expand(SEED, 10_000, bits=bits, purpose=SELF_MASK)
    assert values.dtype == dtype_for(bits)
    assert values.shape == (10_000,)
    assert int(values.max()) < 1 << bits
    # The top bit is used: values fill the ring, not a smaller range.
    assert int(values.max()) >= 1 << (bits - 1)
    values[0] = 0  # callers add into it in place


def test_seed_and_purpose_separate_streams():
    a = expand(SEED, 64, bits=32, purpose=SELF_MASK)
    b = expand(SEED, 64, bits=32, purpose=PAIR_MASK)
    c = expand(bytes(32), 64, bits=32, purpose=SELF_MASK)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)
    np.testing.assert_array_equal(a, expand(SEED, 64, bits=32, purpose=SELF_MASK))
    # A prefix of a longer expansion: the stream does not depend on the length.
    np.testing.assert_array_equal(a[:10], expand(SEED, 10, bits=32, purpose=SELF_MASK))


def test_byte_frequencies_look_uniform():
    raw = expand(SEED, 1 << 16, bits=32, purpose=SELF_MASK).view(np.uint8)
    counts = np.bincount(raw, minlength=256)
    expected = raw.size / 256
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 255 + 8 * np.sqrt(2 * 255)  # df = 255: mean 255, sd 22.6


def test_one_million_values_in_milliseconds():
    expand(SEED, 1000, bits=64, purpose=SELF_MASK)  # warm up
    for bits in (32, 64):
        start = time.perf_counter()
        expand(SEED, 10**6, bits=bits, purpose=PAIR_MASK)
        assert time.perf_counter() - start < 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": b"short"}, "seed must be 32 bytes, got 5"),
        ({"purpose": b"tag"}, "purpose must be an 8-byte tag"),
        ({"length": -1}, "length must be an integer >= 0"),
        ({"bits": 12}, "bits must be one of"),
    ],
)
def test_refuses_bad_arguments(kwargs, match):
    args = {"seed": SEED, "length": 4, "bits": 32, "purpose": SELF_MASK} | kwargs
    with pytest.raises(ValueError, match=match):
        expand(args.pop("seed"), args.pop("length"), **args)
