"""Smoke test of the paper-scale rehearsal (benchmarks/rehearsal.py) at a tiny size: every step runs, the JSON holds
measured rates and the projection. Its numbers are not asserted: timings are not tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_rehearsal_tiny_writes_rates_and_projection(tmp_path):
    env = {**os.environ, "BRATSMEDSAM_BENCH_DIR": str(tmp_path / "bench")}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rehearsal.py"), "--cases", "3",
                          "--work", str(tmp_path / "work"), "--workers", "2", "--device", "cpu",
                          "--detector-seconds", "5", "--segmenter-slices", "4", "--gpus", "1,2"],
                         capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    res = json.loads((tmp_path / "bench" / "rehearsal.json").read_text())
    steps = res["steps"]
    assert steps["sample-data"]["cases_per_s"] > 0 and steps["prepare"]["slices_per_s"] > 0
    assert steps["train-detector"]["train_images_per_s"] > 0 and steps["train-detector"]["val_images_per_s"] > 0
    seg = steps["train-segmenter"]
    assert seg["encode_slices_per_s"] > 0 and seg["train_samples_per_s"] > 0 and seg["cache_bytes_per_slice"] > 0
    assert all(s["peak_rss_bytes"] > 0 for s in steps.values())
    proj = res["projection"]
    assert proj["assumptions"]["gpu_speedup"] == 20.0 and proj["assumptions"]["ddp_efficiency"] == 0.9
    assert any("T(N GPUs)" in f for f in proj["formulas"])
    assert proj["inputs"]["paper_slices"] == 80_000 and proj["inputs"]["paper_cases"] == 802
    one, two = proj["gpus"]["1"], proj["gpus"]["2"]
    assert one["total_training_s"] > two["total_training_s"] > 0
    assert "PROJECTION" in out.stdout and "ASSUMPTIONS" in out.stdout and "MEASURED" in out.stdout
