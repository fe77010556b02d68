"""The Unity Catalog adapter: the plan's exact grants, apply, idempotence, and the OFF path.

These tests use a LOCAL FAKE of the Databricks SDK's calls (``FakeWorkspaceClient``
below records ``schemas.get/create``, ``tables.exists/create`` and ``grants.update``),
not a workspace: nothing here touches the network. The fake takes and returns the SDK's
own classes (``catalog.PermissionsChange``, ``catalog.Privilege``, its error types), and a
test checks that its method signatures match the installed SDK's. What only a workspace
can check (that the calls succeed there, with your principals) is in docs/databricks.md.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any

import pytest

from fedlake.lakehouse.names import TableName
from fedlake.lakehouse.unity_catalog import (
    EnsureSchema,
    EnsureTable,
    GovernanceSpec,
    Grant,
    UnityCatalogError,
    UnityCatalogUnavailable,
    apply,
    create_table_sql,
    plan_governance,
    unavailable_reason,
    workspace_client,
)

SERVER, AUDITORS = "fedlake-server-sp", "fl-auditors"
SILOS = {"silo-a-sp": "silos.clinic_a", "silo-b-sp": "other.bank_b.loans"}
OWN = ("models", "rounds", "client_updates", "audit")


def spec(**overrides: Any) -> GovernanceSpec:
    args: dict[str, Any] = dict(
        catalog="fl", schema="churn", server_principal=SERVER, auditors_group=AUDITORS,
        silos=SILOS,
    )  # fmt: skip
    return GovernanceSpec(**{**args, **overrides})


# -- the plan (pure: no SDK needed) ----------------------------------------------------


def test_the_server_writes_the_four_tables_and_reads_no_silo_data() -> None:
    got = plan_governance(spec()).privileges_of(SERVER)
    want = {
        ("CATALOG", "fl"): ("USE_CATALOG",),
        ("SCHEMA", "fl.churn"): ("USE_SCHEMA", "CREATE_TABLE", "CREATE_MODEL"),
    } | {("TABLE", f"fl.churn.{t}"): ("SELECT", "MODIFY") for t in OWN}
    assert got == want


def test_auditors_read_the_audit_table_only() -> None:
    assert plan_governance(spec()).privileges_of(AUDITORS) == {
        ("CATALOG", "fl"): ("USE_CATALOG",),
        ("SCHEMA", "fl.churn"): ("USE_SCHEMA",),
        ("TABLE", "fl.churn.audit"): ("SELECT",),
    }


def test_each_silo_reads_its_own_table_only() -> None:
    plan = plan_governance(spec())
    assert plan.privileges_of("silo-a-sp") == {
        ("CATALOG", "fl"): ("USE_CATALOG",),
        ("SCHEMA", "fl.silos"): ("USE_SCHEMA",),
        ("TABLE", "fl.silos.clinic_a"): ("SELECT",),
    }
    assert plan.privileges_of("silo-b-sp") == {  # a table in another catalog
        ("CATALOG", "other"): ("USE_CATALOG",),
        ("SCHEMA", "other.bank_b"): ("USE_SCHEMA",),
        ("TABLE", "other.bank_b.loans"): ("SELECT",),
    }
    silo_tables = {"fl.silos.clinic_a", "other.bank_b.loans"}
    for g in plan.grants():  # nobody else is granted anything on a silo's table
        if g.full_name in silo_tables:
            assert g.principal in SILOS and SILOS[g.principal] in g.full_name


def test_the_plan_lists_the_schema_then_the_tables_then_the_grants() -> None:
    plan = plan_governance(spec())
    assert plan.actions[0] == EnsureSchema("fl", "churn")
    tables = plan.actions[1:5]
    assert all(isinstance(a, EnsureTable) and a.storage_location is None for a in tables)
    assert [getattr(a, "name", None) for a in tables] == [TableName("fl", "churn", t) for t in OWN]
    assert all(isinstance(a, Grant) for a in plan.actions[5:])
    assert plan.describe()[:2] == ["schema fl.churn", "table fl.churn.models"]
    assert "grant SELECT on TABLE fl.churn.audit to fl-auditors" in plan.describe()
    assert plan_governance(spec()) == plan  # pure: same spec, same plan


def test_without_use_catalog_only_schema_and_table_grants() -> None:
    plan = plan_governance(spec(grant_use_catalog=False))
    assert {g.securable_type for g in plan.grants()} == {"SCHEMA", "TABLE"}


def test_a_storage_root_places_each_table_under_it() -> None:
    plan = plan_governance(spec(storage_root="s3://bucket/fedlake/"))
    where = [a.storage_location for a in plan.actions if isinstance(a, EnsureTable)]
    assert where == [f"s3://bucket/fedlake/{t}" for t in OWN]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"silos": {"silo-a-sp": "audit"}}, "one of fedlake's own tables"),
        ({"silos": {"a": "t1", "b": "fl.churn.t1"}}, "two silos name fl.churn.t1"),
        ({"silos": {SERVER: "t1"}}, "must be distinct"),
        ({"auditors_group": SERVER}, "must be distinct"),
        ({"server_principal": " "}, "server_principal must be a non-empty name"),
        ({"catalog": "bad-name"}, "invalid catalog name"),
        ({"silos": {"a": "x.y.z.w"}}, "expected at most 3"),
        ({"storage_root": "/local/path"}, "storage_root must be a cloud URL"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**overrides)


def test_create_table_sql_follows_the_lakehouse_schema() -> None:
    plan = plan_governance(spec(storage_root="abfss://c@acct.dfs.core.windows.net/fl"))
    audit = next(a for a in plan.actions if isinstance(a, EnsureTable) and a.name.table == "audit")
    assert create_table_sql(audit) == (
        "CREATE TABLE IF NOT EXISTS `fl`.`churn`.`audit` (`time` TIMESTAMP NOT NULL, "
        "`run_id` STRING NOT NULL, `actor` STRING NOT NULL, `action` STRING NOT NULL, "
        "`object` STRING NOT NULL, `details` STRING NOT NULL) USING DELTA "
        "LOCATION 'abfss://c@acct.dfs.core.windows.net/fl/audit'"
    )
    models = next(a for a in plan_governance(spec()).actions if isinstance(a, EnsureTable))
    ddl = create_table_sql(models)
    assert "`params` BINARY NOT NULL" in ddl and "`round` BIGINT NOT NULL" in ddl
    assert "`accuracy` DOUBLE," in ddl and "LOCATION" not in ddl


# -- apply, through a local fake of the SDK ---------------------------------------------


def _sdk() -> tuple[Any, Any]:
    uc = importlib.import_module("databricks.sdk.service.catalog")
    errors = importlib.import_module("databricks.sdk.errors")
    return uc, errors


class FakeWorkspaceClient:
    """A local stand-in for ``databricks.sdk.WorkspaceClient``: records every call."""

    def __init__(self, *, catalogs: tuple[str, ...] = ("fl", "other")) -> None:
        self.uc, self.errors = _sdk()
        self.catalogs = set(catalogs)
        self.schema_names = {"fl.silos", "other.bank_b"}  # the silos' own, already there
        self.table_names = {"fl.silos.clinic_a", "other.bank_b.loans"}
        self.grant_state: dict[tuple[str, str], dict[str, set[str]]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.sql: list[str] = []
        self.schemas, self.tables, self.grants = _Schemas(self), _Tables(self), _Grants(self)

    def run_sql(self, statement: str) -> None:
        """What spark.sql would do with the adapter's CREATE TABLE (here: register it)."""
        self.sql.append(statement)
        name = re.match(r"CREATE TABLE IF NOT EXISTS `(\w+)`\.`(\w+)`\.`(\w+)` \(", statement)
        assert name is not None, statement
        catalog, schema, table = name.groups()
        assert f"{catalog}.{schema}" in self.schema_names, "a table before its schema"
        self.table_names.add(f"{catalog}.{schema}.{table}")

    def calls_to(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]

    def exists(self, kind: str, full: str) -> bool:
        known = {"CATALOG": self.catalogs, "SCHEMA": self.schema_names, "TABLE": self.table_names}
        return full in known[kind]


class _Schemas:
    def __init__(self, ws: FakeWorkspaceClient) -> None:
        self.ws = ws

    def get(self, full_name: str, *, include_browse: bool | None = None) -> Any:
        self.ws.calls.append(("schemas.get", full_name))
        if full_name not in self.ws.schema_names:
            raise self.ws.errors.NotFound(f"Schema '{full_name}' does not exist.")
        return self.ws.uc.SchemaInfo(full_name=full_name)

    def create(self, name: str, catalog_name: str, *, comment: str | None = None) -> Any:
        self.ws.calls.append(("schemas.create", (catalog_name, name)))
        full = f"{catalog_name}.{name}"
        if catalog_name not in self.ws.catalogs:
            raise self.ws.errors.NotFound(f"Catalog '{catalog_name}' does not exist.")
        if full in self.ws.schema_names:
            raise self.ws.errors.ResourceAlreadyExists(f"Schema '{name}' already exists")
        self.ws.schema_names.add(full)
        return self.ws.uc.SchemaInfo(full_name=full)


class _Tables:
    def __init__(self, ws: FakeWorkspaceClient) -> None:
        self.ws = ws

    def exists(self, full_name: str) -> Any:
        self.ws.calls.append(("tables.exists", full_name))
        return self.ws.uc.TableExistsResponse(table_exists=full_name in self.ws.table_names)

    def create(self, name: str, catalog_name: str, schema_name: str, table_type: Any,
               data_source_format: Any, storage_location: str, *,
               columns: Any = None) -> Any:  # fmt: skip
        self.ws.calls.append(("tables.create", dict(
            name=name, catalog_name=catalog_name, schema_name=schema_name, table_type=table_type,
            data_source_format=data_source_format, storage_location=storage_location,
            columns=columns)))  # fmt: skip
        if f"{catalog_name}.{schema_name}" not in self.ws.schema_names:
            raise self.ws.errors.NotFound(f"Schema '{catalog_name}.{schema_name}' not found")
        self.ws.table_names.add(f"{catalog_name}.{schema_name}.{name}")
        return self.ws.uc.TableInfo(full_name=f"{catalog_name}.{schema_name}.{name}")


class _Grants:
    def __init__(self, ws: FakeWorkspaceClient) -> None:
        self.ws = ws

    def update(self, securable_type: str, full_name: str, *, changes: Any = None) -> Any:
        assert isinstance(securable_type, str), "the SDK takes the securable type as a string"
        self.ws.calls.append(("grants.update", (securable_type, full_name, changes)))
        if not self.ws.exists(securable_type, full_name):
            raise self.ws.errors.NotFound(f"{securable_type} '{full_name}' does not exist.")
        held = self.ws.grant_state.setdefault((securable_type, full_name), {})
        for change in changes or ():
            assert isinstance(change, self.ws.uc.PermissionsChange)
            assert all(isinstance(p, self.ws.uc.Privilege) for p in change.add or ())
            held.setdefault(change.principal, set()).update(p.value for p in change.add or ())
        return self.ws.uc.UpdatePermissionsResponse()


def held_by(ws: FakeWorkspaceClient, principal: str) -> dict[tuple[str, str], set[str]]:
    return {key: grants[principal] for key, grants in ws.grant_state.items() if principal in grants}


def test_the_fake_has_the_sdks_signatures() -> None:
    uc, _ = _sdk()
    pairs: list[tuple[Any, Any]] = [
        (_Schemas.get, uc.SchemasAPI.get),
        (_Schemas.create, uc.SchemasAPI.create),
        (_Tables.exists, uc.TablesAPI.exists),
        (_Tables.create, uc.TablesAPI.create),
        (_Grants.update, uc.GrantsAPI.update),
    ]
    for fake, real in pairs:
        ours, theirs = inspect.signature(fake).parameters, inspect.signature(real).parameters
        assert set(ours) <= set(theirs), f"{fake.__qualname__}: {set(ours) - set(theirs)}"
        for name, p in ours.items():
            assert p.kind == theirs[name].kind, f"{fake.__qualname__}({name})"


def test_apply_creates_the_schema_and_tables_then_sets_exactly_the_planned_grants() -> None:
    ws = FakeWorkspaceClient()
    plan = plan_governance(spec())
    done = apply(plan, ws, sql=ws.run_sql)
    assert ws.calls_to("schemas.create") == [("fl", "churn")]
    assert len(ws.sql) == 4 and all(s.startswith("CREATE TABLE IF NOT EXISTS") for s in ws.sql)
    assert {f"fl.churn.{t}" for t in OWN} <= ws.table_names
    assert done[:2] == ["created schema fl.churn", "created table fl.churn.models"]
    for who in (SERVER, AUDITORS, *SILOS):
        want = {key: set(privs) for key, privs in plan.privileges_of(who).items()}
        assert held_by(ws, who) == want, who
    assert held_by(ws, AUDITORS) == {
        ("CATALOG", "fl"): {"USE_CATALOG"},
        ("SCHEMA", "fl.churn"): {"USE_SCHEMA"},
        ("TABLE", "fl.churn.audit"): {"SELECT"},
    }
    # the request body the SDK sends for the audit table (its own serialisation)
    audit = next(c for k, f, c in ws.calls_to("grants.update") if f == "fl.churn.audit")
    assert [c.as_dict() for c in audit] == [
        {"principal": SERVER, "add": ["SELECT", "MODIFY"]},
        {"principal": AUDITORS, "add": ["SELECT"]},
    ]
    # one grants.update per securable, after every table exists
    updates = ws.calls_to("grants.update")
    assert len(updates) == len({(k, f) for k, f, _ in updates})
    first_update = next(i for i, (c, _) in enumerate(ws.calls) if c == "grants.update")
    assert all(c != "tables.exists" for c, _ in ws.calls[first_update:])


def test_apply_twice_changes_nothing_the_second_time() -> None:
    ws = FakeWorkspaceClient()
    plan = plan_governance(spec())
    apply(plan, ws, sql=ws.run_sql)
    state = {k: {p: set(v) for p, v in g.items()} for k, g in ws.grant_state.items()}
    ws.calls.clear()
    done = apply(plan, ws, sql=ws.run_sql)
    assert ws.calls_to("schemas.create") == [] and ws.calls_to("tables.create") == []
    assert len(ws.sql) == 4  # no new statement
    assert ws.grant_state == state
    assert done[:5] == ["schema fl.churn exists"] + [f"table fl.churn.{t} exists" for t in OWN]


def test_an_existing_schema_is_no_error_even_when_created_meanwhile() -> None:
    ws = FakeWorkspaceClient()
    ws.schema_names.add("fl.churn")
    assert apply(plan_governance(spec()), ws, sql=ws.run_sql)[0] == "schema fl.churn exists"
    assert ws.calls_to("schemas.create") == []

    racing = FakeWorkspaceClient()
    real_create = racing.schemas.create

    def get_not_found_then_someone_creates(full_name: str, **_: Any) -> Any:
        racing.calls.append(("schemas.get", full_name))
        real_create("churn", "fl")  # another deployer wins the race
        raise racing.errors.NotFound("not yet")

    racing.schemas.get = get_not_found_then_someone_creates  # type: ignore[method-assign]
    done = apply(plan_governance(spec()), racing, sql=racing.run_sql)
    assert done[0] == "schema fl.churn exists"


def test_with_a_storage_root_tables_are_registered_as_external_delta_tables() -> None:
    ws = FakeWorkspaceClient()
    apply(plan_governance(spec(storage_root="s3://bucket/fl")), ws)
    created = ws.calls_to("tables.create")
    assert [c["name"] for c in created] == list(OWN)
    first = created[0]
    assert first["table_type"] == ws.uc.TableType.EXTERNAL
    assert first["data_source_format"] == ws.uc.DataSourceFormat.DELTA
    assert first["storage_location"] == "s3://bucket/fl/models"
    params = next(c for c in first["columns"] if c.name == "params")
    assert (params.type_name, params.type_text, params.nullable) == (
        ws.uc.ColumnTypeName.BINARY, "binary", False,
    )  # fmt: skip
    assert '"type":"binary"' in params.type_json
    assert [c.position for c in first["columns"]] == list(range(len(first["columns"])))


def test_a_missing_table_without_a_way_to_create_it_is_a_clear_error() -> None:
    ws = FakeWorkspaceClient()
    with pytest.raises(
        UnityCatalogError, match=r"table fl\.churn\.models does not exist: pass sql="
    ):
        apply(plan_governance(spec()), ws)


def test_a_failing_sdk_call_names_the_action() -> None:
    ws = FakeWorkspaceClient()
    ws.table_names.discard("other.bank_b.loans")  # a silo's table that is not there
    with pytest.raises(UnityCatalogError) as caught:
        apply(plan_governance(spec()), ws, sql=ws.run_sql)
    assert str(caught.value).startswith("granting on TABLE other.bank_b.loans failed: NotFound")


# -- the OFF path ------------------------------------------------------------------------


@pytest.fixture
def no_workspace(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    for key in ("DATABRICKS_HOST", "DATABRICKS_CONFIG_PROFILE", "DATABRICKS_CONFIG_FILE",
                "DATABRICKS_RUNTIME_VERSION", "DATABRICKS_TOKEN"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.databrickscfg
    return tmp_path


def test_without_a_workspace_the_adapter_is_off_and_says_why(no_workspace: Any) -> None:
    importlib.import_module("databricks.sdk")  # a dependency of the dev env: never skipped
    reason = unavailable_reason()
    assert reason is not None
    assert reason.startswith("Unity Catalog adapter is off: no Databricks workspace is configured")
    assert "DATABRICKS_HOST" in reason
    with pytest.raises(UnityCatalogUnavailable, match="adapter is off: no Databricks workspace"):
        workspace_client()
    with pytest.raises(UnityCatalogUnavailable, match="adapter is off: no Databricks workspace"):
        apply(plan_governance(spec()))  # no client given: one from the environment


def test_a_workspace_is_found_from_env_a_cluster_or_a_profile(
    no_workspace: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    importlib.import_module("databricks.sdk")  # a dependency of the dev env: never skipped
    assert unavailable_reason({"DATABRICKS_HOST": "https://adb-1.azuredatabricks.net"}) is None
    assert unavailable_reason({"DATABRICKS_RUNTIME_VERSION": "15.4"}) is None
    cfg = no_workspace / "databrickscfg"
    cfg.write_text("[DEFAULT]\nhost = https://a.cloud.databricks.com\ntoken = dapi-SECRET\n"
                   "[silo]\nhost = https://b.cloud.databricks.com\n")  # fmt: skip
    env = {"DATABRICKS_CONFIG_FILE": str(cfg)}
    assert unavailable_reason(env) is None
    assert unavailable_reason(env, profile="silo") is None
    missing = unavailable_reason(env, profile="nope")
    assert missing is not None and "profile 'nope'" in missing
    assert "SECRET" not in missing  # the file's secrets are never repeated


def test_the_reason_never_repeats_a_secret(no_workspace: Any, monkeypatch: Any) -> None:
    importlib.import_module("databricks.sdk")  # a dependency of the dev env: never skipped
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-0123456789abcdef-SECRET")
    reason = unavailable_reason()
    assert reason is not None and "SECRET" not in reason and "dapi" not in reason


def test_without_databricks_sdk_the_adapter_is_off_but_plans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "databricks.sdk", None)  # as if not installed
    reason = unavailable_reason({"DATABRICKS_HOST": "https://x.cloud.databricks.com"})
    assert reason == (
        "Unity Catalog adapter is off: databricks-sdk is not installed "
        "(pip install 'fedlake[databricks]')"
    )
    plan = plan_governance(spec())  # planning needs no SDK
    with pytest.raises(UnityCatalogUnavailable, match="databricks-sdk is not installed"):
        apply(plan, object())
    with pytest.raises(UnityCatalogUnavailable, match="databricks-sdk is not installed"):
        workspace_client()
