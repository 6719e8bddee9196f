"""The one door to ultralytics: configure offline mode first, then import, then close the network holes.

Every module of the project that needs ultralytics calls :func:`yolo` / :func:`ultralytics_module`
instead of importing it. What is closed here (checked against ultralytics 8.4's source):
- settings, fonts, hub/analytics/MLflow, PyPI update checks: :func:`bratsmedsam.offline.configure`
  (``YOLO_OFFLINE=1`` makes ``ultralytics.utils.ONLINE`` false, which gates the update check and events);
- the CUDA AMP self-test, which downloads ``yolo26n.pt``: replaced by :func:`_offline_check_amp`;
- weights given by name (``yolov5s.pt``) that ``attempt_download_asset`` would fetch: refused in
  :func:`resolve_model` unless the file exists.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from ..offline import configure

_PATCHED = False
# The GPUs ultralytics' own check_amp lists as unreliable with AMP.
_BAD_AMP_GPU = re.compile(r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)",
                          re.IGNORECASE)


def _offline_check_amp(model) -> bool:
    """AMP on CUDA unless the GPU is on ultralytics' known-bad list; never downloads a reference model."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    return not _BAD_AMP_GPU.search(torch.cuda.get_device_name(device))


def ultralytics_module():
    """Import ultralytics after :func:`configure` and patch its network-reaching checks (idempotent)."""
    global _PATCHED
    configure()
    import ultralytics
    from ultralytics.engine import trainer

    if not _PATCHED:
        trainer.check_amp = _offline_check_amp
        _PATCHED = True
    return ultralytics


def yolo(model: str | Path):
    """An ``ultralytics.YOLO`` built offline from :func:`resolve_model`'s answer."""
    return ultralytics_module().YOLO(resolve_model(model))


def resolve_model(model: str | Path) -> str:
    """``yolov5s``/``yolov5l``/... -> the architecture yaml (random init); a ``.yaml`` or existing ``.pt`` path as is.

    Raises UserError for a weights file that does not exist (ultralytics would try to download it).
    """
    m = str(model)
    p = Path(m).expanduser()
    if p.suffix in (".pt", ".pth"):
        if not p.is_file():
            raise UserError(f"detector weights {m} do not exist; no weights can be downloaded here "
                            "(train one with `python main.py train-detector`, or give a model name such as yolov5s)")
        return str(p.resolve())
    if p.suffix in (".yaml", ".yml"):
        return str(p.resolve()) if p.is_file() else m  # a name ultralytics ships (e.g. yolov8n.yaml)
    if re.fullmatch(r"yolo[a-z0-9]*[nsmlx]?u?", m):
        return f"{m}.yaml"
    raise UserError(f"unknown detector model {m!r}: expected a name such as yolov5s / yolov5l, "
                    "a model .yaml or an existing weights .pt file")
