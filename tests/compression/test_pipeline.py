import re

import numpy as np
import pytest

from fedlake.algorithms import compressed
from fedlake.algorithms.fedavg import fedavg
from fedlake.compression.codec import encode_with_feedback, make_codec, plain
from fedlake.compression.pipeline import codec_from_stages
from fedlake.compression.pruning import MagnitudePruning
from fedlake.compression.sparsify import top_k
from fedlake.compression.wire import HEADER
from fedlake.core.codec import Compression
from fedlake.plugins import error_feedback


def header_fields(codec, dim=100):
    vec = np.random.default_rng(0).standard_normal(dim).astype(np.float32)
    payload = codec.encode(vec, np.random.default_rng(1))
    np.testing.assert_equal(codec.decode(payload, dim).shape, (dim,))
    # (sparsifier, coder, bits, index mode, bucket)
    return HEADER.unpack_from(payload)[2:7]


@pytest.mark.parametrize("stages", [[], ()])
def test_empty_chain_is_none(stages):
    assert codec_from_stages(stages) is None


@pytest.mark.parametrize(
    ("stages", "name"),
    [
        ([{"kind": "topk", "ratio": 0.01}], "top0.01+float32"),
        ([{"kind": "random_mask", "ratio": 0.5}], "random0.5+float32"),
        ([{"kind": "random_mask", "ratio": 0.5, "unbiased": False}], "random0.5-biased+float32"),
        ([{"kind": "quantize"}], "stochastic8"),
        ([{"kind": "quantize", "bits": 4}], "stochastic4"),
        ([{"kind": "quantize", "stochastic": False}], "nearest8"),
        ([{"kind": "float16"}], "float16"),
        ([{"kind": "topk", "ratio": 0.1}, {"kind": "quantize", "bits": 2}], "top0.1+stochastic2"),
        ([{"kind": "random_mask", "ratio": 0.25}, {"kind": "float16"}], "random0.25+float16"),
    ],
)
def test_codec_from_stages_names(stages, name):
    codec = codec_from_stages(stages)
    assert codec.name == name
    assert not codec.lossless


def test_quantize_stage_defaults_and_options_reach_the_header():
    # defaults: 8 bits, stochastic (coder tag 3), bucket 512
    assert header_fields(codec_from_stages([{"kind": "quantize"}])) == (0, 3, 8, 0, 512)
    stages = [{"kind": "quantize", "bits": 4, "bucket": 64}]
    assert header_fields(codec_from_stages(stages)) == (0, 3, 4, 0, 64)
    stages = [{"kind": "quantize", "bits": 8, "stochastic": False}]
    assert header_fields(codec_from_stages(stages)) == (0, 4, 8, 0, 512)  # nearest: tag 4


def test_sparsifier_plus_coder_chain_header():
    stages = [{"kind": "topk", "ratio": 0.05}, {"kind": "quantize", "bits": 1, "bucket": 16}]
    # top-k (tag 1), stochastic (3), 1 bit, 5 u16 indices (mode 1), bucket 16
    assert header_fields(codec_from_stages(stages)) == (1, 3, 1, 1, 16)


def test_chain_codec_matches_make_codec():
    stages = [{"kind": "topk", "ratio": 0.1}]
    vec = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    a = codec_from_stages(stages).encode(vec, np.random.default_rng(0))
    b = make_codec(top_k(0.1)).encode(vec, np.random.default_rng(0))
    assert a == b


@pytest.mark.parametrize(
    ("stages", "shown"),
    [
        ([{"kind": "quantize"}, {"kind": "topk", "ratio": 0.1}], "quantize -> topk"),
        ([{"kind": "float16"}, {"kind": "random_mask", "ratio": 0.1}], "float16 -> random_mask"),
        (
            [{"kind": "topk", "ratio": 0.1}, {"kind": "random_mask", "ratio": 0.5}],
            "topk -> random_mask",
        ),
        ([{"kind": "topk", "ratio": 0.1}, {"kind": "topk", "ratio": 0.2}], "topk -> topk"),
        ([{"kind": "quantize"}, {"kind": "float16"}], "quantize -> float16"),
        (
            [{"kind": "topk", "ratio": 0.1}, {"kind": "quantize"}, {"kind": "quantize"}],
            "topk -> quantize -> quantize",
        ),
    ],
)
def test_bad_orders_rejected(stages, shown):
    with pytest.raises(ValueError, match=f"cannot chain {shown}: a chain is at most one"):
        codec_from_stages(stages)


@pytest.mark.parametrize(
    ("stages", "shown"),
    [
        ([{"kind": "zip"}], "'zip'"),
        ([{"kind": "topk", "ratio": 0.1}, {"kind": "Quantize"}], "'Quantize'"),
        ([{"ratio": 0.1}], "None"),
    ],
)
def test_unknown_stage_rejected(stages, shown):
    with pytest.raises(
        ValueError,
        match=f"unknown compression stage {shown}; accepted: topk, random_mask, "
        "structured_mask, quantize, float16",
    ):
        codec_from_stages(stages)


def test_bad_stage_options_raise_value_error():
    with pytest.raises(ValueError, match="ratio must be in"):
        codec_from_stages([{"kind": "topk", "ratio": 2}])
    with pytest.raises(ValueError, match="bits must be one of"):
        codec_from_stages([{"kind": "quantize", "bits": 3}])


# compressed(...), Compression and the error-feedback plugin


def test_compressed_sets_the_compression_fields():
    base = fedavg()
    algo = compressed(
        base,
        upload=[{"kind": "topk", "ratio": 0.01}, {"kind": "quantize", "bits": 8}],
        download=[{"kind": "float16"}],
        error_feedback=True,
        prune={"sparsity": 0.5, "start_round": 1, "end_round": 4},
    )
    comp = algo.compression
    assert comp.upload.name == "top0.01+stochastic8"
    assert comp.download.name == "float16"
    assert algo.has("error_feedback")  # error feedback is the client plugin now
    assert [p.name for p in algo.client_plugins] == ["error_feedback"]
    assert comp.pruning == MagnitudePruning(0.5, start_round=1, end_round=4)
    # everything else is the same recipe, and the original is untouched
    assert algo.name == base.name == "fedavg"
    assert algo.local == base.local
    assert base.compression == Compression()
    assert base.client_plugins == () and not base.has("error_feedback")


def test_compressed_with_nothing_is_plain():
    algo = compressed(fedavg())
    assert algo.compression == Compression()
    assert algo.client_plugins == () and algo.server_plugins == ()


def test_compressed_upload_only():
    comp = compressed(fedavg(), upload=[{"kind": "quantize"}]).compression
    assert comp.upload.name == "stochastic8"
    assert comp.download is None
    assert comp.pruning is None
    assert not compressed(fedavg(), upload=[{"kind": "quantize"}]).has("error_feedback")


def test_compressed_rejects_bad_pruning():
    with pytest.raises(ValueError, match="pruning sparsity"):
        compressed(fedavg(), prune={"sparsity": 1.5})


def test_compressed_error_feedback_without_lossy_upload_rejected():
    with pytest.raises(ValueError, match="error_feedback needs a lossy upload codec"):
        compressed(fedavg(), error_feedback=True)
    with pytest.raises(ValueError, match="error_feedback needs a lossy upload codec"):
        compressed(fedavg(), download=[{"kind": "quantize"}], error_feedback=True)


@pytest.mark.parametrize("upload", [None, plain(), make_codec()])
def test_error_feedback_needs_a_lossy_upload_codec(upload):
    with pytest.raises(ValueError, match="error_feedback needs a lossy upload codec"):
        error_feedback(upload)


def test_error_feedback_with_lossy_upload_codec_accepted():
    plugin = error_feedback(make_codec(top_k(0.1)))
    assert plugin.name == "error_feedback"
    assert plugin.before_encode is not None and plugin.finish is not None


@pytest.mark.parametrize("kind", ["topk", "random_mask"])
def test_compressed_rejects_download_sparsifiers(kind):
    with pytest.raises(ValueError, match="download sparsification would zero"):
        compressed(fedavg(), download=[{"kind": kind, "ratio": 0.1}])


# error feedback needs a contractive codec (Stich et al., NeurIPS 2018)


@pytest.mark.parametrize(
    "upload",
    [
        [{"kind": "random_mask", "ratio": 0.2}],  # unbiased: kept values scaled by 5
        [{"kind": "quantize", "bits": 1}],  # 512 values per bucket: bound 512 / 1 >= 1
        [{"kind": "quantize", "bits": 4}],  # bound 512 / 225 >= 1
        [{"kind": "topk", "ratio": 0.1}, {"kind": "quantize", "bits": 2}],
    ],
)
def test_error_feedback_refuses_codecs_that_are_not_contractive(upload):
    with pytest.raises(ValueError, match="needs a contractive upload codec"):
        compressed(fedavg(), upload=upload, error_feedback=True)


@pytest.mark.parametrize(
    "upload",
    [
        [{"kind": "topk", "ratio": 0.1}],
        [{"kind": "random_mask", "ratio": 0.2, "unbiased": False}],
        [{"kind": "quantize", "bits": 8}],  # bound 512 / 255^2 < 1
        [{"kind": "quantize", "bits": 8, "stochastic": False}],
        [{"kind": "quantize", "bits": 4, "bucket": 128}],  # bound 128 / 225 < 1
        [{"kind": "topk", "ratio": 0.05}, {"kind": "quantize", "bits": 8}],
    ],
)
def test_error_feedback_accepts_contractive_codecs_and_the_residual_stays_bounded(upload):
    algo = compressed(fedavg(), upload=upload, error_feedback=True)
    codec = algo.compression.upload
    rng = np.random.default_rng(0)
    residual = np.zeros(1000, np.float32)
    norms = []
    for _ in range(200):
        vec = rng.standard_normal(1000).astype(np.float32)
        _, residual = encode_with_feedback(codec, vec, residual, rng)
        norms.append(float(np.linalg.norm(residual)))
    # a contraction keeps the residual within a constant of one update's norm (~31.6)
    assert max(norms) < 40 * np.sqrt(1000)
    assert np.mean(norms[-50:]) < 2 * np.mean(norms[50:100]) + 1e-6


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"kind": "quantize", "bit": 4}, "'quantize': unknown bit (accepted: bits, bucket"),
        ({"kind": "topk"}, "'topk': missing ratio (accepted: ratio)"),
        ({"kind": "topk", "ratio": 0.1, "k": 3}, "'topk': unknown k (accepted: ratio)"),
        ({"kind": "float16", "bits": 16}, "'float16': unknown bits (accepted: none)"),
    ],
)
def test_library_stages_with_typos_are_refused_not_ignored(stage, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        codec_from_stages([stage])
