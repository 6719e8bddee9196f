"""Offline safety: ultralytics (and MLflow through it) never reach the network and write only inside our folders."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GUARD = """
import ipaddress, socket
ATTEMPTS = []
def _remote(host):
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host not in ("localhost",)
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and _remote(address[0]):
        ATTEMPTS.append(f"connect {address}")
        raise OSError("network disabled by test")
    return _connect(self, address)
def getaddrinfo(host, *a, **k):
    if host is not None and _remote(str(host)):
        ATTEMPTS.append(f"getaddrinfo {host}")
        raise socket.gaierror("network disabled by test")
    return _getaddrinfo(host, *a, **k)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.slow
def test_training_and_prediction_write_nothing_outside_the_run_folder_and_never_connect(tmp_path):
    cwd, home, data, run, cfg = (tmp_path / n for n in ("cwd", "home", "data", "run", "cfg"))
    for d in (cwd, home, cfg):
        d.mkdir()
    from bratsmedsam.detection.synthetic import write_synthetic_yolo_dataset

    write_synthetic_yolo_dataset(data, {"train": 2, "val": 1}, slices_per_case=4, size=96)
    before = _snapshot(data)
    script = GUARD + textwrap.dedent(f"""
        import json, numpy as np
        from PIL import Image
        from bratsmedsam.detector import Detector, train_detector
        best = train_detector({str(data)!r}, {str(run)!r}, quick=True, epochs=1, imgsz=64, batch=4, workers=0)
        det = Detector(best)
        images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(__import__("pathlib").Path({str(data)!r}).rglob("*.png"))]
        boxes = det.predict(images)
        print("RESULT", json.dumps({{"attempts": ATTEMPTS, "best": str(best), "n": len(boxes)}}))
    """)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("YOLO_", "MLFLOW_", "XDG_")) and k not in ("MPLCONFIGDIR", "BRATSMEDSAM_CONFIG_DIR")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), BRATSMEDSAM_CONFIG_DIR=str(cfg))
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["attempts"] == []
    assert result["n"] == len([p for p in before if p.endswith(".png")])
    assert _snapshot(cwd) == set() and _snapshot(home) == set()
    assert _snapshot(data) == before  # no label cache beside the dataset
    assert Path(result["best"]).is_file() and Path(result["best"]).is_relative_to(run)
    for name in ("args.yaml", "results.csv", "train_detector.json", "data/labels/train.cache"):
        assert (run / name).exists(), name
    assert not list(tmp_path.rglob("mlflow.db")) and not list(tmp_path.rglob("mlruns"))


def test_prediction_never_opens_a_socket(tmp_path, monkeypatch):
    import numpy as np

    from bratsmedsam.detection.ultra import yolo
    from bratsmedsam.detector import Detector

    weights = tmp_path / "w.pt"
    yolo("yolov5n").save(weights)
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    det = Detector(weights, device="cpu")
    det.predict([np.full((64, 64, 3), 90, np.uint8)] * 3)
    assert attempts == []


def test_configure_turns_off_network_and_integrations():
    from bratsmedsam.detection.ultra import ultralytics_module

    ultralytics_module()
    import ultralytics.utils as uu
    from ultralytics import settings
    from ultralytics.engine import trainer

    assert uu.ONLINE is False  # gates ultralytics' PyPI update check and analytics events
    assert not any(settings.get(k) for k in ("sync", "hub", "mlflow", "wandb", "tensorboard"))
    assert (Path(uu.USER_CONFIG_DIR) / "Arial.ttf").is_file()  # check_font finds it: no download
    assert trainer.check_amp.__module__ == "bratsmedsam.detection.ultra"  # no yolo26n.pt download on CUDA


def test_offline_amp_check_never_loads_a_reference_model():
    import torch

    from bratsmedsam.detection.ultra import _offline_check_amp

    assert _offline_check_amp(torch.nn.Linear(2, 2)) is False  # CPU: AMP off, as ultralytics does
