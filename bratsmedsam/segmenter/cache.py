"""Image-embedding cache: keyed by slice content + encoder weights + preprocessing (never the decoder).

Embeddings are STORED AS FLOAT16 (memory and disk) and handed out as float32: a LiteMedSAM embedding
``(256, 64, 64)`` is 2 MiB instead of 4 MiB (on disk 2,098,xxx bytes per slice with torch's container; see the
README for a dataset's worth). :meth:`EmbeddingCache.put` rounds the tensor it is given to float16 precision in
place, so the caller, the memory cache and the disk hold the same numbers and a result never depends on whether
an embedding was a hit or a miss. Measured on the real case with ground-truth boxes: slice Dice changes by less
than 0.002 (tests/test_cache_fp16.py). Float32 files from older runs (same paths) are read and rounded the same way.

In memory: LRU bounded by entry count. On disk (``<cache_dir>/<encoder key>/<ab>/<key>.pt``, written atomically):
``max_disk_mb`` bounds it, and past the cap the least recently USED files go first (a hit or a repeated put
touches the file's mtime, at most once a minute per entry). A fine-tuned decoder reuses the embeddings of its
base model because only the decoder changes; processes that share ``cache_dir`` (the server, its training runs)
share the embeddings.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np


def image_key(image: np.ndarray) -> str:
    """Content hash of a slice image (bytes + shape + dtype)."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.shape}|{a.dtype}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


FP16_MAX = 65504.0


def _to_storage(emb, in_place: bool = False):
    """A cpu float16 copy of ``emb`` (float32 if a value lies outside float16's range); with ``in_place`` the
    float32 ``emb`` itself is rounded to the stored precision."""
    import torch

    with torch.no_grad():
        if emb.numel() and float(emb.detach().abs().max()) > FP16_MAX:
            return emb.detach().to("cpu", dtype=torch.float32, copy=True).contiguous()
        if in_place:
            emb.copy_(emb.to(torch.float16))
        return emb.detach().to("cpu", dtype=torch.float16, copy=True).contiguous()


class EmbeddingCache:
    def __init__(self, encoder_id: str, max_items: int = 256, cache_dir: str | Path | None = None,
                 max_disk_mb: float | None = None):
        self.encoder_id = encoder_id
        self.max_items = max(0, int(max_items))
        self.namespace = hashlib.sha256(encoder_id.encode()).hexdigest()[:16]
        self.dir = Path(cache_dir) / self.namespace if cache_dir is not None else None
        self._mem: OrderedDict[str, object] = OrderedDict()  # key -> float16 cpu tensor
        self._touched: dict[str, float] = {}  # key -> when its disk file's mtime was last set by this process
        self._lock = threading.Lock()  # inference workers and the server's prefetch share one cache
        self.max_disk_bytes = int(max_disk_mb * 2**20) if max_disk_mb else None
        self._disk_bytes = None  # counted on the first write when a cap is set
        self.hits = 0  # memory or disk
        self.disk_hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is held in memory or on disk (without loading it)."""
        with self._lock:
            if key in self._mem:
                return True
        return self.dir is not None and self._path(key).is_file()

    def get(self, key: str):
        """The cached embedding (cpu float32 ``(256, 64, 64)``, float16 precision) or None."""
        import torch

        with self._lock:
            emb = self._mem.get(key)
            if emb is not None:
                self._mem.move_to_end(key)
                self.hits += 1
        if emb is not None:
            self._touch(key)
            return emb.float()
        if self.dir is not None:
            p = self._path(key)
            if p.is_file():
                try:
                    emb = torch.load(p, map_location="cpu", weights_only=True)
                except Exception:  # a damaged file is recomputed, not trusted
                    emb = None
                if isinstance(emb, torch.Tensor) and emb.is_floating_point():
                    emb = _to_storage(emb)  # float32 files of older runs: rounded like a fresh put
                    with self._lock:
                        self.hits += 1
                        self.disk_hits += 1
                    self._touch(key, force=True)
                    self._remember(key, emb)
                    return emb.float()
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, emb) -> None:
        """Store ``emb`` (any device, float). Rounds ``emb`` itself to float16 precision in place, so what the
        caller goes on using equals what every later hit returns. An embedding outside float16's range (never
        seen from these encoders) is kept in float32 rather than turned into infinities."""
        from ..atomic import save_torch

        if self.max_items == 0 and self.dir is None:
            return  # nothing is kept: leave the caller's float32 as it is
        stored = _to_storage(emb, in_place=True)
        self._remember(key, stored)
        if self.dir is not None:
            p = self._path(key)
            if not p.is_file():
                save_torch(stored, p)
                with self._lock:
                    self._touched[key] = time.time()
                if self.max_disk_bytes:
                    self._account(p)
            else:
                self._touch(key, force=True)

    def _touch(self, key: str, force: bool = False) -> None:
        """Mark the disk file of ``key`` as just used (its mtime orders the eviction). Memory hits touch it at
        most once a minute, so a hot entry costs one ``utime`` per minute, not one per prompt."""
        if self.dir is None:
            return
        now = time.time()
        with self._lock:
            if not force and now - self._touched.get(key, 0.0) < 60.0:
                return
            self._touched[key] = now
        try:
            os.utime(self._path(key), (now, now))
        except FileNotFoundError:  # evicted (here or by another process): it is rewritten on the next put
            pass

    def _account(self, written: Path) -> None:
        """Keep the files of this encoder under the cap: past it, drop the least recently used (oldest mtime) down
        to 90 % of it (never the file just written). Other processes sharing the folder are counted at the next pass."""
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
                self._touched.pop(f.stem, None)
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
