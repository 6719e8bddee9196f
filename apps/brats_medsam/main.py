"""MONAI Label app: BraTS studies -> YOLO tumour boxes -> MedSAM masks. Only wiring; logic is in ``bratsmedsam``.

Each model is one ``TaskConfig`` file under ``lib/configs/`` (as in MONAI Label's radiology app): ``detector``
(Markups ROI JSON; trainer), ``medsam`` (interactive ROI/points; trainer), ``pipeline`` (automatic; the
``uncertainty`` scoring and strategy). Adding a model is adding a file there; ``--conf models a,b`` serves a
subset (default all). Strategies ``random`` and ``first`` come with MONAI Label.
Settings: ``--conf key value`` (see ``lib/configs/settings.py``). Start it with ``python main.py serve``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path and (_ROOT / "bratsmedsam").is_dir():
    sys.path.insert(0, str(_ROOT))

from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.config import TaskConfig  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402
from monailabel.utils.others.class_utils import get_class_names  # noqa: E402

import lib.configs  # noqa: E402
from bratsmedsam.digest import file_sha256  # noqa: E402
from bratsmedsam.errors import UserError  # noqa: E402
from lib.configs.settings import AppSettings  # noqa: E402
from lib.datastore import SafeDatastore, check_name  # noqa: E402
from lib.model_store import ModelStore  # noqa: E402
from lib.prefetch import Prefetcher  # noqa: E402
from lib.trainers.common import publish  # noqa: E402

logger = logging.getLogger(__name__)


def task_configs() -> dict[str, type]:
    """``{name: TaskConfig class}`` of every file under ``lib/configs/`` (name = the file's name)."""
    import importlib

    out = {}
    for path in get_class_names(lib.configs, "TaskConfig"):
        module, cls = path.rsplit(".", 1)
        out[module.rsplit(".", 1)[-1].lower()] = getattr(importlib.import_module(module), cls)
    return dict(sorted(out.items()))


class BratsMedSamApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.cfg = AppSettings.from_conf(app_dir, conf)
        self.cfg.model_dir.mkdir(parents=True, exist_ok=True)
        self.models = ModelStore(self.cfg)
        self.prefetch = Prefetcher(self.models, self.cfg.prefetch_slices)
        available = task_configs()
        names = list(available) if self.cfg.models == ("all",) else list(self.cfg.models)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise UserError(f"--conf models: unknown model {unknown[0]!r}; expected some of {', '.join(available)}")
        self.configs: dict[str, TaskConfig] = {}
        for name in names:
            c = self.configs[name] = available[name]()
            c.init(name, str(self.cfg.model_dir), conf, None, settings=self.cfg, store=self.models,
                   prefetch=self.prefetch)
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="brats-medsam",
                         description="BraTS tumour annotation: YOLO boxes + MedSAM masks",
                         version="0.1", labels=self.cfg.labels)

    def init_datastore(self):
        return SafeDatastore(self.studies, label_values=self.cfg.labels.values(), max_voxels=self.cfg.max_voxels,
                             extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                             auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                             read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self):
        return {k: v for c in self.configs.values() for k, v in _named(c.infer(), c.name).items()}

    def init_trainers(self):
        trainers = {c.name: c.trainer() for c in self.configs.values()}
        return {k: v for k, v in trainers.items() if v is not None}

    def init_strategies(self):
        own = {k: v for c in self.configs.values() for k, v in _named(c.strategy(), c.name).items()}
        return {**own, "random": Random(), "first": First()}

    def next_sample(self, request):
        """Whatever strategy chose, its study's likely slices start encoding now, before the first click."""
        res = super().next_sample(request)
        if res and res.get("id") and self.datastore().get_image_uri(res["id"]):
            self.prefetch.new_study(self.datastore().get_image_uri(res["id"]), self.cfg.stacks)
        return res

    def init_scoring_methods(self):
        return {k: v for c in self.configs.values() for k, v in _named(c.scoring_method(), c.name).items()}

    def infer_task(self, model: str):
        """The infer task of that name if it can run now (weights present and valid), else None."""
        task = self._infers.get(model)
        return task if task is not None and task.is_valid() else None

    def model_file(self, model, validate=True):
        """The published file behind a model name (``GET /model/{model}``); None for names without one."""
        path = getattr(self.configs.get(model), "path", None)
        return str(path) if path is not None and (Path(path).exists() or not validate) else None

    def publish_model(self, model: str, upload: str) -> str:
        """``PUT /model/{model}``: the upload must load as that model (its config's ``check_file``: a decoder
        that fits the base segmenter, YOLO weights the detector reads; one that records other channels than the served
        ones: 422), then replaces the served file
        atomically. Returns its SHA-256."""
        target = self.model_file(model, validate=False)
        if target is None:
            files = ", ".join(n for n, c in self.configs.items() if getattr(c, "path", None))
            raise HTTPException(status_code=404, detail=f"model {model!r} has no uploadable file ({files})")
        try:
            self.configs[model].check_file(upload)
        except UserError as exc:
            raise HTTPException(status_code=422, detail=f"not a usable {model} model: {exc}") from None
        from bratsmedsam.channel_check import model_channels

        up = Path(upload)
        for kind, (_, got) in model_channels(up if model == "detector" else None,
                                             up if model == "medsam" else None).items():
            served = getattr(self.cfg.stacks, kind)
            if tuple(got) != tuple(served):
                raise HTTPException(status_code=422, detail=f"not a usable {model} model: it was trained on channels "
                                    f"{','.join(got)}, this server stacks {','.join(served)} for its {kind}")
        publish(upload, Path(target))
        return file_sha256(target)

    def retire_model(self, model: str) -> str:
        """``DELETE /model/{model}``: the served file is moved aside (kept), so medsam falls back to the base
        checkpoint's decoder and the detector becomes unavailable. Returns where the file went."""
        import time

        target = self.model_file(model)
        if target is None:
            raise HTTPException(status_code=404, detail=f"model {model!r} has no published file")
        aside = f"{target}.deleted-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(target, aside)
        return aside

    def infer(self, request, datastore=None):
        """The image is a datastore id, or a file the server itself stored for this request (an upload or a
        session, both kept under the store's parent folder); any other path is refused."""
        image = request.get("image")
        if isinstance(image, str) and os.path.isabs(image):
            state = os.path.realpath(os.path.dirname(self.studies))
            real = os.path.realpath(image)
            if not any(real.startswith(os.path.join(state, d) + os.sep) for d in ("uploads", "sessions")) \
                    or not os.path.exists(real):
                raise HTTPException(status_code=400, detail="the image must be a datastore id or an uploaded file")
        else:
            check_name("image id", image)
            if not self.datastore().get_image_uri(image):
                raise HTTPException(status_code=404, detail=f"image {image!r} is not in the datastore")
        task = self._infers.get(request.get("model"))
        if task is None:
            raise HTTPException(status_code=404, detail=f"model {request.get('model')!r} does not exist")
        if not task.is_valid():
            raise HTTPException(status_code=409, detail=f"model {request.get('model')!r} is not available now "
                                                        "(weights missing or invalid)")
        return super().infer(request, datastore)


def _named(tasks, name: str) -> dict:
    """A config's ``infer()`` / ``strategy()`` / ``scoring_method()`` answer as a dict (one task: under ``name``)."""
    if tasks is None:
        return {}
    return dict(tasks) if isinstance(tasks, dict) else {name: tasks}
