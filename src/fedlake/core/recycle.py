"""Large arrays reused once nothing refers to them any more.

A fresh 100 MB array costs its page faults (the kernel zeroes every page on first touch):
~15-25 ms alone, several times that on a busy machine, in every round, for every model a
client downloads and trains and every update a server takes in. A :class:`Recycler` hands
out views of arrays it keeps, and hands an array out again only when no view of it (nor
any other reference) is left: reuse can never alias live data. Written here because no
library offers a reference-checked pool for numpy arrays.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["AGGREGATION", "MODELS", "TRAINING", "Recycler"]

SMALLEST = 1 << 20  # bytes: smaller arrays are cheap to allocate, and are not kept


class Recycler:
    """A pool of up to ``keep`` arrays, each handed out again once unreferenced."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._arrays: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, count: int, dtype: np.dtype | type = np.uint8) -> np.ndarray:
        """An uninitialised 1-D array of ``count`` values of ``dtype`` (a view of a kept
        array when one of the right size is free, else new)."""
        dt = np.dtype(dtype)
        size = count * dt.itemsize
        if size < SMALLEST:
            return np.empty(count, dtype=dt)
        with self._lock:  # the check and the taking are one step: no two takers of one array
            for i in range(len(self._arrays)):
                if size <= self._arrays[i].size <= 2 * size and _unreferenced(self._arrays, i):
                    self._arrays.append(self._arrays.pop(i))  # most recently used last
                    self._arrays[-1].flags.writeable = True  # it may have been frozen
                    return self._arrays[-1][:size].view(dt)
            arr = np.empty(size, dtype=np.uint8)
            self._arrays.append(arr)
            if len(self._arrays) > self.keep:
                self._drop_one()
            return arr[:size].view(dt)

    @staticmethod
    def freeze(view: np.ndarray) -> np.ndarray:
        """``view`` (from :meth:`empty`, written) made read-only with the array beneath it:
        no one can change it any more (``params.frozen`` keeps it without a copy) until
        nothing refers to it and :meth:`empty` hands the array out again."""
        view.flags.writeable = False
        if isinstance(view.base, np.ndarray):
            view.base.flags.writeable = False
        return view

    def _drop_one(self) -> None:
        """Forget the least recently used unreferenced array (its memory goes back once
        the last view of it goes); none when every one is in use."""
        for i in range(len(self._arrays)):
            if _unreferenced(self._arrays, i):
                del self._arrays[i]
                return


def _unreferenced(arrays: list[np.ndarray], i: int) -> bool:
    """Whether nothing but the list ``arrays`` refers to its ``i``-th array."""
    # getrefcount sees the list's reference and its own argument's; any view, memoryview,
    # name or other holder adds one (no name is bound to the array here)
    return sys.getrefcount(arrays[i]) == 2


# a client's model-sized working arrays (the copy that trains, its gradient, the update):
# one pool, so the gradient's array, free once training returns, holds the update next
TRAINING = Recycler(keep=3)

# a server's per-round aggregation arrays (the float64 running sum, the mean written out)
AGGREGATION = Recycler(keep=4)

# a server's global models and steps: each round's new params (last round's array, once
# the old state, its download and checkpoint let go of it) and the server optimiser's step
MODELS = Recycler(keep=3)
