"""Paper-scale rehearsal (issue 15.5): synthetic cases -> prepare -> one capped epoch of each training -> projection.

    python benchmarks/rehearsal.py [--cases 300] [--work runs/rehearsal] [--workers <all cores>]
        [--detector-seconds 600] [--segmenter-seconds 600] [--device cpu|0] [--medsam-checkpoint PATH]
        [--gpu-speedup 20] [--ddp-efficiency 0.9] [--gpus 1,2,4,8]

Steps, each a subprocess of the command line (``main.py <verb>``), timed, with its peak resident memory
(``os.wait4``'s ``ru_maxrss``: the process and its waited-for children) and the disk of what it wrote:

1. ``sample-data --no-real --cases N`` (skipped when WORK/studies already holds N cases): cases/s.
2. ``prepare --workers W`` (skipped when WORK/dataset is complete; the earlier measurement is kept): slices/s.
3. ``train-detector`` with the paper profile's first detector (yolov5s, imgsz, batch, SGD, lr0), ``--set epochs=1``,
   stopped after ``--detector-seconds`` of training by a callback (ultralytics' own ``time=`` cap would re-plan the
   run into as many epochs as fit in the time, so it is not used). Measured: training images/s over the batches
   run, validation images/s, the set-up and after-training (final validation, threshold) seconds.
4. ``train-segmenter`` with the paper profile's decoder settings (batch 8, AdamW lr 1e-4, wd 0.01, seed 0),
   ``--epochs 1``. It has no time cap of its own, so the training slices are capped with ``--max-train-slices``
   (val: a quarter of that) from a prior cost per slice (``--segmenter-slice-cost``) so that one epoch fits in
   ``--segmenter-seconds``, or ``--segmenter-slices K``. Measured: encode slices/s (the first pass fills a fresh
   embedding cache), train samples/s on cached embeddings, validation slices/s, the cache's disk per slice.
   Base: ``medsam`` (the paper's) with ``--medsam-checkpoint``, else ``litemedsam``; the encode rate is the base's.

Steps 3 and 4 run the CLI inside this script's child mode (``--child``) so that timers can be hooked to the
trainer's callbacks / the fine-tuning loop; nothing of the project is changed.

Projection of the full paper profile (802 cases, 80,000 slices, 6:2:2, YOLOv5s + YOLOv5l 100 epochs, MedSAM
decoder 100 epochs; evaluation not included), formulas printed with the run::

    rate_gpu        = rate_measured x S             S = --gpu-speedup (ASSUMPTION; 1 when measured on a GPU)
    T_det(m, 1 GPU) = E_det x (train / r_det_train + val / r_det_val) x F(m)   F(yolov5l) = GFLOPs ratio (ASSUMPTION)
    T_seg(1 GPU)    = enc / r_enc + E_seg x (samples / r_seg_train + val_t / r_seg_val)
    T(N GPUs)       = T(1 GPU) / (N x eta), N > 1   eta = --ddp-efficiency (ASSUMPTION)
    T_prepare       = 802 / (cases/s of prepare with W workers)    (a CPU job, this machine)

train / val = 80,000 x 0.6 / 0.2; enc, samples, val_t = the decoder's tumour slices (train + val), boxes, val
tumour slices, from the fractions measured on the prepared synthetic dataset. Writes
``runs/benchmarks/rehearsal.json`` (``BRATSMEDSAM_BENCH_DIR`` overrides the folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("BRATSMEDSAM_BENCH_DIR") or ROOT / "runs" / "benchmarks")  # where the JSON goes
sys.path.insert(0, str(ROOT))

PAPER_CASES = 802
PAPER_SLICES = 80_000
PAPER_SPLIT = (0.6, 0.2, 0.2)
# Prior seconds per training slice of the capped decoder epoch on a 2-core CPU (LiteMedSAM, OpenVINO bf16):
# encode 0.36 s + ~1.5 boxes x 0.185 s decoder step (README "Speed on a CPU") + its share of validation.
SEG_SLICE_COST = 0.8
SEG_FIXED_S = 30.0  # model load, zero-shot and final validation, overlays (prior)
GPU_SPEEDUP_NOTE = ("ASSUMPTION (not measured here): a GPU runs these small models' steps (YOLOv5s 256 px batch 16; "
                    "SAM mask decoder batch 8; the image encoder) about S times this CPU's rate. Source of the "
                    "default 20: an order-of-magnitude figure for small models that do not fill a GPU, well under "
                    "the peak-FLOPs ratio (printed below: an upper bound). Run the rehearsal on the GPU "
                    "(--device 0) to measure the rates instead (then S = 1).")


# ---------------------------------------------------------------- child mode: the CLI with timers hooked in
def child(kind: str, out_json: Path, argv: list[str]) -> int:
    """Run ``main.py <argv>`` in this process with timers on the training loop; write them to ``out_json``."""
    stats: dict = {"kind": kind}
    if kind == "detector":
        from bratsmedsam.detection import ultra

        ultra.ultralytics_module()
        from ultralytics.utils.callbacks import base

        cap = float(os.environ["REHEARSAL_TRAIN_SECONDS"])
        st = stats.setdefault("detector", {"batches": 0, "stopped_by_cap": False})

        def pretrain_start(tr):
            st["t_pretrain"] = time.time()

        def train_start(tr):
            st["t_train_start"] = time.time()
            st["train_images_total"] = len(tr.train_loader.dataset)
            st["val_images"] = len(tr.test_loader.dataset)
            st["batch"] = int(tr.batch_size)

        def batch_start(tr):
            st.setdefault("t_first_batch", time.time())

        def batch_end(tr):
            st["batches"] += 1
            st["t_last_batch"] = time.time()
            if st["t_last_batch"] - st["t_first_batch"] > cap and not tr.stop:
                tr.stop = True
                st["stopped_by_cap"] = True

        def epoch_end(tr):
            st["t_train_epoch_end"] = time.time()

        def fit_epoch_end(tr):  # after the epoch's validation and checkpoint save
            st["t_fit_epoch_end"] = time.time()

        def train_end(tr):
            st["t_train_end"] = time.time()

        for ev, fn in [("on_pretrain_routine_start", pretrain_start), ("on_train_start", train_start),
                       ("on_train_batch_start", batch_start), ("on_train_batch_end", batch_end),
                       ("on_train_epoch_end", epoch_end), ("on_fit_epoch_end", fit_epoch_end),
                       ("on_train_end", train_end)]:
            base.default_callbacks[ev].append(fn)
    elif kind == "segmenter":
        from bratsmedsam.segmenter import finetune, model

        st = stats.setdefault("segmenter", {"encode_slices": 0, "encode_seconds": 0.0, "train": [], "val": []})
        phase = {"fill": True}
        embed, train_epoch, slice_dices = model.Segmenter.embed, finetune.train_epoch, finetune.slice_dices

        def timed_embed(self, images, *a, **k):
            if not phase["fill"]:
                return embed(self, images, *a, **k)
            t0 = time.perf_counter()
            out = embed(self, images, *a, **k)
            _sync()
            st["encode_seconds"] += time.perf_counter() - t0
            st["encode_slices"] += len(images)
            return out

        def timed_train(seg, decoder, samples, *a, **k):
            phase["fill"] = False
            t0 = time.perf_counter()
            out = train_epoch(seg, decoder, samples, *a, **k)
            _sync()
            st["train"].append({"samples": len(samples), "seconds": time.perf_counter() - t0})
            return out

        def timed_val(seg, data, *a, **k):
            phase["fill"] = False
            t0 = time.perf_counter()
            out = slice_dices(seg, data, *a, **k)
            st["val"].append({"slices": len(data.images), "seconds": time.perf_counter() - t0})
            return out

        model.Segmenter.embed = timed_embed
        finetune.train_epoch = timed_train
        finetune.slice_dices = timed_val

    # Peak RSS: the parent's os.wait4 covers this process; the GPU's peak is torch's own count.
    from bratsmedsam.cli import main as cli_main

    t0 = time.time()
    try:
        rc = cli_main(argv)
    finally:
        stats["seconds"] = time.time() - t0
        stats["gpu_peak_bytes"] = _gpu_peak()
        Path(out_json).write_text(json.dumps(stats, indent=1))
    return rc


def _sync():
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _gpu_peak() -> int | None:
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return int(max(torch.cuda.max_memory_reserved(i) for i in range(torch.cuda.device_count())))
    except Exception:  # noqa: BLE001 - a measurement, never a failure
        pass
    return None


# ---------------------------------------------------------------- parent: steps, measurements, projection
def du(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed: the detector's data view is links)."""
    path = Path(path)
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.lstat(p).st_size
    return total


def run_step(name: str, cmd: list[str], work: Path, env: dict | None = None) -> dict:
    """Run ``cmd``; its wall seconds, exit status and peak RSS (bytes, this child and its waited-for children)."""
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"== {name}: {' '.join(cmd)}  (log {log})", flush=True)
    t0 = time.time()
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.time() - t0
    if p.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} failed (exit {p.returncode}); end of {log}:\n{tail}")
    print(f"== {name}: {seconds:.1f} s, peak RSS {ru.ru_maxrss / 2**20:.2f} GiB", flush=True)
    return {"seconds": round(seconds, 2), "peak_rss_bytes": int(ru.ru_maxrss) * 1024, "command": cmd}


def manifest_stats(dataset: Path) -> dict:
    with open(dataset / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    per = {s: {"slices": 0, "tumour_slices": 0, "boxes": 0} for s in ("train", "val", "test")}
    for r in rows:
        d = per.setdefault(r["split"], {"slices": 0, "tumour_slices": 0, "boxes": 0})
        d["slices"] += 1
        boxes = json.loads(r["boxes_xyxy"] or "[]")
        if boxes:
            d["tumour_slices"] += 1
            d["boxes"] += len(boxes)
    return {"slices": len(rows), "cases": len({r["case"] for r in rows}), "splits": per}


def cpu_peak_gflops() -> tuple[float | None, str]:
    """This CPU's fp32 peak (cores x GHz x FLOPs/cycle: 32 with AVX-512 FMA, 16 with AVX2 FMA), for the note."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        mhz = max(float(l.split(":")[1]) for l in info.splitlines() if l.startswith("cpu MHz"))
        flops = 32 if "avx512f" in info else 16 if "fma" in info else 8
        cores = os.cpu_count() or 1
        return cores * mhz / 1000 * flops, f"{cores} cores x {mhz / 1000:.2f} GHz x {flops} fp32 FLOPs/cycle"
    except Exception:  # noqa: BLE001
        return None, "unknown"


def yolo_flops_ratio(imgsz: int) -> tuple[float, dict]:
    """GFLOPs of yolov5l / yolov5s at imgsz (ultralytics' own count): the ASSUMED cost ratio of a v5l epoch."""
    from bratsmedsam.detection import ultra

    ultra.ultralytics_module()
    from ultralytics.utils.torch_utils import get_flops

    g = {m: float(get_flops(ultra.yolo(m).model, imgsz)) for m in ("yolov5s", "yolov5l")}
    return g["yolov5l"] / g["yolov5s"], g


def hms(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    h, m = divmod(int(round(s)) // 60, 60)
    return f"{h}:{m:02d} h" if h else f"{int(round(s)) // 60} min {int(round(s)) % 60} s"


def main() -> None:
    from bratsmedsam.reproduce import PAPER

    det = PAPER.detectors[0]
    ft = PAPER.finetune
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=300, help="synthetic cases (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "rehearsal",
                    help="work folder (default runs/rehearsal)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prepare workers (default: all cores)")
    ap.add_argument("--detector-seconds", type=float, default=600.0, help="cap of the detector's training epoch")
    ap.add_argument("--segmenter-seconds", type=float, default=600.0, help="budget of the decoder's one epoch")
    ap.add_argument("--segmenter-slices", type=int, help="training tumour slices of the decoder epoch (default: "
                    "from --segmenter-seconds and --segmenter-slice-cost)")
    ap.add_argument("--segmenter-slice-cost", type=float, default=SEG_SLICE_COST,
                    help=f"prior seconds per decoder training slice (encode + train + val share; default "
                    f"{SEG_SLICE_COST}, a 2-core CPU with LiteMedSAM)")
    ap.add_argument("--medsam-checkpoint", type=Path, help="medsam_vit_b.pth: fine-tune the paper's base (MedSAM) "
                    "instead of LiteMedSAM")
    ap.add_argument("--device", help="cpu, 0 (a GPU: the rates are then measured on it), default: CUDA when present")
    ap.add_argument("--gpu-speedup", type=float, default=20.0, help="ASSUMED GPU/CPU rate ratio (default 20)")
    ap.add_argument("--ddp-efficiency", type=float, default=0.9, help="ASSUMED efficiency of N GPUs (default 0.9)")
    ap.add_argument("--gpus", default="1,2,4,8", help="GPU counts to project for")
    ap.add_argument("--redo", action="store_true", help="redo sample-data and prepare even when present")
    ap.add_argument("--child", choices=("detector", "segmenter"), help=argparse.SUPPRESS)
    ap.add_argument("--child-json", type=Path, help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    if "--child" in argv:  # child mode: --child KIND --child-json PATH -- <main.py arguments>
        cut = argv.index("--")
        a = ap.parse_args(argv[:cut])
        sys.exit(child(a.child, a.child_json, argv[cut + 1:]))
    args = ap.parse_args(argv)

    import torch

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    main_py = [sys.executable, str(ROOT / "main.py")]
    me = [sys.executable, str(Path(__file__).resolve())]
    state_file = work / "steps.json"  # measurements of skipped steps survive re-runs
    steps: dict = json.loads(state_file.read_text()) if state_file.is_file() else {}
    cuda = torch.cuda.is_available() and (args.device or "0") not in ("cpu",)
    device = args.device or ("0" if cuda else "cpu")

    def save():
        state_file.write_text(json.dumps(steps, indent=1))

    # 1. synthetic studies
    studies = work / "studies"
    have = sorted(p for p in studies.glob("BraTS-GLI-9*") if p.is_dir()) if studies.is_dir() else []
    if args.redo or len(have) != args.cases or "sample-data" not in steps:
        if studies.exists():
            shutil.rmtree(studies)
        r = run_step("sample-data", main_py + ["sample-data", "--no-real", "--no-montage", "--cases", str(args.cases),
                                               "--seed", str(args.seed), "--out", str(studies)], work)
        r["cases"] = args.cases
        r["cases_per_s"] = args.cases / r["seconds"]
        r["disk_bytes"] = du(studies)
        steps["sample-data"] = r
        steps.pop("prepare", None)
        save()
    else:
        print(f"== sample-data: {len(have)} cases already in {studies}, skipped (earlier measurement kept)")

    # 2. prepare (the paper profile's settings)
    dataset = work / "dataset"
    prep = PAPER.prepare
    if args.redo or "prepare" not in steps or not (dataset / "prepare.json").is_file():
        r = run_step("prepare", main_py + [
            "prepare", "--studies", str(studies), "--out", str(dataset), "--overwrite", "--no-progress",
            "--workers", str(args.workers), "--z-step", str(prep["z_step"]), "--seed", str(prep["seed"]),
            "--split", ":".join(str(x) for x in prep["split"])], work)
        ms = manifest_stats(dataset)
        r.update(workers=args.workers, manifest=ms, slices_per_s=ms["slices"] / r["seconds"],
                 cases_per_s=ms["cases"] / r["seconds"], disk_bytes=du(dataset))
        r["disk_bytes_per_slice"] = r["disk_bytes"] / max(ms["slices"], 1)
        steps["prepare"] = r
        save()
    else:
        print(f"== prepare: {dataset} complete, skipped (earlier measurement kept)")
    ms = steps["prepare"]["manifest"]

    # 3. detector: one epoch of the paper's yolov5s recipe, training capped by time
    det_run = work / "detector-yolov5s"
    shutil.rmtree(det_run, ignore_errors=True)
    det_json = work / "logs" / "detector-timers.json"
    cmd = me + ["--child", "detector", "--child-json", str(det_json), "--"] + [
        "train-detector", "--data", str(dataset / "dataset.yaml"), "--out", str(det_run), "--model", det.model,
        "--epochs", "1", "--imgsz", str(det.imgsz), "--batch", str(det.batch), "--device", device,
        "--set", f"optimizer={det.optimizer}", "--set", f"lr0={det.lr0}",
        *[x for k, v in det.extra.items() for x in ("--set", f"{k}={v}")]]
    r = run_step("train-detector", cmd, work, env={"REHEARSAL_TRAIN_SECONDS": str(args.detector_seconds)})
    t = json.loads(det_json.read_text())
    d = t["detector"]
    train_s = d["t_last_batch"] - d["t_first_batch"]
    images = min(d["batches"] * d["batch"], d["train_images_total"])
    val_s = d["t_fit_epoch_end"] - d["t_train_epoch_end"]
    r.update(train_images=images, train_images_total=d["train_images_total"], batches=d["batches"],
             batch=d["batch"], stopped_by_cap=d["stopped_by_cap"], train_seconds=round(train_s, 2),
             train_images_per_s=images / train_s if train_s > 0 else None, val_images=d["val_images"],
             val_seconds=round(val_s, 2), val_images_per_s=d["val_images"] / val_s if val_s > 0 else None,
             setup_seconds=round(d["t_first_batch"] - d["t_pretrain"], 2),
             after_training_seconds=round(t["seconds"] - (d["t_fit_epoch_end"] - d["t_pretrain"]), 2),
             gpu_peak_bytes=t["gpu_peak_bytes"], disk_bytes=du(det_run), model=det.model, imgsz=det.imgsz,
             optimizer=det.optimizer, lr0=det.lr0, device=device)
    steps["train-detector"] = r
    save()

    # 4. segmenter: one epoch of the paper's decoder recipe on a capped number of slices, fresh cache
    seg_dir = work / "segmenter"
    shutil.rmtree(seg_dir, ignore_errors=True)
    base = "medsam" if args.medsam_checkpoint else "litemedsam"
    k = args.segmenter_slices or max(4, int((args.segmenter_seconds - SEG_FIXED_S) / args.segmenter_slice_cost))
    kv = max(2, k // 4)
    seg_json = work / "logs" / "segmenter-timers.json"
    cmd = me + ["--child", "segmenter", "--child-json", str(seg_json), "--"] + [
        "train-segmenter", "--data", str(dataset), "--out", str(seg_dir / "run"), "--base", base,
        *(["--checkpoint", str(args.medsam_checkpoint)] if args.medsam_checkpoint else []),
        "--epochs", "1", "--batch-size", str(ft["batch_size"]), "--lr", str(ft["lr"]),
        "--weight-decay", str(ft["weight_decay"]), "--seed", str(ft["seed"]), "--max-train-slices", str(k),
        "--max-val-slices", str(kv), "--cache-dir", str(seg_dir / "cache"),
        "--device", "cpu" if device == "cpu" else f"cuda:{device.split(',')[0]}"]
    r = run_step("train-segmenter", cmd, work)
    t = json.loads(seg_json.read_text())
    s = t["segmenter"]
    tr = s["train"][0]
    vals = s["val"][:2]  # zero-shot and epoch 1 (later calls: the overlays)
    cache_bytes = du(seg_dir / "cache")
    r.update(base=base, max_train_slices=k, max_val_slices=kv, cap_note=(
        "train-segmenter has no time cap: the epoch is bounded by --max-train-slices (this script's choice "
        "from --segmenter-seconds and the prior cost per slice)"),
        encode_slices=s["encode_slices"], encode_seconds=round(s["encode_seconds"], 2),
        encode_slices_per_s=s["encode_slices"] / s["encode_seconds"] if s["encode_seconds"] else None,
        train_samples=tr["samples"], train_seconds=round(tr["seconds"], 2),
        train_samples_per_s=tr["samples"] / tr["seconds"] if tr["seconds"] else None,
        val_slices=sum(v["slices"] for v in vals), val_seconds=round(sum(v["seconds"] for v in vals), 2),
        cache_bytes=cache_bytes, cache_bytes_per_slice=cache_bytes / max(s["encode_slices"], 1),
        gpu_peak_bytes=t["gpu_peak_bytes"], disk_bytes=du(seg_dir), batch_size=ft["batch_size"], lr=ft["lr"],
        weight_decay=ft["weight_decay"], device=device)
    r["val_slices_per_s"] = r["val_slices"] / r["val_seconds"] if r["val_seconds"] else None
    steps["train-segmenter"] = r
    save()

    # 5. projection
    ratio_l, gflops = yolo_flops_ratio(det.imgsz)
    measured_on_gpu = device != "cpu"
    S = 1.0 if measured_on_gpu else args.gpu_speedup
    eta = args.ddp_efficiency
    peak, peak_src = cpu_peak_gflops()
    sp = ms["splits"]
    tot = ms["slices"]
    f_tumour = {x: sp[x]["tumour_slices"] / max(sp[x]["slices"], 1) for x in ("train", "val")}
    boxes_per = sp["train"]["boxes"] / max(sp["train"]["tumour_slices"], 1)
    p_train, p_val = PAPER_SLICES * PAPER_SPLIT[0], PAPER_SLICES * PAPER_SPLIT[1]
    p_seg_train = p_train * f_tumour["train"]
    p_seg_val = p_val * f_tumour["val"]
    inputs = {
        "paper_cases": PAPER_CASES, "paper_slices": PAPER_SLICES, "paper_split": PAPER_SPLIT,
        "detector_epochs": det.epochs, "decoder_epochs": ft["epochs"],
        "detector_train_slices": p_train, "detector_val_slices": p_val,
        "decoder_train_tumour_slices": p_seg_train, "decoder_val_tumour_slices": p_seg_val,
        "decoder_train_samples": p_seg_train * boxes_per, "decoder_encode_slices": p_seg_train + p_seg_val,
        "tumour_fraction_measured": f_tumour, "boxes_per_tumour_slice_measured": boxes_per,
        "slices_per_case_measured": tot / max(ms["cases"], 1),
    }
    dt, sg = steps["train-detector"], steps["train-segmenter"]
    rates = {"det_train": dt["train_images_per_s"], "det_val": dt["val_images_per_s"],
             "seg_encode": sg["encode_slices_per_s"], "seg_train": sg["train_samples_per_s"],
             "seg_val": sg["val_slices_per_s"], "prepare_cases": steps["prepare"]["cases_per_s"]}
    g = {k2: (v * S if v and k2 != "prepare_cases" else v) for k2, v in rates.items()}
    t_det_s = det.epochs * (p_train / g["det_train"] + p_val / g["det_val"])
    t_det_l = t_det_s * ratio_l
    t_seg = (inputs["decoder_encode_slices"] / g["seg_encode"]
             + ft["epochs"] * (inputs["decoder_train_samples"] / g["seg_train"] + p_seg_val / g["seg_val"]))
    t_prep = PAPER_CASES / rates["prepare_cases"]
    gpus = [int(x) for x in args.gpus.split(",")]
    per_n = {n: {"detector_yolov5s_s": t_det_s / (n * eta if n > 1 else 1),
                 "detector_yolov5l_s": t_det_l / (n * eta if n > 1 else 1),
                 "decoder_s": t_seg / (n * eta if n > 1 else 1)} for n in gpus}
    for n, v in per_n.items():
        v["total_training_s"] = sum(v.values())
        v["total_with_prepare_s"] = v["total_training_s"] + t_prep
    formulas = [
        "rate_gpu = rate_measured x S  (S = %g: %s)" % (S, "measured on the GPU" if measured_on_gpu else "ASSUMPTION"),
        "T_det(v5s, 1 GPU) = E_det x (train / r_det_train + val / r_det_val)",
        "T_det(v5l, 1 GPU) = T_det(v5s) x F,  F = GFLOPs(v5l) / GFLOPs(v5s) at imgsz %d = %.2f (ASSUMPTION: "
        "time scales with FLOPs)" % (det.imgsz, ratio_l),
        "T_seg(1 GPU) = enc / r_enc + E_seg x (samples / r_seg_train + val_t / r_seg_val)  (encode once: cache)",
        "T(N GPUs) = T(1 GPU) / (N x eta) for N > 1,  eta = %g (ASSUMPTION)" % eta,
        "T_prepare = %d cases / r_prepare (a CPU job on this machine, %d workers)" % (PAPER_CASES, args.workers),
    ]
    disk = {"dataset_bytes": steps["prepare"]["disk_bytes_per_slice"] * PAPER_SLICES,
            "embedding_cache_bytes": sg["cache_bytes_per_slice"] * inputs["decoder_encode_slices"]}
    projection = {"formulas": formulas, "inputs": inputs, "rates_measured": rates, "rates_used": g,
                  "assumptions": {"gpu_speedup": S, "gpu_speedup_note": "measured on the GPU" if measured_on_gpu
                                  else GPU_SPEEDUP_NOTE, "ddp_efficiency": eta, "yolov5l_flops_ratio": ratio_l,
                                  "yolo_gflops": gflops, "cpu_peak_gflops_fp32": peak, "cpu_peak_source": peak_src,
                                  "decoder_base_measured": sg["base"], "evaluation": "not included"},
                  "prepare_s": t_prep, "one_gpu": per_n.get(1) or {k2: v for k2, v in per_n[gpus[0]].items()},
                  "gpus": {str(n): v for n, v in per_n.items()}, "disk": disk}

    # Print: measured, then assumptions, then the projection.
    print(f"\nRehearsal: {ms['cases']} synthetic cases, {tot} slices, device {device}, "
          f"{os.cpu_count()} cores, torch {torch.get_num_threads()} threads")
    print(f"{'step':<16} {'seconds':>9} {'rate':>28} {'peak RSS':>10} {'disk':>10}")
    gib = 2 ** 30
    rows = [("sample-data", steps["sample-data"], f"{steps['sample-data']['cases_per_s']:.3f} cases/s"),
            ("prepare", steps["prepare"], f"{steps['prepare']['slices_per_s']:.1f} slices/s"),
            ("train-detector", dt, f"{dt['train_images_per_s']:.2f} train img/s"),
            ("train-segmenter", sg, f"{sg['encode_slices_per_s']:.2f} enc sl/s")]
    for name, st, rate in rows:
        print(f"{name:<16} {st['seconds']:9.1f} {rate:>28} {st['peak_rss_bytes'] / gib:8.2f} G "
              f"{st['disk_bytes'] / gib:8.3f} G")
    print("MEASURED inputs:")
    print(f"  prepare: {steps['prepare']['cases_per_s']:.3f} cases/s, {steps['prepare']['slices_per_s']:.1f} slices/s "
          f"({args.workers} workers), {steps['prepare']['disk_bytes_per_slice'] / 1e3:.1f} kB per slice")
    print(f"  detector {det.model}: {dt['train_images']} of {dt['train_images_total']} train images in "
          f"{dt['train_seconds']:.1f} s = {dt['train_images_per_s']:.2f}/s (capped: {dt['stopped_by_cap']}); "
          f"val {dt['val_images']} in {dt['val_seconds']:.1f} s = {dt['val_images_per_s']:.2f}/s; set-up "
          f"{dt['setup_seconds']:.1f} s, after training {dt['after_training_seconds']:.1f} s")
    print(f"  decoder ({sg['base']}): encode {sg['encode_slices']} slices in {sg['encode_seconds']:.1f} s = "
          f"{sg['encode_slices_per_s']:.2f}/s; train {sg['train_samples']} samples in {sg['train_seconds']:.1f} s "
          f"= {sg['train_samples_per_s']:.2f}/s; val {sg['val_slices']} slices in {sg['val_seconds']:.1f} s = "
          f"{sg['val_slices_per_s']:.2f}/s; cache {sg['cache_bytes_per_slice'] / 1e6:.2f} MB per slice "
          f"(epoch capped by --max-train-slices {k}: train-segmenter has no time cap)")
    print(f"  synthetic data: {inputs['slices_per_case_measured']:.1f} slices per case, tumour fraction train "
          f"{f_tumour['train']:.2f} / val {f_tumour['val']:.2f}, {boxes_per:.2f} boxes per tumour slice")
    for name in ("train-detector", "train-segmenter"):
        if steps[name].get("gpu_peak_bytes"):
            print(f"  {name}: GPU peak {steps[name]['gpu_peak_bytes'] / gib:.2f} GiB (torch reserved)")
    print("ASSUMPTIONS:")
    print(f"  S = {S:g} ({'measured on the GPU' if measured_on_gpu else GPU_SPEEDUP_NOTE})")
    if peak:
        print(f"    CPU fp32 peak ~{peak:.0f} GFLOP/s ({peak_src}); e.g. an A100's fp32 peak 19,500 GFLOP/s "
              f"(NVIDIA datasheet) is {19500 / peak:.0f}x that, its bf16 tensor peak 312,000 GFLOP/s "
              f"{312000 / peak:.0f}x: upper bounds")
    print(f"  eta = {eta:g} (DDP efficiency, not measured); F(yolov5l) = {ratio_l:.2f} "
          f"(GFLOPs {gflops['yolov5l']:.1f} / {gflops['yolov5s']:.1f} at {det.imgsz} px)")
    if sg["base"] != "medsam":
        print("  the decoder's encode rate is LiteMedSAM's (no --medsam-checkpoint): the paper's MedSAM ViT-B "
              "encoder at 1024 px is far heavier; pass --medsam-checkpoint to measure it")
    print("  the paper profile's splits: train 80,000 x 0.6, val 80,000 x 0.2; the decoder's tumour slices and "
          "boxes from the synthetic fractions above; evaluation not included")
    print("PROJECTION, full paper profile (802 cases, 80,000 slices, 100 epochs each):")
    for f in formulas:
        print(f"  {f}")
    print(f"  T_prepare = {hms(t_prep)}")
    print(f"  {'GPUs':>5} {'YOLOv5s':>12} {'YOLOv5l':>12} {'decoder':>12} {'training':>12} {'+ prepare':>12}")
    for n, v in per_n.items():
        print(f"  {n:>5} {hms(v['detector_yolov5s_s']):>12} {hms(v['detector_yolov5l_s']):>12} "
              f"{hms(v['decoder_s']):>12} {hms(v['total_training_s']):>12} {hms(v['total_with_prepare_s']):>12}")
    print(f"  disk: dataset ~{disk['dataset_bytes'] / 1e9:.1f} GB, embedding cache ~"
          f"{disk['embedding_cache_bytes'] / 1e9:.1f} GB")
    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "threads": torch.get_num_threads(), "device": device,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "python": platform.python_version(), "torch": torch.__version__}
    from bratsmedsam.atomic import write_json

    out = write_json(OUT / "rehearsal.json", {"cases": ms["cases"], "work": str(work), "steps": steps,
                                              "projection": projection, "env": env})
    print(f"-> {out}")


if __name__ == "__main__":
    main()
