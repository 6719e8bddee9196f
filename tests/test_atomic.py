"""Atomic writes: a failure mid-write leaves the previous file, never a partial one."""

import json

import pytest

from bratsmedsam import atomic


def test_write_json_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "x.json"
    atomic.write_json(p, {"a": 1})
    atomic.write_json(p, {"b": 2})
    assert json.loads(p.read_text()) == {"b": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_failure_inside_atomic_path_keeps_old_file_and_no_temp(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["x.txt"]


def test_temp_keeps_the_target_suffix_for_format_sniffing_writers(tmp_path):
    with atomic.atomic_path(tmp_path / "v.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")


def test_written_files_get_ordinary_permissions_not_mkstemp_0600(tmp_path):
    import os
    import stat

    p = atomic.write_text(tmp_path / "r.md", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask
