"""Attacks on hand-checkable inputs: what malicious clients train on and what they send."""

from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from scipy.stats import norm

from fedlake.data.base import ClientDataset
from fedlake.simulation.attacks import (
    ATTACKS,
    ALittleIsEnough,
    Attack,
    Backdoor,
    GaussianNoise,
    InnerProductManipulation,
    LabelFlip,
    SignFlip,
    Trigger,
    alie_z,
    backdoor_success,
    build_attack,
    malicious_count,
)

RNG = np.random.default_rng(0)


def craft(attack, own, honest, cohort=None):
    own, honest = np.asarray(own, np.float32), np.asarray(honest, np.float32)
    n = cohort or len(own) + len(honest)
    return attack.craft(own, honest.reshape(-1, own.shape[1]), cohort=n, rng=RNG)


def dataset(n=10, shape=(3,), classes=4):
    x = np.arange(n * int(np.prod(shape)), dtype=np.float32).reshape(n, *shape)
    y = np.arange(n) % classes
    return ClientDataset(x, y, x.copy(), y.copy())


@pytest.mark.parametrize(
    ("n", "fraction", "expected"), [(20, 0.2, 4), (15, 0.2, 3), (15, 0.1, 1), (10, 0.05, 0)]
)
def test_malicious_count_is_the_floor(n, fraction, expected):
    assert malicious_count(n, fraction) == expected


def test_sign_flip_sends_minus_scale_times_its_delta():
    out = craft(SignFlip(), [[1.0, -2.0]], [[5.0, 5.0]])
    np.testing.assert_array_equal(out, [[-4.0, 8.0]])
    np.testing.assert_array_equal(craft(SignFlip(scale=1), [[1.0, -2.0]], []), [[-1.0, 2.0]])
    assert out.dtype == np.float32


def test_gaussian_sends_independent_noise_of_the_given_std():
    out = GaussianNoise(sigma=3.0).craft(
        np.zeros((2, 20000), np.float32), np.zeros((0, 20000)), cohort=5, rng=RNG
    )
    assert out.shape == (2, 20000) and out.dtype == np.float32
    assert abs(out.std() - 3.0) < 0.05 and abs(out.mean()) < 0.05
    assert abs(np.corrcoef(out)[0, 1]) < 0.03  # two attackers, two draws


def test_alie_z_follows_the_paper_formula():
    # Baruch et al.: s = floor(n/2 + 1) - m, z = Phi^-1((n - s) / n), e.g. n = 50, m = 12:
    # s = 26 - 12 = 14, (50 - 14) / 50 = 0.72
    assert alie_z(50, 12) == pytest.approx(norm.ppf(0.72), abs=1e-9)
    # n = 20, m = 4: s = 11 - 4 = 7, p = 13 / 20
    assert alie_z(20, 4) == pytest.approx(norm.ppf(0.65), abs=1e-9)
    assert alie_z(10, 0) == pytest.approx(norm.ppf(0.5), abs=1e-9)  # no attacker: z = 0
    assert alie_z(10, 9) == pytest.approx(norm.ppf(1 - 1e-6))  # clipped, not infinite


def test_alie_sends_mean_minus_z_std_of_the_honest_updates():
    # honest (0, 0) and (2, 4): mean (1, 2), population std (1, 2); z = 1 -> (0, 0)
    out = craft(ALittleIsEnough(z=1.0), [[9.0, 9.0], [7.0, 7.0]], [[0.0, 0.0], [2.0, 4.0]])
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.0, 0.0]])
    # default z from (n, m) = (4, 2): s = 1, p = 3/4
    z = norm.ppf(0.75)
    out = craft(ALittleIsEnough(), [[9.0, 9.0], [7.0, 7.0]], [[0.0, 0.0], [2.0, 4.0]])
    np.testing.assert_allclose(out[0], [1 - z, 2 - 2 * z], rtol=1e-6)


def test_alie_uses_the_population_std_of_the_honest_updates():
    # three honest updates: population std sqrt(2/3) * 3 = 2.449..., sample std 3
    honest = [[0.0], [3.0], [6.0]]
    out = craft(ALittleIsEnough(z=1.0), [[9.0]], honest)
    spread = np.std(np.array(honest), ddof=0)
    np.testing.assert_allclose(out, [[3.0 - spread]], rtol=1e-6)
    assert abs(out[0, 0] - (3.0 - np.std(np.array(honest), ddof=1))) > 0.5


def test_ipm_sends_minus_epsilon_times_the_honest_mean():
    out = craft(InnerProductManipulation(epsilon=0.5), [[9.0, 9.0]], [[0.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(out, [[-0.5, -1.0]])
    # no honest update to see: the colluders use their own
    out = craft(InnerProductManipulation(), [[1.0, 3.0], [3.0, 1.0]], [])
    np.testing.assert_allclose(out, [[-0.2, -0.2], [-0.2, -0.2]])


def test_label_flip_poisons_labels_only():
    ds = dataset(classes=4)
    out = LabelFlip(num_classes=4).poison(ds, RNG)
    np.testing.assert_array_equal(out.y_train, 3 - ds.y_train)
    np.testing.assert_array_equal(out.x_train, ds.x_train)
    np.testing.assert_array_equal(out.y_test, ds.y_test)  # the test split is not training data
    assert not LabelFlip(num_classes=4).crafts


def test_trigger_stamps_the_last_features_of_every_example():
    x = np.zeros((2, 2, 3), np.float32)
    out = Trigger(size=2, value=5.0).apply(x)
    assert out.shape == x.shape and not np.shares_memory(out, x)
    np.testing.assert_array_equal(out.reshape(2, -1), [[0, 0, 0, 0, 5, 5]] * 2)
    with pytest.raises(ValueError, match="trigger size 7 exceeds the 6 features"):
        Trigger(size=7).apply(x)


def test_backdoor_adds_triggered_copies_with_the_target_label():
    ds = dataset(n=10, shape=(3,), classes=4)
    attack = Backdoor(target=2, poison_fraction=0.3, trigger=Trigger(size=1, value=-1.0))
    out = attack.poison(ds, np.random.default_rng(1))
    assert out.num_train == 13  # 10 clean + round(0.3 * 10) triggered
    triggered = out.x_train[:, -1] == -1.0
    assert triggered.sum() == 3 and (out.y_train[triggered] == 2).all()
    # the clean rows are all still there, with their labels
    clean = sorted(map(tuple, out.x_train[~triggered]))
    assert clean == sorted(map(tuple, ds.x_train))


def test_backdoor_boosts_its_delta_to_replace_the_model():
    # 2 attackers of 10 reporting clients: boost n / m = 5
    np.testing.assert_allclose(craft(Backdoor(), [[1.0], [2.0]], [[0.0]] * 8), [[5.0], [10.0]])
    np.testing.assert_allclose(craft(Backdoor(boost=3.0), [[1.0]], [[0.0]]), [[3.0]])


def test_backdoor_success_counts_non_target_examples_classified_as_target():
    attack = Backdoor(target=1, trigger=Trigger(size=1, value=9.0))
    x = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]], np.float32)
    y = np.array([0, 1, 2, 0])

    def predict(params, xs):  # says "target" when the last feature is the trigger's 9
        hit = xs[:, -1] == 9.0
        return np.stack([~hit, hit, np.zeros(len(xs), bool)], axis=1).astype(float)

    assert backdoor_success(predict, None, x, y, attack) == 1.0
    assert (
        backdoor_success(lambda p, xs: np.eye(3)[np.zeros(len(xs), int)], None, x, y, attack) == 0.0
    )
    assert backdoor_success(predict, None, x[1:2], y[1:2], attack) is None  # only the target


def test_build_attack_from_config_options():
    assert isinstance(build_attack({"kind": "none", "fraction": 0.3}, num_classes=2), Attack)
    assert build_attack({"kind": "sign_flip", "scale": 2}, num_classes=2) == SignFlip(scale=2)
    assert build_attack({"kind": "label_flip"}, num_classes=7) == LabelFlip(num_classes=7)
    bd = build_attack({"kind": "backdoor", "trigger_size": 6, "target": 3}, num_classes=10)
    assert bd == Backdoor(target=3, trigger=Trigger(size=6))
    assert set(ATTACKS) == {
        "none",
        "label_flip",
        "sign_flip",
        "gaussian",
        "backdoor",
        "alie",
        "ipm",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "bogus"}, "unknown attack 'bogus'; accepted: none, label_flip"),
        ({"kind": "sign_flip", "sigma": 1}, "sign_flip: .*sigma"),
        (
            {"kind": "sign_flip", "scale": -1},
            r"sign_flip scale must be a finite number > 0, got -1",
        ),
        ({"kind": "gaussian", "sigma": 0}, "gaussian sigma must be a finite number > 0, got 0"),
        ({"kind": "alie", "z": float("inf")}, "alie z must be a finite number > 0, got inf"),
        ({"kind": "ipm", "epsilon": True}, "ipm epsilon must be a finite number > 0, got True"),
        ({"kind": "backdoor", "target": 10}, r"backdoor target must be a class in 0..9, got 10"),
        (
            {"kind": "backdoor", "poison_fraction": 1.5},
            r"poison_fraction must be in \(0, 1\], got 1.5",
        ),
        ({"kind": "backdoor", "boost": 0}, "boost must be a finite number > 0 or None, got 0"),
        ({"kind": "backdoor", "trigger_size": 0}, "trigger size must be an integer >= 1, got 0"),
    ],
)
def test_bad_attack_options_fail_with_the_value_and_range(spec, message):
    with pytest.raises(ValueError, match=message):
        build_attack(spec, num_classes=10)


def test_attacks_are_frozen_and_picklable():
    import pickle

    for attack in (SignFlip(), LabelFlip(num_classes=3), Backdoor(), ALittleIsEnough()):
        assert pickle.loads(pickle.dumps(attack)) == attack
    with pytest.raises(FrozenInstanceError):
        SignFlip().scale = 2.0  # type: ignore[misc]
