"""Pictures of a fine-tuning run: the training curve and overlays of validation slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_curves(history: list[dict], target: Path) -> Path:
    """Training loss and validation slice Dice per epoch (epoch 0 = zero-shot) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_path

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    tl = [(h["epoch"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    if tl:
        a.plot(*zip(*tl), marker="o")
    a.set(title="training loss (Dice + BCE)", xlabel="epoch")
    parts = history[0].get("val_dice_prompts")
    b.plot(ep, [h["val_dice"] for h in history], marker="o", color="tab:green",
           label="selected on" + (" (mean)" if parts else ""))
    for name in parts or ():  # the prompts the selection averages: GT boxes and padded ("loose") ones
        b.plot(ep, [h["val_dice_prompts"][name] for h in history], ls=":", marker=".", label=f"{name} boxes")
    b.axhline(history[0]["val_dice"], ls="--", color="grey", label="zero-shot")
    b.set(title="validation slice Dice", xlabel="epoch")
    b.legend()
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return target


def save_overlays(data, preds: list[np.ndarray], dices: list[float], out_dir: Path) -> list[Path]:
    """One PNG per slice: image, GT boxes (yellow), ground truth (green contour), prediction (red contour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..atomic import atomic_path

    paths = []
    for name, img, gt, boxes, pred, d in zip(data.names, data.images, data.masks, data.boxes, preds, dices):
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(img)
        if gt.any():
            ax.contour(gt, levels=[0.5], colors="lime", linewidths=1)
        if pred.any():
            ax.contour(pred, levels=[0.5], colors="red", linewidths=1)
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec="yellow", lw=1))
        ax.set_title(f"{name}  Dice {d:.3f}\ngreen GT, red prediction, yellow box", fontsize=8)
        ax.axis("off")
        fig.tight_layout()
        target = Path(out_dir) / f"{name}.png"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        paths.append(target)
    return paths
