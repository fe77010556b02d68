import numpy as np
import pytest

from fedlake.orchestration.sampling import CohortSpec, sample_cohort
from fedlake.simulation import Population


def test_cohort_spec_count_and_fraction():
    assert CohortSpec(count=10).size(100) == 10
    assert CohortSpec(fraction=0.15).size(100) == 15
    assert CohortSpec(fraction=0.001).size(100) == 1
    with pytest.raises(ValueError, match="exceeds the number of clients"):
        CohortSpec(count=101).size(100)
    with pytest.raises(ValueError, match="exactly one"):
        CohortSpec()
    with pytest.raises(ValueError, match="fraction must be in"):
        CohortSpec(fraction=1.5)


def test_sample_cohort_distinct_deterministic_and_uniform():
    ids = [f"u{i}" for i in range(20)]
    a = sample_cohort(ids, 5, np.random.default_rng(1))
    assert a == sample_cohort(ids, 5, np.random.default_rng(1))
    assert len(set(a)) == 5
    counts = dict.fromkeys(ids, 0)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        for c in sample_cohort(ids, 5, rng):
            counts[c] += 1
    freq = np.array(list(counts.values())) / 2000
    np.testing.assert_allclose(freq, 0.25, atol=0.04)


def test_sample_cohort_from_a_million_lazily():
    class Lazy:
        def __len__(self):
            return 1_000_000

        def __getitem__(self, i):
            return f"user-{i:07d}"

    cohort = sample_cohort(Lazy(), 20, np.random.default_rng(0))
    assert len(set(cohort)) == 20 and all(c.startswith("user-") for c in cohort)


def test_population_dropout_rate():
    pop = Population(dropout=0.3)
    rng = np.random.default_rng(0)
    cohort = [str(i) for i in range(10_000)]
    assert abs(len(pop.dropped(cohort, rng)) / 10_000 - 0.3) < 0.02
    assert Population().dropped(cohort, rng) == set()
    with pytest.raises(ValueError, match="dropout"):
        Population(dropout=1.0)
