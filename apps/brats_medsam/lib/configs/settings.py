"""Every deployment setting of the app: one ``--conf key value`` each, read and validated here once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bratsmedsam.cleanup import MIN_COMPONENT_MM3
from bratsmedsam.errors import UserError
from bratsmedsam.intensity import DEFAULT_DETECTOR_CHANNELS, DEFAULT_SEGMENTER_CHANNELS, Stacks
from bratsmedsam.pipeline import AUTO_MODES
from bratsmedsam.regions import BRATS, BRATS_LABELS, mode_regions, parse_mode


def _bool(v: str) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def _choice(key: str, value: str, allowed) -> str:
    if value not in allowed:
        raise UserError(f"--conf {key} {value!r}: expected one of {', '.join(allowed)}")
    return value


def _cache_dir(value, conf: dict, app_dir: str) -> str | None:
    """``none`` turns the disk cache off; default ``<model_dir>/embeddings``."""
    if value and value.strip().lower() == "none":
        return None
    return value or os.path.join(conf.get("model_dir") or os.path.join(app_dir, "model"), "embeddings")


@dataclass
class AppSettings:
    model_dir: Path  # detector.pt, medsam_decoder.pt (published), uncertainty.json, train runs
    models: tuple[str, ...] = ("all",)  # the lib/configs/ models served (file names), or all of them
    # each model's channel stack (--conf channels sets both; detector_channels / segmenter_channels each)
    detector_channels: tuple[str, str, str] = DEFAULT_DETECTOR_CHANNELS
    segmenter_channels: tuple[str, str, str] = DEFAULT_SEGMENTER_CHANNELS
    # WT (default), TC or ET: that one region, value 1; BraTS: the label map NCR 1 / ED 2 / ET 3 (a head per region
    # of one decoder; meant with trained TC/ET heads: zero-shot they draw about what WT draws)
    region: str = "WT"
    segmenter_base: str = "litemedsam"
    segmenter_checkpoint: str | None = None
    device: str | None = None
    encoder_backend: str = "auto"  # auto: OpenVINO on a CPU when it loads, else PyTorch (segmenter/backends.py)
    encoder_precision: str = "auto"  # auto: bf16 where the CPU has it; f32 for exactness
    embedding_cache_dir: str | None = None  # one disk cache for infer, prefetch, scoring and training (default below)
    embedding_cache_gb: float = 20.0  # its cap (~4 MB per slice); the oldest embeddings go first
    flat_roi_max_depth: int = 3
    max_roi_depth: int = 64  # slices a 3D ROI may span (each costs an encoder pass): beyond it 422
    max_voxels: int = 64_000_000  # an image (upload or study) above this is refused (413)
    postprocess: bool = False
    auto_mode: str = "propagate"  # pipeline: bratsmedsam.pipeline.AUTO_MODES
    min_component_mm3: float = MIN_COMPONENT_MM3  # pipeline: 3D components smaller than this are removed (0: kept)
    prefetch_slices: int = 24  # slices encoded in the background after Next Sample / a prompt (0: off)
    uncertainty_z_step: int = 2
    uncertainty_max_slices: int = 6
    train_epochs: int = 5
    train_max_slices: int | None = None
    detector_epochs: int | None = None  # None: the quick profile's epochs (bratsmedsam.detection.training.QUICK)

    @property
    def multi(self) -> bool:
        """The BraTS multi-label mode (WT, TC and ET heads, results as the label map)."""
        return self.region == BRATS

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions served (decoder heads): WT, TC, ET in the BraTS mode, else the one region."""
        return mode_regions(self.region)

    @property
    def dataset_region(self) -> str:
        """The region training datasets are prepared for (BraTS: WT, with the label maps inside)."""
        return "WT" if self.multi else self.region

    @property
    def labels(self) -> dict[str, int]:
        return dict(BRATS_LABELS) if self.multi else {self.region: 1}

    @property
    def stacks(self) -> Stacks:
        return Stacks(self.detector_channels, self.segmenter_channels)

    @property
    def detector_path(self) -> Path:
        return self.model_dir / "detector.pt"

    @property
    def decoder_path(self) -> Path:
        return self.model_dir / "medsam_decoder.pt"

    @property
    def uncertainty_path(self) -> Path:
        return self.model_dir / "uncertainty.json"

    @classmethod
    def from_conf(cls, app_dir: str, conf: dict) -> "AppSettings":
        from bratsmedsam.intensity import parse_channels

        try:
            region = parse_mode(conf.get("region", "WT"))
        except UserError as exc:
            raise UserError(f"--conf region: {exc}") from None
        opt = lambda k: conf.get(k) or None  # noqa: E731
        return cls(
            model_dir=Path(conf.get("model_dir") or os.path.join(app_dir, "model")).resolve(),
            models=tuple(m.strip().lower() for m in conf.get("models", "all").split(",") if m.strip()) or ("all",),
            detector_channels=parse_channels(conf.get("detector_channels") or conf.get("channels")
                                             or DEFAULT_DETECTOR_CHANNELS),
            segmenter_channels=parse_channels(conf.get("segmenter_channels") or conf.get("channels")
                                              or DEFAULT_SEGMENTER_CHANNELS),
            region=region,
            segmenter_base=conf.get("segmenter_base", "litemedsam"),
            segmenter_checkpoint=opt("segmenter_checkpoint"),
            device=opt("device"),
            encoder_backend=conf.get("encoder_backend", "auto"),
            encoder_precision=conf.get("encoder_precision", "auto"),
            embedding_cache_dir=_cache_dir(conf.get("embedding_cache_dir"), conf, app_dir),
            embedding_cache_gb=float(conf.get("embedding_cache_gb", 20)),
            flat_roi_max_depth=int(conf.get("flat_roi_max_depth", 3)),
            max_roi_depth=int(conf.get("max_roi_depth", 64)),
            max_voxels=int(conf.get("max_voxels", 64_000_000)),
            postprocess=_bool(conf.get("postprocess", "false")),
            min_component_mm3=float(conf.get("min_component_mm3", MIN_COMPONENT_MM3)),
            auto_mode=_choice("auto_mode", conf.get("auto_mode", "propagate"), AUTO_MODES),
            prefetch_slices=int(conf.get("prefetch_slices", 24)),
            uncertainty_z_step=int(conf.get("uncertainty_z_step", 2)),
            uncertainty_max_slices=int(conf.get("uncertainty_max_slices", 6)),
            train_epochs=int(conf.get("train_epochs", 5)),
            train_max_slices=int(conf["train_max_slices"]) if conf.get("train_max_slices") else None,
            detector_epochs=int(conf["detector_epochs"]) if conf.get("detector_epochs") else None,
        )
