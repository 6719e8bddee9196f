"""``serve``'s datastore from a studies folder: links, labels, and deletions made over REST that stay deleted."""

from __future__ import annotations

import shutil

from bratsmedsam import tombstones
from bratsmedsam.commands.serve import drop_stale_temps
from bratsmedsam.studies import build_store


def _one_case(sample_studies, tmp_path):
    case = sorted(p for p in sample_studies.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    shutil.copytree(case, tmp_path / "studies" / case.name)
    return tmp_path / "studies", case.name


def test_the_store_links_the_flair_and_writes_the_seg_as_a_label(sample_studies, tmp_path):
    studies, cid = _one_case(sample_studies, tmp_path)
    store = studies / ".brats_medsam" / "store"
    shown = build_store(studies, store, seg_tag="original")
    assert (store / f"{cid}.nii.gz").is_symlink() and shown[cid].name.endswith("-t2f.nii.gz")
    assert (store / "labels" / "original" / f"{cid}.nii.gz").is_file()


def test_images_and_labels_deleted_over_rest_are_not_rebuilt(sample_studies, tmp_path):
    studies, cid = _one_case(sample_studies, tmp_path)
    store = studies / ".brats_medsam" / "store"
    build_store(studies, store, seg_tag="original")
    label = store / "labels" / "original" / f"{cid}.nii.gz"
    label.unlink()
    tombstones.mark(store, cid, "original")
    build_store(studies, store, seg_tag="original")
    assert not label.exists() and (store / f"{cid}.nii.gz").is_symlink()
    (store / f"{cid}.nii.gz").unlink()
    tombstones.mark(store, cid)
    assert build_store(studies, store, seg_tag="original") == {}
    tombstones.mark(store, cid, removed=False)
    tombstones.mark(store, cid, "original", removed=False)
    assert cid in build_store(studies, store, seg_tag="original") and label.is_file()


def test_temp_files_of_killed_writes_are_dropped_at_start(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / ".x.nii.gz.abc123.tmp.nii.gz").write_bytes(b"half")
    (tmp_path / "labels" / "x.nii.gz").write_bytes(b"whole")
    assert drop_stale_temps(tmp_path) == 1
    assert [p.name for p in (tmp_path / "labels").iterdir()] == ["x.nii.gz"]
