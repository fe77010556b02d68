"""The state machines under attack and misuse: typed rejections, audits, no double unmask."""

import dataclasses

import numpy as np
import pytest
from secagg.rounds import Harness, make_config, plain_sum

from fedlake.secagg import (
    ClientSession,
    ClientStage,
    ClientState,
    DuplicateMessage,
    LateMessage,
    MalformedVector,
    ProtocolViolation,
    RoundAborted,
    UndecryptableShares,
    UnknownSender,
    WrongStage,
    combine,
)
from fedlake.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from fedlake.secagg.shamir import Share


def finish(h, deliveries, skip=()):
    h.mask(deliveries, skip)
    return h.unmask(h.server.close_masked_input())


def test_exactly_t_holders_recover_and_t_minus_one_abort():
    config = make_config(20, 6, 4)
    u = 1
    two = sorted(config.graph.neighbours(u))[:2]
    h = Harness(config)
    aggregate = h.run(drops=((), (), (), two))  # u keeps exactly 4 = t of its 6 holders
    np.testing.assert_array_equal(aggregate.total, plain_sum(h.inputs, config.clients, 32))

    three = sorted(config.graph.neighbours(u))[:3]
    h = Harness(config)
    with pytest.raises(RoundAborted, match=f"client {u}'s self-mask seed needs t=4 shares, got 3"):
        h.run(drops=((), (), (), three))
    assert h.server.abort_reason and "got 3" in h.server.abort_reason
    with pytest.raises(RoundAborted):  # aborted for good
        h.server.receive(AdvertiseKeys(1, bytes(32), bytes(32)))


def test_too_few_masked_inputs_around_a_client_aborts_before_any_share_is_asked():
    config = make_config(20, 6, 4)
    three = sorted(config.graph.neighbours(1))[:3]
    h = Harness(config)
    deliveries = h.share(h.advertise())
    h.mask(deliveries, skip=three)
    with pytest.raises(
        RoundAborted, match="client 1's self-mask seed needs t=4 shares, but only 3"
    ):
        h.server.close_masked_input()


def test_survivors_split_in_two_abort_rather_than_expose_partial_sums():
    # Odd k (a ring plus diameters): these four dropouts leave every survivor t
    # neighbours, yet cut the survivors in two; unmasking would expose each part's sum.
    config = make_config(12, 3, 2)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    h.mask(deliveries, skip={1, 2, 4, 8})
    with pytest.raises(RoundAborted, match="splits into 2 parts"):
        h.server.close_masked_input()


def test_tampered_bundle_is_reported_audited_and_the_round_goes_on():
    config = make_config(10, 6, 4)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    u = 1
    v = min(deliveries[u].ciphertexts)
    bundles = dict(deliveries[u].ciphertexts)
    bundles[v] = bundles[v][:-1] + bytes([bundles[v][-1] ^ 1])
    deliveries[u] = ShareDelivery(u, bundles)
    sent = h.mask(deliveries)
    assert sent[u].undecryptable == (v,)
    audits = [r for r in h.server.rejections if isinstance(r, UndecryptableShares)]
    assert len(audits) == 1 and audits[0].sender == u and f"client {v}" in audits[0].reason
    aggregate = h.unmask(h.server.close_masked_input())
    np.testing.assert_array_equal(aggregate.total, plain_sum(h.inputs, config.clients, 32))
    assert aggregate.rejected == 1


def test_misrouted_bundle_does_not_open():
    config = make_config(10, 9, 5)  # complete graph: every pair exchanges bundles
    h = Harness(config)
    deliveries = h.share(h.advertise())
    # Hand client 1 the bundle that client 3 sent to client 2, under client 3's name.
    bundles = dict(deliveries[1].ciphertexts)
    bundles[3] = deliveries[2].ciphertexts[3]
    deliveries[1] = ShareDelivery(1, bundles)
    sent = h.mask(deliveries)
    assert sent[1].undecryptable == (3,)
    aggregate = h.unmask(h.server.close_masked_input())
    np.testing.assert_array_equal(aggregate.total, plain_sum(h.inputs, config.clients, 32))


def test_bundle_replayed_from_another_round_does_not_open():
    old, new = make_config(6, 4, 3, round_=1), make_config(6, 4, 3, round_=2)
    h_old = Harness(old, seed=5)
    old_deliveries = h_old.share(h_old.advertise())
    # Same client secrets (same seed) in the next round: only the round binding differs.
    h = Harness(new, seed=5)
    deliveries = h.share(h.advertise())
    v = min(deliveries[1].ciphertexts)
    deliveries[1] = ShareDelivery(
        1, {**deliveries[1].ciphertexts, v: old_deliveries[1].ciphertexts[v]}
    )
    assert h.mask(deliveries)[1].undecryptable == (v,)


def test_wrong_length_vector_is_rejected_and_its_sender_treated_as_dropped():
    config = make_config(10, 6, 4)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    bad = h.clients[2].masked_input(deliveries[2], h.inputs[2])
    with pytest.raises(MalformedVector, match="expected 32 bytes, got 31"):
        h.server.receive(dataclasses.replace(bad, vector=bad.vector[:-1]))
    with pytest.raises(DuplicateMessage):  # no second try in the same stage
        h.server.receive(bad)
    del deliveries[2]
    aggregate = finish(h, deliveries)
    assert 2 not in aggregate.survivors and aggregate.dropped == (2,)
    survivors = [u for u in config.clients if u != 2]
    np.testing.assert_array_equal(aggregate.total, plain_sum(h.inputs, survivors, 32))


def test_late_masked_input_is_never_unmasked():
    config = make_config(10, 6, 4)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    h.mask(deliveries, skip={4})
    requests = h.server.close_masked_input()
    late = h.clients[4].masked_input(deliveries[4], h.inputs[4])
    with pytest.raises(LateMessage, match="never unmasked"):
        h.server.receive(late)
    # Client 4's neighbours reveal shares of its key only (it is "dropped"), never of b_4.
    responses = [h.clients[u].unmask(r) for u, r in requests.items()]
    assert all(4 not in r.seed_shares for r in responses)
    assert sum(4 in r.key_shares for r in responses) == len(config.graph.neighbours(4))
    for response in responses:
        h.server.receive(response)
    aggregate = h.server.close_unmask()
    assert 4 not in aggregate.survivors
    survivors = [u for u in config.clients if u != 4]
    np.testing.assert_array_equal(aggregate.total, plain_sum(h.inputs, survivors, 32))
    with pytest.raises(LateMessage):
        h.server.receive(late)


def test_a_lying_server_cannot_collect_both_secrets_of_one_client():
    config = make_config(9, 8, 5)  # complete graph: client 1 has 8 holders, t = 5 > 8 / 2
    h = Harness(config)
    deliveries = h.share(h.advertise())
    h.mask(deliveries)
    everyone = config.clients
    holders = [u for u in everyone if u != 1]
    seed_shares, key_shares = [], []
    for i, w in enumerate(holders):  # half are told 1 survived, half that it dropped
        survivors = everyone if i % 2 else tuple(u for u in everyone if u != 1)
        response = h.clients[w].unmask(UnmaskRequest(w, survivors))
        seed_shares += (
            [Share.from_bytes(response.seed_shares[1])] if 1 in response.seed_shares else []
        )
        key_shares += [Share.from_bytes(response.key_shares[1])] if 1 in response.key_shares else []
        with pytest.raises(WrongStage):  # and nobody answers twice
            h.clients[w].unmask(UnmaskRequest(w, everyone))
    assert len(seed_shares) == len(key_shares) == 4
    for shares in (seed_shares, key_shares):
        with pytest.raises(ValueError, match="expected >= 5 shares"):
            combine(shares)


def test_client_refuses_inconsistent_server_messages():
    config = make_config(10, 4, 3)
    h = Harness(config)
    directories = h.advertise()
    u = 1
    stranger = next(v for v in config.clients if v not in config.graph.neighbours(u) and v != u)
    bad = KeyDirectory(u, (*directories[u].peers, h.clients[stranger].advertise()))
    with pytest.raises(ProtocolViolation, match="expected distinct neighbours"):
        h.clients[u].share_keys(bad)
    with pytest.raises(ProtocolViolation, match="expected >= t=3 neighbours"):
        h.clients[u].share_keys(KeyDirectory(u, directories[u].peers[:2]))
    with pytest.raises(ProtocolViolation, match="key directory for client 2"):
        h.clients[u].share_keys(KeyDirectory(2, directories[u].peers))
    twice = directories[u].peers[0]
    copied = dataclasses.replace(directories[u].peers[1], masking_key=twice.masking_key)
    with pytest.raises(ProtocolViolation, match="appears twice"):
        h.clients[u].share_keys(KeyDirectory(u, (twice, copied, *directories[u].peers[2:])))
    short = dataclasses.replace(twice, encryption_key=b"short")
    with pytest.raises(ProtocolViolation, match="32-byte X25519"):
        h.clients[u].share_keys(KeyDirectory(u, (short, *directories[u].peers[1:])))
    with pytest.raises(WrongStage, match="expected stage SHARES to mask its input"):
        h.clients[u].masked_input(ShareDelivery(u, {}), h.inputs[u])


def test_client_refuses_unmask_requests_that_do_not_add_up():
    config = make_config(10, 4, 3)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    h.mask(deliveries)
    everyone = config.clients
    with pytest.raises(ProtocolViolation, match="omits this client"):
        h.clients[1].unmask(UnmaskRequest(1, everyone[1:]))
    with pytest.raises(ProtocolViolation, match="expected >= t=3 survivors"):
        h.clients[1].unmask(UnmaskRequest(1, (1, 2)))
    assert h.clients[1].state.stage == ClientStage.UNMASK  # refusals change nothing


def test_client_checks_its_input_and_delivery():
    config = make_config(10, 4, 3)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    client = h.clients[1]
    with pytest.raises(ValueError, match="expected 8 integers"):
        client.masked_input(deliveries[1], np.zeros(7, dtype=np.uint32))
    with pytest.raises(ValueError, match="expected values in \\[0, 2\\^32\\)"):
        client.masked_input(deliveries[1], np.full(8, 2**32, dtype=np.uint64))
    with pytest.raises(ProtocolViolation, match="bundles from non-peers"):
        client.masked_input(ShareDelivery(1, {99: b""}), h.inputs[1])
    few = dict(list(deliveries[1].ciphertexts.items())[:2])
    with pytest.raises(ProtocolViolation, match="expected bundles from >= t=3"):
        client.masked_input(ShareDelivery(1, few), h.inputs[1])


def test_server_rejects_and_records_misbehaviour():
    config = make_config(10, 4, 3)
    h = Harness(config)
    server = h.server
    first = h.clients[1].advertise()
    server.receive(first)
    with pytest.raises(DuplicateMessage):
        server.receive(first)
    with pytest.raises(UnknownSender):
        server.receive(AdvertiseKeys(77, bytes(32), bytes(32)))
    with pytest.raises(ProtocolViolation, match="already in use"):
        server.receive(dataclasses.replace(h.clients[2].advertise(), masking_key=first.masking_key))
    with pytest.raises(ProtocolViolation, match="32-byte"):
        server.receive(AdvertiseKeys(3, b"x", bytes(32)))
    with pytest.raises(WrongStage, match="expected AdvertiseKeys, got MaskedInput"):
        server.receive(MaskedInput(1, b""))
    assert [type(r) for r in server.rejections] == [
        DuplicateMessage,
        UnknownSender,
        ProtocolViolation,
        ProtocolViolation,
        WrongStage,
    ]
    assert server.rejections[0].stage == "ADVERTISE" and server.rejections[0].sender == 1
    with pytest.raises(WrongStage, match="expected stage SHARE"):
        server.close_share_keys()


def test_server_rejects_bundles_for_the_wrong_recipients():
    config = make_config(10, 4, 3)
    h = Harness(config)
    directories = h.advertise()
    message = h.clients[1].share_keys(directories[1])
    partial = dict(list(message.ciphertexts.items())[1:])
    with pytest.raises(ProtocolViolation, match="expected bundles for"):
        h.server.receive(dataclasses.replace(message, ciphertexts=partial))


def test_server_rejects_shares_of_the_wrong_kind_or_holder():
    config = make_config(10, 4, 3)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    h.mask(deliveries, skip={5})
    requests = h.server.close_masked_input()
    w = next(iter(config.graph.neighbours(5)))
    response = h.clients[w].unmask(requests[w])
    # A seed share for a client reported dropped: asking for both secrets of client 5.
    both = UnmaskResponse(
        w, {**response.seed_shares, 5: response.key_shares[5]}, response.key_shares
    )
    with pytest.raises(ProtocolViolation, match="seed shares must be for survivors"):
        h.server.receive(both)
    other = next(v for v in response.seed_shares)
    share = Share.from_bytes(response.seed_shares[other])
    moved = dataclasses.replace(share, x=share.x + 100).to_bytes()
    with pytest.raises(ProtocolViolation, match=f"expected a share at x={w}"):
        h.server.receive(UnmaskResponse(w, {**response.seed_shares, other: moved}, {}))
    with pytest.raises(ProtocolViolation, match="bad share"):
        h.server.receive(UnmaskResponse(w, {other: b"junk"}, {}))


def test_inconsistent_key_shares_abort_instead_of_a_wrong_sum():
    config = make_config(7, 6, 4)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    h.mask(deliveries, skip={7})
    requests = h.server.close_masked_input()
    for u, request in requests.items():
        response = h.clients[u].unmask(request)
        share = Share.from_bytes(response.key_shares[7])
        forged = dataclasses.replace(share, values=((share.values[0] + 1),)).to_bytes()
        h.server.receive(dataclasses.replace(response, key_shares={7: forged}))
    with pytest.raises(RoundAborted, match="client 7's"):
        h.server.close_unmask()


def test_state_persists_between_stages_and_is_erased_after_unmasking():
    config = make_config(8, 4, 3)
    h = Harness(config)
    deliveries = h.share(h.advertise())
    raw = h.clients[1].state.to_bytes()
    restored = ClientState.from_bytes(raw)
    assert restored == h.clients[1].state and restored.stage == ClientStage.SHARES
    assert restored.seed not in repr(restored).encode()
    h.clients[1] = ClientSession.restore(restored)
    h.mask(deliveries)
    after_mask = ClientState.from_bytes(h.clients[2].state.to_bytes())
    assert after_mask == h.clients[2].state and after_mask.held
    aggregate = h.unmask(h.server.close_masked_input())
    np.testing.assert_array_equal(aggregate.total, plain_sum(h.inputs, config.clients, 32))
    for client in h.clients.values():
        state = client.state
        assert state.stage == ClientStage.DONE
        assert not (state.seed or state.masking_private or state.encryption_private or state.held)
    fresh = ClientSession(config, 3)
    fresh.erase()
    assert fresh.state.stage == ClientStage.DONE and not fresh.state.seed
    with pytest.raises(WrongStage):
        fresh.advertise()


def test_client_must_belong_to_the_round():
    with pytest.raises(ValueError, match="client must be one of the round's 8, got 9"):
        ClientSession(make_config(8, 4, 3), 9)
