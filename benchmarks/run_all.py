"""Every speed benchmark in one command, then the speed table of issue 12 built from what they wrote.

    python benchmarks/run_all.py [--studies DIR] [--detector WEIGHTS] [--skip server,app,...] [--smoke]

Runs, one after the other (each compares our path with its reference in the same run and writes its own JSON under
runs/benchmarks/): ``bench_encoder`` (encoder backends), ``bench_decoder`` (decoder batched across slices),
``bench_detector`` (batched detector), ``bench_app`` (ROIs, cold pipeline, active-learning score; needs
``--detector``), ``bench_server`` (annotator actions and a training round over HTTP; needs ``--studies``, by default
the demo's ``runs/demo/studies``). Then prints the target table and writes runs/benchmarks/summary.json.
``--smoke`` runs the encoder and decoder benchmarks on two slices only (the CI test; numbers mean nothing there).
On a CUDA machine ``--device cuda`` runs the encoder and decoder benchmarks on the GPU (see benchmarks/gpu.sh).
"""

from __future__ import annotations

import argparse
import os
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")  # where the JSON goes

#: issue 12's table: action -> (what it measured before, the target on the 2-core CPU, seconds)
TARGETS = {
    "warm 2D box (slice already encoded), over HTTP": (0.12, 0.10),
    "first box on a new slice, over HTTP": (1.15, 0.40),
    "first box on a newly opened study, over HTTP": (2.2, 0.60),
    "3D ROI over the tumour (47 slices), over HTTP": (55.0, 12.0),
    "pipeline on a study, embeddings not cached": (141.0, 30.0),
    "active-learning score per study": (13.0, 4.0),
    "training round over REST (2 labelled studies, 3 epochs)": (382.0, 120.0),
}


def run(script: str, *args: str) -> float:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def _load(name: str) -> dict | None:
    p = OUT / name
    return json.loads(p.read_text()) if p.is_file() else None


def measured() -> dict[str, float | None]:
    """Our default path's seconds per action, read from the benchmarks' JSON (None where not run)."""
    got: dict[str, float | None] = dict.fromkeys(TARGETS)
    server = _load("bench_server.json")
    if server:
        ours = [v for k, v in server["seconds"].items() if k.startswith("default")][0]
        got["warm 2D box (slice already encoded), over HTTP"] = ours.get("warm box (slice encoded)")
        got["first box on a new slice, over HTTP"] = ours.get("box on a new slice")
        got["first box on a newly opened study, over HTTP"] = ours.get("first box on the new study")
        got["3D ROI over the tumour (47 slices), over HTTP"] = ours.get("3D ROI, 47 slices")
        got["training round over REST (2 labelled studies, 3 epochs)"] = ours.get(
            "training round, 2 labelled studies, 3 epochs")
    app = _load("bench_app.json")
    if app:
        ours = list(app["seconds"].values())[-1]
        got["pipeline on a study, embeddings not cached"] = ours.get("pipeline volume-aware (default), cold",
                                                                      ours.get("pipeline (detector+segmenter), cold"))
        got["active-learning score per study"] = ours.get("active-learning score, cold")
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=Path, default=ROOT / "runs" / "demo" / "studies")
    ap.add_argument("--detector", type=Path, default=ROOT / "runs" / "demo" / "detector" / "weights" / "best.pt")
    ap.add_argument("--case", type=Path, help="the study the in-process benchmarks use (default: the real case)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip", default="", help="comma-separated: encoder,decoder,detector,app,server")
    ap.add_argument("--smoke", action="store_true", help="two slices, encoder and decoder only (CI)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    case = ["--case", str(args.case)] if args.case else []
    took = {}
    if args.smoke:
        took["encoder"] = run("bench_encoder.py", *case, "--slices", "2", "--deep", "4", "--device", args.device)
        took["decoder"] = run("bench_decoder.py", *case, "--slices", "2", "--batches", "2", "--repeats", "1",
                              "--device", args.device)
    else:
        if "encoder" not in skip:
            took["encoder"] = run("bench_encoder.py", *case, "--device", args.device)
        if "decoder" not in skip:
            took["decoder"] = run("bench_decoder.py", *case, "--device", args.device)
        if args.device == "cpu":
            weights = ["--weights", str(args.detector)] if args.detector.is_file() else []
            if "detector" not in skip:
                took["detector"] = run("bench_detector.py", *weights)
            if "app" not in skip and args.detector.is_file():
                took["app"] = run("bench_app.py", *case, "--detector", str(args.detector))
            if "server" not in skip and args.studies.is_dir():
                served = ["--detector", str(args.detector)] if args.detector.is_file() else []
                took["server"] = run("bench_server.py", "--studies", str(args.studies), *served, "--train", "2")
    got = measured()
    print(f"\n{'action':<58} {'before':>8} {'target':>8} {'now':>8}  met")
    rows = {}
    for action, (before, target) in TARGETS.items():
        now = got[action]
        met = None if now is None else now <= target
        rows[action] = {"before_s": before, "target_s": target, "now_s": now, "met": met}
        print(f"{action:<58} {before:8.2f} {target:8.2f} " + ("     n/a" if now is None else f"{now:8.2f}")
              + f"  {'-' if met is None else 'yes' if met else 'no'}")
    from bratsmedsam.atomic import write_json
    from bratsmedsam.segmenter.backends import cpu_flags

    flags = cpu_flags()
    env = {"cpu": platform.processor() or platform.machine(), "amx": "amx_bf16" in flags,
           "avx512_bf16": "avx512_bf16" in flags, "device": args.device, "smoke": args.smoke,
           "benchmark_seconds": took}
    print(f"-> {write_json(OUT / 'summary.json', {'targets': rows, 'env': env})}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
