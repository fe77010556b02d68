"""Personalization settings and personal_mask: validation messages and exact positions."""

import numpy as np
import pytest

from fedlake.client.logreg import LogRegTrainer
from fedlake.core.algorithm import LocalConfig
from fedlake.core.personal import Personalization, mask_for, personal_config, personal_mask

LR_RANGE = "personal lr must be a finite number > 0 (or None: the client lr), got "
BAD = [
    ({"kind": "pfedme"}, "kind must be one of ['finetune', 'fedper', 'ditto'], got 'pfedme'"),
    ({"kind": "fedper"}, "fedper needs at least one personal layer"),
    ({"kind": "fedper", "layers": "bias"}, "layers must be a sequence of tensor names, got 'bias'"),
    ({"kind": "fedper", "layers": ("bias", 3)}, "layers must be a sequence of tensor names"),
    ({"kind": "fedper", "layers": ("b", "b")}, "layers must be distinct, got ['b'] twice"),
    (
        {"kind": "ditto", "layers": ("b",)},
        "apply to fedper only, got layers=['b'] for kind 'ditto'",
    ),
    ({"kind": "finetune", "layers": ("bias",)}, "personal layers apply to fedper only"),
    ({"kind": "ditto", "lam": -1}, "ditto lam must be a finite number >= 0, got -1"),
    ({"kind": "ditto", "lam": float("nan")}, "ditto lam must be a finite number >= 0, got nan"),
    ({"kind": "ditto", "lam": float("inf")}, "ditto lam must be a finite number >= 0, got inf"),
    ({"kind": "ditto", "lam": True}, "ditto lam must be a finite number >= 0, got True"),
    ({"kind": "ditto", "lam": "0.1"}, "ditto lam must be a finite number >= 0, got '0.1'"),
    ({"kind": "ditto", "epochs": 0}, "personal epochs must be an integer >= 1, got 0"),
    ({"kind": "ditto", "epochs": 1.5}, "personal epochs must be an integer >= 1, got 1.5"),
    ({"kind": "finetune", "lr": 0.0}, LR_RANGE + "0.0"),
    ({"kind": "finetune", "lr": -0.1}, LR_RANGE + "-0.1"),
    ({"kind": "finetune", "lr": float("inf")}, LR_RANGE + "inf"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD)
def test_bad_settings_are_refused_with_the_value_and_the_accepted_range(kwargs, message):
    with pytest.raises(ValueError) as info:
        Personalization(**kwargs)
    assert message in str(info.value)


def test_good_settings_and_defaults():
    p = Personalization("fedper", layers=["bias"])  # lists (YAML) become tuples
    assert p.layers == ("bias",)
    d = Personalization("ditto")
    assert (d.layers, d.lam, d.epochs, d.lr) == ((), 0.1, 1, None)
    assert Personalization("ditto", lam=0).lam == 0
    assert hash(Personalization("finetune", epochs=3, lr=0.5))  # frozen, hashable


def test_personal_mask_marks_exactly_the_bias_positions():
    spec = LogRegTrainer(num_features=3, num_classes=2).spec  # weight (2, 3), bias (2,)
    mask = personal_mask(spec, ["bias"])
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [False] * 6 + [True] * 2)
    np.testing.assert_array_equal(personal_mask(spec, ["weight"]), [True] * 6 + [False] * 2)
    assert not personal_mask(spec, []).any()


def test_personal_mask_names_the_missing_layer_and_lists_the_model_tensors():
    spec = LogRegTrainer(num_features=3, num_classes=2).spec
    with pytest.raises(ValueError) as info:
        personal_mask(spec, ["bias", "fc9.weight"])
    assert str(info.value) == (
        "personal layer 'fc9.weight' is not in the model; its tensors are: weight, bias"
    )


def test_personal_mask_refuses_a_model_with_nothing_left_to_federate():
    spec = LogRegTrainer(num_features=3, num_classes=2).spec
    with pytest.raises(ValueError, match="nothing is left to federate"):
        personal_mask(spec, ["weight", "bias"])


def test_mask_for_is_the_fedper_mask_and_none_otherwise():
    spec = LogRegTrainer(num_features=3, num_classes=2).spec
    np.testing.assert_array_equal(
        mask_for(Personalization("fedper", layers=("bias",)), spec), personal_mask(spec, ["bias"])
    )
    assert mask_for(Personalization("ditto"), spec) is None
    assert mask_for(Personalization("finetune"), spec) is None


def test_personal_config_uses_personal_epochs_and_lr_without_cap_or_dp():
    config = LocalConfig(epochs=5, batch_size=8, lr=0.2, max_steps=3)
    c = personal_config(Personalization("ditto", epochs=2), config)
    assert (c.epochs, c.batch_size, c.lr, c.max_steps, c.dp) == (2, 8, 0.2, None, None)
    assert personal_config(Personalization("finetune", lr=0.05), config).lr == 0.05


def test_personal_config_refuses_a_ditto_pull_that_makes_sgd_diverge():
    with pytest.raises(
        ValueError, match=r"ditto lam \* lr must be <= 2 .* got lam=30 \* lr=0.1 = 3"
    ):
        personal_config(Personalization("ditto", lam=30), LocalConfig(lr=0.1))
    personal_config(Personalization("ditto", lam=20), LocalConfig(lr=0.1))  # exactly 2: allowed
