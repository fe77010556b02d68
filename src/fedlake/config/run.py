"""Run configuration: a validated TOML/YAML file (pydantic), with one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator

from fedlake.compression.pipeline import CODERS, SPARSIFIERS, chain_ok
from fedlake.config.algorithm import AlgorithmConfig, PersonalizationConfig
from fedlake.config.fedbuff import FedBuffConfig
from fedlake.config.privacy import PrivacyConfig
from fedlake.config.robustness import AttackConfig, AttackEvalConfig
from fedlake.config.section import Section
from fedlake.config.secure import SecureAggregationConfig
from fedlake.config.table import TableData
from fedlake.core.extras import require


class ActivityData(Section):
    """Procedural wearable activity recognition (cross-device)."""

    scenario: Literal["activity"] = "activity"
    num_clients: int = Field(100, ge=1, le=10_000_000)
    features: bool = False
    test_fraction: float = Field(0.2, gt=0, lt=1)


class SyntheticData(Section):
    """FedProx Synthetic(alpha, beta) / Synthetic-IID (Li et al., MLSys 2020)."""

    scenario: Literal["synthetic"]
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(1.0, ge=0)
    iid: bool = False
    num_clients: int = Field(30, ge=1, le=10_000)

    @model_validator(mode="after")
    def _iid_has_no_alpha_beta(self) -> SyntheticData:
        given = sorted({"alpha", "beta"} & self.model_fields_set)
        if self.iid and given:
            raise ValueError(
                f"{' and '.join(given)} do not apply to Synthetic-IID (iid = true): "
                "it shares one model and one feature distribution; remove them"
            )
        return self


class SklearnData(Section):
    """A scikit-learn shipped real dataset, partitioned into clients."""

    scenario: Literal["digits", "breast_cancer"]
    num_clients: int = Field(20, ge=1, le=1000)
    partition: Literal["iid", "dirichlet", "quantity_skew"] = "dirichlet"
    alpha: float = Field(0.5, gt=0)
    test_fraction: float = Field(0.2, gt=0, lt=1)


class RemoteData(Section):
    """Clients bring their own data (``fedlake server``): the server knows only its shape.

    The column names travel to the clients as hints for reading their tables.
    """

    scenario: Literal["remote"]
    input_shape: tuple[int, ...] = Field(..., min_length=1)
    num_classes: int = Field(..., ge=2)
    label_column: str = "label"
    client_column: str = "client_id"
    feature_columns: tuple[str, ...] | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _positive_shape(self) -> RemoteData:
        if any(s < 1 for s in self.input_shape):
            raise ValueError(f"input_shape must be positive sizes, got {list(self.input_shape)}")
        return self


DataConfig = Annotated[
    ActivityData | SyntheticData | SklearnData | TableData | RemoteData,
    Field(discriminator="scenario"),
]


class ModelConfig(Section):
    """The model every client trains."""

    kind: Literal["logreg", "mlp", "cnn1d"] = "cnn1d"
    hidden: tuple[int, ...] | None = None
    channels: tuple[int, ...] | None = None


class TopKStage(Section):
    """Send the largest-magnitude ``ratio`` of the entries (index + value pairs)."""

    kind: Literal["topk"]
    ratio: float = Field(..., gt=0, le=1)


class RandomMaskStage(Section):
    """Send a random ``ratio`` of the entries; only the mask's seed travels."""

    kind: Literal["random_mask"]
    ratio: float = Field(..., gt=0, le=1)
    unbiased: bool = True


class StructuredMaskStage(Section):
    """Clients train only a random ``ratio`` of the weights each round and send them."""

    kind: Literal["structured_mask"]
    ratio: float = Field(..., gt=0, le=1)


class QuantizeStage(Section):
    """Uniform quantisation to ``bits`` bits per value, per bucket of ``bucket`` values."""

    kind: Literal["quantize"]
    bits: Literal[1, 2, 4, 8] = 8
    stochastic: bool = True
    bucket: int = Field(512, ge=1, le=1 << 24)

    @model_validator(mode="after")
    def _nearest_is_8_bit(self) -> QuantizeStage:
        if not self.stochastic and self.bits != 8:
            raise ValueError(
                f"deterministic rounding (stochastic = false) is offered at 8 bits only, "
                f"got bits = {self.bits}"
            )
        return self


class Float16Stage(Section):
    """Half-precision values."""

    kind: Literal["float16"]


Stage = Annotated[
    TopKStage | RandomMaskStage | StructuredMaskStage | QuantizeStage | Float16Stage,
    Field(discriminator="kind"),
]


class PruneConfig(Section):
    """Magnitude pruning of the global model (gradual from start_round to end_round)."""

    sparsity: float = Field(..., gt=0, lt=1)
    start_round: int = Field(0, ge=0)
    end_round: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> PruneConfig:
        if self.end_round is not None and self.end_round < self.start_round:
            raise ValueError(
                f"end_round ({self.end_round}) must be >= start_round ({self.start_round})"
            )
        return self


class CompressionConfig(Section):
    """How updates (upload) and the model (download) travel; empty chains mean float32."""

    upload: tuple[Stage, ...] = ()
    download: tuple[Stage, ...] = ()
    error_feedback: bool = False
    prune: PruneConfig | None = None

    @model_validator(mode="after")
    def _chains(self) -> CompressionConfig:
        for direction in ("upload", "download"):
            kinds = [stage.kind for stage in getattr(self, direction)]
            if not chain_ok(kinds):
                raise ValueError(
                    f"{direction} = {' -> '.join(kinds)} cannot be chained: at most one of "
                    f"{'/'.join(SPARSIFIERS)} first, then at most one of {'/'.join(CODERS)}"
                )
        sparse_down = [s.kind for s in self.download if s.kind in SPARSIFIERS]
        if sparse_down:
            raise ValueError(
                f"download = {sparse_down[0]} would zero most of the model's weights every round; "
                "the download accepts quantize or float16 (use prune for a sparse model)"
            )
        if self.error_feedback and not self.upload:
            raise ValueError(
                "error_feedback needs a lossy upload chain (topk, random_mask or quantize); "
                "with float32 uploads nothing is dropped"
            )
        return self

    def stages(self, direction: str) -> list[dict[str, Any]]:
        """The chain of ``direction`` as plain mappings for the library."""
        return [stage.model_dump() for stage in getattr(self, direction)]


class FederationConfig(Section):
    """Rounds, cohort sampling, availability and stopping."""

    rounds: int = Field(30, ge=1)
    clients_per_round: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    max_retries: int = Field(2, ge=0)
    target_accuracy: float | None = Field(None, gt=0, le=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    stragglers: float = Field(0.0, ge=0, le=1)
    straggler_policy: Literal["keep", "drop"] = "keep"
    deadline_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    device_speed: float = Field(100.0, gt=0, allow_inf_nan=False)
    speed_spread: float = Field(0.5, ge=0, allow_inf_nan=False)
    eval_clients: int | None = Field(None, ge=1)
    # simulation: clients drawn with the seed that never train; the global model is
    # evaluated on them (new clubs, new users) instead of the training clients' splits
    holdout_clients: int = Field(0, ge=0)
    # SecAgg+: the server sees only masked updates and their sum ([secure_aggregation])
    secure_aggregation: bool = False
    # simulation only: after the run, train the same model on all clients' pooled train
    # rows (rounds x local_epochs epochs) and compare on the same test rows
    pooled_baseline: bool = False

    @model_validator(mode="after")
    def _one_cohort_rule(self) -> FederationConfig:
        if self.clients_per_round is not None and self.fraction is not None:
            raise ValueError("give clients_per_round or fraction, not both")
        if self.holdout_clients and self.pooled_baseline:
            raise ValueError(
                "pooled_baseline compares on every client's test rows, and holdout_clients "
                "evaluates on the held-out clients only: use one of them"
            )
        return self


class DeploymentConfig(Section):
    """``fedlake server``: how long a round waits, and what one server accepts."""

    round_timeout_s: float = Field(300.0, gt=0, allow_inf_nan=False)
    long_poll_s: float = Field(25.0, gt=0, le=60)
    heartbeat_s: float = Field(5.0, gt=0)
    max_body_mb: float = Field(512.0, gt=0)
    requests_per_s: float = Field(50.0, gt=0)
    max_waiting: int = Field(10_000, ge=1)
    linger_s: float = Field(10.0, ge=0)  # after the run: time for clients to hear it ended


class ExecutorConfig(Section):
    """Where clients run."""

    # spark: Spark tasks on the active session (Databricks) or local[workers]
    kind: Literal["inline", "process", "spark"] = "inline"
    workers: int = Field(2, ge=1, le=256)
    # inline: train each cohort at once where the model allows (same results to float
    # tolerance); false trains clients one by one, bit-identical to the process executor
    vectorize: bool = True
    # process, spark: screen and fold replies where the clients run, so the server holds
    # partial sums, never the cohort's updates (linear aggregators; float tolerance)
    fold: bool = False
    # spark: times a failed task is tried again before its clients count as lost (here:
    # local[workers, task_retries + 1]; on a cluster, its spark.task.maxFailures)
    task_retries: int = Field(0, ge=0, le=10)

    @model_validator(mode="after")
    def _fold_needs_workers(self) -> ExecutorConfig:
        if self.fold and self.kind == "inline":
            raise ValueError('fold = true needs kind = "process" or "spark"')
        return self


class LakehouseConfig(Section):
    """Delta tables and MLflow tracking (embedded locally, Databricks on a cluster)."""

    delta: bool = True
    root: str | None = None
    catalog: str = Field("fedlake", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    schema_: str = Field("default", alias="schema", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    mlflow: bool = True
    tracking_uri: str | None = None
    registry_uri: str | None = None
    experiment: str = "fedlake"
    model_name: str = "fedlake_model"
    alias: str = "champion"


class RunConfig(Section):
    """A whole run."""

    name: str = Field("fedlake-run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=ActivityData)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    compression: CompressionConfig = Field(default_factory=CompressionConfig)
    lakehouse: LakehouseConfig = Field(default_factory=LakehouseConfig)
    attack: AttackConfig | None = None
    attack_eval: AttackEvalConfig | None = None
    privacy: PrivacyConfig | None = None
    personalization: PersonalizationConfig | None = None
    fedbuff: FedBuffConfig | None = None
    secure_aggregation: SecureAggregationConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_scenario(cls, raw: Any) -> Any:
        """A ``[data]`` table without ``scenario`` is the default scenario (activity)."""
        data = raw.get("data") if isinstance(raw, dict) else None
        if isinstance(data, dict) and "scenario" not in data:
            raw = {**raw, "data": {"scenario": "activity", **data}}
        return raw

    @model_validator(mode="after")
    def _cohort_fits(self) -> RunConfig:
        n, fed = self.data_clients(), self.federation
        if fed.clients_per_round is not None and fed.clients_per_round > n:
            raise ValueError(
                f"federation.clients_per_round ({fed.clients_per_round}) exceeds "
                f"data.num_clients ({n}); accepted: 1..{n}"
            )
        cohort = fed.clients_per_round or max(1, round((fed.fraction or 0.1) * n))
        if self.fedbuff is not None:
            if fed.clients_per_round is not None or fed.fraction is not None:
                raise ValueError(
                    "federation.clients_per_round / fraction: with [fedbuff] a step takes the "
                    "first fedbuff.buffer updates to arrive; remove them"
                )
            cohort = self.fedbuff.buffer
        if fed.min_clients > cohort:
            raise ValueError(
                f"federation.min_clients ({fed.min_clients}) exceeds the cohort size ({cohort}); "
                f"accepted: 1..{cohort}"
            )
        return self

    @model_validator(mode="after")
    def _secure_section_needs_flag(self) -> RunConfig:
        if self.secure_aggregation is not None and not self.federation.secure_aggregation:
            raise ValueError(
                "[secure_aggregation] is given but federation.secure_aggregation is false: "
                "set it to true, or remove the section"
            )
        return self

    def secure(self) -> SecureAggregationConfig | None:
        """The secure-aggregation settings (None: plain rounds)."""
        if not self.federation.secure_aggregation:
            return None
        return self.secure_aggregation or SecureAggregationConfig()

    def data_clients(self) -> int:
        """Number of clients the data section declares (tables: unknown until read)."""
        return getattr(self.data, "num_clients", 10**9)


class ConfigError(ValueError):
    """A config file that cannot be used; the message is one line for the user."""


class ResumeError(ConfigError):
    """``--resume`` cannot continue this run (nothing saved yet, or a changed config)."""


_SCENARIOS = ("activity", "synthetic", "digits", "breast_cancer", "table")
_TAG_KEYS = ("kind", "scenario")  # the discriminators of the config's unions


def _members(annotation: Any) -> list[type[BaseModel]]:
    """The section models inside a field's annotation (through unions, tuples, Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _members(arg)]


def _tags(model: type[BaseModel]) -> tuple[str, ...]:
    """The discriminator values a union member answers to (``kind = "krum"``)."""
    for key in _TAG_KEYS:
        field = model.model_fields.get(key)
        if field is not None and get_origin(field.annotation) is Literal:
            return tuple(str(a) for a in get_args(field.annotation))
    return ()


def _walk(loc: list[str]) -> tuple[list[type[BaseModel]], list[str]]:
    """The models that may hold ``loc``'s last key, and the path to show the user.

    Union members appear in pydantic's locations as their tag (``algorithm.aggregator.
    krum.f``); the tag selects the member (and is left out of the path shown for the
    data section, whose scenario names the section itself).
    """
    candidates: list[type[BaseModel]] = [RunConfig]
    shown: list[str] = []
    for part in loc[:-1]:
        by_tag = [m for m in candidates if part in _tags(m)]
        if len(candidates) > 1 and by_tag:
            candidates = by_tag[:1]
            if loc[0] != "data":
                shown.append(part)
            continue
        shown.append(part)
        if part.isdigit():  # an item of a list
            continue
        fields = [m.model_fields[part] for m in candidates if part in m.model_fields]
        candidates = _members(fields[0].annotation) if fields else []
    return candidates, [*shown, *loc[-1:]]


def _format(err: ValidationError) -> str:
    """One line per problem: ``key.path: what is wrong, got value``."""
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        candidates, path = _walk(loc) if loc else ([], [])
        tags = {t for m in candidates for t in _tags(m)}
        if loc and e["type"] != "extra_forbidden" and loc[0] == "data" and loc[-1] in tags:
            path = path[:-1]  # an error in a scenario's own validator names the section
        shown = ".".join("schema" if p == "schema_" else p for p in path)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            if len(candidates) == 1:
                names = sorted(f.alias or n for n, f in candidates[0].model_fields.items())
                msg = f"unknown key (accepted: {', '.join(names)})"
            else:
                msg = "unknown key"
        elif e["type"] == "union_tag_invalid" and loc[:1] == ["data"]:
            shown, msg = f"{shown}.scenario", f"unknown scenario {e['ctx']['tag']!r}"
            msg += f"; accepted: {', '.join(_SCENARIOS)}"
        elif e["type"] == "union_tag_not_found":
            key = str(e["ctx"]["discriminator"]).strip("'")
            accepted = [t for m in _members_at(loc) for t in _tags(m)]
            msg = f"missing {key}; accepted: {', '.join(accepted)}"
        elif e["type"] == "union_tag_invalid":
            key = str(e["ctx"]["discriminator"]).strip("'")
            msg = f"unknown {key} {e['ctx']['tag']!r}; "
            msg += f"accepted: {e['ctx']['expected_tags']}"
        elif loc and "input" in e and not isinstance(e["input"], dict):
            msg += f", got {e['input']!r}"
        lines.append(f"{shown}: {msg}" if shown else msg)
    return "; ".join(lines)


def _members_at(loc: list[str]) -> list[type[BaseModel]]:
    """The union members a value at ``loc`` may be (for a missing discriminator)."""
    candidates, _ = _walk([*loc, ""])
    return candidates


def parse_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a mapping into a RunConfig; raises ConfigError with a one-line message."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format(err)) from None


def read_raw(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a raw mapping (not yet validated)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    text = p.read_text()
    yaml_file = p.suffix in (".yaml", ".yml")
    yaml: Any = require("yaml", extra="cli", purpose="a YAML config") if yaml_file else None
    errors = (tomllib.TOMLDecodeError, yaml.YAMLError) if yaml_file else tomllib.TOMLDecodeError
    try:
        raw = yaml.safe_load(text) if yaml_file else tomllib.loads(text)
    except errors as exc:
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a table of sections at the top level")
    return raw


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML or YAML config file."""
    return parse_config(read_raw(path))
