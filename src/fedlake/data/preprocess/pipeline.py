"""The feature pipeline fitted from merged summaries: a frozen, JSON-able part of the model.

Numbers are standardised (missing values imputed with the mean, i.e. 0 after
scaling, plus an optional missing indicator) and optionally one-hot binned at
quantiles; categories are one-hot over the vocabulary with "other" and "missing"
slots, or hashed into buckets when a column has more than ``max_categories``
frequent values. The same :meth:`FeaturePipeline.transform` runs on the clients'
training rows and in the served model.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedlake.data.preprocess.columns import KINDS, Kind, as_categorical, as_numeric
from fedlake.data.preprocess.summary import ClientSummary, ColumnSummary

__all__ = [
    "INPUT_TYPES",
    "MODEL_CONFIG_KEY",
    "ColumnStep",
    "FeaturePipeline",
    "PipelineOptions",
    "fit_pipeline",
]

FORMAT = 1
OTHER, MISSING = "other", "missing"
MODEL_CONFIG_KEY = "preprocessing"  # the model config's entry holding the pipeline's JSON
# How a raw column arrives at prediction time (MLflow column types): what the table held.
INPUT_TYPES = ("double", "long", "string", "boolean")


@dataclass(frozen=True)
class PipelineOptions:
    """How :func:`fit_pipeline` turns merged summaries into features (validated)."""

    missing_indicator: bool = True
    max_categories: int = 20
    hash_buckets: int = 32
    min_category_count: float = 5.0
    bins: int = 0

    def __post_init__(self) -> None:
        if self.max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {self.max_categories}")
        if self.hash_buckets < 0:
            raise ValueError(
                f"hash_buckets must be >= 0 (0: keep the most frequent), got {self.hash_buckets}"
            )
        if not self.min_category_count >= 0:
            raise ValueError(f"min_category_count must be >= 0, got {self.min_category_count}")
        if self.bins == 1 or self.bins < 0:
            raise ValueError(f"bins must be 0 (no bins) or >= 2, got {self.bins}")


@dataclass(frozen=True)
class ColumnStep:
    """How one raw column becomes features."""

    name: str
    kind: Kind
    mean: float = 0.0
    scale: float = 1.0
    indicator: bool = False
    edges: tuple[float, ...] = ()
    vocabulary: tuple[str, ...] = ()
    hashed: int = 0  # hash buckets (0: one-hot over the vocabulary)

    @property
    def features(self) -> tuple[str, ...]:
        """Names of the features this column produces, in order.

        ``name=value`` is a category's one-hot slot; ``name:slot`` is one the pipeline
        made (missing, other, a hash bucket, a bin), so a category that is literally
        called "other" or "missing" keeps a name of its own.
        """
        n = self.name
        if self.kind == "numeric":
            names = [n] + ([f"{n}:{MISSING}"] if self.indicator else [])
            if self.edges:
                names += [f"{n}:bin{j}" for j in range(len(self.edges) + 1)]
            return tuple(names)
        if self.hashed:
            slots = [f"{n}:#{j}" for j in range(self.hashed)]
        else:
            slots = [f"{n}={v}" for v in self.vocabulary] + [f"{n}:{OTHER}"]
        return (*slots, f"{n}:{MISSING}")

    def transform(self, values: Any) -> np.ndarray:
        """Features (n, len(features)) of this column's raw values."""
        if self.kind == "numeric":
            x = as_numeric(values, name=self.name)
            miss = np.isnan(x)
            z = np.where(miss, 0.0, (x - self.mean) / self.scale)
            parts = [z[:, None]]
            if self.indicator:
                parts.append(miss[:, None].astype(np.float64))
            if self.edges:
                onehot = np.zeros((len(x), len(self.edges) + 1))
                idx = np.searchsorted(np.asarray(self.edges), np.where(miss, 0.0, x), side="right")
                onehot[np.arange(len(x)), idx] = 1.0
                onehot[miss] = 0.0
                parts.append(onehot)
            return np.concatenate(parts, axis=1)
        cats = as_categorical(values)
        width = len(self.features)
        out = np.zeros((len(cats), width))
        slot = {} if self.hashed else {v: j for j, v in enumerate(self.vocabulary)}
        for i, v in enumerate(cats.tolist()):
            if v is None:
                j = width - 1
            elif self.hashed:
                j = zlib.crc32(v.encode("utf-8")) % self.hashed
            else:
                j = slot.get(v, width - 2)
            out[i, j] = 1.0
        return out


@dataclass(frozen=True)
class FeaturePipeline:
    """Raw columns in, float32 features out; ``source`` says what it was fitted from.

    ``input_types`` maps each raw column to the type it arrives in (one of
    :data:`INPUT_TYPES`, as the training table held it; default ``double`` for numeric
    and ``string`` for categorical columns): the served model's signature.
    """

    columns: tuple[ColumnStep, ...]
    source: Mapping[str, Any]
    input_types: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {c: t for c, t in self.input_types.items() if t not in INPUT_TYPES}
        unknown = sorted(set(self.input_types) - set(self.input_columns))
        if bad or unknown:
            raise ValueError(
                f"input_types must map the pipeline's columns to one of {INPUT_TYPES}; "
                f"got {bad or unknown}"
            )

    def input_type(self, name: str) -> str:
        """The type column ``name`` arrives in at prediction time."""
        step = next((c for c in self.columns if c.name == name), None)
        if step is None:
            raise KeyError(
                f"no column {name!r} in the pipeline; it reads {list(self.input_columns)}"
            )
        default = "double" if step.kind == "numeric" else "string"
        return self.input_types.get(name, default)

    @property
    def width(self) -> int:
        """Number of features per row."""
        return len(self.feature_names)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Every feature's name, in order."""
        return tuple(f for c in self.columns for f in c.features)

    @property
    def input_columns(self) -> tuple[str, ...]:
        """The raw columns the pipeline reads."""
        return tuple(c.name for c in self.columns)

    def transform(self, columns: Mapping[str, Any], *, rows: int | None = None) -> np.ndarray:
        """Features (n, width) float32; a column absent from ``columns`` is all missing."""
        n = rows
        for c in self.columns:
            if c.name in columns:
                n = len(np.asarray(columns[c.name], dtype=object).reshape(-1))
                break
        if n is None:
            raise ValueError(
                f"none of the pipeline's columns were given; expected {list(self.input_columns)}"
            )
        parts = []
        for c in self.columns:
            values = columns.get(c.name)
            if values is None:
                values = np.full(n, None, dtype=object)
            elif len(np.asarray(values, dtype=object).reshape(-1)) != n:
                raise ValueError(f"column {c.name!r} has a different length than the others")
            parts.append(c.transform(values))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-able mapping (inverse: :meth:`from_json`)."""
        cols = []
        for c in self.columns:
            item: dict[str, Any] = {"name": c.name, "kind": c.kind}
            if c.kind == "numeric":
                item.update(mean=c.mean, scale=c.scale, indicator=c.indicator, edges=list(c.edges))
            else:
                item.update(vocabulary=list(c.vocabulary), hashed=c.hashed)
            cols.append(item)
        return {
            "format": FORMAT,
            "columns": cols,
            "source": dict(self.source),
            "input_types": dict(self.input_types),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeaturePipeline:
        """Rebuild a pipeline from :meth:`to_json`'s mapping."""
        if data.get("format") != FORMAT:
            raise ValueError(
                f"unknown preprocessing format {data.get('format')!r}; expected {FORMAT}"
            )
        steps = []
        for c in data["columns"]:
            if c["kind"] not in KINDS:
                raise ValueError(f"unknown column kind {c['kind']!r}; accepted: {KINDS}")
            steps.append(
                ColumnStep(
                    name=str(c["name"]),
                    kind=c["kind"],
                    mean=float(c.get("mean", 0.0)),
                    scale=float(c.get("scale", 1.0)),
                    indicator=bool(c.get("indicator", False)),
                    edges=tuple(float(e) for e in c.get("edges", ())),
                    vocabulary=tuple(str(v) for v in c.get("vocabulary", ())),
                    hashed=int(c.get("hashed", 0)),
                )
            )
        return cls(
            columns=tuple(steps),
            source=dict(data.get("source", {})),
            input_types={str(k): str(v) for k, v in data.get("input_types", {}).items()},
        )


# A column whose spread is below this fraction of its mean is constant: that spread is the
# mean's float rounding, and dividing by it would blow any other value up to ~1e9.
CONSTANT = 1e-9


def _numeric_step(col: ColumnSummary, options: PipelineOptions) -> ColumnStep:
    mean, var = col.moments()
    std = math.sqrt(var)
    edges: tuple[float, ...] = ()
    if options.bins and col.sketch is not None:
        qs = col.sketch.quantiles([j / options.bins for j in range(1, options.bins)])
        edges = tuple(sorted(set(qs)))
    return ColumnStep(
        name=col.name,
        kind="numeric",
        mean=float(mean),
        scale=float(std) if std > CONSTANT * max(abs(mean), 1e-3) else 1.0,
        indicator=options.missing_indicator and col.missing >= 0.5,
        edges=edges,
    )


def _categorical_step(col: ColumnSummary, options: PipelineOptions) -> ColumnStep:
    kept = [(k, c) for k, c in col.categories.items() if c >= options.min_category_count]
    kept.sort(key=lambda kc: (-kc[1], kc[0]))
    if len(kept) > options.max_categories and options.hash_buckets:
        return ColumnStep(name=col.name, kind="categorical", hashed=options.hash_buckets)
    vocab = sorted(k for k, _ in kept[: options.max_categories])
    return ColumnStep(name=col.name, kind="categorical", vocabulary=tuple(vocab))


def fit_pipeline(merged: ClientSummary, options: PipelineOptions | None = None) -> FeaturePipeline:
    """Server side: the pipeline of the merged summaries of every client.

    Raises:
        ValueError: a column holds no value in any client's rows (it cannot be used).
    """
    options = options or PipelineOptions()
    steps = []
    for col in merged.columns:
        if col.count < 0.5 and merged.epsilon is not None:
            raise ValueError(
                f"column {col.name!r} has no values left after the summaries' DP noise "
                f"(epsilon {merged.epsilon}); raise summary_epsilon or use more rows"
            )
        if col.count < 0.5:
            raise ValueError(
                f"column {col.name!r} is entirely null in every client's rows; "
                "fill it or leave it out of the features"
            )
        steps.append(
            _numeric_step(col, options)
            if col.kind == "numeric"
            else _categorical_step(col, options)
        )
    source = {
        "clients": merged.clients,
        "rows": round(merged.rows),
        "epsilon": merged.epsilon,
        "mechanism": merged.mechanism,
    }
    return FeaturePipeline(columns=tuple(steps), source=source)
