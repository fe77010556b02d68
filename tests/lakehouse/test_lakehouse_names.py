"""Unity Catalog names: parsing, validation and the local folder layout."""

from pathlib import Path

import pytest

from fedlake.lakehouse.names import DEFAULT_CATALOG, DEFAULT_SCHEMA, TableName, check_identifier


def test_parse_three_levels():
    name = TableName.parse("main.fl_runs.rounds")
    assert (name.catalog, name.schema, name.table) == ("main", "fl_runs", "rounds")
    assert name.full_name == "main.fl_runs.rounds" == str(name)
    assert name.quoted == "`main`.`fl_runs`.`rounds`"


def test_parse_fills_missing_levels_with_defaults():
    assert TableName.parse("rounds") == TableName(DEFAULT_CATALOG, DEFAULT_SCHEMA, "rounds")
    assert TableName.parse("lab.audit").full_name == f"{DEFAULT_CATALOG}.lab.audit"
    assert TableName.parse("audit", catalog="prod", schema="fl").full_name == "prod.fl.audit"
    assert (DEFAULT_CATALOG, DEFAULT_SCHEMA) == ("fedlake", "default")


def test_names_are_lower_cased_like_unity_catalog():
    assert TableName.parse("Main.FL.Rounds_2").full_name == "main.fl.rounds_2"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("main.my-schema.rounds", "invalid schema name 'my-schema' in 'main.my-schema.rounds'"),
        ("cat$.s.t", "invalid catalog name 'cat$'"),
        ("a.b.ta ble", "invalid table name 'ta ble'"),
        ("a..t", "schema name must be a non-empty string in 'a..t'"),
        ("a.b.c.d", "has 4 parts; expected at most 3"),
        ("", "table name must be a non-empty string"),
    ],
)
def test_invalid_names_name_the_bad_part(name, message):
    with pytest.raises(ValueError, match=message.replace("$", r"\$").replace(".", r"\.")):
        TableName.parse(name)


def test_constructor_validates_and_limits_length():
    with pytest.raises(ValueError, match="invalid catalog name 'bad.cat'"):
        TableName("bad.cat", "s", "t")
    with pytest.raises(ValueError, match="256 characters long; the limit is 255"):
        check_identifier("x" * 256, part="table")
    assert check_identifier("Ok_1", part="table") == "ok_1"


def test_local_path_maps_the_three_levels(tmp_path):
    name = TableName.parse("main.fl.client_updates")
    assert name.local_path(tmp_path) == tmp_path / "main" / "fl" / "client_updates"
    assert name.local_path(str(tmp_path)) == Path(tmp_path, "main", "fl", "client_updates")
