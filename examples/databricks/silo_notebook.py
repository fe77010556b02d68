# Databricks notebook source
# MAGIC %md
# MAGIC # fedlake: a silo's client on its own workspace
# MAGIC
# MAGIC Runs `fedlake client` on the driver of this job cluster (the job `fedlake_silo` of
# MAGIC `databricks.yml`; see `docs/databricks.md`). The silo's data stays here: the notebook
# MAGIC reads its table (a Unity Catalog table, snapshotted to Parquet on this driver's local
# MAGIC disk, or a `/Volumes/...` path read in place), and only model updates leave, signed
# MAGIC with this client's key. The client's state (control variates, residuals, personal
# MAGIC models, privacy history) lives in a volume, so a rerun continues where it stopped.
# MAGIC
# MAGIC The credential (`certs/clients/<id>.json`, made by `fedlake certs`) comes from the
# MAGIC secret scope (`dbutils.secrets`) into a private temporary file removed at the end; so
# MAGIC does the optional bearer token for a server behind a Databricks App's proxy. Nothing
# MAGIC here prints them.

# COMMAND ----------

# ruff: noqa: E402, F821  (cells import where they run; dbutils and spark are the notebook's)
dbutils.widgets.text("repo_root", "", "fedlake source (the bundle's files)")
dbutils.widgets.text("server_url", "", "Server URL (https://host:port)")
dbutils.widgets.text("data", "", "Data: catalog.schema.table or a /Volumes path")
dbutils.widgets.dropdown("data_format", "parquet", ["parquet", "delta", "csv"], "Path format")
dbutils.widgets.text("catalog", "fedlake", "Catalog of the state volume")
dbutils.widgets.text("schema", "federation", "Schema of the state volume")
dbutils.widgets.text("state_volume", "fedlake_state", "Volume of the client state")
dbutils.widgets.text("secret_scope", "fedlake", "Secret scope")
dbutils.widgets.text("credential_key", "client-credential", "Secret key of the credential")
dbutils.widgets.text("proxy_token_key", "", "Secret key of a proxy token (a Databricks App)")

# COMMAND ----------

# Install fedlake from a local copy of the bundle's source, with a client's extras.
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXTRAS = "client,cli,torch,lakehouse"
root, source = Path(dbutils.widgets.get("repo_root")), Path(tempfile.mkdtemp(prefix="fedlake-"))
for part in ("pyproject.toml", "README.md", "src"):
    (shutil.copytree if (root / part).is_dir() else shutil.copy2)(root / part, source / part)
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"{source}[{EXTRAS}]"],
               check=True)  # fmt: skip
dbutils.library.restartPython()

# COMMAND ----------

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

arg = dbutils.widgets.get
scope, server_url, data = arg("secret_scope"), arg("server_url").strip(), arg("data").strip()
if not server_url.startswith(("https://", "http://")):
    raise ValueError(f"server_url must be the server's URL (deploy with --var server_url=...), "
                     f"got {server_url!r}")  # fmt: skip
if not data:
    raise ValueError("data is empty: deploy with --var silo_table=catalog.schema.table")
state = Path(f"/Volumes/{arg('catalog')}/{arg('schema')}/{arg('state_volume')}")
if not state.is_dir():
    spark.sql(f"CREATE VOLUME IF NOT EXISTS `{arg('catalog')}`.`{arg('schema')}`.`{state.name}`")
local = Path("/local_disk0") if Path("/local_disk0").is_dir() else Path(tempfile.gettempdir())
private = Path(tempfile.mkdtemp(prefix="fedlake-silo-", dir=local))  # 0700


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only this user can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


# COMMAND ----------

try:
    credential = private / "credential.json"
    write_private(credential, dbutils.secrets.get(scope=scope, key=arg("credential_key")))
    client_id = json.loads(credential.read_text())["client_id"]
    if data.startswith("/"):  # a Delta, Parquet or CSV table in a volume: read in place
        table, fmt = data, arg("data_format")
    else:  # a Unity Catalog table: this silo's rows, snapshotted for the client to read
        table, fmt = str(private / "data.parquet"), "parquet"
        spark.table(data).toPandas().to_parquet(table)
    argv = ["client", "--server", server_url, "--credential", str(credential), "--data", table,
            "--format", fmt, "--state", str(state / client_id)]  # fmt: skip
    env = dict(os.environ)
    if arg("proxy_token_key"):
        env["FEDLAKE_PROXY_TOKEN"] = dbutils.secrets.get(scope=scope, key=arg("proxy_token_key"))
        argv += ["--proxy-token-env", "FEDLAKE_PROXY_TOKEN"]
    print(f"fedlake client {client_id} -> {server_url}")
    client = subprocess.Popen(
        [sys.executable, "-m", "fedlake.cli.main", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in client.stdout:
        print(line, end="")
    code = client.wait()
finally:
    shutil.rmtree(private, ignore_errors=True)
if code != 0:
    raise RuntimeError(f"fedlake client exited with code {code} (its output is above)")
