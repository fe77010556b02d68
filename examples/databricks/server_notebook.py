# Databricks notebook source
# MAGIC %md
# MAGIC # fedlake: a federation's server on this cluster
# MAGIC
# MAGIC Runs `fedlake server` on the driver of this job cluster (deployed by `databricks.yml`,
# MAGIC the job `fedlake_server`; see `docs/databricks.md`):
# MAGIC
# MAGIC 1. installs fedlake from the bundle's copy of the source;
# MAGIC 2. Unity Catalog: checks the run volume and creates the tables `models`, `rounds`,
# MAGIC    `client_updates`, `audit` if missing (an admin has applied the governance plan
# MAGIC    of `fedlake.lakehouse.unity_catalog`: the schema and who may do what);
# MAGIC 3. serves the federation: MLflow on this workspace, the model registered in Unity
# MAGIC    Catalog (`databricks-uc`) as `catalog.schema.model` with an alias, the run folder
# MAGIC    (checkpoints) in a volume, so a later run with `resume = true` continues;
# MAGIC 4. when the server stops (also on failure), appends the run's new rows of the four
# MAGIC    tables to the Unity Catalog tables.
# MAGIC
# MAGIC Secrets come from the secret scope at run time and are never printed: the TLS key and
# MAGIC the client registry (`dbutils.secrets`, into a private temporary folder removed at the
# MAGIC end), the status page's token (`FEDLAKE_OPERATOR_TOKEN`, a `{{secrets/...}}` reference
# MAGIC in the job's cluster), and this notebook's own workspace token, handed to the fedlake
# MAGIC process through its environment so that MLflow can reach the workspace.

# COMMAND ----------

# ruff: noqa: E402, F821  (cells import where they run; dbutils and spark are the notebook's)
dbutils.widgets.text("repo_root", "", "fedlake source (the bundle's files)")
dbutils.widgets.text("config", "", "Federation config (TOML or YAML)")
dbutils.widgets.text("catalog", "fedlake", "Catalog")
dbutils.widgets.text("schema", "federation", "Schema")
dbutils.widgets.text("model_name", "fedlake_model", "Model name (in catalog.schema)")
dbutils.widgets.text("alias", "champion", "Model alias")
dbutils.widgets.text("experiment", "/Shared/fedlake", "MLflow experiment")
dbutils.widgets.text("runs_volume", "fedlake_runs", "Volume of the run folder")
dbutils.widgets.text("secret_scope", "fedlake", "Secret scope")
dbutils.widgets.text("port", "8443", "Port")
dbutils.widgets.dropdown("resume", "false", ["false", "true"], "Resume the run")

# COMMAND ----------

# Install fedlake from a local copy of the bundle's source, with the server's extras.
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXTRAS = "server,cli,sim,torch,lakehouse"
root, source = Path(dbutils.widgets.get("repo_root")), Path(tempfile.mkdtemp(prefix="fedlake-"))
for part in ("pyproject.toml", "README.md", "src"):
    (shutil.copytree if (root / part).is_dir() else shutil.copy2)(root / part, source / part)
subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", f"{source}[{EXTRAS}]"],
               check=True)  # fmt: skip
dbutils.library.restartPython()

# COMMAND ----------

import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from functools import reduce
from pathlib import Path

import yaml

from fedlake.lakehouse.delta_store import DeltaStore
from fedlake.lakehouse.names import TableName
from fedlake.lakehouse.schemas import COLUMNS
from fedlake.lakehouse.unity_catalog import EnsureTable, create_table_sql

arg = dbutils.widgets.get
catalog, schema, scope = arg("catalog"), arg("schema"), arg("secret_scope")
local = Path("/local_disk0") if Path("/local_disk0").is_dir() else Path(tempfile.gettempdir())
lake_root = local / "fedlake" / "lakehouse"  # delta-rs writes here; published at the end
runs = Path(f"/Volumes/{catalog}/{schema}/{arg('runs_volume')}")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only this user can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


# COMMAND ----------

# Unity Catalog: an admin has applied the governance plan (the schema, the grants, the
# volume: docs/databricks.md); the server creates any of its four tables still missing.
if not runs.is_dir():
    raise RuntimeError(f"no volume {runs}: an admin creates it and grants this job's "
                       "principal READ VOLUME and WRITE VOLUME (docs/databricks.md)")  # fmt: skip
for table, columns in COLUMNS.items():
    spark.sql(create_table_sql(EnsureTable(TableName(catalog, schema, table), columns)))
    print(f"table {catalog}.{schema}.{table} ready")

# COMMAND ----------

# The federation's config, pointed at this workspace: MLflow, the UC registry, the volume.
config_path = Path(arg("config"))
text = config_path.read_text()
raw = yaml.safe_load(text) if config_path.suffix in (".yaml", ".yml") else tomllib.loads(text)
raw["output_dir"] = str(runs)
raw["lakehouse"] = {
    **raw.get("lakehouse", {}),
    "catalog": catalog,
    "schema": schema,
    "root": str(lake_root),
    "tracking_uri": "databricks",
    "registry_uri": "databricks-uc",
    "experiment": arg("experiment"),
    "model_name": f"{catalog}.{schema}.{arg('model_name')}",
    "alias": arg("alias"),
}
if not os.environ.get("FEDLAKE_OPERATOR_TOKEN"):
    raise RuntimeError("FEDLAKE_OPERATOR_TOKEN is not set: the job's cluster passes it from "
                       f"{{{{secrets/{scope}/operator-token}}}}")  # fmt: skip

# COMMAND ----------


def publish(store: DeltaStore) -> None:
    """Append the rows of the four tables that Unity Catalog does not have yet."""
    for table, columns in COLUMNS.items():
        if not store.exists(table):
            continue
        target = spark.table(f"`{catalog}`.`{schema}`.`{table}`")
        rows = spark.createDataFrame(store.read_arrow(table).to_pandas(), schema=target.schema)
        keys = [name for name, kind, _ in columns if kind != "binary"]
        same = reduce(lambda a, b: a & b, [rows[k].eqNullSafe(target[k]) for k in keys])
        new = rows.join(target, same, "left_anti")
        count = new.count()
        new.write.mode("append").saveAsTable(f"`{catalog}`.`{schema}`.`{table}`")
        print(f"{catalog}.{schema}.{table}: {count} new rows")


# COMMAND ----------

context = dbutils.notebook.entry_point.getDbutils().notebook().getContext()
env = {**os.environ, "DATABRICKS_HOST": context.apiUrl().get(),
       "DATABRICKS_TOKEN": context.apiToken().get()}  # fmt: skip
private = Path(tempfile.mkdtemp(prefix="fedlake-server-", dir=local))  # 0700
try:
    config, certs = private / "federation.yaml", private / "certs"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    certs.mkdir(mode=0o700)
    for key, name in (("server-cert", "server.pem"), ("server-key", "server.key"),
                      ("clients-registry", "clients.json")):  # fmt: skip
        write_private(certs / name, dbutils.secrets.get(scope=scope, key=key))
    argv = ["server", "--config", str(config), "--certs", str(certs), "--host", "0.0.0.0",
            "--port", arg("port"), "--quiet"]  # fmt: skip
    if arg("resume") == "true":
        argv.append("--resume")
    print(f"fedlake server: https://{spark.conf.get('spark.driver.host')}:{arg('port')}")
    server = subprocess.Popen(
        [sys.executable, "-m", "fedlake.cli.main", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    for line in server.stdout:
        print(line, end="")
    code = server.wait()
finally:
    shutil.rmtree(private, ignore_errors=True)
    publish(DeltaStore(lake_root, catalog=catalog, schema=schema))
if code != 0:
    raise RuntimeError(f"fedlake server exited with code {code} (its output is above)")
