"""The raw reference of bench/network.py: the same bytes as a federated round, over plain sockets.

One server process and one process of client threads, on loopback. Every round the server
sends the model's bytes (one shared buffer, ``sendall`` of a memoryview: no copy per
client) to each of the N clients over its own TCP connection (opened once, before the
first round) and receives a payload of the same size back from each; the round ends when
the last payload's last byte arrived. Each side reads into a small reused buffer and
throws the bytes away: this is the time to move the bytes through the kernel, nothing
else (no framing beyond an 8-byte length, no hashing, no parsing, no copies into Python
objects). ``--tls`` wraps the sockets in TLS (the same certificate as fedlake's server):
a diagnostic, to see what encryption alone costs on this machine.

    python bench/_net_raw.py server --port P --clients N --bytes B --rounds R --out OUT.json
    python bench/_net_raw.py clients --port P --clients N --bytes B

Writes ``OUT.json``: each round's start and end (``time.perf_counter`` of the server, in s)
and its latency.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HEADER = struct.Struct("<Q")  # the payload's length; 0 ends the session
SCRATCH = 1 << 20  # bytes read per recv_into


def recv_exactly(sock: socket.socket, n: int, scratch: memoryview) -> None:
    """Read ``n`` bytes from ``sock`` into ``scratch`` (reused, so thrown away)."""
    left = n
    while left:
        got = sock.recv_into(scratch, min(left, len(scratch)))
        if not got:
            raise ConnectionError(f"connection closed with {left} of {n} bytes to come")
        left -= got


def recv_header(sock: socket.socket) -> int:
    buf = bytearray(HEADER.size)
    view = memoryview(buf)
    got = 0
    while got < HEADER.size:
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("connection closed before a header")
        got += n
    return int(HEADER.unpack(buf)[0])


def tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def server(args: argparse.Namespace) -> int:
    model = memoryview(bytes(args.bytes))  # one buffer for every client
    listener = socket.create_server(("127.0.0.1", args.port), backlog=max(128, args.clients))
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(Path(args.certs) / "server.pem", Path(args.certs) / "server.key")
    conns: list[socket.socket] = []
    t_accept = time.perf_counter()
    while len(conns) < args.clients:
        conn, _ = listener.accept()
        tune(conn)
        conns.append(ctx.wrap_socket(conn, server_side=True) if ctx else conn)
    connected_s = time.perf_counter() - t_accept
    scratches = [memoryview(bytearray(SCRATCH)) for _ in conns]

    def one(i: int) -> None:
        sock = conns[i]
        sock.sendall(HEADER.pack(args.bytes))
        sock.sendall(model)
        size = recv_header(sock)
        recv_exactly(sock, size, scratches[i])

    rounds = []
    with ThreadPoolExecutor(max_workers=len(conns)) as pool:
        for r in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            for f in [pool.submit(one, i) for i in range(len(conns))]:
                f.result()
            t1 = time.perf_counter()
            rounds.append({"round": r, "start": t0, "end": t1, "latency_s": t1 - t0})
    for sock in conns:
        sock.sendall(HEADER.pack(0))
        sock.close()
    listener.close()
    out = {"rounds": rounds, "connected_s": connected_s, "tls": bool(args.tls)}
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


def connect(port: int, timeout: float) -> socket.socket:
    """A connection to the server, retried while it is not listening yet (up to 30 s)."""
    end = time.monotonic() + 30
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def clients(args: argparse.Namespace) -> int:
    payload = memoryview(bytes(args.bytes))  # what every client sends back
    ctx = None
    if args.tls:
        ctx = ssl.create_default_context(cafile=str(Path(args.certs) / "ca.pem"))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            raw = connect(args.port, args.timeout)
            tune(raw)
            sock = ctx.wrap_socket(raw, server_hostname="localhost") if ctx else raw
            scratch = memoryview(bytearray(SCRATCH))
            while True:
                size = recv_header(sock)
                if size == 0:
                    break
                recv_exactly(sock, size, scratch)
                sock.sendall(HEADER.pack(len(payload)))
                sock.sendall(payload)
            sock.close()
        except BaseException as exc:  # reported by the exit code
            errors.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for exc in errors[:3]:
        print(f"client failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if errors else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["server", "clients"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--certs", default="certs", help="fedlake's credentials folder (with --tls)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", default="raw.json")
    args = ap.parse_args()
    return server(args) if args.role == "server" else clients(args)


if __name__ == "__main__":
    raise SystemExit(main())
