"""YOLO tumour-box detector: ``training``, ``predict``, ``postprocess``, ``evaluation``, offline glue
(``ultra``) and a synthetic dataset for tests (``synthetic``). Public names: :mod:`bratsmedsam.detector`."""
