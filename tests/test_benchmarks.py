"""Smoke test of the speed benchmarks (the one command, two slices): they run, compare with their reference in the
same run and write the JSON the speed table is built from. Their numbers are not asserted: timings are not tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_smoke_writes_each_benchmark_and_the_target_table(sample_studies, tmp_path):
    case = next(p for p in sorted(sample_studies.iterdir()) if p.is_dir() and p.name.startswith("BraTS-GLI-9"))
    env = {**os.environ, "BRATSMEDSAM_BENCH_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--smoke", "--case", str(case)],
                         capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    enc = json.loads((tmp_path / "bench_encoder_cpu.json").read_text())
    assert len(enc["rows"]) == 3 and all(r["encoder_ms"] > 0 and 0 < r["dice"] <= 1 for r in enc["rows"].values())
    dec = json.loads((tmp_path / "bench_decoder_cpu.json").read_text())
    assert all(d < 1e-2 for d in dec["max_logit_diff"].values())  # batched decoding = upstream decoding
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["env"]["smoke"] is True
    assert "warm 2D box (slice already encoded), over HTTP" in summary["targets"]
    assert "upstream MaskDecoder, one slice per call (reference)" in out.stdout
