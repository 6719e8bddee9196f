"""Image-embedding cache: keyed by slice content + encoder weights + preprocessing (never the decoder).

In memory (LRU, bounded by entry count; one entry = a float32 ``(256, 64, 64)`` tensor, 4 MiB) and
optionally on disk (``<cache_dir>/<encoder key>/<ab>/<key>.pt``, written atomically), where ``max_disk_mb``
bounds it: past the cap the least recently written files go first. A fine-tuned decoder reuses the embeddings of
its base model because only the decoder changes; processes that share ``cache_dir`` (the server, its training
runs) share the embeddings.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np


def image_key(image: np.ndarray) -> str:
    """Content hash of a slice image (bytes + shape + dtype)."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.shape}|{a.dtype}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


class EmbeddingCache:
    def __init__(self, encoder_id: str, max_items: int = 256, cache_dir: str | Path | None = None,
                 max_disk_mb: float | None = None):
        self.encoder_id = encoder_id
        self.max_items = max(0, int(max_items))
        self.namespace = hashlib.sha256(encoder_id.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / self.namespace if cache_dir is not None else None
        self._mem: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()  # inference workers and the server's prefetch share one cache
        self.max_disk_bytes = int(max_disk_mb * 2**20) if max_disk_mb else None
        self._disk_bytes = None  # counted on the first write when a cap is set
        self.hits = 0  # memory or disk
        self.disk_hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.pt"

    def get(self, key: str):
        """The cached embedding (cpu float32 ``(256, 64, 64)``) or None."""
        import torch

        with self._lock:
            if key in self._mem:
                self._mem.move_to_end(key)
                self.hits += 1
                return self._mem[key]
        if self.dir is not None:
            p = self._path(key)
            if p.is_file():
                try:
                    emb = torch.load(p, map_location="cpu", weights_only=True)
                except Exception:  # a damaged file is recomputed, not trusted
                    emb = None
                if isinstance(emb, torch.Tensor):
                    self.hits += 1
                    self.disk_hits += 1
                    self._remember(key, emb)
                    return emb
        self.misses += 1
        return None

    def put(self, key: str, emb) -> None:
        from ..atomic import save_torch

        emb = emb.detach().to("cpu", copy=True).float().contiguous()
        self._remember(key, emb)
        if self.dir is not None:
            p = self._path(key)
            if not p.is_file():
                save_torch(emb, p)
                if self.max_disk_bytes:
                    self._account(p)

    def _account(self, written: Path) -> None:
        """Keep the files of this encoder under the cap: past it, drop the oldest down to 90 % of it (never the
        file just written). Other processes sharing the folder are counted at the next pass."""
        with self._lock:
            if self._disk_bytes is None:
                self._disk_bytes = sum(f.stat().st_size for f in self.dir.rglob("*.pt"))
            else:
                self._disk_bytes += written.stat().st_size
            if self._disk_bytes <= self.max_disk_bytes:
                return
            files = []
            for f in self.dir.rglob("*.pt"):
                try:
                    st = f.stat()
                except FileNotFoundError:  # another process evicted it meanwhile
                    continue
                files.append((st.st_mtime, st.st_size, f))
            files.sort(key=lambda t: (t[0], str(t[2])))
            total, target = sum(t[1] for t in files), int(self.max_disk_bytes * 0.9)
            for _, size, f in files:
                if total <= target:
                    break
                if f == written:
                    continue
                f.unlink(missing_ok=True)
                total -= size
            self._disk_bytes = total

    def _remember(self, key: str, emb) -> None:
        if self.max_items == 0:
            return
        with self._lock:
            self._mem[key] = emb
            self._mem.move_to_end(key)
            while len(self._mem) > self.max_items:
                self._mem.popitem(last=False)

    def __len__(self) -> int:
        return len(self._mem)

    def stats(self) -> dict:
        return {"hits": self.hits, "disk_hits": self.disk_hits, "misses": self.misses, "in_memory": len(self._mem)}
