"""The round's adversary: who is malicious, and how crafted updates travel."""

import numpy as np
import pytest

from fedlake.compression.messages import decode_reply, encode_delta
from fedlake.compression.pipeline import codec_from_stages
from fedlake.core.task import ClientFailure, ClientReply, FailureReason
from fedlake.core.update import DELTA
from fedlake.simulation.attacks import Adversary, Attack, SignFlip

DIM = 3


def sent(cid, delta, codec=None, rng=None):
    payload, _ = encode_delta(
        np.asarray(delta, np.float32), None, codec, rng or np.random.default_rng(0)
    )
    return ClientReply(cid, {DELTA: payload}, 1.0, {"num_examples": 1.0})


def decoded(reply, codec=None):
    """``reply`` as the server sees it: its payloads decoded into vectors."""
    return decode_reply(reply, DIM, None, codec)


def corrupt(adversary, results, malicious, codec=None):
    def decode(u):
        return decode_reply(u, DIM, None, codec)

    def encode(vec):
        return encode_delta(vec, None, codec, np.random.default_rng(1))[0]

    return adversary.corrupt(
        results,
        frozenset(malicious),
        dim=DIM,
        decode=decode,
        encode=encode,
        rng=np.random.default_rng(2),
    )


def test_choose_draws_floor_fraction_of_the_cohort_reproducibly():
    adv = Adversary(SignFlip(), 0.25)
    cohort = [f"c{i}" for i in range(10)]
    a = adv.choose(cohort, np.random.default_rng(5))
    assert len(a) == 2 and a <= set(cohort)
    assert a == adv.choose(cohort, np.random.default_rng(5))
    assert Adversary(SignFlip(), 0.05).choose(cohort, np.random.default_rng(5)) == frozenset()


@pytest.mark.parametrize("fraction", [-0.1, 1.0, True])
def test_fraction_must_be_in_0_1(fraction):
    with pytest.raises(ValueError, match=r"attack fraction must be in \[0, 1\), got"):
        Adversary(SignFlip(), fraction)


def test_corrupt_replaces_only_malicious_updates_and_encodes_them():
    failed = ClientFailure("b", FailureReason.ERROR, "boom")
    results = [sent("a", [1, 2, 3]), failed, sent("m", [1, 1, 1])]
    out = corrupt(Adversary(SignFlip(scale=2.0), 0.3), results, {"m", "b"})
    assert out[0] is results[0] and out[1] is results[1]  # honest and failed pass through
    np.testing.assert_array_equal(decoded(out[2]).delta, [-2, -2, -2])
    assert isinstance(out[2], ClientReply) and out[2].client_id == "m"  # it travels as bytes
    assert set(out[2].payloads) == {DELTA}
    assert out[2].metrics == results[2].metrics


def test_an_attack_that_crafts_nothing_leaves_results_alone():
    results = [sent("a", [1, 2, 3])]
    out = corrupt(Adversary(Attack(), 0.5), results, {"a"})
    assert out == results


def test_crafted_updates_use_the_rounds_upload_codec():
    codec = codec_from_stages([{"kind": "quantize", "bits": 8, "stochastic": False}])
    results = [sent("a", [1.0, 2.0, 3.0], codec), sent("m", [1.0, 1.0, 1.0], codec)]
    out = corrupt(Adversary(SignFlip(scale=1.0), 0.5), results, {"m"}, codec)
    back = decoded(out[1], codec).delta
    np.testing.assert_allclose(back, [-1, -1, -1], atol=1e-6)
    assert len(out[1].payloads[DELTA]) == len(results[1].payloads[DELTA])


def test_undecodable_updates_are_left_for_screening():
    bad = ClientReply("m", {DELTA: b"garbage"}, 1.0, {})
    results = [sent("a", [1, 2, 3]), bad]
    out = corrupt(Adversary(SignFlip(), 0.5), results, {"m"})
    assert out[1] is bad
