"""Prefetch: encode the slices an annotator is likely to prompt next, in the background, so the click is warm.

Triggers: a study handed out by Next Sample (its slices with the most FLAIR-bright voxels first) and every
prompt (the neighbouring slices, nearest first). One slice at a time, and only once no inference request has run
for ``idle_s`` (an annotator's quick re-prompts come in bursts): a request never waits for more than the one slice
being encoded. The newest plan replaces the previous one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import numpy as np

from bratsmedsam.boxes import axial_slice

logger = logging.getLogger(__name__)


def bright_slices(channels: np.ndarray, limit: int) -> list[int]:
    """Axial slices ordered by how many voxels of the last channel (FLAIR in the default stack) are in its top 1 %."""
    flair = channels[..., -1]
    cut = np.percentile(flair[flair > 0], 99) if (flair > 0).any() else 255
    counts = (flair >= cut).sum(axis=(0, 1))
    return [int(k) for k in np.argsort(-counts, kind="stable")[:limit] if counts[k] > 0]


def around(k: int, depth: int, limit: int) -> list[int]:
    """``k``, then ``k-1``, ``k+1``, ``k-2``, ... inside ``[0, depth)``."""
    out = [k]
    for d in range(1, depth):
        out += [j for j in (k - d, k + d) if 0 <= j < depth]
        if len(out) >= limit:
            break
    return out[:limit]


class Prefetcher:
    def __init__(self, models, max_slices: int = 24, idle_s: float = 1.0):
        self.models, self.max_slices, self.idle_s = models, max_slices, idle_s
        self._cv = threading.Condition()
        self._busy, self._last = 0, 0.0
        self._plan: tuple | None = None  # (study, [k, ...])
        self.encoded = 0
        if max_slices > 0:
            threading.Thread(target=self._loop, name="prefetch", daemon=True).start()

    @contextlib.contextmanager
    def serving(self):
        """Wrap each inference request: prefetch pauses while any runs."""
        with self._cv:
            self._busy += 1
        try:
            yield
        finally:
            with self._cv:
                self._busy -= 1
                self._last = time.monotonic()
                self._cv.notify_all()

    def schedule(self, study, slices: list[int]) -> None:
        if self.max_slices > 0 and slices:
            with self._cv:
                self._plan = (study, list(slices)[: self.max_slices])
                self._cv.notify_all()

    def after_prompt(self, study, k: int) -> None:
        self.schedule(study, around(int(k), study.channels.shape[2], self.max_slices))

    def new_study(self, path: str, stacks) -> None:
        """A study just handed out (Next Sample): load it here, in the background, then its bright slices."""
        self.schedule(("load", path, stacks), [-1])

    def _next(self):
        with self._cv:
            while True:
                quiet = self.idle_s - (time.monotonic() - self._last)
                if self._plan is not None and self._plan[1] and not self._busy and quiet <= 0:
                    break
                self._cv.wait(timeout=quiet if quiet > 0 and not self._busy else None)
            plan = self._plan
            return plan, plan[0], plan[1].pop(0)

    def _loop(self) -> None:
        from .infers.base import cached_study

        while True:
            plan, study, k = self._next()
            try:
                if k < 0:  # ("load", path, stacks): the slices are known once the study is loaded
                    study = cached_study(study[1], study[2])
                    with self._cv:
                        if self._plan is plan:  # no newer plan came meanwhile
                            self._plan = (study, bright_slices(study.channels, self.max_slices))
                    continue
                seg = self.models.segmenter()
                misses = seg.cache.misses
                seg.embed([axial_slice(study.channels, k)])
                self.encoded += seg.cache.misses - misses
            except Exception as exc:  # a background helper: log and go on, never take the server down
                logger.warning(f"prefetch of slice {k} skipped: {exc}")
