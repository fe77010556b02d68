"""Federated preprocessing: client summaries, server-side merge, a frozen feature pipeline."""

from fedlake.data.preprocess.columns import as_categorical, as_numeric
from fedlake.data.preprocess.dp import MECHANISMS, noise_scale, noisy_summary
from fedlake.data.preprocess.federated import client_summary, fit_federated
from fedlake.data.preprocess.pipeline import (
    ColumnStep,
    FeaturePipeline,
    PipelineOptions,
    fit_pipeline,
)
from fedlake.data.preprocess.sketch import Sketch, merge_sketches, sketch_of
from fedlake.data.preprocess.summary import ClientSummary, ColumnSummary, merge, summarise

__all__ = [
    "MECHANISMS",
    "ClientSummary",
    "ColumnStep",
    "ColumnSummary",
    "FeaturePipeline",
    "PipelineOptions",
    "Sketch",
    "as_categorical",
    "as_numeric",
    "client_summary",
    "fit_federated",
    "fit_pipeline",
    "merge",
    "merge_sketches",
    "noise_scale",
    "noisy_summary",
    "sketch_of",
    "summarise",
]
