"""What a client tells the server about its columns: counts, sums and sketches, never rows.

:func:`summarise` runs on a client over its own training rows; :func:`merge` runs on
the server and is exact: merging per-client summaries gives the summary of the
pooled rows (counts and sketches exactly, sums and squared deviations up to float
rounding), whatever the order. Summaries are small and JSON-able (:meth:`ClientSummary.to_json`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from fedlake.data.preprocess.columns import KINDS, Kind, as_categorical, as_numeric, kind_of
from fedlake.data.preprocess.sketch import Sketch, merge_sketches, sketch_of

__all__ = ["ClientSummary", "ColumnSummary", "merge", "summarise"]

DEFAULT_ACCURACY = 0.01  # sketch buckets 2% wide: quantile bins within 1% of the truth
MAX_CATEGORIES_SENT = 1000  # a client sends its most frequent categories, the rest as one count


@dataclass(frozen=True)
class ColumnSummary:
    """One column's statistics. ``total``/``sq_dev`` are None when not released (DP).

    ``sq_dev`` is the sum of squared deviations from the column's own mean, not a raw sum
    of squares: ``sum(x^2)/n - mean^2`` loses every digit of the variance when the mean
    is large against the spread (values near 1e8 with unit spread, or a constant 0.1).
    """

    name: str
    kind: Kind
    missing: float = 0.0
    sketch: Sketch | None = None  # numeric
    total: float | None = None
    sq_dev: float | None = None
    categories: Mapping[str, float] = field(default_factory=dict)  # categorical
    other: float = 0.0  # categorical: rows in categories a client did not name

    @property
    def count(self) -> float:
        """Rows with a value (not missing)."""
        if self.kind == "numeric":
            return self.sketch.count if self.sketch is not None else 0.0
        return float(sum(self.categories.values()) + self.other)

    def moments(self) -> tuple[float, float]:
        """Mean and variance: from the sums when released, else from the sketch."""
        if self.total is not None and self.sq_dev is not None and self.count > 0:
            return self.total / self.count, max(self.sq_dev / self.count, 0.0)
        if self.sketch is None:
            raise ValueError(f"column {self.name!r} is not numeric")
        return self.sketch.moments()


@dataclass(frozen=True)
class ClientSummary:
    """The column summaries of one client (or, merged, of several: ``clients``).

    ``epsilon`` is the DP guarantee of each summary merged in (None: no noise).
    """

    columns: tuple[ColumnSummary, ...]
    clients: int = 1
    epsilon: float | None = None
    mechanism: str | None = None

    @property
    def rows(self) -> float:
        """Rows summarised (from the first column; noisy under DP)."""
        return self.columns[0].count + self.columns[0].missing if self.columns else 0.0

    def column(self, name: str) -> ColumnSummary:
        """The summary of column ``name``."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"no column {name!r} in the summary")

    def to_json(self) -> dict[str, Any]:
        """A plain JSON-able mapping (inverse: :meth:`from_json`)."""
        cols = []
        for c in self.columns:
            item: dict[str, Any] = {"name": c.name, "kind": c.kind, "missing": c.missing}
            if c.sketch is not None:
                item["sketch"] = {
                    "relative_accuracy": c.sketch.relative_accuracy,
                    "positive": [[k, v] for k, v in sorted(c.sketch.positive.items())],
                    "negative": [[k, v] for k, v in sorted(c.sketch.negative.items())],
                    "zero": c.sketch.zero,
                }
                item["total"], item["sq_dev"] = c.total, c.sq_dev
            else:
                item["categories"] = dict(sorted(c.categories.items()))
                item["other"] = c.other
            cols.append(item)
        return {
            "columns": cols,
            "clients": self.clients,
            "epsilon": self.epsilon,
            "mechanism": self.mechanism,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClientSummary:
        """Rebuild a summary from :meth:`to_json`'s mapping."""
        cols = []
        for c in data["columns"]:
            if c["kind"] not in KINDS:
                raise ValueError(f"unknown column kind {c['kind']!r}; accepted: {KINDS}")
            sk = c.get("sketch")
            sketch = None
            if sk is not None:
                sketch = Sketch(
                    relative_accuracy=float(sk["relative_accuracy"]),
                    positive={int(k): float(v) for k, v in sk["positive"]},
                    negative={int(k): float(v) for k, v in sk["negative"]},
                    zero=float(sk["zero"]),
                )
            cols.append(
                ColumnSummary(
                    name=str(c["name"]),
                    kind=c["kind"],
                    missing=float(c["missing"]),
                    sketch=sketch,
                    total=None if c.get("total") is None else float(c["total"]),
                    sq_dev=None if c.get("sq_dev") is None else float(c["sq_dev"]),
                    categories={str(k): float(v) for k, v in c.get("categories", {}).items()},
                    other=float(c.get("other", 0.0)),
                )
            )
        eps = data.get("epsilon")
        return cls(
            columns=tuple(cols),
            clients=int(data.get("clients", 1)),
            epsilon=None if eps is None else float(eps),
            mechanism=data.get("mechanism"),
        )


def _summarise_column(
    name: str, values: np.ndarray, *, relative_accuracy: float, max_sent: int
) -> ColumnSummary:
    if kind_of(values) == "numeric":
        x = as_numeric(values, name=name)
        ok = x[np.isfinite(x)]
        return ColumnSummary(
            name=name,
            kind="numeric",
            missing=float(len(x) - len(ok)),
            sketch=sketch_of(ok, relative_accuracy=relative_accuracy),
            total=float(ok.sum()),
            sq_dev=float(((ok - ok.mean()) ** 2).sum()) if len(ok) else 0.0,
        )
    cats = as_categorical(values)
    present = np.array([v for v in cats.tolist() if v is not None], dtype=object)
    tally: dict[str, int] = {}
    for v in present.tolist():
        tally[v] = tally.get(v, 0) + 1
    ranked = sorted(tally.items(), key=lambda kc: (-kc[1], kc[0]))
    return ColumnSummary(
        name=name,
        kind="categorical",
        missing=float(len(cats) - len(present)),
        categories={str(k): float(c) for k, c in ranked[:max_sent]},
        other=float(sum(c for _, c in ranked[max_sent:])),
    )


def summarise(
    columns: Mapping[str, Any],
    *,
    relative_accuracy: float = DEFAULT_ACCURACY,
    max_categories_sent: int = MAX_CATEGORIES_SENT,
) -> ClientSummary:
    """Summarise one client's columns (numbers: float/int arrays; categories: anything else).

    Pure and client-side: the result holds counts, sums, squared deviations, missing
    counts, a quantile sketch per numeric column and category counts, no row.
    """
    if max_categories_sent < 1:
        raise ValueError(f"max_categories_sent must be >= 1, got {max_categories_sent}")
    if not columns:
        raise ValueError("summarise needs at least one column")
    arrays = {name: np.asarray(v) for name, v in columns.items()}
    lengths = {len(a.reshape(-1)) for a in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns must have equal lengths, got {sorted(lengths)}")
    return ClientSummary(
        columns=tuple(
            _summarise_column(
                n, a.reshape(-1), relative_accuracy=relative_accuracy, max_sent=max_categories_sent
            )
            for n, a in arrays.items()
        )
    )


def _pooled_moments(parts: list[ColumnSummary]) -> tuple[float | None, float | None]:
    """Sum and squared deviations of the pooled rows (None when a part withholds them).

    Reference: T. F. Chan, G. H. Golub and R. J. LeVeque, "Algorithms for computing the
    sample variance: analysis and recommendations", The American Statistician, 1983.
    """
    if any(p.total is None or p.sq_dev is None for p in parts):
        return None, None
    n = mean = sq_dev = 0.0
    for p in parts:
        k = p.count
        if k <= 0 or p.total is None or p.sq_dev is None:
            continue
        delta = p.total / k - mean
        n += k
        mean += delta * k / n
        sq_dev += p.sq_dev + delta * delta * (n - k) * k / n
    return float(sum(p.total for p in parts if p.total is not None)), sq_dev


def _merge_column(parts: list[ColumnSummary]) -> ColumnSummary:
    first = parts[0]
    kinds = {p.kind for p in parts}
    if len(kinds) > 1:
        raise ValueError(
            f"column {first.name!r} is numeric at some clients and categorical at others"
        )
    missing = float(sum(p.missing for p in parts))
    if first.kind == "numeric":
        total, sq_dev = _pooled_moments(parts)
        return replace(
            first,
            missing=missing,
            sketch=merge_sketches(p.sketch for p in parts if p.sketch is not None),
            total=total,
            sq_dev=sq_dev,
        )
    cats: dict[str, float] = {}
    for p in parts:
        for k, c in p.categories.items():
            cats[k] = cats.get(k, 0.0) + c
    return replace(
        first,
        missing=missing,
        categories=dict(sorted(cats.items())),
        other=float(sum(p.other for p in parts)),
    )


def merge(summaries: Iterable[ClientSummary]) -> ClientSummary:
    """Server side: the summary of all the summaries' rows (order does not matter).

    The merged ``epsilon`` is the largest of the parts' (each client's rows are
    disjoint, so per-row guarantees compose in parallel); None if any part has none.
    """
    items = list(summaries)
    if not items:
        raise ValueError("merge needs at least one summary")
    names = [c.name for c in items[0].columns]
    for s in items[1:]:
        if [c.name for c in s.columns] != names:
            raise ValueError(
                f"summaries hold different columns: {names} vs {[c.name for c in s.columns]}"
            )
    eps = [s.epsilon for s in items]
    mechanisms = {s.mechanism for s in items}
    return ClientSummary(
        columns=tuple(_merge_column([s.columns[j] for s in items]) for j in range(len(names))),
        clients=sum(s.clients for s in items),
        epsilon=None if None in eps else max(e for e in eps if e is not None),
        mechanism=mechanisms.pop() if len(mechanisms) == 1 else "mixed",
    )
