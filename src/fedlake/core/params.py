"""Flat float32 parameter vectors and the spec that maps them to named tensors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from math import prod

import numpy as np

FLOAT = np.float32


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one named tensor inside a flat parameter vector."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def size(self) -> int:
        """Number of scalars in this tensor."""
        return int(prod(self.shape))


@dataclass(frozen=True)
class ParamSpec:
    """Ordered tensor specs; maps a flat float32 vector to and from named arrays."""

    tensors: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise ValueError(f"tensor names must be unique, got {names}")

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ParamSpec:
        """Build a spec from named arrays, keeping their order."""
        return cls(
            tuple(
                TensorSpec(k, tuple(int(s) for s in np.shape(v)), str(np.asarray(v).dtype))
                for k, v in arrays.items()
            )
        )

    @property
    def size(self) -> int:
        """Length of the flat vector."""
        return sum(t.size for t in self.tensors)

    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names, in vector order."""
        return tuple(t.name for t in self.tensors)

    def slices(self) -> dict[str, slice]:
        """Name -> slice of the flat vector."""
        out: dict[str, slice] = {}
        start = 0
        for t in self.tensors:
            out[t.name] = slice(start, start + t.size)
            start += t.size
        return out

    def flatten(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """Concatenate named arrays (in spec order) into one contiguous float32 vector."""
        missing = [n for n in self.names if n not in arrays]
        if missing:
            raise KeyError(f"missing tensors {missing}")
        out = np.empty(self.size, dtype=FLOAT)
        for t, sl in zip(self.tensors, self.slices().values(), strict=True):
            a = np.asarray(arrays[t.name])
            if tuple(a.shape) != t.shape:
                raise ValueError(f"tensor {t.name!r}: expected shape {t.shape}, got {a.shape}")
            out[sl] = a.reshape(-1)
        return out

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Split a flat vector into named arrays (views where dtype allows)."""
        vector = np.asarray(vector)
        if vector.shape != (self.size,):
            raise ValueError(f"expected a vector of length {self.size}, got shape {vector.shape}")
        return {
            t.name: vector[sl].reshape(t.shape).astype(t.dtype, copy=False)
            for t, sl in zip(self.tensors, self.slices().values(), strict=True)
        }

    def to_json(self) -> str:
        """Serialise to JSON (stored beside model blobs)."""
        return json.dumps([[t.name, list(t.shape), t.dtype] for t in self.tensors])

    @classmethod
    def from_json(cls, text: str) -> ParamSpec:
        """Inverse of :meth:`to_json`."""
        return cls(tuple(TensorSpec(n, tuple(s), d) for n, s, d in json.loads(text)))


def as_vector(x: np.ndarray | list[float]) -> np.ndarray:
    """Return ``x`` as a contiguous 1-D float32 array (copying only if needed)."""
    v = np.ascontiguousarray(x, dtype=FLOAT)
    if v.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {v.shape}")
    return v


def frozen(x: np.ndarray) -> np.ndarray:
    """Return a read-only float32 copy, so shared state cannot be mutated in place.

    ``x`` itself when nothing can change it already: read-only float32 with nothing
    writable beneath it (no copy of a 100 MB model that is frozen once more).
    """
    if _unchangeable(x):
        return x
    v = np.array(x, dtype=FLOAT, copy=True)
    v.setflags(write=False)
    return v


def frozen_fresh(x: np.ndarray) -> np.ndarray:
    """:func:`frozen` of an array no one else holds (just computed): read-only in place,
    without a copy, when it is contiguous float32."""
    if isinstance(x, np.ndarray) and x.dtype == FLOAT and x.flags.c_contiguous and x.base is None:
        x.setflags(write=False)
        return x
    return frozen(x)


def _unchangeable(x: object) -> bool:
    """Whether ``x`` is a contiguous float32 array that no one can write to: read-only,
    and so is every array beneath it, down to owned memory or immutable ``bytes``."""
    if not (isinstance(x, np.ndarray) and x.dtype == FLOAT and x.flags.c_contiguous):
        return False
    obj: object = x
    while isinstance(obj, np.ndarray):
        if obj.flags.writeable:
            return False
        obj = obj.base
    if isinstance(obj, memoryview):
        return obj.readonly and isinstance(obj.obj, bytes)
    return obj is None or isinstance(obj, bytes)
