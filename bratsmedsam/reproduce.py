"""One-command reproduction: prepare -> train detector(s) -> fine-tune the mask decoder -> evaluate.

A :class:`Profile` holds every setting of every step (it is data: saved as ``profile.yaml`` in the run
folder, and a YAML file of the same shape can be passed instead of a built-in name). Run folder::

    RUN/profile.yaml   RUN/timings.json   RUN/dataset/   RUN/detector-<model>/   RUN/segmenter/
    RUN/evaluation/    (report.md, metrics.json, per_case.csv, slices.csv, figures/)

Each step is skipped when its output already exists, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .atomic import write_json, write_text
from .detection.training import QUICK as DETECTOR_QUICK
from .errors import UserError
from .intensity import PAPER_CHANNELS


@dataclass
class DetectorStep:
    """One detector to train (ultralytics names; any other ultralytics train argument goes in ``extra``)."""

    model: str = "yolov5s"
    epochs: int = 100
    imgsz: int = 256
    batch: int = 16
    optimizer: str = "SGD"
    lr0: float = 0.01
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe: dict, drop: tuple[str, ...] = ()) -> "DetectorStep":
        """A step from a train-detector recipe (``detection.training.QUICK`` / ``PAPER``), less the keys in ``drop``."""
        named = {f.name for f in fields(cls)} - {"extra"}
        kept = {k: v for k, v in recipe.items() if k not in drop}
        return cls(**{k: v for k, v in kept.items() if k in named},
                   extra={k: v for k, v in kept.items() if k not in named})


@dataclass
class Profile:
    """Every setting of a reproduction run. ``prepare``/``finetune``/``evaluate`` hold the fields of
    ``PrepareConfig`` / ``FinetuneConfig`` / ``EvaluateConfig`` that differ from their defaults."""

    name: str
    description: str
    prepare: dict = field(default_factory=dict)
    detectors: list[DetectorStep] = field(default_factory=lambda: [DetectorStep()])
    finetune: dict = field(default_factory=dict)
    evaluate: dict = field(default_factory=dict)
    workers: int = 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UserError(f"profile has unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
        d = dict(d)
        dets = d.pop("detectors", None)
        prof = cls(**d)
        if dets is not None:
            step_keys = {f.name for f in fields(DetectorStep)}
            for s in dets:
                if not isinstance(s, dict) or set(s) - step_keys:
                    raise UserError(f"profile detector entry {s!r} must be a mapping with keys from {sorted(step_keys)}")
            prof.detectors = [DetectorStep(**s) for s in dets]
        return prof


PAPER = Profile(
    name="paper",
    description="The paper's recipe (a GPU job): every slice (z_step 1), 6:2:2 split by patient; YOLOv5s and "
                "YOLOv5l, 100 epochs, imgsz 256, batch 16, SGD lr0 0.01; MedSAM ViT-B mask decoder fine-tuned "
                "100 epochs (AdamW lr 1e-4, wd 0.01, batch 8, Dice+BCE), best epoch by validation Dice; "
                "full evaluation with 3D metrics on every test case.",
    prepare={"z_step": 1, "split": [0.6, 0.2, 0.2], "seed": 0, "detector_channels": list(PAPER_CHANNELS),
             "segmenter_channels": list(PAPER_CHANNELS)},  # the paper's one stack for both models
    detectors=[DetectorStep("yolov5s", 100, 256, 16), DetectorStep("yolov5l", 100, 256, 16)],
    finetune={"base": "medsam", "epochs": 100, "batch_size": 8, "lr": 1e-4, "weight_decay": 0.01, "seed": 0,
              "neighbour_samples": False, "mix": []},  # the paper's samples (one box per GT component), its best epoch
    evaluate={"volumes": True, "n_boot": 2000},
    workers=8,
)

QUICK = Profile(
    name="quick",
    description="Finishes on a 2-core CPU on the sample studies: every 2nd slice (z_step 2); the detector's "
                "--quick recipe (YOLOv5n from scratch, imgsz 224, 30 epochs, batch 8, one optimiser step per "
                "batch, at most 10% tumour-free training slices: a weak detector that finds the large tumours, "
                "so the end-to-end columns show the pipeline working, not the paper's numbers); LiteMedSAM mask "
                "decoder fine-tuned for 5 epochs on at most 96 training / 16 validation slices; 3D metrics on "
                "the first test case.",
    prepare={"z_step": 2, "split": [0.6, 0.2, 0.2], "seed": 0},
    # the detector's --quick recipe, less its every-2nd-slice subsampling (z_step 2 above does it)
    detectors=[DetectorStep.from_recipe(DETECTOR_QUICK, drop=("train_slice_step",))],
    finetune={"base": "litemedsam", "epochs": 5, "batch_size": 8, "lr": 1e-4, "weight_decay": 0.01,
              "max_train_slices": 96, "max_val_slices": 16, "seed": 0, "cache_dir": None},
    evaluate={"volumes": True, "max_cases": 1, "n_boot": 1000},
    workers=2,
)

PROFILES = {"paper": PAPER, "quick": QUICK}


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name (``paper``, ``quick``) or a YAML file of the same shape."""
    import copy

    import yaml

    if str(name_or_path) in PROFILES:
        return copy.deepcopy(PROFILES[str(name_or_path)])
    p = Path(name_or_path)
    if not p.is_file():
        raise UserError(f"profile {name_or_path!r} is neither a built-in ({', '.join(PROFILES)}) nor a YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"profile {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"profile {p} must be a YAML mapping (keys name, prepare, detectors, finetune, evaluate)")
    return Profile.from_dict(data)


def _build(cls, settings: dict, what: str, **fixed):
    known = {f.name for f in fields(cls)}
    unknown = set(settings) - known
    if unknown:
        raise UserError(f"profile {what} settings {sorted(unknown)} are not {cls.__name__} fields")
    return cls(**{**settings, **fixed})


def reproduce(studies: str | Path, out: str | Path, profile: Profile, sam_checkpoint: Path | None = None,
              medsam_checkpoint: Path | None = None, device: str | None = None) -> dict:
    """Run every step into ``out``; returns ``{"timings": {...}, "results": evaluate's results}``."""
    import yaml

    from .evaluate import EvaluateConfig, evaluate
    from .prepare import PrepareConfig, prepare_dataset
    from .segmenter import FinetuneConfig, train_decoder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "profile.yaml", yaml.safe_dump(profile.to_dict(), sort_keys=False))
    base = profile.finetune.get("base", "litemedsam")
    base_ckpt = {"medsam": medsam_checkpoint, "sam": sam_checkpoint}.get(base)
    if base in ("medsam", "sam") and base_ckpt is None and not profile.finetune.get("checkpoint"):
        flag = "--medsam-checkpoint" if base == "medsam" else "--sam-checkpoint"
        raise UserError(f"profile {profile.name!r} fine-tunes the {base} decoder: pass {flag} (its weights cannot "
                        "be downloaded here) or use a profile with base litemedsam")
    # A step counts as done only once it returned (its folder alone may hold a half-trained model).
    timings: dict[str, float] = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    timings.pop("total", None)

    def step(name: str, done: bool, fn) -> None:
        if done and name in timings:
            print(f"== reproduce: {name}: already done, skipped", flush=True)
            return
        print(f"== reproduce: {name}", flush=True)
        t0 = time.time()
        fn()
        timings[name] = round(time.time() - t0, 1)
        print(f"== reproduce: {name} done in {timings[name]:.0f} s", flush=True)
        write_json(out / "timings.json", timings)

    t_start = time.time()
    dataset = out / "dataset"
    prep = dict(profile.prepare)
    if "channels" in prep:  # one stack for both models (a profile written before each had its own)
        one = prep.pop("channels")
        prep.setdefault("detector_channels", one)
        prep.setdefault("segmenter_channels", one)
    prep_cfg = _build(PrepareConfig, {k: tuple(v) if isinstance(v, list) else v for k, v in prep.items()}, "prepare")
    step("prepare", (dataset / "manifest.csv").is_file() and (dataset / "prepare.json").is_file(),
         lambda: prepare_dataset(studies, dataset, prep_cfg, workers=profile.workers))

    from .detector import train_detector

    det_runs = []
    for d in profile.detectors:
        run = out / f"detector-{d.model}"
        det_runs.append(run)
        step(f"train detector {d.model}", (run / "weights" / "best.pt").is_file(),
             lambda d=d, run=run: train_detector(dataset / "dataset.yaml", run, model=d.model, epochs=d.epochs,
                                                 imgsz=d.imgsz, batch=d.batch, device=device, optimizer=d.optimizer,
                                                 lr0=d.lr0, **d.extra))

    seg_run = out / "segmenter"
    ft_settings = {"cache_dir": str(out / "cache" / "embeddings"), **profile.finetune}
    ft_cfg = _build(FinetuneConfig, ft_settings, "finetune",
                    **({"checkpoint": str(base_ckpt)} if base_ckpt else {}), device=device)
    step("fine-tune mask decoder", (seg_run / "best.pt").is_file(),
         lambda: train_decoder(dataset, seg_run, ft_cfg))

    ev_cfg = _build(EvaluateConfig, profile.evaluate, "evaluate", data=dataset, detectors=det_runs,
                    segmenters=[seg_run], sam_checkpoint=sam_checkpoint, medsam_checkpoint=medsam_checkpoint,
                    device=device)
    results: dict = {}

    def run_eval():
        results.update(evaluate(ev_cfg, out / "evaluation"))

    timings.pop("evaluate", None)
    step("evaluate", False, run_eval)
    timings["total"] = round(time.time() - t_start, 1)
    write_json(out / "timings.json", timings)
    return {"timings": timings, "results": results}
