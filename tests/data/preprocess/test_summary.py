"""Client summaries and their server-side merge: exact, order-free, JSON-able."""

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedlake.data.preprocess.sketch import sketch_of
from fedlake.data.preprocess.summary import ClientSummary, ColumnSummary, merge, summarise

NUMBER = st.none() | st.floats(-1e6, 1e6)
CATEGORY = st.none() | st.sampled_from(["gold", "silver", "bronze", "trial", ""])
ROWS = st.lists(st.tuples(NUMBER, CATEGORY), max_size=25)


def _columns(rows: list[tuple[float | None, str | None]]) -> dict[str, np.ndarray]:
    return {
        "visits": np.array([np.nan if v is None else v for v, _ in rows], dtype=np.float64),
        "plan": np.array([c for _, c in rows], dtype=object),
    }


def _pooled(parts: list[list[tuple[float | None, str | None]]]) -> ClientSummary:
    return summarise(_columns([r for p in parts for r in p]))


def _without_moments(s: ClientSummary) -> ClientSummary:
    return replace(s, columns=tuple(replace(c, total=None, sq_dev=None) for c in s.columns))


def test_numeric_column_summary() -> None:
    x = np.array([1.0, 2.0, np.nan, 4.0, np.inf])
    col = summarise({"x": x}).column("x")
    ok = np.array([1.0, 2.0, 4.0])
    assert col.kind == "numeric"
    assert col.missing == 2.0 and col.count == 3.0
    assert col.total == pytest.approx(ok.sum())
    assert col.sq_dev == pytest.approx(((ok - ok.mean()) ** 2).sum())
    assert col.sketch == sketch_of(ok, relative_accuracy=0.01)
    assert col.moments() == pytest.approx((ok.mean(), ok.var()))
    assert col.categories == {} and col.other == 0.0


def test_integer_column_is_numeric() -> None:
    col = summarise({"age": np.array([30, 40, 50])}).column("age")
    assert col.kind == "numeric" and col.moments() == pytest.approx((40.0, 200.0 / 3))


def test_categorical_column_summary() -> None:
    plan = np.array(["gold", None, "silver", "gold", "", float("nan"), True], dtype=object)
    col = summarise({"plan": plan}).column("plan")
    assert col.kind == "categorical"
    assert dict(col.categories) == {"gold": 2.0, "silver": 1.0, "true": 1.0}
    assert col.missing == 3.0 and col.other == 0.0 and col.count == 4.0
    assert col.sketch is None and col.total is None
    with pytest.raises(ValueError, match="not numeric"):
        col.moments()


def test_a_client_sends_its_most_frequent_categories_the_rest_as_other() -> None:
    plan = np.array(["a"] * 3 + ["b"] * 2 + ["c"] * 2 + ["d"], dtype=object)
    col = summarise({"plan": plan}, max_categories_sent=2).column("plan")
    assert dict(col.categories) == {"a": 3.0, "b": 2.0}  # b before c: ties by name
    assert col.other == 3.0 and col.count == 8.0


def test_variance_survives_a_large_mean() -> None:
    # Regression: sum(x^2)/n - mean^2 gave std 1.41 here (true 0.98), and 1e-9 for a
    # constant 0.1, which standardised any other value to ~1e8.
    x = 1e8 + np.random.default_rng(0).normal(size=1000)
    parts = [summarise({"x": p}) for p in np.array_split(x, 3)]
    for summary in (summarise({"x": x}), merge(parts)):
        mean, var = summary.column("x").moments()
        assert mean == pytest.approx(x.mean(), rel=1e-15)
        assert var == pytest.approx(x.var(), rel=1e-9)
    _, var = summarise({"x": np.full(1000, 0.1)}).column("x").moments()
    assert var < 1e-30


@pytest.mark.parametrize(
    ("columns", "kwargs", "message"),
    [
        ({}, {}, "at least one column"),
        ({"a": [1.0], "b": [1.0, 2.0]}, {}, r"equal lengths, got \[1, 2\]"),
        ({"a": [1.0]}, {"max_categories_sent": 0}, "max_categories_sent must be >= 1, got 0"),
    ],
)
def test_summarise_refuses(columns: dict, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarise(columns, **kwargs)


def test_column_lookup_and_rows() -> None:
    s = summarise(_columns([(1.0, "gold"), (None, None), (3.0, None)]))
    assert s.rows == 3.0 and s.clients == 1 and s.epsilon is None
    assert s.column("plan").missing == 2.0
    with pytest.raises(KeyError, match="no column 'age'"):
        s.column("age")
    assert ClientSummary(columns=()).rows == 0.0


def test_no_row_crosses_only_statistics() -> None:
    values = [12345.678, 23456.789]
    text = json.dumps(summarise({"x": np.array(values), "c": ["secret-a", "b"]}).to_json())
    assert "12345.678" not in text and "23456.789" not in text  # the sketch buckets only
    assert "secret-a" in text  # category names are released (documented in dp.py)


def test_json_round_trip_through_text() -> None:
    s = summarise(_columns([(1.5, "gold"), (-2.0, None), (0.0, "silver"), (None, "gold")]))
    back = ClientSummary.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s


def test_json_round_trip_keeps_withheld_sums_and_dp_fields() -> None:
    s = summarise({"x": np.array([1.0, 2.0])})
    s = replace(
        s, columns=(replace(s.columns[0], total=None, sq_dev=None),), epsilon=0.5, mechanism="x"
    )
    back = ClientSummary.from_json(json.loads(json.dumps(s.to_json())))
    assert back == s and back.column("x").total is None


def test_from_json_refuses_unknown_kind() -> None:
    data = summarise({"x": np.array([1.0])}).to_json()
    data["columns"][0]["kind"] = "date"
    with pytest.raises(ValueError, match=r"unknown column kind 'date'"):
        ClientSummary.from_json(data)


def test_merge_refuses() -> None:
    with pytest.raises(ValueError, match="at least one summary"):
        merge([])
    a = summarise({"x": np.array([1.0])})
    b = summarise({"y": np.array([1.0])})
    with pytest.raises(ValueError, match=r"different columns: \['x'\] vs \['y'\]"):
        merge([a, b])
    c = summarise({"x": np.array(["one"], dtype=object)})
    with pytest.raises(ValueError, match="numeric at some clients and categorical at others"):
        merge([a, c])


def test_merge_counts_clients_and_keeps_the_largest_epsilon() -> None:
    s = summarise({"x": np.array([1.0])})
    noisy = [replace(s, epsilon=e, mechanism="laplace") for e in (0.5, 2.0, 1.0)]
    m = merge(noisy)
    assert m.clients == 3 and m.epsilon == 2.0 and m.mechanism == "laplace"
    assert merge([m, s]).clients == 4
    mixed = merge([noisy[0], s])
    assert mixed.epsilon is None and mixed.mechanism == "mixed"
    assert merge([s, s]).mechanism is None


def test_merge_withholds_sums_when_any_part_does() -> None:
    s = summarise({"x": np.array([1.0, 2.0])})
    withheld = replace(s, columns=(replace(s.columns[0], total=None, sq_dev=None),))
    col = merge([s, withheld]).column("x")
    assert col.total is None and col.sq_dev is None
    assert col.count == 4.0  # the sketches still merge


@settings(max_examples=60)
@given(st.lists(ROWS, min_size=1, max_size=5))
def test_merge_of_parts_is_the_summary_of_the_pooled_rows(parts) -> None:
    merged = merge([summarise(_columns(p)) for p in parts])
    pooled = _pooled(parts)
    # Counts, missing counts, sketches and categories exactly; sums up to float rounding.
    assert _without_moments(merged) == replace(_without_moments(pooled), clients=len(parts))
    m, p = merged.column("visits"), pooled.column("visits")
    assert m.total == pytest.approx(p.total, rel=1e-9, abs=1e-6)
    assert m.sq_dev == pytest.approx(p.sq_dev, rel=1e-9, abs=1e-3)


@settings(max_examples=40)
@given(st.lists(ROWS, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_merge_does_not_depend_on_order_or_grouping(parts, rnd) -> None:
    summaries = [summarise(_columns(p)) for p in parts]
    first = merge(summaries)
    rnd.shuffle(summaries)
    again = merge(summaries)
    nested = merge([merge(summaries[:1]), *summaries[1:]]) if len(summaries) > 1 else again
    for other in (again, nested):
        assert _without_moments(other) == _without_moments(first)
        a, b = other.column("visits"), first.column("visits")
        assert a.total == pytest.approx(b.total, rel=1e-9, abs=1e-6)
        assert a.sq_dev == pytest.approx(b.sq_dev, rel=1e-9, abs=1e-3)


@settings(max_examples=40)
@given(st.lists(ROWS, min_size=1, max_size=4))
def test_merged_moments_are_the_pooled_rows_moments(parts) -> None:
    x = np.array([v for p in parts for v, _ in p if v is not None])
    col = merge([summarise(_columns(p)) for p in parts]).column("visits")
    if len(x) == 0:
        assert col.count == 0.0
        return
    mean, var = col.moments()
    assert mean == pytest.approx(x.mean(), rel=1e-9, abs=1e-6)
    assert var == pytest.approx(x.var(), rel=1e-9, abs=1e-6)


def test_column_summary_count_of_hand_built_parts() -> None:
    col = ColumnSummary(name="c", kind="categorical", categories={"a": 2.0}, other=1.5)
    assert col.count == 3.5
    assert ColumnSummary(name="n", kind="numeric").count == 0.0
