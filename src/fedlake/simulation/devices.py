"""Simulated devices on a clock: when each one is available and how long it takes.

A cross-device population of any size (a million wearables) with O(1) memory: device
``i``'s profile is drawn from the seed and ``i`` alone, whenever it is asked for.

- Availability is diurnal: each device lives in a time zone (uniform over 24 h) and is
  available with a higher chance at night, on the charger and on Wi-Fi (Bonawitz et al.,
  "Towards Federated Learning at Scale", MLSys 2019, report participation peaking at
  night), and with a lower chance by day.
- Training and upload times are heavy-tailed: a device's speed is log-normal around the
  median, so a few devices take many times the median (the stragglers FedBuff is for).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DeviceProfiles"]

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S


@dataclass(frozen=True)
class DeviceProfiles:
    """Per-device availability and timing, drawn from ``seed`` and each device's index.

    Args:
        seed: the population's seed.
        train_median_s: median local-training time of one task, in simulated seconds.
        train_spread: standard deviation of log training time across devices.
        upload_median_s: median time to upload one update.
        upload_spread: standard deviation of log upload time across devices.
        night_availability: chance that a device is available between 22:00 and 06:00
            local time (per hour slot).
        day_availability: the chance at other hours.
    """

    seed: int = 0
    train_median_s: float = 60.0
    train_spread: float = 1.0
    upload_median_s: float = 10.0
    upload_spread: float = 1.0
    night_availability: float = 0.6
    day_availability: float = 0.1

    def __post_init__(self) -> None:
        for name in ("train_median_s", "upload_median_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("train_spread", "upload_spread"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("night_availability", "day_availability"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")

    def _rng(self, index: int, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(index, *key)))

    def duration_s(self, index: int) -> float:
        """Seconds from device ``index`` pulling the model to its update arriving."""
        rng = self._rng(index, 0)
        z_train, z_upload = rng.standard_normal(2)
        train = self.train_median_s * math.exp(self.train_spread * z_train)
        upload = self.upload_median_s * math.exp(self.upload_spread * z_upload)
        return train + upload

    def timezone_s(self, index: int) -> float:
        """Device ``index``'s offset from the simulated clock's time of day, in seconds."""
        return float(self._rng(index, 1).uniform(0.0, DAY_S))

    def available(self, index: int, t: float) -> bool:
        """Whether device ``index`` can take a task at simulated time ``t`` (seconds)."""
        local = (t + self.timezone_s(index)) % DAY_S
        hour = int(local // HOUR_S)
        night = hour >= 22 or hour < 6
        chance = self.night_availability if night else self.day_availability
        slot = int((t + self.timezone_s(index)) // HOUR_S)  # a fresh draw every local hour
        return bool(self._rng(index, 2, slot).random() < chance)

    def sample_available(
        self, population: int, count: int, t: float, rng: np.random.Generator, exclude: set[int]
    ) -> list[int]:
        """Up to ``count`` distinct devices available at ``t`` (rejection sampling: memory
        grows with ``count``, never with ``population``)."""
        chosen: list[int] = []
        seen: set[int] = set()
        tries = 0
        while len(chosen) < count and tries < 50 * count + 1000:
            tries += 1
            i = int(rng.integers(population))
            if i in seen or i in exclude:
                continue
            seen.add(i)
            if self.available(i, t):
                chosen.append(i)
        return chosen
