"""Run configuration: a validated TOML/YAML file (pydantic), with one-line errors."""

from fedlake.config.algorithm import PersonalizationConfig
from fedlake.config.robustness import (
    AggregatorConfig,
    AttackConfig,
    AttackEvalConfig,
    options,
)
from fedlake.config.run import (
    ActivityData,
    AlgorithmConfig,
    CompressionConfig,
    ConfigError,
    DataConfig,
    ExecutorConfig,
    FederationConfig,
    LakehouseConfig,
    ModelConfig,
    ResumeError,
    RunConfig,
    SklearnData,
    SyntheticData,
    TableData,
    load_config,
    parse_config,
    read_raw,
)

__all__ = [
    "ActivityData",
    "AggregatorConfig",
    "AlgorithmConfig",
    "AttackConfig",
    "AttackEvalConfig",
    "CompressionConfig",
    "ConfigError",
    "DataConfig",
    "ExecutorConfig",
    "FederationConfig",
    "LakehouseConfig",
    "ModelConfig",
    "PersonalizationConfig",
    "ResumeError",
    "RunConfig",
    "SklearnData",
    "SyntheticData",
    "TableData",
    "load_config",
    "options",
    "parse_config",
    "read_raw",
]
