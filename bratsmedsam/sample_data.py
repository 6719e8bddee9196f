"""Sample studies: the real BraTS 2023 case(s), copied byte for byte, plus synthetic cases on real anatomy.

Output (BraTS 2023 layout): ``OUT/<id>/<id>-{t1c,t1n,t2w,t2f,seg}.nii.gz``, 240x240x155, 1 mm, the BraTS
affine, int16 images (background 0), uint8 seg {0, 1 NCR, 2 ED, 3 ET}; plus ``OUT/sample_info.json``
(anatomy used, per-case lesion parameters), ``OUT/sample_ratios.json`` (compartment-to-brain intensity
ratios, synthetic vs real) and ``OUT/sample_montage.png``.
Synthetic ids use the reserved range ``BraTS-GLI-9xxxx-000`` (``BraTS-GLI-90000-000`` + index).
A case depends only on (seed, index): the same seed gives identical arrays whatever ``n_cases`` is.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from . import atomic, paths
from .cases import MODALITIES
from .digest import file_sha256
from .errors import UserError
from .synthetic.anatomy import BRATS_AFFINE, Anatomy, load_anatomy
from .synthetic.contrast import COMPARTMENTS, REAL_RATIOS, compartment_ratios, synthesize_images
from .synthetic.lesions import draw_lesions, mass_effect, render_lesions
from .synthetic.randomise import PROFILES, draw_domain

ATTRIBUTION = {
    "SRI24": "SRI24 atlas, CC BY-SA 3.0: T. Rohlfing, N. M. Zahr, E. V. Sullivan, A. Pfefferbaum, "
             "Human Brain Mapping 31(5):798-819, 2010",
    "MNI152": "ICBM 2009a nonlinear symmetric MNI152 template (as shipped by nilearn): V. Fonov et al., "
              "NeuroImage 54(1):313-327, 2011",
    "BraTS": "BraTS 2023 GLI data terms; cite U. Baid et al. arXiv:2107.02314; B. H. Menze et al. IEEE TMI 34(10) 2015; "
             "S. Bakas et al. Sci. Data 4:170117 2017",
}
SYNTHETIC_ID_BASE = 90000
REAL_REFERENCE_CASE = "BraTS-GLI-00000-000"
DEFAULT = "default"  # sentinel: the shared data folder when it exists, else None
GOLDEN = 0.6180339887  # spreads the tumour sizes of consecutive cases over the whole range
FILE_KINDS = MODALITIES + ("seg",)


def synthetic_case_id(index: int) -> str:
    if not 0 <= index < 10000:
        raise UserError(f"synthetic case index {index} is outside 0..9999 (ids BraTS-GLI-90000-000..BraTS-GLI-99999-000)")
    return f"BraTS-GLI-{SYNTHETIC_ID_BASE + index:05d}-000"


def is_synthetic_case(case_id: str) -> bool:
    """True for ids in the generator's reserved range ``BraTS-GLI-9xxxx-000``."""
    parts = str(case_id).split("-")
    return len(parts) == 4 and parts[:2] == ["BraTS", "GLI"] and len(parts[2]) == 5 and parts[2][0] == "9" \
        and parts[2].isdigit()


def case_plan(index: int, rng: np.random.Generator) -> dict:
    """Variety across cases: sizes spread over the range by a golden-ratio sequence (+ jitter), so that
    any few consecutive cases hold small and large tumours; every 4th case without necrosis
    (index % 4 == 3); every 3rd with a second lesion (index % 3 == 2)."""
    return {
        "size_quantile": float(np.clip((0.3 + index * GOLDEN) % 1.0 + rng.uniform(-0.06, 0.06), 0.0, 1.0)),
        "n_lesions": 2 if index % 3 == 2 else 1,
        "necrosis": index % 4 != 3,
    }


def generate_case(anatomy: Anatomy, seed: int, index: int,
                  profile: str = "standard") -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """One synthetic case: ({modality: int16 (240,240,155)}, uint8 seg (240,240,155), metadata).

    ``profile``: ``standard`` (calibrated on the real case) or ``randomised`` (domain randomisation:
    :func:`bratsmedsam.synthetic.randomise.draw_domain`, its parameters in ``metadata["domain"]``).
    """
    if profile not in PROFILES:
        raise UserError(f"unknown sample-data profile {profile!r}: expected one of {', '.join(PROFILES)}")
    rng = np.random.default_rng([int(seed), int(index)])
    domain = draw_domain(seed, index) if profile == "randomised" else None
    plan = case_plan(index, rng)
    if domain is not None:
        plan["n_lesions"] = domain["shape"]["n_lesions"]
    specs = draw_lesions(anatomy, rng, plan["size_quantile"], plan["n_lesions"], plan["necrosis"],
                         shape=domain["shape"] if domain else None)
    if not specs:
        raise UserError(f"the {anatomy.name} anatomy has no room for a lesion (is its tissue map empty?)")
    anatomy = mass_effect(anatomy, specs)
    seg = render_lesions(anatomy, specs, rng, irregularity=domain["shape"]["irregularity"] if domain else 1.0)
    images, settings = synthesize_images(anatomy, seg, rng, domain=domain)
    labels, counts = np.unique(seg, return_counts=True)
    meta = {
        "case_id": synthetic_case_id(index),
        "index": index,
        "plan": plan,
        "lesions": [s.to_json() for s in specs],
        "voxels": {name: int(counts[labels == lab].sum()) for name, lab in COMPARTMENTS.items()},
        "intensity": settings,
    }
    if domain is not None:
        meta["domain"] = domain
    return images, seg, meta


def _nifti(arr: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def find_real_cases(real_dir: Path) -> list[Path]:
    """Case folders under ``real_dir`` (or ``real_dir`` itself) holding ``<id>-t1c.nii.gz``."""
    real_dir = Path(real_dir)
    if not real_dir.is_dir():
        raise UserError(f"real cases folder {real_dir} does not exist (expected BraTS 2023 case folders, or pass --no-real)")
    if (real_dir / f"{real_dir.name}-t1c.nii.gz").is_file():
        return [real_dir]
    cases = sorted(p for p in real_dir.iterdir() if p.is_dir() and (p / f"{p.name}-t1c.nii.gz").is_file())
    if not cases:
        raise UserError(f"real cases folder {real_dir} has no BraTS case folders (<id>/<id>-t1c.nii.gz)")
    return cases


def _partial_dir(out: Path, case_id: str) -> Path:
    """A hidden staging folder (``discover_cases`` skips dot-folders) for one case's files."""
    tmp = out / f".{case_id}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _publish_dir(tmp: Path, dest: Path) -> None:
    """Move a finished staging folder into place, replacing ``dest``: a killed run leaves either the old
    case folder or the new one, never a case with some of its files missing."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old.exists():
        shutil.rmtree(old)


def copy_real_case(case_dir: Path, out: Path) -> dict:
    """Copy every NIfTI file of ``case_dir`` into ``out/<id>/`` byte for byte; returns their SHA-256.

    Skipped when ``out/<id>/`` already holds identical files (a re-run)."""
    dest = out / case_dir.name
    sources = sorted(case_dir.glob("*.nii.gz"))
    files = {src.name: file_sha256(src) for src in sources}
    present = sorted(p.name for p in dest.glob("*.nii.gz")) if dest.is_dir() else []
    if present != sorted(files) or any(file_sha256(dest / n) != d for n, d in files.items()):
        tmp = _partial_dir(out, case_dir.name)
        for src in sources:
            atomic.write_bytes(tmp / src.name, src.read_bytes())
        _publish_dir(tmp, dest)
    return {"case_id": case_dir.name, "source": str(case_dir), "sha256": files}


def _remove_stale_synthetic_cases(out: Path, keep: set[str]) -> list[str]:
    """Delete synthetic case folders that an earlier run into ``out`` listed in its sample_info.json
    and this run does not write (e.g. a re-run with fewer cases); nothing else is touched."""
    info_path = out / "sample_info.json"
    if not info_path.is_file():
        return []
    try:
        import json

        earlier = [c["case_id"] for c in json.loads(info_path.read_text()).get("cases", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []
    removed = []
    for cid in earlier:
        folder = out / cid
        if cid not in keep and cid.startswith("BraTS-GLI-9") and folder.is_dir():
            shutil.rmtree(folder)
            removed.append(cid)
    return removed


def load_real_case(case_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(images {modality: float32}, seg uint8, affine) of a real BraTS 2023 case folder."""
    import nibabel as nib

    cid = case_dir.name
    images = {}
    affine = None
    for m in MODALITIES:
        img = nib.load(str(case_dir / f"{cid}-{m}.nii.gz"))
        images[m] = np.asarray(img.dataobj, dtype=np.float32)
        affine = img.affine if affine is None else affine
    seg = np.rint(np.asarray(nib.load(str(case_dir / f"{cid}-seg.nii.gz")).dataobj)).astype(np.uint8)
    return images, seg, affine


def _resolve(value, default_fn):
    """DEFAULT -> the shared folder if it exists (else None); None -> None; a path -> that path (checked later)."""
    if isinstance(value, str) and value == DEFAULT:
        p = default_fn()
        return p if p.exists() else None
    return None if value is None else Path(value)


def check_writable(out: Path) -> None:
    """UserError unless ``out`` can be created and written to."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None


def format_ratio_table(synthetic: dict, real: dict, real_label: str) -> str:
    """Modality x compartment table: synthetic (mean over cases) vs real ratio to normal brain."""
    head = f"{'modality':<9}" + "".join(f"{c + ' syn':>10}{c + ' real':>10}" for c in COMPARTMENTS)
    lines = [f"compartment median / normal-brain median (real: {real_label})", head]
    for m in MODALITIES:
        row = f"{m:<9}"
        for c in COMPARTMENTS:
            row += f"{synthetic[m][c]:>10.3f}{real[m][c]:>10.3f}"
        lines.append(row)
    return "\n".join(lines)


def write_sample_studies(out, n_cases: int = 8, seed: int = 0, real_dir=DEFAULT, atlas_dir=DEFAULT,
                         montage: bool = True, verbose: bool = True, profile: str = "standard") -> dict:
    """Write the real case(s) and ``n_cases`` synthetic cases into ``out``; returns the sample_info dict.

    ``profile``: ``standard`` (the default sample data) or ``randomised`` (domain randomisation, see
    :func:`generate_case`).

    ``real_dir`` / ``atlas_dir``: ``DEFAULT`` uses ``paths.real_cases_dir()`` / ``paths.sri24_dir()`` when
    they exist (else no real case / the MNI152 fallback); ``None`` skips the real case / forces MNI152;
    an explicit path must exist (UserError otherwise).
    """
    from tqdm import tqdm

    say = print if verbose else (lambda *a, **k: None)
    if int(n_cases) != n_cases or n_cases < 0:
        raise UserError(f"number of synthetic cases must be a whole number >= 0, got {n_cases}")
    n_cases = int(n_cases)
    if n_cases > 10000:
        raise UserError(f"at most 10000 synthetic cases fit the reserved ids BraTS-GLI-9xxxx-000, got {n_cases}")
    if int(seed) != seed or seed < 0:
        raise UserError(f"seed must be a whole number >= 0, got {seed}")
    if profile not in PROFILES:
        raise UserError(f"unknown sample-data profile {profile!r}: expected one of {', '.join(PROFILES)}")
    out = Path(out)
    real = _resolve(real_dir, paths.real_cases_dir)
    atlas = _resolve(atlas_dir, paths.sri24_dir)
    if atlas is not None and not atlas.is_dir():
        raise UserError(f"atlas folder {atlas} does not exist (expected the SRI24 atlas: tissues, spgr, late .nii.gz)")
    real_cases = find_real_cases(real) if real is not None else []
    if n_cases == 0 and not real_cases:
        raise UserError("nothing to write: 0 synthetic cases and no real case")
    check_writable(out)

    info: dict = {"seed": seed, "n_cases": n_cases, "profile": profile, "synthetic_id_range": "BraTS-GLI-9xxxx-000 (BraTS-GLI-90000-000 + index)"}
    real_info, real_arrays = [], None
    for case_dir in real_cases:
        real_info.append(copy_real_case(case_dir, out))
        say(f"copied real case {case_dir.name} from {case_dir}")
    affine = BRATS_AFFINE
    if real_cases:
        ref_dir = next((c for c in real_cases if c.name == REAL_REFERENCE_CASE), real_cases[0])
        real_arrays = (ref_dir.name,) + load_real_case(ref_dir)
        affine = np.asarray(real_arrays[3], dtype=np.float64)
    info["real_cases"] = real_info
    if real_info:
        info["real_attribution"] = ATTRIBUTION["BraTS"]
    info["affine"] = affine.tolist()

    cases_meta, syn_ratios, first = [], [], None
    if n_cases:
        t0 = time.perf_counter()
        anatomy = load_anatomy(atlas)
        info["anatomy"] = anatomy.describe() | {"attribution": ATTRIBUTION[anatomy.name]}
        info["anatomy_load_seconds"] = round(time.perf_counter() - t0, 2)
        say(f"anatomy: {anatomy.name} ({anatomy.source})")
        for index in tqdm(range(n_cases), desc="synthetic cases", unit="case", disable=not verbose):
            t0 = time.perf_counter()
            images, seg, meta = generate_case(anatomy, seed, index, profile)
            cid = meta["case_id"]
            tmp = _partial_dir(out, cid)
            for m in MODALITIES:
                atomic.save_nifti(_nifti(images[m], affine), tmp / f"{cid}-{m}.nii.gz")
            atomic.save_nifti(_nifti(seg, affine), tmp / f"{cid}-seg.nii.gz")
            _publish_dir(tmp, out / cid)
            meta["ratios"] = compartment_ratios(images, seg)
            meta["seconds"] = round(time.perf_counter() - t0, 2)
            syn_ratios.append(meta["ratios"])
            cases_meta.append(meta)
            tumour = sum(meta["voxels"].values())
            if first is None or tumour > first[0]:  # the montage shows the largest tumour
                first = (tumour, (cid, images, seg))
        info["seconds_per_case"] = round(float(np.mean([c["seconds"] for c in cases_meta])), 2)
        say(f"{n_cases} synthetic cases, {info['seconds_per_case']:.2f} s per case (generation + writing)")
    else:
        info["anatomy"] = None
    info["cases"] = cases_meta
    removed = _remove_stale_synthetic_cases(out, {c["case_id"] for c in cases_meta})
    if removed:
        say(f"removed {len(removed)} synthetic case(s) of an earlier run: {', '.join(removed)}")

    if real_arrays is not None:
        real_ratios = compartment_ratios(real_arrays[1], real_arrays[2])
        real_label = f"measured on {real_arrays[0]}"
    else:
        real_ratios = REAL_RATIOS
        real_label = f"constants measured on {REAL_REFERENCE_CASE}"
    ratios_doc = {"definition": "median(compartment) / median(brain voxels outside the tumour), per modality",
                  "real_source": real_label, "real": real_ratios}
    if syn_ratios:
        mean = {m: {c: float(np.nanmean([r[m][c] for r in syn_ratios])) for c in COMPARTMENTS} for m in MODALITIES}
        ratios_doc["synthetic_mean"] = mean
        ratios_doc["synthetic_per_case"] = {c["case_id"]: c["ratios"] for c in cases_meta}
        say(format_ratio_table(mean, real_ratios, real_label))
    atomic.write_json(out / "sample_ratios.json", _finite(ratios_doc))
    if montage and first is not None:
        from .synthetic.montage import save_montage

        real_for_montage = (real_arrays[0], real_arrays[1], real_arrays[2]) if real_arrays is not None else None
        save_montage(out / "sample_montage.png", first[1], real_for_montage)
        info["montage"] = {"file": "sample_montage.png", "synthetic_case": first[1][0]}
    atomic.write_json(out / "sample_info.json", _finite(info))
    return info


def _finite(obj):
    """NaN -> None so the JSON is strict."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
