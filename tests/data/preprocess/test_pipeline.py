"""The feature pipeline fitted from merged summaries: scaling, imputation, bins, categories."""

import json
from dataclasses import replace

import numpy as np
import pytest

from fedlake.data.preprocess.pipeline import (
    ColumnStep,
    FeaturePipeline,
    PipelineOptions,
    fit_pipeline,
)
from fedlake.data.preprocess.summary import merge, summarise


def _clubs(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Three non-IID clients: different visit scales, plans and missing rates."""
    rng = np.random.default_rng(seed)
    clubs = []
    for k, (loc, n) in enumerate([(5.0, 300), (20.0, 200), (50.0, 100)]):
        visits = rng.normal(loc, 3.0 + k, size=n)
        visits[rng.random(n) < 0.1 * k] = np.nan
        plan = rng.choice(["basic", "gold", "student"][: k + 1], size=n).astype(object)
        plan[rng.random(n) < 0.05] = None
        clubs.append({"visits": visits, "plan": plan})
    return clubs


def _fit(clubs: list[dict[str, np.ndarray]], **options) -> FeaturePipeline:
    return fit_pipeline(merge([summarise(c) for c in clubs]), PipelineOptions(**options))


def _one_hot(out: np.ndarray, names: tuple[str, ...], prefix: str) -> np.ndarray:
    return out[:, [j for j, n in enumerate(names) if n.startswith(prefix)]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_categories": 0}, "max_categories must be >= 1, got 0"),
        ({"hash_buckets": -1}, "hash_buckets must be >= 0"),
        ({"min_category_count": -1.0}, "min_category_count must be >= 0, got -1.0"),
        ({"min_category_count": float("nan")}, "min_category_count must be >= 0"),
        ({"bins": 1}, r"bins must be 0 \(no bins\) or >= 2, got 1"),
        ({"bins": -3}, "bins must be 0"),
    ],
)
def test_options_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PipelineOptions(**kwargs)


def test_standardised_over_the_pooled_training_rows() -> None:
    clubs = _clubs()
    pipe = _fit(clubs, missing_indicator=False)
    pooled = np.concatenate([c["visits"] for c in clubs])
    z = pipe.transform({"visits": pooled[~np.isnan(pooled)]})[:, 0].astype(np.float64)
    assert z.mean() == pytest.approx(0.0, abs=1e-6)
    assert z.std() == pytest.approx(1.0, rel=1e-6)
    step = pipe.columns[0]
    assert step.mean == pytest.approx(np.nanmean(pooled)) and step.scale == pytest.approx(
        np.nanstd(pooled)
    )


def test_missing_numbers_become_zero_with_an_indicator() -> None:
    pipe = _fit(_clubs())
    assert pipe.feature_names[:2] == ("visits", "visits:missing")
    out = pipe.transform(
        {"visits": [np.nan, None, pipe.columns[0].mean, 1e3], "plan": ["gold"] * 4}
    )
    assert out[:, 0].tolist()[:3] == [0.0, 0.0, 0.0] and out[3, 0] > 10
    assert out[:, 1].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_no_indicator_without_missing_values_or_when_switched_off() -> None:
    full = {"x": np.arange(10.0)}
    assert fit_pipeline(summarise(full)).feature_names == ("x",)
    holes = {"x": np.array([1.0, np.nan, 3.0])}
    pipe = fit_pipeline(summarise(holes), PipelineOptions(missing_indicator=False))
    assert pipe.feature_names == ("x",)
    assert pipe.transform(holes)[:, 0].tolist() == [-1.0, 0.0, 1.0]


def test_a_constant_column_is_centred_not_blown_up() -> None:
    # Regression: the variance of a constant column is the mean's rounding (std ~1e-11
    # for 123456.789), which scaled a one-unit difference at serving to ~1e10.
    for value in (123456.789, 0.1, 0.0, -7.0):
        pipe = fit_pipeline(summarise({"x": np.full(1000, value)}))
        assert pipe.columns[0].scale == 1.0
        assert pipe.transform({"x": [value, value + 1.0]})[:, 0] == pytest.approx(
            [0.0, 1.0], abs=1e-9
        )


def test_a_tiny_but_real_spread_is_still_scaled() -> None:
    x = np.array([1e-6, 2e-6, 3e-6])
    pipe = fit_pipeline(summarise({"x": x}))
    assert pipe.columns[0].scale == pytest.approx(x.std())


def test_bins_at_quantiles() -> None:
    x = np.random.default_rng(1).lognormal(size=4000)
    pipe = fit_pipeline(summarise({"x": x}), PipelineOptions(bins=4))
    edges = np.array(pipe.columns[0].edges)
    assert edges == pytest.approx(np.quantile(x, [0.25, 0.5, 0.75]), rel=0.011)
    assert pipe.feature_names == ("x", "x:bin0", "x:bin1", "x:bin2", "x:bin3")
    out = pipe.transform({"x": np.append(x, np.nan)})
    bins = out[:, 1:]
    assert (bins[:-1].sum(axis=1) == 1.0).all() and bins[-1].sum() == 0.0  # missing: no bin
    assert bins[:-1].mean(axis=0) == pytest.approx([0.25] * 4, abs=0.02)


def test_bins_collapse_repeated_edges() -> None:
    x = np.array([1.0] * 90 + [2.0] * 10)
    pipe = fit_pipeline(summarise({"x": x}), PipelineOptions(bins=5))
    (edge,) = pipe.columns[0].edges  # the quantiles 0.2 to 0.8 are all (about) 1.0
    assert edge == pytest.approx(1.0, rel=0.011)
    assert pipe.width == 1 + 2


def test_one_hot_with_other_and_missing_slots() -> None:
    pipe = _fit(_clubs(), min_category_count=1)
    names = [n for n in pipe.feature_names if n.startswith("plan")]
    assert names == ["plan=basic", "plan=gold", "plan=student", "plan:other", "plan:missing"]
    out = pipe.transform({"plan": ["gold", None, "platinum", "basic", float("nan")]})
    hot = _one_hot(out, pipe.feature_names, "plan")
    assert hot.argmax(axis=1).tolist() == [1, 4, 3, 0, 4]  # unseen "platinum": other
    assert (hot.sum(axis=1) == 1.0).all()


def test_rare_categories_fold_into_other() -> None:
    plan = np.array(["a"] * 10 + ["b"] * 5 + ["c"] * 4, dtype=object)
    pipe = fit_pipeline(summarise({"plan": plan}), PipelineOptions(min_category_count=5))
    assert pipe.columns[0].vocabulary == ("a", "b")
    assert pipe.transform({"plan": ["c"]}).tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_more_frequent_values_than_max_categories_are_hashed() -> None:
    users = np.array([f"u{j}" for j in range(30) for _ in range(6)], dtype=object)
    pipe = fit_pipeline(summarise({"u": users}), PipelineOptions(max_categories=20, hash_buckets=8))
    step = pipe.columns[0]
    assert step.hashed == 8 and step.vocabulary == ()
    assert pipe.feature_names == tuple(f"u:#{j}" for j in range(8)) + ("u:missing",)
    out = pipe.transform({"u": ["u1", "u1", "never-seen", None]})
    assert (out.sum(axis=1) == 1.0).all() and out[3, -1] == 1.0
    assert (out[0] == out[1]).all()  # the same value always lands in the same bucket
    spread = pipe.transform({"u": np.unique(users)}).sum(axis=0)[:8]
    assert (spread > 0).sum() >= 5  # 30 values over 8 buckets use most of them


def test_without_hash_buckets_the_most_frequent_are_kept() -> None:
    counts = {"a": 9, "b": 8, "c": 7, "d": 6}
    plan = np.array([k for k, n in counts.items() for _ in range(n)], dtype=object)
    options = PipelineOptions(max_categories=2, hash_buckets=0, min_category_count=1)
    assert fit_pipeline(summarise({"p": plan}), options).columns[0].vocabulary == ("a", "b")


def test_only_frequent_values_count_towards_hashing() -> None:
    plan = np.array(["a"] * 10 + ["b"] * 10 + [f"rare{j}" for j in range(50)], dtype=object)
    options = PipelineOptions(max_categories=2, min_category_count=5)
    assert fit_pipeline(summarise({"p": plan}), options).columns[0].vocabulary == ("a", "b")


def test_json_round_trip_gives_identical_transforms() -> None:
    clubs = _clubs()
    pipe = _fit(clubs, bins=3, min_category_count=1)
    hashed = fit_pipeline(
        summarise({"u": np.array([f"u{j}" for j in range(40)] * 6, dtype=object)}),
        PipelineOptions(max_categories=5),
    )
    for p in (pipe, hashed):
        back = FeaturePipeline.from_json(json.loads(json.dumps(p.to_json())))
        assert back == p
        rows = clubs[2] if p is pipe else {"u": ["u3", "zz", None]}
        assert np.array_equal(back.transform(rows), p.transform(rows))
    assert pipe.source == {"clients": 3, "rows": 600, "epsilon": None, "mechanism": None}


def test_from_json_refuses_other_formats_and_kinds() -> None:
    data = fit_pipeline(summarise({"x": np.arange(3.0)})).to_json()
    with pytest.raises(ValueError, match="unknown preprocessing format 2; expected 1"):
        FeaturePipeline.from_json({**data, "format": 2})
    data["columns"][0]["kind"] = "date"
    with pytest.raises(ValueError, match="unknown column kind 'date'"):
        FeaturePipeline.from_json(data)


def test_transform_output_and_absent_columns() -> None:
    pipe = _fit(_clubs(), min_category_count=1)
    out = pipe.transform({"plan": ["gold", "basic"]})  # visits absent: all missing
    assert out.dtype == np.float32 and out.shape == (2, pipe.width)
    assert out[:, :2].tolist() == [[0.0, 1.0], [0.0, 1.0]]
    assert pipe.transform({}, rows=3).shape == (3, pipe.width)
    with pytest.raises(ValueError, match=r"none of the pipeline's columns were given; expected"):
        pipe.transform({"age": [1]})
    with pytest.raises(ValueError, match="column 'plan' has a different length"):
        pipe.transform({"visits": [1.0, 2.0], "plan": ["gold"]})
    with pytest.raises(ValueError, match="column 'visits' must hold numbers"):
        pipe.transform({"visits": ["many"]})


def test_an_entirely_null_column_is_refused_with_why() -> None:
    clubs = [{"x": np.array([np.nan, np.nan]), "c": np.array([None], dtype=object).repeat(2)}]
    with pytest.raises(ValueError, match="column 'x' is entirely null in every client's rows"):
        fit_pipeline(merge([summarise(c) for c in clubs]))


def test_a_column_gone_after_dp_noise_is_refused_with_why() -> None:
    s = summarise({"x": np.array([1.0])})
    col = s.columns[0]
    gone = replace(col, sketch=replace(col.sketch, positive={k: -0.7 for k in col.sketch.positive}))
    noisy = replace(s, columns=(gone,), epsilon=0.5, mechanism="laplace")
    with pytest.raises(ValueError, match=r"no values left after the summaries' DP noise"):
        fit_pipeline(noisy)


def test_input_types_are_validated() -> None:
    pipe = _fit(_clubs())
    typed = replace(pipe, input_types={"visits": "long", "plan": "boolean"})
    assert typed.input_type("visits") == "long" and pipe.input_type("plan") == "string"
    assert pipe.input_type("visits") == "double"
    assert FeaturePipeline.from_json(json.loads(json.dumps(typed.to_json()))) == typed
    with pytest.raises(ValueError, match=r"one of \('double', 'long', 'string', 'boolean'\)"):
        replace(pipe, input_types={"visits": "int"})
    with pytest.raises(ValueError, match=r"got \['age'\]"):
        replace(pipe, input_types={"age": "double"})
    # Regression: an unknown column raised a bare StopIteration.
    with pytest.raises(KeyError, match="no column 'age' in the pipeline"):
        pipe.input_type("age")


def test_column_step_features_order() -> None:
    step = ColumnStep(name="v", kind="numeric", indicator=True, edges=(1.0,))
    assert step.features == ("v", "v:missing", "v:bin0", "v:bin1")
    assert step.transform([0.5, 1.0, None]).tolist() == [
        [0.5, 0.0, 1.0, 0.0],
        [1.0, 0.0, 0.0, 1.0],  # an edge belongs to the bin above it
        [0.0, 1.0, 0.0, 0.0],
    ]


def test_a_category_named_like_a_slot_keeps_its_own_feature():
    from fedlake.data.preprocess import fit_pipeline, summarise

    values = np.array(["other"] * 6 + ["missing"] * 6 + ["gold"] * 6, dtype=object)
    pipe = fit_pipeline(summarise({"plan": values}))
    names = pipe.feature_names
    assert len(set(names)) == len(names)
    assert names == ("plan=gold", "plan=missing", "plan=other", "plan:other", "plan:missing")
    x = pipe.transform({"plan": np.array(["other", None, "bronze"], dtype=object)})
    assert x.tolist() == [[0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]]
