"""Unity Catalog-ready three-level table names (``catalog.schema.table``) and their local layout."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_CATALOG", "DEFAULT_SCHEMA", "TableName", "check_identifier"]

DEFAULT_CATALOG = "fedlake"
DEFAULT_SCHEMA = "default"
MAX_IDENTIFIER_LENGTH = 255  # Unity Catalog limit per name part
_IDENTIFIER = re.compile(r"[A-Za-z0-9_]+")


def check_identifier(value: str, *, part: str, full: str | None = None) -> str:
    """Validate one name part (letters, digits, underscore) and return it lower-cased.

    Unity Catalog stores names in lower case, so ``Rounds`` and ``rounds`` are one table;
    lower-casing here keeps the local folders in step with that.

    Raises:
        ValueError: naming the bad ``part`` (and the ``full`` name it came from, if given).
    """
    where = f" in {full!r}" if full is not None else ""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{part} name must be a non-empty string{where}, got {value!r}")
    if not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"invalid {part} name {value!r}{where}: Unity Catalog identifiers use only "
            "letters, digits and underscores"
        )
    if len(value) > MAX_IDENTIFIER_LENGTH:
        raise ValueError(
            f"{part} name is {len(value)} characters long{where}; "
            f"the limit is {MAX_IDENTIFIER_LENGTH}"
        )
    return value.lower()


@dataclass(frozen=True)
class TableName:
    """A validated ``catalog.schema.table`` name, parts lower-cased as Unity Catalog stores them."""

    catalog: str
    schema: str
    table: str

    def __post_init__(self) -> None:
        full = f"{self.catalog}.{self.schema}.{self.table}"
        for part in ("catalog", "schema", "table"):
            object.__setattr__(
                self, part, check_identifier(getattr(self, part), part=part, full=full)
            )

    @classmethod
    def parse(
        cls, name: str, *, catalog: str = DEFAULT_CATALOG, schema: str = DEFAULT_SCHEMA
    ) -> TableName:
        """Parse ``table``, ``schema.table`` or ``catalog.schema.table``; missing levels default.

        Raises:
            ValueError: more than three parts, or an invalid part (named in the message).
        """
        if not isinstance(name, str):
            raise ValueError(f"table name must be a string, got {name!r}")
        parts = name.split(".")
        if len(parts) > 3:
            raise ValueError(
                f"table name {name!r} has {len(parts)} parts; expected at most 3 "
                "(catalog.schema.table)"
            )
        for label, value in zip(
            ("catalog", "schema", "table")[3 - len(parts) :], parts, strict=True
        ):
            check_identifier(value, part=label, full=name)
        return cls(*([catalog, schema][: 3 - len(parts)] + parts))

    @property
    def full_name(self) -> str:
        """``catalog.schema.table``, as used in Spark SQL and Unity Catalog."""
        return f"{self.catalog}.{self.schema}.{self.table}"

    @property
    def quoted(self) -> str:
        """The full name with each part back-quoted, safe to paste into SQL."""
        return f"`{self.catalog}`.`{self.schema}`.`{self.table}`"

    def local_path(self, root: str | Path) -> Path:
        """Folder of this table under ``root``: ``root/catalog/schema/table``."""
        return Path(root) / self.catalog / self.schema / self.table

    def __str__(self) -> str:
        return self.full_name
