"""Secure aggregation: the server learns the sum of the clients' vectors and nothing else.

SecAgg (K. Bonawitz, V. Ivanov, B. Kreuter, A. Marcedone, H. B. McMahan, S. Patel,
D. Ramage, A. Segal, K. Seth, "Practical Secure Aggregation for Privacy-Preserving Machine
Learning", ACM CCS 2017): each client adds to its fixed-point encoded vector a pairwise
mask PRG(s_uv) for every other client (added by one, subtracted by the other, so they
cancel in the sum) and a self mask PRG(b_u); it Shamir-shares b_u and its masking private
key among the others. For a client that dropped, the survivors reveal shares of its key so
the server removes its dangling pairwise masks; for a survivor, shares of b_u; never both
for one client, so no single input is ever unmasked. SecAgg+ (J. Bell, K. Bonawitz,
A. Gascon, T. Lepoint, M. Raykova, "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", ACM CCS 2020) does the same over a sparse random graph where
each client has only k = O(log n) neighbours, cutting its cost from O(n + d) to
O(log n + d). This package is the transport-free core: the field, secret sharing, PRG,
key agreement and encryption, fixed-point encoding, the graph, and the two state machines
(``ClientSession``, ``ServerSession``), with ``run_round`` as an in-memory transport.
The model is honest-but-curious (the server may also lie about dropouts); the malicious
model's signatures and consistency round are not implemented.
"""

from fedlake.core.extras import require

require("cryptography", extra="crypto", purpose="secure aggregation (fedlake.secagg)")

# ruff: noqa: E402 - the imports below need the optional package checked above
from fedlake.secagg.client import ClientSession, ClientStage, ClientState
from fedlake.secagg.config import SecAggConfig
from fedlake.secagg.encoding import Encoded, FixedPoint, fixed_point, required_bits
from fedlake.secagg.errors import (
    DuplicateMessage,
    InvalidCiphertext,
    LateMessage,
    MalformedMessage,
    MalformedVector,
    ProtocolViolation,
    Rejected,
    RoundAborted,
    SecAggError,
    UndecryptableShares,
    UnknownSender,
    WrongStage,
)
from fedlake.secagg.graph import (
    Graph,
    Parameters,
    abort_probability,
    check_parameters,
    choose_parameters,
    harary_graph,
    leak_probability,
)
from fedlake.secagg.messages import (
    AdvertiseKeys,
    KeyDirectory,
    MaskedInput,
    Message,
    ShareDelivery,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode,
)
from fedlake.secagg.protocol import run_round
from fedlake.secagg.ring import BITS, pack, unpack
from fedlake.secagg.server import Aggregate, ServerSession, ServerStage
from fedlake.secagg.shamir import Share, combine, split

__all__ = [
    "AdvertiseKeys",
    "Aggregate",
    "BITS",
    "ClientSession",
    "ClientStage",
    "ClientState",
    "DuplicateMessage",
    "Encoded",
    "FixedPoint",
    "Graph",
    "InvalidCiphertext",
    "KeyDirectory",
    "LateMessage",
    "MalformedMessage",
    "MalformedVector",
    "MaskedInput",
    "Message",
    "Parameters",
    "ProtocolViolation",
    "Rejected",
    "RoundAborted",
    "SecAggConfig",
    "SecAggError",
    "ServerSession",
    "ServerStage",
    "Share",
    "ShareDelivery",
    "ShareKeys",
    "UndecryptableShares",
    "UnknownSender",
    "UnmaskRequest",
    "UnmaskResponse",
    "WrongStage",
    "abort_probability",
    "check_parameters",
    "choose_parameters",
    "combine",
    "decode",
    "fixed_point",
    "harary_graph",
    "leak_probability",
    "pack",
    "required_bits",
    "run_round",
    "split",
    "unpack",
]
