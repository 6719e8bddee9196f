"""What was deleted over REST, so that rebuilding the datastore from the studies folder does not bring it back.

``<store>/.removed.json``: ``{"images": [case ids], "labels": {tag: [case ids]}}``, written atomically. Uploading
an image or saving a label under a marked id clears its mark.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import write_text

FILE = ".removed.json"


def read(store: str | os.PathLike) -> dict:
    try:
        raw = json.loads((Path(store) / FILE).read_text())
    except (OSError, ValueError):
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    labels = raw.get("labels") if isinstance(raw.get("labels"), dict) else {}
    return {"images": set(raw.get("images") or []), "labels": {t: set(v) for t, v in labels.items()}}


def mark(store: str | os.PathLike, image_id: str, tag: str | None = None, removed: bool = True) -> None:
    """Mark (or clear) a deleted image (``tag`` None) or a deleted label ``tag`` of ``image_id``."""
    state = read(store)
    ids = state["images"] if tag is None else state["labels"].setdefault(tag, set())
    if (image_id in ids) == removed:
        return
    (ids.add if removed else ids.discard)(image_id)
    out = {"images": sorted(state["images"]), "labels": {t: sorted(v) for t, v in state["labels"].items() if v}}
    write_text(Path(store) / FILE, json.dumps(out, indent=1))
