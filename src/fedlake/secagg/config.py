"""The public parameters of one SecAgg+ round, shared by the server and every client."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property, lru_cache

from fedlake.core.checks import check_int
from fedlake.secagg.errors import MalformedMessage
from fedlake.secagg.graph import Graph, check_parameters, harary_graph
from fedlake.secagg.ring import check_bits

__all__ = ["SecAggConfig"]

_MAX_ID = 2**32 - 1
_HEAD = struct.Struct("<QIIIQ")  # round, degree, threshold, bits, length


@dataclass(frozen=True)
class SecAggConfig:
    """Who takes part, how they are connected, and what is summed.

    Attributes:
        run_id: identifies the run (bound into every derived key and ciphertext).
        round: the round number (likewise; keys are fresh every round).
        clients: the participants' ids, distinct integers in [1, 2^32) (they are also
            the Shamir x-coordinates), sorted.
        degree: k, neighbours per client; ``len(clients) - 1`` is the original SecAgg.
        threshold: t, shares needed to rebuild a secret; k / 2 < t <= k.
        bits: the ring Z_R, R = 2^bits, of the masked vectors.
        length: the number of values summed.
        graph_seed: public randomness relabelling the graph (e.g. from the server's seed).
    """

    run_id: bytes
    round: int
    clients: tuple[int, ...]
    degree: int
    threshold: int
    bits: int
    length: int
    graph_seed: bytes

    def __post_init__(self) -> None:
        ids = tuple(self.clients)
        for client in ids:
            if (
                isinstance(client, bool)
                or not isinstance(client, int)
                or not 1 <= client <= _MAX_ID
            ):
                raise ValueError(f"client ids must be integers in [1, 2^32), got {client!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"client ids must be distinct, got {sorted(ids)}")
        object.__setattr__(self, "clients", tuple(sorted(ids)))
        check_int("round", self.round, low=0)
        check_int("length", self.length, low=1)
        check_bits(self.bits)
        check_parameters(len(ids), self.degree, self.threshold)

    @cached_property
    def graph(self) -> Graph:
        """The communication graph every party derives identically."""
        return _graph(self.clients, self.degree, self.graph_seed)

    def to_bytes(self) -> bytes:
        """A compact, versionless encoding (the state file and the task carry it)."""
        head = _HEAD.pack(self.round, self.degree, self.threshold, self.bits, self.length)
        ids = struct.pack(f"<{len(self.clients)}I", *self.clients)
        return b"".join(
            [
                head,
                struct.pack("<I", len(self.run_id)),
                self.run_id,
                struct.pack("<I", len(self.graph_seed)),
                self.graph_seed,
                struct.pack("<I", len(self.clients)),
                ids,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SecAggConfig:
        """Inverse of :meth:`to_bytes`."""
        try:
            round_, degree, threshold, bits, length = _HEAD.unpack_from(data)
            at = _HEAD.size
            fields = []
            for _ in range(2):
                (size,) = struct.unpack_from("<I", data, at)
                fields.append(bytes(data[at + 4 : at + 4 + size]))
                if len(fields[-1]) != size:
                    raise MalformedMessage("truncated configuration")
                at += 4 + size
            (count,) = struct.unpack_from("<I", data, at)
            at += 4
            if len(data) != at + 4 * count:
                raise MalformedMessage(f"expected {at + 4 * count} bytes, got {len(data)}")
            ids = struct.unpack_from(f"<{count}I", data, at)
            return cls(
                run_id=fields[0],
                round=round_,
                clients=ids,
                degree=degree,
                threshold=threshold,
                bits=bits,
                length=length,
                graph_seed=fields[1],
            )
        except (struct.error, ValueError) as exc:
            raise MalformedMessage(f"not a SecAgg configuration: {exc}") from exc


@lru_cache(maxsize=16)
def _graph(clients: tuple[int, ...], degree: int, seed: bytes) -> Graph:
    """The round's graph, built once per process (public, immutable): every client of a
    cohort and every stage rebuilds the same config from its bytes."""
    return harary_graph(clients, degree=degree, seed=seed)
