"""Checks on request parameters, before any work is queued: a malformed value is a 4xx naming what is wrong.

MONAI Label passes ``params`` straight into the request (after it has set ``image``); these checks keep reserved
keys out and hold each value to the type and shape the app expects. Ranges (an ROI inside the image) are the infer
task's to check, with the study in hand.
"""

from __future__ import annotations

import json
import math

from fastapi import HTTPException

from bratsmedsam.validation import VOLUME_SUFFIXES

RESERVED = ("image", "model", "label", "session", "session_id", "file", "output")
RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")
MAX_POINTS = 1000
REGION_CHOICES = {"BRATS", "WT", "TC", "ET"}  # bratsmedsam.regions: the label map or one region's decoder


def bad(detail: str, code: int = 422):
    raise HTTPException(status_code=code, detail=detail)


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_infer_params(raw: str) -> dict:
    """``params`` as sent by Slicer, checked for type and shape (ranges are the task's to check: 400)."""
    try:
        p = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        bad("params is not valid JSON")
    if not isinstance(p, dict):
        bad("params must be a JSON object")
    for k in RESERVED:
        if k in p:
            bad(f"params may not set {k!r}: name the image in the request itself")
    if p.get("roi") not in (None, "", []):
        roi = p["roi"]
        if not isinstance(roi, list) or len(roi) != 6 or not all(number(v) for v in roi):
            bad("roi must be 6 finite numbers [i0, i1, j0, j1, k0, k1]")
    for key in ("foreground", "background"):
        pts = p.get(key)
        if pts in (None, []):
            continue
        if not isinstance(pts, list) or len(pts) > MAX_POINTS or not all(
                isinstance(q, list) and len(q) == 3 and all(number(v) for v in q) for q in pts):
            bad(f"{key} must be a list of at most {MAX_POINTS} points [i, j, k] of finite numbers")
    if p.get("slice") is not None and not number(p["slice"]):
        bad("slice must be a finite number or null")
    if p.get("region") is not None and (not isinstance(p["region"], str)
                                        or p["region"].strip().upper() not in REGION_CHOICES):
        bad(f"region must be one of {', '.join(sorted(REGION_CHOICES))} (case-insensitive) or null")
    if p.get("result_extension", ".nrrd") not in VOLUME_SUFFIXES:
        bad(f"result_extension must be one of {VOLUME_SUFFIXES}")
    if p.get("result_dtype", "uint8") not in RESULT_DTYPES:
        bad(f"result_dtype must be one of {RESULT_DTYPES}")
    if not isinstance(p.get("result_compress", False), bool):
        bad("result_compress must be true or false")
    return p


def check_image_id(image: str) -> str:
    from lib.datastore import check_name  # the app's own rule (the app dir is on sys.path)

    return check_name("image id", image)


def json_object(raw: str, what: str) -> dict:
    try:
        obj = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        bad(f"{what} is not valid JSON")
    if not isinstance(obj, dict):
        bad(f"{what} must be a JSON object")
    return obj


def plain_params(params) -> dict:
    """Strategy/scoring params: a small JSON object of plain values (Slicer sends only its client id)."""
    params = params or {}
    if len(json.dumps(params)) > 10_000 or not all(isinstance(v, (str, int, float, bool, type(None)))
                                                   for v in params.values()):
        bad("params must be a small JSON object of plain values")
    return params


def check_train_params(params, config: dict) -> dict:
    """Only the trainer's own settings (``config()`` in its info), each of its default's type; counts 0..100000."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        bad("training params must be a JSON object")
    out = {}
    for k, v in params.items():
        if k == "client_id":  # every MONAI Label client adds its id (or null)
            if v is not None and not (isinstance(v, str) and len(v) < 200):
                bad("client_id must be a short string")
            continue
        if k not in config:
            bad(f"training parameter {k!r} is not known; known: {', '.join(sorted(config)) or 'none'}")
        want = config[k]
        if isinstance(want, bool):
            ok = isinstance(v, bool)
        elif isinstance(want, int):
            ok = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000
        elif isinstance(want, float):
            ok = number(v)
        elif isinstance(want, str):
            ok = isinstance(v, str) and len(v) < 200
        else:
            ok = False
        if not ok:
            bad(f"training parameter {k!r}={v!r}: expected {type(want).__name__} like {want!r}")
        out[k] = v
    return out
