"""Write each client's table and the federation's credentials for examples/network/.

    python examples/network/prepare.py --out work/network

Each client of digits_simulated.toml gets its own Parquet table (its rows only, as a
club or a device would have them) under OUT/data/<client>/, and the credentials go to
OUT/certs (a local CA, the server's certificate, one key per client, the operator token).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedlake.backends.remote.certs import make_certs
from fedlake.config import load_config
from fedlake.data.base import InMemoryClientData
from fedlake.data.table_write import write_client_table
from fedlake.run.scenarios import build_data

HERE = Path(__file__).resolve().parent


def main() -> int:
    """Write the tables and the credentials; print the client ids."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="working folder")
    args = ap.parse_args()
    scenario = build_data(load_config(HERE / "digits_simulated.toml"))
    ids = list(scenario.data.client_ids())
    for cid in ids:
        one = InMemoryClientData({cid: scenario.data.load(cid)})
        target = args.out / "data" / cid
        if not target.exists():  # written once: the rows do not change
            write_client_table(one, target, format="parquet", partition_by_client=False)
    if not (args.out / "certs" / "ca.key").exists():
        make_certs(args.out / "certs", ids, hosts=["localhost"])
    print(" ".join(ids))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
