"""The one place that decides where torch and ultralytics run."""

from __future__ import annotations


def pick_device(device: str | None = None):
    """A ``torch.device``: ``device`` as given (``cpu``, ``cuda``, ``cuda:1``, or ultralytics' ``0`` = ``cuda:0``),
    else the first CUDA GPU when there is one, else the CPU."""
    import torch

    if device:
        device = str(device).split(",")[0].strip()  # ultralytics' multi-GPU "0,1": torch code takes the first
        return torch.device(f"cuda:{device}" if device.isdigit() else device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def ultralytics_device(device: str | None = None) -> str:
    """:func:`pick_device` spelled the way ultralytics takes it: ``cpu``, or the GPU's index (``0``); a list of
    indices (``0,1``) is passed through: ultralytics then trains with its own DDP (one process per GPU)."""
    if device and "," in str(device):
        ids = [d.strip() for d in str(device).split(",") if d.strip()]
        if not ids or not all(d.isdigit() for d in ids):
            from .errors import UserError

            raise UserError(f"device {device!r}: a GPU list is CUDA indices separated by commas, like 0,1")
        return ",".join(ids)
    dev = pick_device(device)
    return "cpu" if dev.type == "cpu" else str(dev.index or 0) if dev.type == "cuda" else str(dev)
