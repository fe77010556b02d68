"""Communication efficiency: quantisation, sparsification, pruning and their wire format."""

from fedlake.compression.codec import encode_with_feedback, make_codec, plain
from fedlake.compression.messages import decode_delta, decode_model, encode_delta, encode_model
from fedlake.compression.pruning import MagnitudePruning, magnitude_mask, mask_gradients
from fedlake.compression.sparsify import Sparsifier, dense, random_mask, top_k
from fedlake.compression.values import ValueCoder, float16, float32, uniform

__all__ = [
    "MagnitudePruning",
    "Sparsifier",
    "ValueCoder",
    "decode_delta",
    "decode_model",
    "dense",
    "encode_delta",
    "encode_model",
    "encode_with_feedback",
    "float16",
    "float32",
    "magnitude_mask",
    "make_codec",
    "mask_gradients",
    "plain",
    "random_mask",
    "top_k",
    "uniform",
]
