"""Benchmark ``prepare``: slices written per second with 1 and 2 worker processes on the sample studies.

    python benchmarks/bench_prepare.py [--cases 4] [--repeats 1] [--studies DIR]

The reference is the 1-worker run measured in the same invocation; the table shows the other runs
as ratios to it. Also timed: a re-run that finds every case done (the restart path).
Writes runs/benchmarks/prepare.json. CPU timings on a shared machine are noisy: repeat and compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bratsmedsam.atomic import write_json  # noqa: E402
from bratsmedsam.prepare import PrepareConfig, prepare_dataset  # noqa: E402


def _run(studies: Path, out: Path, workers: int, overwrite: bool) -> dict:
    t0 = time.perf_counter()
    s = prepare_dataset(studies, out, PrepareConfig(overwrite=overwrite), workers=workers, progress=False)
    wall = time.perf_counter() - t0
    return {"workers": workers, "seconds": wall, "slices_written": s["slices_written"], "n_slices": s["n_slices"],
            "cases": len(s["cases_used"]), "slices_per_second": s["slices_written"] / wall if wall else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=Path, help="studies folder (default: write sample studies into a temp dir)")
    ap.add_argument("--cases", type=int, default=4, help="synthetic sample cases to write (plus the real case)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per setting (the best is reported)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "benchmarks" / "prepare.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        studies = args.studies
        if studies is None:
            from bratsmedsam.sample_data import write_sample_studies

            studies = tmp / "studies"
            write_sample_studies(studies, n_cases=args.cases, seed=0, verbose=False)
        results = {}
        for workers in (1, 2):
            runs = [_run(studies, tmp / f"ds{workers}", workers, overwrite=True) for _ in range(args.repeats)]
            results[f"{workers} worker{'s' if workers > 1 else ''}"] = max(runs, key=lambda r: r["slices_per_second"])
        rerun = _run(studies, tmp / "ds1", 1, overwrite=False)
        results["re-run, all cases done"] = rerun
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ref = results["1 worker"]
    print(f"prepare on {ref['cases']} cases, {ref['n_slices']} slices "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; shared machine: timings noisy)")
    print(f"{'run':<26}{'seconds':>9}{'slices':>8}{'slices/s':>10}{'time vs 1 worker':>18}")
    for name, r in results.items():
        print(f"{name:<26}{r['seconds']:>9.2f}{r['slices_written']:>8}{r['slices_per_second']:>10.1f}"
              f"{r['seconds'] / ref['seconds']:>18.2f}")
    speedup = results["2 workers"]["slices_per_second"] / ref["slices_per_second"]
    print(f"2-worker speed-up: {speedup:.2f}x")
    write_json(args.out, {"benchmark": "prepare", "cpu_count": os.cpu_count(), "machine": platform.machine(),
                          "results": results, "speedup_2_workers": speedup, "reference": "1 worker, same run"})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
