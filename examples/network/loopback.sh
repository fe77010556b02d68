#!/usr/bin/env bash
# A real federation on this machine: credentials, a server and 4 clients over TLS on
# loopback, the digits federation to the end; exits 0 only if the served model is the
# simulated run's model (same seed, same data), and prints the final accuracy last.
#
#   examples/network/loopback.sh [work folder]      (default: a temporary folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
work="${1:-$(mktemp -d)}"
port="${PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
mkdir -p "$work"
cd "$work"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== credentials and each client's own table in $work"
clients=$("$python" "$here/prepare.py" --out "$work")
echo "clients: $clients"

echo "== server on https://localhost:$port"
"$python" -m fedlake.cli.main server --config "$here/digits_served.toml" --certs certs \
  --port "$port" --quiet > server.log 2>&1 &
server=$!
pids+=("$server")
for _ in $(seq 1 300); do
  curl -s --cacert certs/ca.pem "https://localhost:$port/v1/health" > /dev/null && break
  sleep 0.2
done

echo "== clients"
for c in $clients; do
  "$python" -m fedlake.cli.main client --server "https://localhost:$port" \
    --credential "certs/clients/$c.json" --data "data/$c" --state "state/$c" > "$c.log" 2>&1 &
  pids+=("$!")
done

timeout 600 tail --pid="$server" -f /dev/null
wait "$server"
for c in $clients; do grep -q "the federation finished" "$c.log"; done
tail -n 8 server.log

echo "== the served model against the simulated run"
"$python" "$here/check.py" --served runs/digits-served
