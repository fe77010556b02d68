"""A federation's plan in numbers: traffic, privacy noise and server memory, from a few inputs.

Every number comes from the library itself: the model's size from the trainer registry,
the bytes from encoding a vector of that size with fedlake's own codecs and message
format, the noise and the epsilon curve from :mod:`fedlake.privacy.calibration`, and the
server's memory from :func:`fedlake.orchestration.memory.round_memory`. Nothing here
prints; :mod:`fedlake.guidance.markdown` renders a :class:`Plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedlake.aggregators import krum, median, weighted_mean
from fedlake.compression.messages import encode_delta, encode_model
from fedlake.compression.pipeline import codec_from_stages
from fedlake.models import MODEL_KINDS, build_trainer
from fedlake.orchestration.memory import MemoryPlan, round_memory
from fedlake.privacy.calibration import plan_epsilon, plan_noise

__all__ = [
    "CHAINS",
    "MAX_PARAMS",
    "SCENARIOS",
    "Chain",
    "Plan",
    "PlanInputs",
    "Privacy",
    "Stages",
    "Traffic",
    "make_plan",
    "model_params",
]

SCENARIOS = ("cross-silo", "cross-device")
MAX_PARAMS = 50_000_000  # the bytes are measured by encoding a vector of this many floats
Stages = tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class Chain:
    """A compression setting as the ``[compression]`` section writes it."""

    name: str
    upload: Stages = ()
    download: Stages = ()
    error_feedback: bool = False


Q8: Mapping[str, Any] = {"kind": "quantize", "bits": 8}
Q8_DOWN: Mapping[str, Any] = {"kind": "quantize", "bits": 8, "stochastic": False}
TOP5: Mapping[str, Any] = {"kind": "topk", "ratio": 0.05}
TOP1: Mapping[str, Any] = {"kind": "topk", "ratio": 0.01}
CHAINS = (  # the settings README's "Which to pick" table and bench/compression.py measure
    Chain("float32 (no compression)"),
    Chain("float16 up", ({"kind": "float16"},)),
    Chain("8-bit both ways", (Q8,), (Q8_DOWN,)),
    Chain("2-bit up, 8-bit down", ({"kind": "quantize", "bits": 2},), (Q8_DOWN,)),
    Chain(
        "top-5% 8-bit up + EF, 8-bit down", ({"kind": "topk", "ratio": 0.05}, Q8), (Q8_DOWN,), True
    ),  # fmt: skip
    Chain("top-1% up + EF, 8-bit down", (TOP1,), (Q8_DOWN,), error_feedback=True),
)


@dataclass(frozen=True)
class PlanInputs:
    """What the user knows before the first round."""

    scenario: str
    clients: int
    per_round: int
    params: int
    rounds: int
    epsilon: float | None = None
    delta: float = 1e-5
    link_mbps: float = 10.0
    model: str | None = None  # the model kind the parameter count came from, if any

    def __post_init__(self) -> None:
        n, m, p = self.clients, self.per_round, self.params
        checks = [
            (self.scenario in SCENARIOS, f"scenario must be one of {', '.join(SCENARIOS)}"),
            (n >= 1, f"clients must be >= 1, got {n}"),
            (1 <= m <= max(n, 1), f"per-round must be in [1, clients={n}], got {m}"),
            (1 <= p <= MAX_PARAMS, f"params must be in [1, {MAX_PARAMS:,}], got {p}"),
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
            (self.epsilon is None or self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}"),
            (0 < self.delta < 1, f"delta must be in (0, 1), got {self.delta:g}"),
            (self.link_mbps > 0, f"link-mbps must be > 0, got {self.link_mbps:g}"),
        ]
        problem = next((message for ok, message in checks if not ok), None)
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True)
class Traffic:
    """One client's bytes per round under a compression setting, measured by encoding."""

    chain: Chain
    upload_bytes: int
    download_bytes: int

    @property
    def client_bytes(self) -> int:
        """Up and down for one client in one round."""
        return self.upload_bytes + self.download_bytes

    def seconds(self, link_mbps: float) -> float:
        """Seconds one client's round of traffic takes on a link of ``link_mbps``."""
        return self.client_bytes * 8 / (link_mbps * 1e6)


@dataclass(frozen=True)
class Privacy:
    """Central DP-FedAvg with Poisson sampling: the noise a target needs and its curve."""

    noise_multiplier: float
    curve: tuple[tuple[int, float], ...]  # (rounds, epsilon spent)
    accountant: str


@dataclass(frozen=True)
class Plan:
    """The numbers of a plan; ``privacy`` is None without an epsilon target."""

    inputs: PlanInputs
    traffic: tuple[Traffic, ...]
    privacy: Privacy | None
    memory: tuple[MemoryPlan, ...]  # the weighted mean first, then the robust rules

    @property
    def model_bytes(self) -> int:
        """The float32 model message's length (M in docs/databricks.md's sizing)."""
        return self.traffic[0].download_bytes


def model_params(
    kind: str, *, input_shape: Sequence[int] | None = None, num_classes: int | None = None
) -> int:
    """Weights of model ``kind`` from the trainer registry, for the activity scenario's
    examples unless ``input_shape`` / ``num_classes`` say otherwise.

    Raises:
        ValueError: an unknown kind, or a shape the model cannot take.
    """
    from fedlake.data.activity import ACTIVITIES, CHANNELS, FEATURE_NAMES, WINDOW_LENGTH

    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; accepted: {', '.join(MODEL_KINDS)}")
    default = (len(CHANNELS), WINDOW_LENGTH) if kind == "cnn1d" else (len(FEATURE_NAMES),)
    shape = tuple(input_shape) if input_shape else default
    classes = num_classes if num_classes is not None else len(ACTIVITIES)
    return build_trainer(kind, input_shape=shape, num_classes=classes).spec.size


def measure(chain: Chain, params: int, *, seed: int = 0) -> Traffic:
    """The real upload and download messages of a ``params``-weight model under ``chain``."""
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal(params, dtype=np.float32)
    up, _ = encode_delta(vec, None, codec_from_stages(chain.upload), rng)
    down = encode_model(vec, None, codec_from_stages(chain.download), rng)
    return Traffic(chain, len(up), len(down))


def checkpoints(rounds: int) -> list[int]:
    """A quarter, half, three quarters and all of the rounds (distinct, at least 1)."""
    return sorted({max(1, round(rounds * k / 4)) for k in (1, 2, 3, 4)})


def noise_plan(inputs: PlanInputs) -> Privacy | None:
    """The noise multiplier meeting ``inputs.epsilon`` after every round, and the curve."""
    if inputs.epsilon is None:
        return None
    n, m, delta = inputs.clients, inputs.per_round, inputs.delta
    z = plan_noise(inputs.epsilon, delta, num_clients=n, clients_per_round=m, rounds=inputs.rounds)
    curve = []
    used = "pld"
    for t in checkpoints(inputs.rounds):
        spent = plan_epsilon(
            num_clients=n, clients_per_round=m, noise_multiplier=z, rounds=t, delta=delta
        )
        curve.append((t, spent.epsilon))
        used = spent.accountant
    return Privacy(z, tuple(curve), used)


def make_plan(inputs: PlanInputs, chains: Sequence[Chain] = CHAINS) -> Plan:
    """Measure the traffic, calibrate the noise and size the server's round for ``inputs``.

    Raises:
        ValueError: no noise multiplier meets the epsilon target.
    """
    traffic = tuple(measure(chain, inputs.params) for chain in chains)
    rules = (weighted_mean(), median(), krum(f=1))  # Krum's memory does not depend on f
    memory = tuple(round_memory(rule, inputs.per_round, inputs.params) for rule in rules)
    return Plan(inputs, traffic, noise_plan(inputs), memory)
