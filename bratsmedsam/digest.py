"""File content digests: the one SHA-256 of a file that ids, caches and checks compare."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (hex), remembered per (path, size, mtime) so 375 MB ViT-B files are hashed once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _MEMO:
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _MEMO[key] = digest.hexdigest()
    return _MEMO[key]
