"""Prefetch: likely slices are encoded in the background, nearest first, and never while a request runs."""

from __future__ import annotations

import sys
import threading
import time
from types import SimpleNamespace

import numpy as np

from serverkit import ROOT

APP_DIR = ROOT / "apps" / "brats_medsam"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from lib.prefetch import Prefetcher, around, bright_slices  # noqa: E402


class FakeSegmenter:
    """Records which slices it was asked to encode (each slice image carries its index in pixel [0, 0, 0])."""

    def __init__(self):
        self.done, self.cache = [], SimpleNamespace(misses=0)
        self.event = threading.Event()

    def embed(self, images):
        time.sleep(0.01)
        self.done.append(int(images[0][0, 0, 0]))
        self.cache.misses += 1
        self.event.set()


def _study(depth=20):
    ch = np.zeros((8, 8, depth, 3), np.uint8)
    ch[0, 0, :, :] = np.arange(depth)[:, None]
    return SimpleNamespace(channels=ch)


def _wait(cond, seconds=5.0):
    t0 = time.time()
    while not cond() and time.time() - t0 < seconds:
        time.sleep(0.01)
    return cond()


def test_neighbours_come_nearest_first_and_stay_inside_the_volume():
    assert around(0, 10, 5) == [0, 1, 2, 3, 4]
    assert around(5, 10, 5) == [5, 4, 6, 3, 7]


def test_bright_flair_slices_come_first():
    ch = np.full((10, 10, 6, 3), 10, np.uint8)
    ch[:5, :, 4, 2] = 250
    ch[:2, :, 1, 2] = 250
    assert bright_slices(ch, 3)[:2] == [4, 1]


def _prefetcher(max_slices: int, idle_s: float):
    seg = FakeSegmenter()
    return seg, Prefetcher(SimpleNamespace(segmenter=lambda: seg), max_slices=max_slices, idle_s=idle_s)


def test_a_prompt_schedules_its_neighbours_and_prefetch_waits_while_a_request_runs():
    seg, pf = _prefetcher(5, idle_s=0.5)
    study = _study()
    with pf.serving():
        pf.after_prompt(study, 10)
        time.sleep(0.3)
        assert seg.done == []  # a request is running: nothing is encoded behind its back
    time.sleep(0.3)
    assert seg.done == []  # nor in the quiet moment right after it (the next click often follows)
    assert _wait(lambda: len(seg.done) == 5)
    assert seg.done == [10, 9, 11, 8, 12] and pf.encoded == 5


def test_a_newer_plan_replaces_the_older_one():
    seg, pf = _prefetcher(3, idle_s=0.1)
    study = _study()
    with pf.serving():
        pf.after_prompt(study, 2)
        pf.after_prompt(study, 15)
    assert _wait(lambda: len(seg.done) == 3)
    time.sleep(0.1)
    assert seg.done == [15, 14, 16]
