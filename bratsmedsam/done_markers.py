"""``prepare``'s restart markers: ``.done/<case>.json``, written last for each case, records the settings,
the input files and the slices written. A re-run trusts a case only if its marker matches and its files are
there; files no marker accounts for are swept before the manifest is written."""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

from . import __version__
from .cases import CaseFiles
from .dataset import SPLITS

DONE_DIR = ".done"
KINDS = ("images", "segmenter_images", "masks", "labels", "labelmaps")


def fingerprint(files: CaseFiles, cfg) -> str:
    """Hash of the output settings and the case's input files (name, size, mtime)."""
    paths = [files.images[m] for m in cfg.stacks.modalities if m in files.images]
    paths += [files.seg] if files.seg else []
    inputs = []
    for p in paths:
        st = p.stat()
        inputs.append([p.name, st.st_size, st.st_mtime_ns])
    blob = json.dumps({"settings": cfg.output_settings(), "inputs": inputs, "version": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def remove_case_files(out: Path, case_id: str) -> None:
    """Delete the done-marker first, then every slice file of ``case_id`` in every split."""
    (out / DONE_DIR / f"{case_id}.json").unlink(missing_ok=True)
    pattern = glob.escape(f"{case_id}_z") + "[0-9]*.*"
    for kind in KINDS:
        for split in SPLITS:
            for p in (out / kind / split).glob(pattern):
                p.unlink(missing_ok=True)


def read_marker(out: Path, cid: str) -> dict | None:
    path = out / DONE_DIR / f"{cid}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_trusted(marker: dict | None, files: CaseFiles, cfg, out: Path) -> bool:
    """The case's marker matches its settings and inputs, and every file it names exists."""
    if not marker or marker.get("fingerprint") != fingerprint(files, cfg):
        return False
    return all(k in r and (out / r[k]).is_file() for r in marker["rows"]
               for k in ("image", "segmenter_image", "mask", "label", "labelmap"))


def sweep(out: Path, keep: set[str], keep_cases: set[str]) -> int:
    """Remove slice files (and leftover temporaries) that no kept row names, and stale markers."""
    removed = 0
    for kind in KINDS:
        for split in SPLITS:
            folder = out / kind / split
            for p in folder.iterdir() if folder.is_dir() else ():
                if f"{kind}/{split}/{p.name}" not in keep and p.is_file():
                    p.unlink(missing_ok=True)
                    removed += 1
    for p in (out / DONE_DIR).glob("*.json"):
        if p.stem not in keep_cases:
            p.unlink(missing_ok=True)
    if removed:  # ultralytics' label caches describe the old files
        for p in (out / "labels").glob("*.cache"):
            p.unlink(missing_ok=True)
    return removed
