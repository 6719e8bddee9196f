"""Archive extraction for sessions: everything lands inside the target folder, or nothing is written."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from bratsmedsam.archive import safe_extract
from bratsmedsam.errors import UserError


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tf.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tf.addfile(info)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_a_plain_archive_is_extracted_inside_the_folder(tmp_path):
    arc = _tar(tmp_path / "a.tar.gz", [("case/t2f.nii.gz", b"abc", "file"), ("case/t1c.nii.gz", b"de", "file")])
    out = safe_extract(arc, tmp_path / "out", max_bytes=100)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in out) == ["case/t1c.nii.gz", "case/t2f.nii.gz"]
    assert (tmp_path / "out" / "case" / "t2f.nii.gz").read_bytes() == b"abc"


@pytest.mark.parametrize("members, words", [
    ([("../escape", b"x", "file")], "outside"),
    ([("a/../../escape", b"x", "file")], "outside"),
    ([("/tmp/escape", b"x", "file")], "absolute"),
    ([("link", "/etc/passwd", "sym")], "link"),
    ([("ok", b"x", "file"), ("hard", "ok", "hard")], "link"),
    ([("pipe", None, "fifo")], "not a regular file"),
    ([("big", b"x" * 101, "file")], "more than the limit"),
    ([("dup", b"x", "file"), ("dup", b"y", "file")], "twice"),
])
def test_dangerous_tar_members_refuse_the_whole_archive(tmp_path, members, words):
    arc = _tar(tmp_path / "a.tar.gz", members)
    with pytest.raises(UserError, match=words):
        safe_extract(arc, tmp_path / "out", max_bytes=100)
    assert not (tmp_path / "escape").exists()
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_zip_traversal_and_symlinks_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("../../escape", b"x")
    with pytest.raises(UserError, match="outside"):
        safe_extract(tmp_path / "a.zip", tmp_path / "out", max_bytes=100)
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UserError, match="not a regular file"):
        safe_extract(tmp_path / "b.zip", tmp_path / "out2", max_bytes=100)


def test_something_that_is_no_archive_is_refused(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"plain text")
    with pytest.raises(UserError, match="not a tar or zip"):
        safe_extract(tmp_path / "x.tar", tmp_path / "out", max_bytes=100)
