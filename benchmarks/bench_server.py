"""What an annotator waits for, over HTTP, with the server as shipped vs the reference configuration in one run.

    python benchmarks/bench_server.py [--studies DIR] [--detector W] [--think 8] [--deep 47] [--train 2 --epochs 3]

Two servers are started one after the other on a copy of the studies: the reference (PyTorch float32 encoder,
no prefetch) and the default (OpenVINO at the CPU's precision, prefetch on). Each is driven as Slicer drives it
(``MONAILabelClient``): Next Sample, a pause of ``--think`` seconds (an annotator finding the tumour), a box on
the study's brightest-FLAIR slice, the same box again (warm), a box on a slice far from it (new slice), a 3D ROI
of ``--deep`` slices, and with ``--train N`` (default server only) a training round on N labelled studies.
Prints seconds per action and the ratio reference/default; writes runs/benchmarks/bench_server.json.
"""

from __future__ import annotations

import argparse
import os
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")  # where the JSON goes
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

CONFIGS = {
    "reference (torch f32, no prefetch)": ["--conf", "encoder_backend", "torch", "--conf", "prefetch_slices", "0"],
    "default (openvino auto, prefetch)": [],
}
SLICER = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}


def train_round(client, studies: Path, n_studies: int, epochs: int) -> float:
    """Submit the BraTS WT label of ``n_studies`` studies as final, start a ``medsam`` training, wait: seconds from
    the start request to DONE (the embeddings of those studies not cached before)."""
    from bratsmedsam.cases import case_files_in, load_case
    from bratsmedsam.regions import region_mask
    from bratsmedsam.studies import write_label

    ids = sorted(p.name for p in studies.iterdir() if p.is_dir() and not p.name.startswith("."))[:n_studies]
    for sid in ids:
        files = case_files_in(studies / sid)
        wt = region_mask(load_case(files, [], with_seg=True).seg, "WT")
        client.save_label(sid, str(write_label(wt, files.images["t2f"], studies.parent / f"{sid}.nrrd")), tag="final")
    t0 = time.perf_counter()
    client.train_start("medsam", {"max_epochs": epochs})
    while True:
        time.sleep(2)
        status = client.train_status()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
    if status.get("status") != "DONE":
        raise SystemExit(f"training did not finish: {status}")
    return round(time.perf_counter() - t0, 1)


def wait_for_scoring(url: str, limit: float = 900) -> float:
    """Wait until the server's start-up active-learning scoring has finished (a quiet server); seconds waited."""
    import requests

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        status = requests.get(url + "/scoring/", timeout=30).json()
        if not isinstance(status, dict) or status.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(2)
    return round(time.perf_counter() - t0, 1)


def drive(url: str, studies: Path, think: float, deep: int, train: int, epochs: int, reference: bool) -> dict:
    from monailabel.client import MONAILabelClient

    from bratsmedsam.cases import case_files_in, load_case
    from bratsmedsam.studies import load_study
    from bratsmedsam.regions import region_mask

    from lib.prefetch import bright_slices

    client = MONAILabelClient(url, tmpdir=tempfile.mkdtemp())
    t, server_side = {}, {}
    t["start-up scoring (waited for)"] = wait_for_scoring(url)
    sid = client.next_sample("first", {})["id"]
    files = case_files_in(studies / sid)
    wt = region_mask(load_case(files, [], with_seg=True).seg, "WT")
    study = load_study(files.images["t2f"])
    k = bright_slices(study.channels, 1)[0]  # where a radiologist would look first: the brightest FLAIR slice
    ks = np.nonzero(wt.sum(axis=(0, 1)))[0]
    kk = int(np.argmax(wt.sum(axis=(0, 1))))
    ii, jj = np.nonzero(wt[:, :, kk])
    box = [int(ii.min()), int(ii.max()), int(jj.min()), int(jj.max())]
    time.sleep(think)

    def infer(name, roi):
        t0 = time.perf_counter()
        _, params = client.infer("medsam", sid, {**SLICER, "roi": roi})
        t[name] = round(time.perf_counter() - t0, 3)
        server_side[name] = params.get("latencies")  # load / infer / write inside the server

    infer("first box on the new study", [*box, k, k])
    infer("warm box (slice encoded)", [*box, k, k])
    far = int(ks.min()) if abs(int(ks.min()) - k) > abs(int(ks.max()) - k) else int(ks.max())
    infer("box on a new slice", [*box, far, far])
    k0 = max(0, kk - deep // 2)
    infer(f"3D ROI, {deep} slices", [*box, k0, min(wt.shape[2] - 1, k0 + deep - 1)])
    if train and not reference:  # the reference's round (PyTorch f32 encoding) took 382 s here: issue 12's "before"
        t[f"training round, {train} labelled studies, {epochs} epochs"] = train_round(client, studies, train, epochs)
    t["study"] = sid
    t["server_side"] = server_side
    return t


def main() -> None:
    from serverkit import Server

    sys.path.insert(0, str(ROOT / "apps" / "brats_medsam"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--studies", type=Path, default=ROOT / "runs" / "demo" / "studies")
    ap.add_argument("--think", type=float, default=8.0, help="seconds between Next Sample and the first box")
    ap.add_argument("--deep", type=int, default=47, help="slices in the 3D ROI")
    ap.add_argument("--train", type=int, default=0, metavar="N",
                    help="also time a medsam training round over REST on N studies labelled with their BraTS WT")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--detector", type=Path, help="YOLO weights to serve, as the demo does (for start-up scoring)")
    args = ap.parse_args()
    served = ["--detector", str(args.detector)] if args.detector else []
    results = {}
    for name, extra in CONFIGS.items():
        work = Path(tempfile.mkdtemp()) / "studies"
        shutil.copytree(args.studies, work, ignore=shutil.ignore_patterns(".*"))
        # segmentations kept as 'original': every study is unlabelled, Next Sample may hand out any of them
        srv = Server(work, work.parent / "server.log", "--seg-tag", "original", *served, *extra)
        srv.start()
        try:
            results[name] = drive(srv.url, work, args.think, args.deep, args.train, args.epochs,
                                  reference=name.startswith("reference"))
        finally:
            srv.stop()
            shutil.rmtree(work.parent, ignore_errors=True)
    ref, ours = (results[n] for n in CONFIGS)
    print(f"{'action':<30} " + " ".join(f"{n[:30]:>32}" for n in CONFIGS) + f" {'ratio':>7}")
    for action in ours:
        if action in ("study", "server_side"):
            continue
        if action in ref:
            print(f"{action:<30} {ref[action]:>32.2f} {ours[action]:>32.2f} {ref[action] / ours[action]:7.1f}")
        else:
            print(f"{action:<30} {'-':>32} {ours[action]:>32.2f}")
    env = {"cpu": platform.processor() or platform.machine(), "studies": str(args.studies), "think_s": args.think}
    from bratsmedsam.atomic import write_json

    out = write_json(OUT / "bench_server.json", {"seconds": results, "env": env})
    print(f"-> {out}")
    print(json.dumps(env))


if __name__ == "__main__":
    main()
