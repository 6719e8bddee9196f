"""Extract an uploaded archive (tar, tar.gz, zip) inside one folder and nowhere else.

Every member is checked before anything is written: no absolute names, no ``..`` parts, no links, devices or
FIFOs, at most ``max_members`` members and ``max_bytes`` uncompressed. A refused archive writes nothing.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import UserError


def _safe_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if not name or p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UserError(f"archive member {name!r} has an absolute path")
    if any(part == ".." for part in p.parts):
        raise UserError(f"archive member {name!r} points outside the archive ('..')")
    return p


def _plan_tar(tf: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    plan = []
    for m in tf.getmembers():
        p = _safe_name(m.name)
        if m.issym() or m.islnk():
            raise UserError(f"archive member {m.name!r} is a link; links are refused")
        if not (m.isfile() or m.isdir()):
            raise UserError(f"archive member {m.name!r} is not a regular file or folder")
        plan.append((m, p))
    return plan


def _plan_zip(zf: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    plan = []
    for m in zf.infolist():
        p = _safe_name(m.filename)
        mode = (m.external_attr >> 16) & 0o170000
        if mode and mode not in (0o100000, 0o040000):  # symlink, device...: only files and folders
            raise UserError(f"archive member {m.filename!r} is not a regular file or folder")
        plan.append((m, p))
    return plan


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, max_bytes: int,
                 max_members: int = 10_000) -> list[Path]:
    """Extract ``archive`` into ``dest`` (created); returns the extracted files. Raises ``UserError``."""
    archive, dest = Path(archive), Path(dest)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            plan = _plan_tar(tf)
            sizes = [m.size for m, _ in plan if m.isfile()]
            _check_plan(plan, sizes, max_bytes, max_members)
            return _write(dest, plan, lambda m: tf.extractfile(m), lambda m: m.isdir())
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            plan = _plan_zip(zf)
            sizes = [m.file_size for m, _ in plan if not m.is_dir()]
            _check_plan(plan, sizes, max_bytes, max_members)
            return _write(dest, plan, lambda m: zf.open(m), lambda m: m.is_dir())
    raise UserError(f"{archive.name} is not a tar or zip archive")


def _check_plan(plan, sizes, max_bytes: int, max_members: int) -> None:
    names = [str(p) for _, p in plan]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"archive member {dup!r} appears twice")
    if len(plan) > max_members:
        raise UserError(f"the archive has {len(plan)} members, more than the limit of {max_members}")
    if sum(sizes) > max_bytes:
        raise UserError(f"the archive unpacks to {sum(sizes):,} bytes, more than the limit of {max_bytes:,}")


def _write(dest: Path, plan, open_member, is_dir) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    out = []
    for m, p in plan:
        target = (root / Path(*p.parts)).resolve() if p.parts else root
        if target != root and root not in target.parents:
            raise UserError(f"archive member {str(p)!r} points outside the archive")
        if is_dir(m):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(m) as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst)
        out.append(target)
    return out
