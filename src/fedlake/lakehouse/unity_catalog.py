"""Unity Catalog governance for a federation: plan its schema, tables and grants, then apply.

:func:`plan_governance` is pure: from a :class:`GovernanceSpec` it lists the schema, the
four fedlake tables (models, rounds, client_updates, audit) and who may do what:

* the server's principal writes: USE_SCHEMA, CREATE_TABLE, CREATE_MODEL on the schema
  (CREATE_MODEL: the registry ``databricks-uc``), SELECT and MODIFY on the four tables,
  and nothing on any silo's table;
* the auditors group reads the audit table only: USE_SCHEMA, SELECT on ``audit``;
* each silo's principal reads its own data table only: USE_SCHEMA on that table's
  schema, SELECT on that table;
* everyone USE_CATALOG on the catalogs involved (``grant_use_catalog``).

:func:`apply` performs a plan through a ``databricks.sdk.WorkspaceClient`` (or any object
with its ``schemas``, ``tables`` and ``grants`` calls); it is idempotent. Without a
workspace the adapter is off: :func:`unavailable_reason` says why, and
:func:`workspace_client` and :func:`apply` raise :class:`UnityCatalogUnavailable` with
that reason. Nothing here logs or reads a credential: the SDK resolves them.
"""

from __future__ import annotations

import configparser
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fedlake.lakehouse.names import TableName, check_identifier
from fedlake.lakehouse.schemas import COLUMNS, Column
from fedlake.orchestration.interfaces import TABLES

__all__ = [
    "EnsureSchema",
    "EnsureTable",
    "GovernancePlan",
    "GovernanceSpec",
    "Grant",
    "UnityCatalogError",
    "UnityCatalogUnavailable",
    "apply",
    "create_table_sql",
    "plan_governance",
    "unavailable_reason",
    "workspace_client",
]

INSTALL_HINT = "pip install 'fedlake[databricks]'"
SERVER_SCHEMA = ("USE_SCHEMA", "CREATE_TABLE", "CREATE_MODEL")
SERVER_TABLE = ("SELECT", "MODIFY")
READ_SCHEMA, READ_TABLE, USE_CATALOG = ("USE_SCHEMA",), ("SELECT",), ("USE_CATALOG",)
# our column kinds (schemas.COLUMNS) in SQL DDL and Spark JSON (upper: ColumnTypeName)
_SQL = {"str": "STRING", "int64": "BIGINT", "float64": "DOUBLE", "binary": "BINARY",
        "timestamp": "TIMESTAMP"}  # fmt: skip
_SPARK = {"str": "string", "int64": "long", "float64": "double", "binary": "binary",
          "timestamp": "timestamp"}  # fmt: skip


class UnityCatalogUnavailable(RuntimeError):
    """The adapter is off: databricks-sdk is missing or no workspace is configured."""


class UnityCatalogError(RuntimeError):
    """A Unity Catalog call failed; the message names the action."""


def _principal(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(f"{what} must be a non-empty name without outer spaces, got {value!r}")
    return value


@dataclass(frozen=True)
class GovernanceSpec:
    """Who may do what on a federation's schema; ``silos`` maps principal -> its data table.

    A silo's table is ``table``, ``schema.table`` or ``catalog.schema.table`` (missing
    levels: this spec's). ``storage_root`` (a cloud URL under an external location) makes
    the four tables external Delta tables at ``<storage_root>/<table>``.
    """

    catalog: str
    schema: str
    server_principal: str
    auditors_group: str
    silos: Mapping[str, str] = field(default_factory=dict)
    storage_root: str | None = None
    grant_use_catalog: bool = True

    def __post_init__(self) -> None:
        catalog = check_identifier(self.catalog, part="catalog")
        schema = check_identifier(self.schema, part="schema")
        _principal(self.server_principal, "server_principal")
        _principal(self.auditors_group, "auditors_group")
        own = {TableName(catalog, schema, t).full_name for t in TABLES}
        silos: dict[str, str] = {}
        for who, table in dict(self.silos).items():
            name = TableName.parse(table, catalog=catalog, schema=schema).full_name
            if name in own:
                raise ValueError(f"silo {who!r} names {name}, one of fedlake's own tables")
            if name in silos.values():
                raise ValueError(f"two silos name {name}; each silo reads only its own table")
            silos[_principal(who, "silo principal")] = name
        everyone = [self.server_principal, self.auditors_group, *silos]
        if len(set(everyone)) != len(everyone):
            raise ValueError(f"the server, auditors and silos must be distinct, got {everyone}")
        root = self.storage_root
        if root is not None and ("://" not in root or "'" in root):
            raise ValueError(
                f"storage_root must be a cloud URL like s3://bucket/path, got {root!r}"
            )
        object.__setattr__(self, "catalog", catalog)
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "silos", MappingProxyType(dict(sorted(silos.items()))))
        object.__setattr__(self, "storage_root", root.rstrip("/") if root else None)


@dataclass(frozen=True)
class EnsureSchema:
    """Create ``catalog.schema`` unless it exists."""

    catalog: str
    schema: str

    def describe(self) -> str:
        """One line for the user."""
        return f"schema {self.catalog}.{self.schema}"


@dataclass(frozen=True)
class EnsureTable:
    """Register one fedlake table unless it exists (external at ``storage_location``)."""

    name: TableName
    columns: tuple[Column, ...]
    storage_location: str | None = None

    def describe(self) -> str:
        """One line for the user."""
        return f"table {self.name}"


@dataclass(frozen=True)
class Grant:
    """``privileges`` (``catalog.Privilege`` names) on a securable, for one principal."""

    securable_type: str  # CATALOG | SCHEMA | TABLE (catalog.SecurableType names)
    full_name: str
    principal: str
    privileges: tuple[str, ...]

    def describe(self) -> str:
        """One line for the user."""
        what = ", ".join(self.privileges)
        return f"grant {what} on {self.securable_type} {self.full_name} to {self.principal}"


Action = EnsureSchema | EnsureTable | Grant


@dataclass(frozen=True)
class GovernancePlan:
    """The actions of a spec, in the order :func:`apply` performs them."""

    spec: GovernanceSpec
    actions: tuple[Action, ...]

    def grants(self) -> tuple[Grant, ...]:
        """The plan's grants."""
        return tuple(a for a in self.actions if isinstance(a, Grant))

    def privileges_of(self, principal: str) -> dict[tuple[str, str], tuple[str, ...]]:
        """What ``principal`` is granted: ``(securable_type, full_name) -> privileges``."""
        return {
            (g.securable_type, g.full_name): g.privileges
            for g in self.grants()
            if g.principal == principal
        }

    def describe(self) -> list[str]:
        """The plan, one line per action."""
        return [a.describe() for a in self.actions]


def plan_governance(spec: GovernanceSpec) -> GovernancePlan:
    """The schema, table and grant actions ``spec`` asks for (pure: no SDK, no network)."""
    schema = f"{spec.catalog}.{spec.schema}"
    own = [TableName(spec.catalog, spec.schema, t) for t in TABLES]
    actions: list[Action] = [EnsureSchema(spec.catalog, spec.schema)]
    for name in own:
        where = f"{spec.storage_root}/{name.table}" if spec.storage_root else None
        actions.append(EnsureTable(name, COLUMNS[name.table], where))
    wanted: dict[tuple[str, str, str], tuple[str, ...]] = {}

    def grant(kind: str, full: str, principal: str, privileges: tuple[str, ...]) -> None:
        have = wanted.get((kind, full, principal), ())
        wanted[kind, full, principal] = have + tuple(p for p in privileges if p not in have)

    readers = {spec.auditors_group: TableName(spec.catalog, spec.schema, "audit")}
    readers.update({who: TableName.parse(table) for who, table in spec.silos.items()})
    if spec.grant_use_catalog:
        grant("CATALOG", spec.catalog, spec.server_principal, USE_CATALOG)
        for who, name in readers.items():
            grant("CATALOG", name.catalog, who, USE_CATALOG)
    grant("SCHEMA", schema, spec.server_principal, SERVER_SCHEMA)
    for who, name in readers.items():
        grant("SCHEMA", f"{name.catalog}.{name.schema}", who, READ_SCHEMA)
    for name in own:
        grant("TABLE", name.full_name, spec.server_principal, SERVER_TABLE)
    for who, name in readers.items():
        grant("TABLE", name.full_name, who, READ_TABLE)
    actions += [Grant(kind, full, who, privs) for (kind, full, who), privs in wanted.items()]
    return GovernancePlan(spec, tuple(actions))


def create_table_sql(table: EnsureTable) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``table`` (Delta; external when it has a location)."""
    cols = ", ".join(
        f"`{name}` {_SQL[kind]}{'' if nullable else ' NOT NULL'}"
        for name, kind, nullable in table.columns
    )
    where = f" LOCATION '{table.storage_location}'" if table.storage_location else ""
    return f"CREATE TABLE IF NOT EXISTS {table.name.quoted} ({cols}) USING DELTA{where}"


def unavailable_reason(
    env: Mapping[str, str] | None = None, *, profile: str | None = None
) -> str | None:
    """Why the adapter is off (no databricks-sdk, no workspace configured); None when on."""
    env = os.environ if env is None else env
    try:
        import databricks.sdk  # noqa: F401
    except ImportError:
        return f"Unity Catalog adapter is off: databricks-sdk is not installed ({INSTALL_HINT})"
    profile = profile or env.get("DATABRICKS_CONFIG_PROFILE")
    if not profile and (env.get("DATABRICKS_HOST") or env.get("DATABRICKS_RUNTIME_VERSION")):
        return None  # configured by environment, or on a Databricks cluster
    path = Path(env.get("DATABRICKS_CONFIG_FILE") or Path.home() / ".databrickscfg").expanduser()
    parser = configparser.ConfigParser(interpolation=None)
    with contextlib.suppress(OSError, configparser.Error):
        parser.read(path)
    if parser.get(profile or parser.default_section, "host", fallback=""):
        return None
    where = f"profile {profile!r} of {path}" if profile else f"DATABRICKS_HOST or {path}"
    return (
        f"Unity Catalog adapter is off: no Databricks workspace is configured (no host in "
        f"{where}); set DATABRICKS_HOST and its credentials or a config profile. "
        "plan_governance works without one."
    )


def workspace_client(*, profile: str | None = None) -> Any:
    """A ``databricks.sdk.WorkspaceClient`` for the configured workspace, or raise when off."""
    reason = unavailable_reason(profile=profile)
    if reason is not None:
        raise UnityCatalogUnavailable(reason)
    from databricks.sdk import WorkspaceClient

    try:
        return WorkspaceClient(profile=profile)
    except ValueError as err:  # the SDK's config errors; it masks secret values
        raise UnityCatalogUnavailable(
            f"Unity Catalog adapter is off: the Databricks SDK could not configure: {err}"
        ) from None


@contextlib.contextmanager
def _failing(what: str) -> Iterator[None]:
    """Re-raise a failure inside as one UnityCatalogError that names ``what``."""
    try:
        yield
    except UnityCatalogError:
        raise
    except Exception as err:
        raise UnityCatalogError(f"{what} failed: {type(err).__name__}: {err}") from err


def _ensure_schema(client: Any, action: EnsureSchema, errors: Any) -> str:
    full = f"{action.catalog}.{action.schema}"
    with _failing(f"creating schema {full}"):
        with contextlib.suppress(errors.NotFound):
            client.schemas.get(full)
            return f"schema {full} exists"
        try:
            client.schemas.create(name=action.schema, catalog_name=action.catalog,
                                  comment="fedlake: a federation's tables")  # fmt: skip
        except errors.ResourceConflict:  # created meanwhile
            return f"schema {full} exists"
        return f"created schema {full}"


def _ensure_table(client: Any, table: EnsureTable, sql: Callable[[str], Any] | None) -> str:
    from databricks.sdk.service import catalog as uc

    full = table.name.full_name
    with _failing(f"registering table {full}"):
        if client.tables.exists(full).table_exists:
            return f"table {full} exists"
        if sql is not None:
            sql(create_table_sql(table))
            return f"created table {full}"
        if table.storage_location is None:
            raise UnityCatalogError(
                f"table {full} does not exist: pass sql= (spark.sql on a cluster: a managed "
                "table) or set storage_root (an external location URL: an external table)"
            )
        columns = [
            uc.ColumnInfo(name=name, position=i, nullable=nullable, type_text=_SQL[kind].lower(),
                          type_name=uc.ColumnTypeName(_SPARK[kind].upper()),
                          type_json=f'{{"name":"{name}","type":"{_SPARK[kind]}",'
                                    f'"nullable":{str(nullable).lower()},"metadata":{{}}}}')
            for i, (name, kind, nullable) in enumerate(table.columns)
        ]  # fmt: skip
        client.tables.create(
            name=table.name.table,
            catalog_name=table.name.catalog,
            schema_name=table.name.schema,
            table_type=uc.TableType.EXTERNAL,
            data_source_format=uc.DataSourceFormat.DELTA,
            storage_location=table.storage_location,
            columns=columns,
        )
        return f"registered external table {full} at {table.storage_location}"


def apply(
    plan: GovernancePlan,
    client: Any | None = None,
    *,
    sql: Callable[[str], Any] | None = None,
) -> list[str]:
    """Perform ``plan`` through ``client`` (None: :func:`workspace_client`); one line per step.

    Missing tables are created with ``sql`` (e.g. ``spark.sql``) when given, else registered
    as external tables under the spec's ``storage_root``. Grants are only added: what a
    principal already holds beyond the plan stays (see docs/databricks.md to check).

    Raises:
        UnityCatalogUnavailable: the adapter is off (the message says why).
        UnityCatalogError: a call failed (the message names the action).
    """
    try:
        from databricks.sdk import errors
        from databricks.sdk.service import catalog as uc
    except ImportError:
        raise UnityCatalogUnavailable(str(unavailable_reason())) from None
    client = workspace_client() if client is None else client
    done: list[str] = []
    for action in plan.actions:
        if isinstance(action, EnsureSchema):
            done.append(_ensure_schema(client, action, errors))
        elif isinstance(action, EnsureTable):
            done.append(_ensure_table(client, action, sql))
    securables: dict[tuple[str, str], list[Grant]] = {}
    for g in plan.grants():
        securables.setdefault((g.securable_type, g.full_name), []).append(g)
    for (kind, full), grants in securables.items():
        changes = [
            uc.PermissionsChange(principal=g.principal, add=[uc.Privilege(p) for p in g.privileges])
            for g in grants
        ]
        with _failing(f"granting on {kind} {full}"):
            client.grants.update(uc.SecurableType(kind).value, full, changes=changes)
        done += [g.describe() for g in grants]
    return done
