"""The paper's evaluation, in parts: what is evaluated (``rows``), results as records and their tables
(``records``), 3D per-case scores (``volumes``). The verb itself is :func:`bratsmedsam.evaluate.evaluate`."""
