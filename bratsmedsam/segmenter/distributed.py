"""Data-parallel fine-tuning under ``torchrun``: process group, shards, and collectives that fail clearly.

``torchrun --nproc_per_node N main.py train-segmenter ...`` starts N ranks. The backend follows the device:
NCCL when the rank trains on a CUDA device (with AMP, see finetune.py), gloo on the CPU. A rank that dies ends the
job two ways: torchrun's agent sees the worker exit and stops the others (its report names the rank and the
signal); where no agent does (a rank on another host lost), every collective here has the process group's
``timeout`` and turns the failure into one :class:`UserError` sentence instead of a hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from ..errors import UserError


@dataclass(frozen=True)
class DistEnv:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """The rank layout from torchrun's environment (one process without it)."""
    return DistEnv(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                   int(os.environ.get("LOCAL_RANK", "0")))


def init(env: DistEnv, device, timeout_s: float):
    """Join the process group; returns the rank's device (``cuda:<local_rank>`` when training on CUDA)."""
    import torch
    import torch.distributed as dist

    if env.world <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return device


def backend() -> str | None:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_initialized() else None


def _collective(env: DistEnv, what: str, fn):
    try:
        return fn()
    except Exception as e:  # gloo: connection reset / timeout; nccl: watchdog or communicator errors
        raise UserError(f"rank {env.rank} of {env.world}: another rank stopped during {what} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else 'no message'}); "
                        "ending this training job") from e


def barrier(env: DistEnv, what: str) -> None:
    import torch.distributed as dist

    if env.world > 1:
        _collective(env, what, dist.barrier)


def all_sum(env: DistEnv, values: list[float], device, what: str) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (unchanged in one process)."""
    import torch
    import torch.distributed as dist

    if env.world <= 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    _collective(env, what, lambda: dist.all_reduce(t))
    return [float(v) for v in t.cpu()]


def finish(env: DistEnv) -> None:
    import torch.distributed as dist

    if env.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def split_batch(batch, env: DistEnv):
    """This rank's part of a global batch (positions ``rank::world``): disjoint across ranks, together the whole
    batch, so N ranks take the same optimiser steps on the same samples as one process."""
    return list(batch[env.rank::env.world])
