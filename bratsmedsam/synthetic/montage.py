"""PNG montage: a few axial slices per modality of a synthetic case beside the real one (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import atomic
from ..cases import MODALITIES


def _slices(seg: np.ndarray, n: int = 3) -> list[int]:
    """Axial indices k spread over the tumour (through its middle), or the volume's middle."""
    ks = np.nonzero((seg > 0).any(axis=(0, 1)))[0]
    if not len(ks):
        mid = seg.shape[2] // 2
        return [mid - 15, mid, mid + 15][:n]
    return [int(v) for v in np.linspace(ks.min(), ks.max(), n + 2)[1:-1].round()]


def save_montage(target: Path, synthetic: tuple, real: tuple | None) -> Path:
    """``synthetic``/``real`` = (case_id, {modality: (X,Y,Z) array}, seg (X,Y,Z)). Slice image = vol[:, :, k].T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [synthetic] + ([real] if real is not None else [])
    ncols = 3 * len(groups)
    fig, axes = plt.subplots(len(MODALITIES) + 1, ncols, figsize=(2.0 * ncols, 2.0 * (len(MODALITIES) + 1)), squeeze=False)
    for g, (cid, images, seg) in enumerate(groups):
        ks = _slices(seg)
        for row, m in enumerate(list(MODALITIES) + ["seg"]):
            for c, k in enumerate(ks):
                ax = axes[row, 3 * g + c]
                if m == "seg":
                    base = images["t2f"][:, :, k].T
                    ax.imshow(base, cmap="gray", vmin=0, vmax=np.percentile(images["t2f"][images["t2f"] > 0], 99.5))
                    lab = np.ma.masked_equal(seg[:, :, k].T, 0)
                    ax.imshow(lab, cmap=matplotlib.colors.ListedColormap(["red", "yellow", "cyan"]), vmin=1, vmax=3,
                              alpha=0.5, interpolation="nearest")
                else:
                    vol = images[m]
                    ax.imshow(vol[:, :, k].T, cmap="gray", vmin=0, vmax=np.percentile(vol[vol > 0], 99.5))
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{cid}\nz={k}", fontsize=7)
                if 3 * g + c == 0:
                    ax.set_ylabel(m if m != "seg" else "seg on t2f\n(NCR red, ED yellow, ET cyan)", fontsize=7)
    fig.tight_layout()
    with atomic.atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(target)
