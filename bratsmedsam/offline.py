"""Keep third-party libraries offline and inside our folders.

Call :func:`configure` before importing ultralytics (the detector module does). It
- points ultralytics' settings directory at ``runs/.config/ultralytics`` in the project (not the
  user's home), and turns off every logger/integration that would write elsewhere or call out
  (MLflow's ``mlflow.db`` in the working directory, hub sync/analytics, wandb, ...);
- gives ultralytics a font file so its plots never try to download Arial.ttf;
- sets the hub/transformers offline flags for any library that honours them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_CONFIGURED = False


def config_dir() -> Path:
    return Path(os.environ.get("BRATSMEDSAM_CONFIG_DIR", PROJECT_ROOT / "runs" / ".config"))


def configure() -> None:
    global _CONFIGURED
    if _CONFIGURED:
        return
    ultra_dir = config_dir() / "ultralytics"
    ultra_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ultra_dir))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_TRACKING_URI", (ultra_dir / "mlruns").as_uri())
    # MLflow (a monailabel dependency) sends usage telemetry and keeps state in ~/.config/mlflow.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    # Matplotlib (ultralytics' plots) caches its font list in ~/.cache/matplotlib otherwise.
    os.environ.setdefault("MPLCONFIGDIR", str(config_dir() / "matplotlib"))
    from ultralytics import settings  # noqa: E402  (after the environment is set)
    from ultralytics.utils import USER_CONFIG_DIR  # YOLO_CONFIG_DIR/Ultralytics: where check_font looks

    _provide_fonts(Path(USER_CONFIG_DIR))

    off = {k: False for k in ("sync", "hub", "mlflow", "wandb", "clearml", "comet", "dvc",
                               "neptune", "raytune", "tensorboard") if k in settings}
    if any(settings.get(k) for k in off):
        settings.update(off)
    _CONFIGURED = True


def _provide_fonts(target_dir: Path) -> None:
    """Ultralytics downloads Arial fonts for plot labels unless they are in its config dir."""
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        dest = target_dir / name
        if not dest.exists() and source.exists():
            shutil.copyfile(source, dest)
