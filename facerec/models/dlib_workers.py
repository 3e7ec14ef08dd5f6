"""dlib's descriptor network in worker processes, so a batch uses every core.

dlib's ``compute_face_descriptor`` holds the GIL and runs on one core (the PyPI wheels
have no BLAS): two threads take as long as one. Forked worker processes share the
parent's loaded network (copy-on-write, nothing to load) and describe the chips of one
batch in parallel; with ``flip`` a single face's plain and mirrored chips go to two
processes at once.

Fork, not spawn: a spawned worker re-imports the caller's ``__main__`` (so any script
without an ``if __name__ == "__main__"`` guard would run again) and loads the network
anew. The workers only run dlib's network on numpy arrays: no torch, no OpenMP, no
logging, nothing that a lock held by another of the parent's threads at fork time could
block. Fork exists on Linux and macOS, but is only safe on Linux (macOS system libraries
are not fork-safe), so elsewhere the descriptor runs in the calling process.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np

#: Where forked workers are safe (see the module docstring).
SUPPORTED = sys.platform.startswith("linux")

_NET = None  # the network a worker inherited from its parent


def _inherit(net) -> None:
    global _NET
    _NET = net


def _describe(chips: np.ndarray, jitter: int) -> np.ndarray:
    return np.array(_NET.compute_face_descriptor(list(chips), jitter), dtype=np.float32)


class DescriptorPool:
    """``workers`` forked processes running ``net`` (a loaded ``dlib.face_recognition_model_v1``)."""

    def __init__(self, net, workers: int) -> None:
        self.workers = int(workers)
        # with fork the initializer's arguments are inherited, not pickled (dlib's network cannot be)
        context = multiprocessing.get_context("fork")
        self._executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_inherit, initargs=(net,))
        self._executor.submit(int).result()  # fork them now, while the caller expects to wait

    def describe(self, chips: list[np.ndarray], jitter: int = 0) -> np.ndarray:
        """Raw descriptors (N, 128) of (150, 150, 3) uint8 ``chips``, in order, split evenly over the workers."""
        parts = [p for p in np.array_split(np.stack(chips), min(self.workers, len(chips))) if len(p)]
        return np.concatenate(list(self._executor.map(_describe, parts, [jitter] * len(parts))))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
