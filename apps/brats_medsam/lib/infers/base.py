"""What every infer task shares: request image -> study (cached) -> result file + params, errors as 4xx."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask

from bratsmedsam.errors import UserError
from bratsmedsam.studies import Study, load_study
from bratsmedsam.validation import VOLUME_SUFFIXES

from ..prefetch import Prefetcher

logger = logging.getLogger(__name__)
_studies: "OrderedDict[tuple, Study]" = OrderedDict()
_studies_lock = threading.Lock()
_results_dir: str | None = None
_results_lock = threading.Lock()


def result_path(suffix: str) -> str:
    """A new file for one response, in this process's own folder under the system temp dir. MONAI Label deletes a
    result file once it is sent, and its client saves what it receives under the same file name in its own temp
    folder (the system one by default): a client on the server's machine had its copy deleted by that clean-up when
    both were ``/tmp/<name>``. In a folder of its own the server's file never shares a path with the client's."""
    global _results_dir
    with _results_lock:
        if _results_dir is None or not os.path.isdir(_results_dir):
            _results_dir = tempfile.mkdtemp(prefix="brats-medsam-results-")
    return tempfile.NamedTemporaryFile(suffix=suffix, delete=False, dir=_results_dir).name


def cached_study(path: str, stacks) -> Study:
    """The study of an image file, kept for the last few requests (keyed by path, mtime, channel stacks)."""
    p = Path(path)
    key = (str(p.resolve()), p.stat().st_mtime_ns, stacks)
    with _studies_lock:
        if key in _studies:
            _studies.move_to_end(key)
            return _studies[key]
    study = load_study(p, stacks)
    with _studies_lock:
        _studies[key] = study
        while len(_studies) > 3:
            _studies.popitem(last=False)
    return study


class StudyInferTask(InferTask):
    def __init__(self, store, cfg, type, dimension, description, prefetch: Prefetcher):
        super().__init__(type=type, labels=cfg.labels, dimension=dimension, description=description,
                         config={"result_extension": ".nrrd"})
        self.store, self.cfg = store, cfg
        self.prefetch = prefetch

    def run(self, study: Study, request: dict) -> tuple[object, dict]:
        """Return ``(label bool (X,Y,Z) or a markups dict, params)``."""
        raise NotImplementedError

    def __call__(self, request):
        t0 = time.time()
        image = request.get("image")
        if not isinstance(image, str) or not image or not os.path.isfile(image):
            raise HTTPException(status_code=404, detail=f"image {request.get('image')!r} is not in the datastore")
        ext = request.get("result_extension") or ".nrrd"
        if ext not in VOLUME_SUFFIXES:
            raise HTTPException(status_code=400, detail=f"result_extension {ext!r}: expected one of {VOLUME_SUFFIXES}")
        try:
            with self.prefetch.serving():
                study = cached_study(image, self.cfg.stacks)
                t1 = time.time()
                result, params = self.run(study, request)
                t2 = time.time()
                out = self.write(result, study, ext)
        except UserError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        if params.get("slices"):  # the annotator works around here: encode the neighbours next
            self.prefetch.after_prompt(study, int(np.median(params["slices"])))
        t3 = time.time()
        params.update({
            "case_id": study.case_id, "channels": study.sources, "single_modality": study.single_modality,
            "stacks": {"detector": list(self.cfg.detector_channels), "segmenter": list(self.cfg.segmenter_channels)},
            "labels": self.cfg.labels,
            "latencies": {"load": round(t1 - t0, 3), "infer": round(t2 - t1, 3), "write": round(t3 - t2, 3),
                          "total": round(t3 - t0, 3)},
        })
        logger.info(f"{type(self).__name__}: {study.case_id} in {t3 - t0:.2f}s")
        return out, params

    def write(self, result, study: Study, ext: str) -> str:
        """A bool mask as label 1, a uint8 label map (BraTS mode) with its values; the reference's geometry."""
        from bratsmedsam.studies import write_label, write_label_map

        out = result_path(ext)
        if np.asarray(result).dtype == np.uint8:
            write_label_map(result, study.reference, out)
        else:
            write_label(result, study.reference, out, value=1)
        return out

    def request_region(self, request: dict, seg) -> str | None:
        """The decoder a request asks for (``region``: WT, TC or ET), or None for the BraTS label map (the BraTS
        mode's default). A single-region server has one decoder, its region's; any other region is a 422."""
        from bratsmedsam.regions import BRATS

        asked = request.get("region")
        default = asked in (None, "") or (isinstance(asked, str) and asked.strip().lower() == BRATS.lower())
        if not self.cfg.multi:
            if not default and (not isinstance(asked, str) or asked.strip().upper() != self.cfg.region):
                raise HTTPException(status_code=422, detail=f"region {asked!r}: this server segments "
                                                            f"{self.cfg.region} only (started with --region)")
            return seg.regions[0]
        if default:
            return None
        if not isinstance(asked, str) or asked.strip().upper() not in seg.regions:
            raise HTTPException(status_code=422, detail=f"region {asked!r}: this server segments {BRATS} (the "
                                                        f"label map, the default) or one of {', '.join(seg.regions)}")
        return asked.strip().upper()

    def compose(self, study: Study, seg, result, region: str | None, same_box=None):
        """``(result, per-region voxel counts)`` of a WT (or ``region``) ``VolumeResult``: ``region`` None (BraTS
        mode): the label map, its TC and ET from the prompt's own passes (``same_box``, a
        ``subregions.SameBoxRegions`` the result was made through) or else derived from the WT mask (one more pass
        per slice, ``subregions.brats_label``); a region in the BraTS mode: its mask as its label-map value; a
        single-region server: the bool mask (label 1)."""
        from bratsmedsam.regions import REGION_LABEL
        from bratsmedsam.subregions import brats_label, region_voxels

        label = result.label
        if region is None:
            lm = same_box.label_map(study.channels, result) if same_box else brats_label(
                study.channels, label, seg, min_component_mm3=self.cfg.min_component_mm3, spacing=study.spacing)
            return lm, region_voxels(lm[:, :, label.any(axis=(0, 1))])
        counts = {region if self.cfg.multi else self.cfg.region: int(label.sum())}
        if self.cfg.multi:
            return label.astype(np.uint8) * np.uint8(REGION_LABEL[region]), counts
        return label, counts
