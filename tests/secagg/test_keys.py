"""X25519 + HKDF seeds and ChaCha20-Poly1305 share bundles bound to (run, round, ends)."""

import random

import pytest

from fedlake.secagg import keys
from fedlake.secagg.errors import InvalidCiphertext


def pair(seed):
    return keys.generate_keypair(random.Random(seed))


def test_key_agreement_is_symmetric_and_order_free():
    a, b = pair(1), pair(2)
    ab = keys.pairwise_seed(a.private, b.public, run_id=b"r", round_=3, pair=(7, 9))
    ba = keys.pairwise_seed(b.private, a.public, run_id=b"r", round_=3, pair=(9, 7))
    assert ab == ba and len(ab) == 32


def test_seeds_are_domain_separated():
    a, b = pair(1), pair(2)
    base = keys.pairwise_seed(a.private, b.public, run_id=b"r", round_=3, pair=(1, 2))
    others = [
        keys.pairwise_seed(a.private, b.public, run_id=b"s", round_=3, pair=(1, 2)),
        keys.pairwise_seed(a.private, b.public, run_id=b"r", round_=4, pair=(1, 2)),
        keys.pairwise_seed(a.private, b.public, run_id=b"r", round_=3, pair=(1, 3)),
        keys.share_key(a.private, b.public, keys.Route(b"r", 3, 1, 2)),
    ]
    assert len({base, *others}) == 5
    # Directional: the key from 1 to 2 is not the key from 2 to 1.
    assert keys.share_key(a.private, b.public, keys.Route(b"r", 3, 1, 2)) != keys.share_key(
        a.private, b.public, keys.Route(b"r", 3, 2, 1)
    )


def test_length_prefixes_make_fields_unambiguous():
    a, b = pair(1), pair(2)
    one = keys.pairwise_seed(a.private, b.public, run_id=b"ab", round_=1, pair=(1, 2))
    two = keys.pairwise_seed(a.private, b.public, run_id=b"a", round_=1, pair=(1, 2))
    assert one != two


def test_public_key_helpers():
    a = pair(3)
    assert keys.public_key(a.private) == a.public
    assert keys.check_public_key(a.public) == a.public
    with pytest.raises(ValueError, match="expected a 32-byte X25519 public key, got 31"):
        keys.check_public_key(a.public[:31])
    assert "private" not in repr(a) and a.private.hex() not in repr(a)
    assert pair(4) != pair(5) and pair(4) == pair(4)
    assert keys.generate_keypair() != keys.generate_keypair()


def test_low_order_peer_key_is_refused():
    with pytest.raises(ValueError):
        keys.derive(pair(1).private, bytes(32), info=b"x")  # the all-zero point


def sealed():
    a, b = pair(1), pair(2)
    route = keys.Route(b"run", 5, 1, 2)
    key = keys.share_key(a.private, b.public, route)
    return a, b, route, keys.encrypt(key, b"shares", associated=keys.associated_data(route))


def test_bundle_opens_at_its_receiver():
    a, b, route, ciphertext = sealed()
    key = keys.share_key(b.private, a.public, route)
    assert keys.decrypt(key, ciphertext, associated=keys.associated_data(route)) == b"shares"


@pytest.mark.parametrize(
    "route",
    [
        keys.Route(b"run", 5, 1, 3),  # misrouted to another receiver
        keys.Route(b"run", 6, 1, 2),  # replayed in the next round
        keys.Route(b"other", 5, 1, 2),  # replayed in another run
        keys.Route(b"run", 5, 3, 2),  # claimed by another sender
    ],
)
def test_misrouted_or_replayed_bundle_fails(route):
    a, b, _, ciphertext = sealed()
    key = keys.share_key(b.private, a.public, route)
    with pytest.raises(InvalidCiphertext, match="authentication failed"):
        keys.decrypt(key, ciphertext, associated=keys.associated_data(route))


def test_tampered_or_truncated_bundle_fails():
    a, b, route, ciphertext = sealed()
    key = keys.share_key(b.private, a.public, route)
    associated = keys.associated_data(route)
    for i in (0, 12, len(ciphertext) - 1):  # nonce, body, tag
        flipped = bytearray(ciphertext)
        flipped[i] ^= 1
        with pytest.raises(InvalidCiphertext):
            keys.decrypt(key, bytes(flipped), associated=associated)
    with pytest.raises(InvalidCiphertext, match="expected >= 28 bytes"):
        keys.decrypt(key, ciphertext[:20], associated=associated)
    wrong = keys.share_key(pair(9).private, a.public, route)
    with pytest.raises(InvalidCiphertext):
        keys.decrypt(wrong, ciphertext, associated=associated)


def test_nonces_are_fresh():
    _, _, _, one = sealed()
    _, _, _, two = sealed()
    assert one != two
