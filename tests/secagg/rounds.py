"""Helpers for the secure-aggregation tests: build rounds, drive them stage by stage."""

import random

import numpy as np

from fedlake.secagg import ClientSession, SecAggConfig, ServerSession
from fedlake.secagg.ring import dtype_for


def make_config(n, k, t, *, bits=32, length=8, round_=1, run_id=b"run", first=1):
    """A round over clients first..first+n-1."""
    return SecAggConfig(
        run_id=run_id,
        round=round_,
        clients=tuple(range(first, first + n)),
        degree=k,
        threshold=t,
        bits=bits,
        length=length,
        graph_seed=b"graph",
    )


def random_inputs(config, seed=0):
    """Uniform inputs in Z_R for every client."""
    rng = np.random.default_rng(seed)
    top = 2**config.bits
    return {
        u: rng.integers(0, top, config.length, dtype=np.uint64).astype(dtype_for(config.bits))
        for u in config.clients
    }


def plain_sum(inputs, clients, bits):
    """sum of inputs[u] for u in clients, mod 2^bits, as uint64."""
    total = np.zeros_like(next(iter(inputs.values())), dtype=np.uint64)
    for u in clients:
        total = total + inputs[u].astype(np.uint64)
    return total & np.uint64(2**bits - 1) if bits < 64 else total


class Harness:
    """A round driven by hand: every stage exposed so tests can tamper between them."""

    def __init__(self, config, seed=0):
        self.config = config
        self.random = random.Random(seed)
        self.server = ServerSession(config)
        self.clients = {u: ClientSession(config, u, random=self.random) for u in config.clients}
        self.inputs = random_inputs(config, seed)

    def advertise(self, skip=()):
        for u, client in self.clients.items():
            if u not in skip:
                self.server.receive(client.advertise())
        return self.server.close_advertise()

    def share(self, directories, skip=()):
        for u, directory in directories.items():
            if u not in skip:
                self.server.receive(self.clients[u].share_keys(directory))
        return self.server.close_share_keys()

    def mask(self, deliveries, skip=()):
        sent = {}
        for u, delivery in deliveries.items():
            if u not in skip:
                sent[u] = self.clients[u].masked_input(delivery, self.inputs[u])
                self.server.receive(sent[u])
        return sent

    def unmask(self, requests, skip=()):
        for u, request in requests.items():
            if u not in skip:
                self.server.receive(self.clients[u].unmask(request))
        return self.server.close_unmask()

    def run(self, drops=((), (), (), ())):
        deliveries = self.share(self.advertise(drops[0]), drops[1])
        self.mask(deliveries, drops[2])
        return self.unmask(self.server.close_masked_input(), drops[3])
