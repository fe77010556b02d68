"""A procedural wearable activity-recognition population for cross-device federated learning.

Each user wears a waist-worn 3-axis accelerometer (in g) plus a heart-rate sensor
(in beats per second, i.e. bpm / 60) and contributes 5.12 s windows sampled at
25 Hz. Everything about a user (gait cadence, intensity, sensor placement,
fitness, sensor noise, label mix, number of windows) is generated from
``(seed, user index)`` alone, so a population of millions of users costs no
storage and a user's data does not depend on the population size.

The physics follows the usual picture of activity recognition from body-worn
accelerometers (Bao and Intille, "Activity Recognition from User-Annotated
Acceleration Data", Pervasive 2004): a gravity vector set by posture plus
periodic gait harmonics, with heart rate rising with effort.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

from fedlake.data.base import ClientDataset
from fedlake.data.partition import split_indices

__all__ = [
    "ACTIVITIES",
    "CHANNELS",
    "FEATURE_NAMES",
    "SAMPLE_RATE_HZ",
    "WINDOW_LENGTH",
    "ActivityPopulation",
    "UserIds",
    "generate_user",
    "window_features",
]

ACTIVITIES = ("sitting", "walking", "running", "cycling", "sleeping")
CHANNELS = ("acc_x", "acc_y", "acc_z", "heart_rate")
SAMPLE_RATE_HZ = 25.0
WINDOW_LENGTH = 128
MIN_WINDOWS, MAX_WINDOWS = 40, 300
_PREVALENCE = np.array([0.3, 0.25, 0.1, 0.15, 0.2])  # population-wide activity shares
_LABEL_CONCENTRATION = 2.5  # Dirichlet(2.5 * prevalence): each user has a skewed mix
_T = np.arange(WINDOW_LENGTH) / SAMPLE_RATE_HZ
_SIT, _WALK, _RUN, _CYCLE, _SLEEP = range(5)
_STATS = ("mean", "std", "min", "max", "energy", "entropy", "dom_freq", "dom_mag")
FEATURE_NAMES = tuple(
    [f"{c}_{s}" for c in ("acc_x", "acc_y", "acc_z", "acc_mag") for s in _STATS]
    + ["corr_xy", "corr_xz", "corr_yz"]
    + [f"heart_rate_{s}" for s in ("mean", "std", "min", "max", "slope")]
)


class UserIds(Sequence[str]):
    """The lazy id list ``user-0000000`` ... of a population: O(1) memory for any size."""

    def __init__(self, num_users: int) -> None:
        self._n = num_users
        self._width = max(7, len(str(num_users - 1)))

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        j = int(i) + self._n if i < 0 else int(i)
        if not 0 <= j < self._n:
            raise IndexError(f"user index {i} out of range for {self._n} users")
        return f"user-{j:0{self._width}d}"

    def __iter__(self) -> Iterator[str]:
        return (f"user-{j:0{self._width}d}" for j in range(self._n))

    def __contains__(self, item: object) -> bool:
        return self.index_of(item) is not None

    def index_of(self, item: object) -> int | None:
        """The user index of id ``item``, or None when it is not in the population."""
        if not isinstance(item, str) or not item.startswith("user-"):
            return None
        digits = item[5:]
        if len(digits) != self._width or not digits.isdigit():
            return None
        j = int(digits)
        return j if j < self._n else None

    def index(self, value: object, start: int = 0, stop: int | None = None) -> int:
        """Position of ``value`` (O(1))."""
        j = self.index_of(value)
        if j is None or not start <= j < (self._n if stop is None else stop):
            raise ValueError(f"{value!r} is not in the population")
        return j


class ActivityPopulation:
    """ClientData of ``num_users`` procedurally generated wearable users.

    ``load`` returns x of shape (n, 4, 128) float32 (acc x/y/z in g, heart rate
    in beats per second) or, with ``features=True``, (n, 40) float32 window
    features (see ``FEATURE_NAMES``); labels index ``ACTIVITIES``. User ``i``
    is drawn from ``SeedSequence(seed, spawn_key=(i,))`` (the ``i``-th child of
    ``SeedSequence(seed).spawn``), so it is the same in every population size.
    """

    def __init__(
        self,
        num_users: int,
        *,
        seed: int = 0,
        test_fraction: float = 0.2,
        features: bool = False,
    ) -> None:
        if isinstance(num_users, bool) or not isinstance(num_users, (int, np.integer)):
            raise TypeError(f"num_users must be an integer, got {num_users!r}")
        if num_users < 1:
            raise ValueError(f"num_users must be >= 1, got {num_users}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.num_users = int(num_users)
        self.seed = int(seed)
        self.test_fraction = float(test_fraction)
        self.features = bool(features)

    def client_ids(self) -> UserIds:
        """All user ids, lazily: ``user-0000000`` ... ``user-{num_users - 1}``."""
        return UserIds(self.num_users)

    def load(self, client_id: str) -> ClientDataset:
        """Generate one user's windows and split them into train and test."""
        index = self.client_ids().index_of(client_id)
        if index is None:
            raise KeyError(f"unknown client id {client_id!r} (population of {self.num_users})")
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(index,)))
        x, y = generate_user(rng)
        if self.features:
            x = window_features(x)
        train, test = split_indices(len(y), test_fraction=self.test_fraction, rng=rng)
        return ClientDataset(x[train], y[train], x[test], y[test])

    def __repr__(self) -> str:
        return (
            f"ActivityPopulation({self.num_users}, seed={self.seed}, "
            f"test_fraction={self.test_fraction}, features={self.features})"
        )


def _lowpass_noise(rng: np.random.Generator, shape: tuple[int, ...], width: int) -> np.ndarray:
    """Unit-variance white noise smoothed by a moving average of ``width`` samples."""
    z = rng.normal(size=shape[:-1] + (shape[-1] + width - 1,))
    c = np.cumsum(z, axis=-1)
    c = np.concatenate([np.zeros(shape[:-1] + (1,)), c], axis=-1)
    return (c[..., width:] - c[..., :-width]) / np.sqrt(width)


def _phase(rng: np.random.Generator, freq: np.ndarray) -> np.ndarray:
    """Gait phase (m, T) for cadences ``freq`` (m,) with a slow random cadence drift."""
    drift = np.cumsum(rng.normal(0.0, 0.004, (len(freq), WINDOW_LENGTH)), axis=1)
    start = rng.uniform(0, 2 * np.pi, (len(freq), 1))
    return start + 2 * np.pi * np.cumsum(freq[:, None] * (1.0 + drift), axis=1) / SAMPLE_RATE_HZ


def _bumps(rng: np.random.Generator, m: int, rate: float, amp: tuple[float, float]) -> np.ndarray:
    """Occasional brief movements (fidgets, turning over) as Gaussian pulses, (m, 3, T)."""
    out = np.zeros((m, 3, WINDOW_LENGTH))
    for _ in range(2):
        on = rng.random(m) < rate
        centre, width = rng.uniform(0, _T[-1], m), rng.uniform(0.15, 0.6, m)
        a = rng.uniform(*amp, m) * on
        direction = rng.normal(size=(m, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        pulse = np.exp(-(((_T[None] - centre[:, None]) / width[:, None]) ** 2))
        out += (a[:, None] * direction)[:, :, None] * pulse[:, None, :]
    return out


def _up_vector(tilt: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """World 'up' in body axes (vertical, anterior, lateral) for a posture tilt and azimuth."""
    return np.stack(
        [np.cos(tilt), np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth)], axis=1
    )


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix about unit ``axis``."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def generate_user(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One user's windows x (n, 4, 128) float32 and labels y (n,) int64, all drawn from ``rng``."""
    # --- the user: body, fitness, habits, sensor ---
    cadence_walk = np.clip(rng.normal(1.85, 0.12), 1.5, 2.2)  # steps per second
    cadence_run = np.clip(rng.normal(2.55, 0.18), 2.1, 3.1)
    cadence_pedal = np.clip(rng.normal(1.25, 0.18), 0.8, 1.8)  # revolutions per second
    intensity = rng.lognormal(0.0, 0.25)
    age, fitness = rng.uniform(18, 70), rng.uniform(0, 1)
    hr_rest = np.clip(76 - 16 * fitness + rng.normal(0, 5), 45, 95)
    hr_max = 208 - 0.7 * age
    effort = np.clip(intensity * (1.2 - 0.4 * fitness) * rng.lognormal(0, 0.2, 5), 0.4, 1.6)
    sit_tilt, cycle_lean = np.radians(rng.uniform(-30, 30)), np.radians(rng.uniform(10, 45))
    axis = rng.normal(size=3)
    placement = _rotation(axis / np.linalg.norm(axis), np.radians(rng.uniform(0, 30)))
    bias = rng.normal(0, 0.02, 3)
    acc_noise, hr_noise = rng.uniform(0.005, 0.04), rng.uniform(0.5, 3.0)
    mix = rng.dirichlet(_LABEL_CONCENTRATION * _PREVALENCE)
    n = int(np.clip(rng.lognormal(np.log(100), 0.6), MIN_WINDOWS, MAX_WINDOWS))
    y = rng.choice(len(ACTIVITIES), size=n, p=mix).astype(np.int64)

    reserve = hr_max - hr_rest
    steady = np.array(
        [
            hr_rest + 0.05 * reserve,
            hr_rest + 0.28 * reserve * effort[_WALK],
            min(hr_rest + 0.68 * reserve * effort[_RUN], hr_max - 5),
            hr_rest + 0.45 * reserve * effort[_CYCLE],
            0.88 * hr_rest,
        ]
    )

    # --- the windows: posture (gravity) + motion, in body axes (vertical, anterior, lateral) ---
    up = np.zeros((n, 3))
    motion = np.zeros((n, 3, WINDOW_LENGTH))
    for a in range(len(ACTIVITIES)):
        idx = np.flatnonzero(y == a)
        m = len(idx)
        if m == 0:
            continue
        jitter = rng.normal(0, np.radians(5), m)
        if a == _SIT:  # reclined or leaning over a desk; fidgets
            tilt = sit_tilt + rng.normal(0, np.radians(8), m)
            up[idx] = _up_vector(np.abs(tilt), np.where(tilt < 0, np.pi, 0.0) + jitter)
            motion[idx] = _bumps(rng, m, 0.35, (0.03, 0.3)) + 0.01 * _lowpass_noise(
                rng, (m, 3, WINDOW_LENGTH), 8
            )
        elif a in (_WALK, _RUN):  # upright; vertical step harmonics, forward surge, lateral sway
            run = a == _RUN
            cadence = (cadence_run if run else cadence_walk) * (1 + rng.normal(0, 0.04, m))
            ph = _phase(rng, cadence)
            amp = intensity * rng.lognormal(0, 0.15, m)[:, None] * (0.6 if run else 0.3)
            vert = np.sin(ph) + rng.uniform(0.1, 0.4, (m, 1)) * np.sin(2 * ph + 1.0)
            if run:  # heel-strike impacts
                vert = vert + rng.uniform(0.3, 1.0, (m, 1)) * np.maximum(np.sin(ph), 0) ** 6
            else:  # some walks pause for a moment (traffic lights, doorways)
                start = rng.uniform(-20, _T[-1], (m, 1))
                stop = start + rng.uniform(0.5, 3.0, (m, 1))
                gate = 1 / (1 + np.exp(-(_T - start) / 0.15)) / (1 + np.exp(-(stop - _T) / 0.15))
                amp = amp * (1 - gate)
            motion[idx, 0] = amp * vert
            motion[idx, 1] = 0.5 * amp * np.sin(ph + np.pi / 2)
            motion[idx, 2] = 0.35 * amp * np.sin(ph / 2 + rng.uniform(0, np.pi, (m, 1)))
            up[idx] = _up_vector(np.radians(rng.uniform(0, 12 if run else 6, m)), np.pi + jitter)
        elif a == _CYCLE:  # leaning forward; smooth pelvis rocking, road vibration, coasting
            ph = _phase(rng, cadence_pedal * (1 + rng.normal(0, 0.06, m)))
            amp = intensity * rng.lognormal(0, 0.2, m)[:, None] * (rng.random((m, 1)) > 0.15)
            motion[idx, 0] = 0.08 * amp * np.sin(2 * ph)
            motion[idx, 1] = 0.05 * amp * np.sin(2 * ph + 0.7)
            motion[idx, 2] = 0.12 * amp * np.sin(ph)
            road = rng.uniform(0.01, 0.08, (m, 1, 1))
            motion[idx] += road * _lowpass_noise(rng, (m, 3, WINDOW_LENGTH), 2)
            up[idx] = _up_vector(cycle_lean + rng.normal(0, np.radians(4), m), np.pi + jitter)
        else:  # sleeping: lying (mostly supine), breathing, rare turning over
            side = rng.choice([0.0, np.pi, np.pi / 2, -np.pi / 2], size=m, p=[0.5, 0.1, 0.2, 0.2])
            up[idx] = _up_vector(np.radians(90 + rng.normal(0, 8, m)), side + 2 * jitter)
            breath = rng.uniform(0.003, 0.015, (m, 1)) * np.sin(
                2 * np.pi * rng.uniform(0.2, 0.3, (m, 1)) * _T + rng.uniform(0, 6.3, (m, 1))
            )
            motion[idx, 1] = breath
            motion[idx] += _bumps(rng, m, 0.05, (0.1, 0.4))

    acc = np.einsum("ij,njt->nit", placement, up[:, :, None] + motion)
    acc += bias[None, :, None] + acc_noise * rng.normal(size=acc.shape)

    # --- heart rate: steady level per activity, some windows still recovering from the last one ---
    level = steady[y] + rng.normal(0, 0.06 * reserve, n)
    recovering = rng.random(n) < 0.25
    previous = steady[rng.integers(0, len(ACTIVITIES), n)]
    since, tau = rng.uniform(0, 60, (n, 1)), rng.uniform(20, 60, (n, 1))
    decay = np.exp(-(since + _T) / tau) * recovering[:, None]
    rsa = rng.uniform(1, 3, (n, 1)) * np.sin(2 * np.pi * 0.25 * _T + rng.uniform(0, 6.3, (n, 1)))
    hr = level[:, None] + (previous - level)[:, None] * decay + rsa
    hr += hr_noise * rng.normal(size=hr.shape)
    x = np.concatenate([acc, np.clip(hr, 30, 220)[:, None] / 60.0], axis=1)
    # some windows straddle a change of activity: the tail comes from another window
    other = rng.integers(0, n, n)
    cut = rng.integers(WINDOW_LENGTH // 2, WINDOW_LENGTH, n)
    for i in np.flatnonzero((rng.random(n) < 0.1) & (y[other] != y)):
        x[i, :, cut[i] :] = x[other[i], :, cut[i] :]
    return x.astype(np.float32), y


def window_features(x: np.ndarray) -> np.ndarray:
    """Per-window features (n, 40) float32 of windows (n, 4, 128); names in ``FEATURE_NAMES``.

    Per accelerometer axis and magnitude: mean, std, min, max, spectral energy
    and entropy, dominant frequency (Hz) and its magnitude (Bao and Intille,
    Pervasive 2004); axis correlations; heart-rate mean, std, min, max, slope.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] != len(CHANNELS):
        raise ValueError(f"windows must have shape (n, {len(CHANNELS)}, length), got {x.shape}")
    acc = x[:, :3]
    sig = np.concatenate([acc, np.linalg.norm(acc, axis=1, keepdims=True)], axis=1)
    length = sig.shape[-1]
    centred = sig - sig.mean(axis=-1, keepdims=True)
    spec = np.abs(np.fft.rfft(centred, axis=-1))[..., 1:]
    power = spec**2
    p = power / np.maximum(power.sum(axis=-1, keepdims=True), 1e-12)
    entropy = -(p * np.log(np.maximum(p, 1e-12))).sum(axis=-1)
    freqs = np.fft.rfftfreq(length, 1 / SAMPLE_RATE_HZ)[1:]
    per_channel = np.stack(
        [
            sig.mean(-1),
            sig.std(-1),
            sig.min(-1),
            sig.max(-1),
            power.sum(-1) / length**2,
            entropy,
            freqs[spec.argmax(-1)],
            spec.max(-1) / length,
        ],
        axis=-1,
    )  # (n, 4, 8)
    std = np.maximum(centred.std(-1), 1e-9)
    z = centred / std[..., None]
    corr = [(z[:, i] * z[:, j]).mean(-1) for i, j in ((0, 1), (0, 2), (1, 2))]
    hr = x[:, 3]
    slope = np.polyfit(np.arange(length) / SAMPLE_RATE_HZ, hr.T, 1)[0] if len(x) else hr[:, 0]
    feats = [per_channel.reshape(len(x), 32), np.stack(corr, -1)]
    feats.append(np.stack([hr.mean(-1), hr.std(-1), hr.min(-1), hr.max(-1), slope], -1))
    return np.concatenate(feats, axis=1).astype(np.float32)
