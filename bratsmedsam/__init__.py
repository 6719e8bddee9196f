"""brats-medsam core: BraTS NIfTI -> slices -> YOLO boxes -> MedSAM-family masks -> metrics.

Framework-free: nothing in this package imports MONAI Label or speaks HTTP.
"""

__version__ = "0.1.0"
