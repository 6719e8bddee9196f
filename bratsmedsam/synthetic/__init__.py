"""Synthetic BraTS-format studies on real anatomy (SRI24 atlas, or nilearn's MNI152 as a fallback).

``anatomy``: a healthy brain on the BraTS 240x240x155 grid; ``fields``: smooth random fields;
``lesions``: glioma label maps (NCR 1, ED 2, ET 3); ``contrast``: the four MR contrasts and the
compartment-to-brain intensity ratios measured on the real case; ``randomise``: the domain-randomised
profile's per-case parameters and resolution loss. ``bratsmedsam.sample_data``
puts them together into a studies folder.
"""
