"""The ``table`` scenario's config: where the table is and how its columns become features."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedlake.config.section import Section

__all__ = ["TableData"]


class TableData(Section):
    """A Delta/Parquet/CSV table with a client_id column (data stays in the table)."""

    scenario: Literal["table"]
    path: str
    format: Literal["delta", "parquet", "csv"] = "delta"
    client_column: str = "client_id"
    label_column: str = "label"
    num_classes: int = Field(..., ge=2)
    feature_columns: tuple[str, ...] | None = None  # default: every other column
    # auto: a feature pipeline fitted from client summaries (standardise, impute, one-hot,
    # hash) for tables of scalar columns, except tables written by write_client_table
    # (model-ready features with a stored shape); none: numbers used as they are
    preprocess: Literal["auto", "none"] = "auto"
    categorical: tuple[str, ...] = ()
    max_categories: int = Field(20, ge=1)
    hash_buckets: int = Field(32, ge=0)
    min_category_count: float = Field(5.0, ge=0)
    missing_indicator: bool = True
    bins: int = Field(0, ge=0)
    summary_epsilon: float | None = Field(None, gt=0, allow_inf_nan=False)
    summary_noise: Literal["laplace", "gaussian"] = "laplace"
    summary_delta: float = Field(1e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _preprocess_options(self) -> TableData:
        if self.bins == 1:
            raise ValueError("bins must be 0 (no bins) or >= 2, got 1")
        options = {
            "categorical",
            "max_categories",
            "hash_buckets",
            "min_category_count",
            "missing_indicator",
            "bins",
            "summary_epsilon",
            "summary_noise",
            "summary_delta",
        }
        given = sorted(options & self.model_fields_set)
        if self.preprocess == "none" and given:
            raise ValueError(
                f"{', '.join(given)} apply to preprocess = 'auto' only; remove them or "
                "set preprocess = 'auto'"
            )
        if self.summary_noise == "gaussian" and (self.summary_epsilon or 0) >= 1:
            raise ValueError(
                f"summary_noise = 'gaussian' needs summary_epsilon < 1 (the classical "
                f"bound), got {self.summary_epsilon}; use 'laplace' for larger epsilon"
            )
        return self
