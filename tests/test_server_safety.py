"""The real server attacked as a careless or hostile client would: every bad request is a 4xx, the studies folder
never changes, a SIGKILL loses no acknowledged label, a damaged index does not stop the server, one long request
does not freeze the others.

One server per module on a copy of the sample studies (no detector: these tests need the segmenter only), restarted
where a test kills it. Figures (p99 latencies, labels kept) are printed at the end; the issue notes quote them.
``BRATSMEDSAM_TEST_REGION=BraTS`` runs the same tests on a BraTS-mode server (default: the default mode, WT).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serverkit import Server, tree_digest, tree_stat

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIGURES: dict[str, object] = {}
MAX_UPLOAD_MB = 8
REGION = os.environ.get("BRATSMEDSAM_TEST_REGION", "WT")


@pytest.fixture(scope="module")
def studies(studies_copy):
    return studies_copy


@pytest.fixture(scope="module")
def cases(studies):
    from bratsmedsam.cases import discover_cases

    return {f.case_id: f for f in discover_cases(studies)}


@pytest.fixture(scope="module")
def ref(cases):
    """The first case: its id, FLAIR path, shape and a tumour slice/box (from its segmentation)."""
    from bratsmedsam.cases import load_case
    from bratsmedsam.regions import region_mask

    cid = sorted(cases)[0]
    wt = region_mask(load_case(cases[cid], [], with_seg=True).seg, "WT")
    k = int(np.argmax(wt.sum(axis=(0, 1))))
    ii, jj = np.nonzero(wt[:, :, k])
    return {"id": cid, "image": Path(cases[cid].images["t2f"]), "shape": wt.shape, "wt": wt, "k": k,
            "box": [int(ii.min()), int(ii.max()), int(jj.min()), int(jj.max())]}


@pytest.fixture(scope="module")
def server(studies, tmp_path_factory):
    log = tmp_path_factory.mktemp("safety-log") / "server.log"
    srv = Server(studies, log, "--max-upload-mb", str(MAX_UPLOAD_MB), "--conf", "uncertainty_max_slices", "1",
                 "--region", REGION).start()
    yield srv
    srv.stop()
    print("\nserver safety figures (2-core CPU):")
    for k, v in FIGURES.items():
        print(f"  {k}: {v}")


@pytest.fixture(scope="module")
def files(ref, tmp_path_factory):
    """Label and image files, good and bad, for uploads."""
    import nibabel as nib
    import SimpleITK as sitk

    from bratsmedsam.studies import write_label

    d = tmp_path_factory.mktemp("uploads")
    img = nib.load(str(ref["image"]))
    f = {"good": write_label(ref["wt"], ref["image"], d / "good.nii.gz"),
         "good_nrrd": write_label(ref["wt"], ref["image"], d / "good.nrrd")}
    (d / "text.nii.gz").write_bytes(b"garbage")
    f["text"] = d / "text.nii.gz"
    (d / "empty.nrrd").write_bytes(b"")
    f["empty"] = d / "empty.nrrd"
    small = np.zeros((10, 10, 10), np.uint8)
    nib.save(nib.Nifti1Image(small, img.affine), d / "shape.nii.gz")
    f["shape"] = d / "shape.nii.gz"
    nib.save(nib.Nifti1Image(ref["wt"].astype(np.uint8), img.affine @ np.diag([2, 2, 2, 1])), d / "spacing.nii.gz")
    f["spacing"] = d / "spacing.nii.gz"
    nib.save(nib.Nifti1Image(ref["wt"].astype(np.uint8) * 5, img.affine), d / "values.nii.gz")
    f["values"] = d / "values.nii.gz"
    half = ref["wt"].astype(np.float32) * 0.5
    nib.save(nib.Nifti1Image(half, img.affine), d / "float.nii.gz")
    f["float"] = d / "float.nii.gz"
    nan = sitk.Cast(sitk.ReadImage(str(f["good_nrrd"])), sitk.sitkFloat32)
    nan.SetPixel(0, 0, 0, float("nan"))  # (nibabel would write the NaN as 0)
    sitk.WriteImage(nan, str(d / "nan.nrrd"), True)
    f["nan"] = d / "nan.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(ref["image"])), str(d / "image.nii.gz"))
    f["image"] = d / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((420, 420, 420), np.uint8), img.affine), d / "huge.nii.gz")  # 74 M voxels
    f["voxels"] = d / "huge.nii.gz"
    (d / "big.bin").write_bytes(np.random.default_rng(0).bytes((MAX_UPLOAD_MB + 1) * 1024 * 1024))
    f["big"] = d / "big.bin"
    return f


def _up(path, name=None, field="label"):
    return {field: (name or Path(path).name, open(path, "rb"), "application/octet-stream")}


def corpus(ref, files):
    """(what, method, path, requests kwargs, expected status). ``R`` is a real image id."""
    R, (i0, i1, j0, j1), k = ref["id"], ref["box"], ref["k"]
    roi = [i0, i1, j0, j1, k, k]
    P = lambda p: {"data": {"params": p if isinstance(p, str) else json.dumps(p)}}  # noqa: E731
    return [
        ("infer: params not JSON", "POST", f"/infer/medsam?image={R}", P("{roi:"), 422),
        ("infer: params a JSON list", "POST", f"/infer/medsam?image={R}", P([1, 2]), 422),
        ("infer: foreground strings", "POST", f"/infer/medsam?image={R}", P({"foreground": [["x", "y", "z"]]}), 422),
        ("infer: foreground 2D points", "POST", f"/infer/medsam?image={R}", P({"foreground": [[1, 2]]}), 422),
        ("infer: 1001 points", "POST", f"/infer/medsam?image={R}", P({"foreground": [[1, 2, 3]] * 1001}), 422),
        ("infer: slice NaN", "POST", f"/infer/medsam?image={R}", P('{"roi": %s, "slice": NaN}' % roi), 422),
        ("infer: slice Infinity", "POST", f"/infer/medsam?image={R}", P('{"roi": %s, "slice": Infinity}' % roi), 422),
        ("infer: roi of 5 numbers", "POST", f"/infer/medsam?image={R}", P({"roi": roi[:5]}), 422),
        ("infer: roi of strings", "POST", f"/infer/medsam?image={R}", P({"roi": ["a"] * 6}), 422),
        ("infer: roi booleans", "POST", f"/infer/medsam?image={R}", P({"roi": [True] * 6}), 422),
        ("infer: roi outside the image", "POST", f"/infer/medsam?image={R}", P({"roi": [900, 950, 1, 2, 1, 1]}), 400),
        ("infer: roi deeper than the limit", "POST", f"/infer/medsam?image={R}",
         P({"roi": [i0, i1, j0, j1, 0, ref["shape"][2] - 1]}), 422),
        ("infer: no prompt", "POST", f"/infer/medsam?image={R}", P({}), 400),
        ("infer: unknown model", "POST", f"/infer/nosuch?image={R}", P({}), 404),
        ("infer: model without weights (no detector)", "POST", f"/infer/pipeline?image={R}", P({}), 404),
        ("infer: unknown image id", "POST", "/infer/medsam?image=BraTS-GLI-77777-000", P({"roi": roi}), 404),
        ("infer: image id with ..", "POST", "/infer/medsam?image=../../etc/passwd", P({"roi": roi}), 400),
        ("infer: absolute image path", "POST", "/infer/medsam?image=/etc/passwd", P({"roi": roi}), 400),
        ("infer: leftover upload path as image", "POST", "/infer/medsam?image=/tmp/tmpabcdef.nii.gz", P({"roi": roi}), 400),
        ("infer: params override image", "POST", f"/infer/medsam?image={R}",
         P({"roi": roi, "image": "/tmp/tmpabcdef.nii.gz"}), 422),
        ("infer: params set session", "POST", f"/infer/medsam?image={R}", P({"roi": roi, "session": {}}), 422),
        ("infer: result_extension .exe", "POST", f"/infer/medsam?image={R}", P({"roi": roi, "result_extension": ".exe"}), 422),
        ("infer: result_dtype complex", "POST", f"/infer/medsam?image={R}", P({"roi": roi, "result_dtype": "complex"}), 422),
        ("infer: output dicom_seg", "POST", f"/infer/medsam?image={R}&output=dicom_seg", P({"roi": roi}), 422),
        ("infer: output unknown", "POST", f"/infer/medsam?image={R}&output=bogus", P({"roi": roi}), 422),
        ("infer: session when sessions are off", "POST", f"/infer/medsam?image={R}&session_id=abc", P({"roi": roi}), 404),
        ("infer: uploaded text as image", "POST", "/infer/medsam?image=x",
         {**P({"roi": roi}), "files": _up(files["text"], field="file")}, 422),
        ("infer: uploaded .exe", "POST", "/infer/medsam?image=x",
         {**P({"roi": roi}), "files": _up(files["text"], "x.exe", field="file")}, 415),
        ("infer: a label input", "POST", f"/infer/medsam?image={R}", {**P({"roi": roi}), "files": _up(files["good"])}, 422),
        ("label: text", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["text"])}, 422),
        ("label: empty file", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["empty"])}, 422),
        ("label: wrong shape", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["shape"])}, 422),
        ("label: wrong spacing", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["spacing"])}, 422),
        ("label: value 5", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["values"])}, 422),
        ("label: non-integer values", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["float"])}, 422),
        ("label: NaN", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["nan"])}, 422),
        ("label: .exe", "PUT", f"/datastore/label?image={R}&tag=final", {"files": _up(files["good"], "x.exe")}, 415),
        ("label: unknown image", "PUT", "/datastore/label?image=BraTS-GLI-77777-000&tag=final",
         {"files": _up(files["good"])}, 404),
        ("label: image id with ..", "PUT", "/datastore/label?image=../x&tag=final", {"files": _up(files["good"])}, 400),
        ("label: tag with ..", "PUT", f"/datastore/label?image={R}&tag=../../x", {"files": _up(files["good"])}, 400),
        ("label: params not JSON", "PUT", f"/datastore/label?image={R}&tag=final",
         {"files": _up(files["good"]), "data": {"params": "{x"}}, 422),
        ("label: no file", "PUT", f"/datastore/label?image={R}&tag=final", {}, 422),
        ("image: upload over an existing id", "PUT", f"/datastore/image?image={R}", {"files": _up(files["image"], field="file")}, 409),
        ("image: upload of text", "PUT", "/datastore/image?image=new-case", {"files": _up(files["text"], field="file")}, 422),
        ("image: id with ..", "PUT", "/datastore/image?image=../../x", {"files": _up(files["image"], field="file")}, 400),
        ("image: body over the limit", "PUT", "/datastore/image?image=huge",
         {"files": _up(files["big"], "huge.nii.gz", field="file")}, 413),
        ("image: more voxels than the limit", "PUT", "/datastore/image?image=huge",
         {"files": _up(files["voxels"], field="file")}, 413),
        ("infer: uploaded image over the voxel limit", "POST", "/infer/medsam?image=x",
         {**P({"roi": roi}), "files": _up(files["voxels"], field="file")}, 413),
        ("image: delete unknown id", "DELETE", "/datastore/image?id=BraTS-GLI-77777-000", {}, 404),
        ("image: delete id with ..", "DELETE", "/datastore/image?id=../x", {}, 400),
        ("label: delete unknown", "DELETE", "/datastore/label?id=BraTS-GLI-77777-000&tag=final", {}, 404),
        ("label: download with .. tag", "GET", f"/datastore/label?label={R}&tag=../../x", {}, 400),
        ("image: download unknown", "GET", "/datastore/image?image=BraTS-GLI-77777-000", {}, 404),
        ("image info: unknown id", "PUT", "/datastore/image/info?image=nosuch", {"data": {"info": "{}"}}, 404),
        ("image info: not JSON", "PUT", f"/datastore/image/info?image={R}", {"data": {"info": "{x"}}, 422),
        ("image info: a JSON list", "PUT", f"/datastore/image/info?image={R}", {"data": {"info": "[1]"}}, 422),
        ("label info: unknown label", "PUT", "/datastore/label/info?label=nosuch&tag=final", {"data": {"info": "{}"}}, 404),
        ("label info: not JSON", "PUT", f"/datastore/label/info?label={R}&tag=final", {"data": {"info": "{x"}}, 422),
        ("train: max_epochs 'abc'", "POST", "/train/medsam", {"json": {"max_epochs": "abc"}}, 422),
        ("train: max_epochs -1", "POST", "/train/medsam", {"json": {"max_epochs": -1}}, 422),
        ("train: unknown parameter", "POST", "/train/medsam", {"json": {"rm_rf": 1}}, 422),
        ("train: params a list", "POST", "/train/medsam", {"json": [1, 2]}, 422),
        ("train: unknown trainer", "POST", "/train/nosuch", {"json": {}}, 404),
        ("train: run_sync", "POST", "/train/medsam?run_sync=true", {"json": {}}, 422),
        ("train all: unknown trainer in params", "POST", "/train/", {"json": {"nosuch": {}}}, 422),
        ("activelearning: unknown strategy", "POST", "/activelearning/nosuch", {"json": {}}, 404),
        ("scoring: unknown method", "POST", "/scoring/nosuch", {"json": {}}, 404),
        ("model: unknown", "GET", "/model/nosuch", {}, 404),
        ("session: sessions are off", "PUT", "/session/", {"files": _up(files["image"], field="files")}, 404),
        ("not served: DICOM proxy", "GET", "/proxy/dicom/wado/x", {}, 404),
        ("not served: batch inference", "POST", "/batch/infer/medsam", {}, 404),
        ("not served: reload", "POST", "/reload", {}, 404),
    ]


def test_at_least_40_bad_requests_each_get_their_4xx_and_leave_the_studies_unchanged(server, studies, ref, files):
    before, stat = tree_digest(studies), tree_stat(studies)
    wrong, codes = [], []
    for what, method, path, kw, want in corpus(ref, files):
        r = server(method, path, **kw)
        codes.append(r.status_code)
        if r.status_code != want:
            wrong.append(f"{what}: {r.status_code} (want {want}) {r.text[:200]}")
        if tree_stat(studies) != stat:
            wrong.append(f"{what}: changed the studies folder")
            stat = tree_stat(studies)
    n = len(codes)
    FIGURES["bad inputs tried / 4xx / 5xx / files changed"] = \
        f"{n} / {sum(400 <= c < 500 for c in codes)} / {sum(c >= 500 for c in codes)} / " \
        f"{sum(a != b for a, b in zip(before.values(), tree_digest(studies).values()))}"
    assert n >= 40 and not wrong, "\n".join(wrong)
    assert tree_digest(studies) == before
    assert "Traceback" not in server(method="GET", path="/info/").text
    assert server.proc.poll() is None, "the server died"


def test_a_good_label_is_accepted_in_both_formats_and_the_originals_stay_unchanged(server, studies, ref, files):
    before = tree_digest(studies)
    for f in (files["good_nrrd"], files["good"]):
        r = server("PUT", f"/datastore/label?image={ref['id']}&tag=final", files=_up(f))
        assert r.status_code == 200, r.text
    labels = studies / ".brats_medsam" / "store" / "labels" / "final"
    assert [p.name for p in labels.glob(f"{ref['id']}.*")] == [f"{ref['id']}.nii.gz"]  # the NRRD was superseded
    assert tree_digest(studies) == before


def test_image_upload_delete_and_reupload_never_touch_the_original(server, studies, cases, files, tmp_path):
    cid = sorted(cases)[-1]
    original = Path(cases[cid].images["t2f"])
    before = tree_digest(studies)
    entry = studies / ".brats_medsam" / "store" / f"{cid}.nii.gz"
    assert entry.is_symlink()
    assert server("PUT", f"/datastore/image?image={cid}", files=_up(files["image"], field="file")).status_code == 409
    r = server("DELETE", f"/datastore/image?id={cid}")
    assert r.status_code == 200, r.text
    assert original.is_file() and not entry.exists() and not entry.is_symlink()
    assert cid not in server("GET", "/datastore/?output=all").json()["objects"]
    assert tree_digest(studies) == before
    # Upload under the freed id: stored as a file of its own in the store, never through a link into the studies.
    r = server("PUT", f"/datastore/image?image={cid}", files=_up(files["image"], field="file"))
    assert r.status_code == 200, r.text
    assert entry.is_file() and not entry.is_symlink()
    assert tree_digest(studies) == before


def test_a_leftover_upload_cannot_be_used_as_another_requests_image(server, studies, ref, files):
    """MONAI Label merges ``params`` over the image it saved from the upload; ours refuses the key, refuses paths
    as ids, and keeps uploads in a folder of its own that is emptied after each request."""
    uploads = studies / ".brats_medsam" / "uploads"
    i0, i1, j0, j1 = ref["box"]
    params = {"roi": [i0, i1, j0, j1, ref["k"], ref["k"]]}
    r = server("POST", "/infer/medsam?image=upload", data={"params": json.dumps(params)},
               files=_up(files["image"], "scan.nii.gz", field="file"))
    assert r.status_code == 200, r.text[:300]
    time.sleep(1)
    assert list(uploads.iterdir()) == []
    for p in ("/tmp/tmpabc.nii.gz", str(uploads / "upload-x.nii.gz")):
        assert server("POST", f"/infer/medsam?image={p}", data={"params": json.dumps(params)}).status_code == 400
        assert server("POST", f"/infer/medsam?image={ref['id']}",
                      data={"params": json.dumps({**params, "image": p})}).status_code == 422


def test_info_and_datastore_answer_within_a_second_while_a_long_3d_request_runs(server, ref):
    i0, i1, j0, j1 = ref["box"]
    k = ref["k"]
    flat = {"roi": [i0, i1, j0, j1, k, k]}
    assert server("POST", f"/infer/medsam?image={ref['id']}", data={"params": json.dumps(flat)}).status_code == 200
    # the deepest ROI the app takes (max_roi_depth 64): with 41 slices, several of them encoded by earlier tests, the
    # request was once done before 5 rounds of the calls below on a quiet machine
    z0 = max(0, k - 32)
    deep = {"roi": [i0, i1, j0, j1, z0, min(ref["shape"][2] - 1, z0 + 63)]}
    done = {}

    def long_request():
        t0 = time.time()
        done["status"] = server("POST", f"/infer/medsam?image={ref['id']}", data={"params": json.dumps(deep)}).status_code
        done["seconds"] = round(time.time() - t0, 1)

    th = threading.Thread(target=long_request)
    th.start()
    time.sleep(3)  # the long request is encoding by now
    lat = {"info": [], "datastore": [], "warm 2D prompt": []}
    while th.is_alive() and len(lat["info"]) < 40:  # every round starts while the long request runs
        for key, call in (("info", lambda: server("GET", "/info/")),
                          ("datastore", lambda: server("GET", "/datastore/?output=stats")),
                          ("warm 2D prompt", lambda: server("POST", f"/infer/medsam?image={ref['id']}",
                                                            data={"params": json.dumps(flat)}))):
            t0 = time.time()
            assert call().status_code == 200
            lat[key].append(time.time() - t0)
        time.sleep(0.2)
    th.join()
    p99 = {k: round(float(np.percentile(v, 99)), 3) for k, v in lat.items() if v}
    FIGURES["p99 during a long 3D request (s)"] = {**p99, "n": len(lat["info"]), "3D request": done}
    # at least 5 rounds overlapped the long request (it ending before the 40th round is fine: a fast machine)
    assert done["status"] == 200 and len(lat["info"]) >= 5, (done, len(lat["info"]))
    assert p99["info"] < 1.0 and p99["datastore"] < 1.0, p99
    assert p99["warm 2D prompt"] < 1.0, p99


def test_sigkill_during_a_burst_of_label_saves_loses_no_acknowledged_label(server, studies, cases, ref):
    from bratsmedsam.studies import write_label
    from bratsmedsam.validation import check_label_file

    ids = sorted(cases)[:3]
    tmp = studies.parent / "burst"
    tmp.mkdir(exist_ok=True)
    sent = []  # (image id, number of voxels: each save differs)
    acked: dict[str, int] = {}
    in_flight: dict[str, set] = {i: set() for i in ids}
    stop = threading.Event()

    def burst():
        n = 0
        while not stop.is_set():
            cid = ids[n % len(ids)]
            shape = ref["shape"]
            lab = np.zeros(shape, bool)
            lab[10:20, 10:20, 10:11 + n % 100] = True
            path = write_label(lab, cases[cid].images["t2f"], tmp / f"{cid}-{n}.nii.gz")
            in_flight[cid].add(int(lab.sum()))
            try:
                r = server("PUT", f"/datastore/label?image={cid}&tag=final", files=_up(path, f"{cid}.nii.gz"), timeout=30)
            except Exception:
                return
            if r.status_code == 200:
                acked[cid] = int(lab.sum())
                sent.append(cid)
            n += 1

    th = threading.Thread(target=burst)
    th.start()
    while len(sent) < 12:
        time.sleep(0.05)
    server.kill(signal.SIGKILL)
    stop.set()
    th.join()
    server.start()
    kept = 0
    for cid, voxels in acked.items():
        r = server("GET", f"/datastore/label?label={cid}&tag=final")
        assert r.status_code == 200
        got = tmp / f"got-{cid}.nii.gz"
        got.write_bytes(r.content)
        n = int(check_label_file(got, cases[cid].images["t2f"], (1,)).sum())
        # the last acknowledged save, or one sent after it that was in flight at the kill: never older, never broken
        assert n == voxels or n in in_flight[cid]
        kept += 1
    FIGURES["labels acknowledged / kept after kill -9"] = f"{len(sent)} saves acknowledged, latest of {len(acked)} " \
                                                          f"studies all kept ({kept}/{len(acked)})"


def test_a_truncated_index_is_set_aside_and_rebuilt_on_restart(server, studies):
    before = server("GET", "/datastore/?output=all").json()["objects"]
    server.stop()
    index = studies / ".brats_medsam" / "store" / "datastore_v2.json"
    index.write_bytes(index.read_bytes()[:50])
    server.start()
    after = server("GET", "/datastore/?output=all").json()["objects"]
    assert set(after) == set(before)
    assert all(set(after[i]["labels"]) == set(before[i]["labels"]) for i in before)
    assert list(index.parent.glob("datastore_v2.json.corrupt-*"))
    json.loads(index.read_text())


def test_a_request_over_its_time_gets_504_and_a_full_queue_503_while_the_server_answers(server, ref):
    server.stop()
    server.args += ["--infer-timeout", "1", "--infer-workers", "1", "--infer-queue", "0"]
    server.start()
    i0, i1, j0, j1 = ref["box"]
    k = ref["k"]
    deep = {"roi": [i0, i1, j0, j1, max(0, k - 20), k + 20]}  # 41 slices: seconds even on the fastest CPU
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("first", server(
        "POST", f"/infer/medsam?image={ref['id']}", data={"params": json.dumps(deep)})))
    th.start()
    time.sleep(1)
    second = server("POST", f"/infer/medsam?image={ref['id']}", data={"params": json.dumps(deep)})
    th.join()
    assert out["first"].status_code == 504 and "longer than 1 s" in out["first"].json()["detail"]
    assert second.status_code == 503 and second.headers.get("retry-after")
    assert server("GET", "/info/").status_code == 200
