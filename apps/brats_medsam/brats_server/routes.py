"""Endpoints that replace MONAI Label's where its own would block the server, accept bad input or write unsafely.

- ``POST /infer/{model}``: parameters validated first (422), the image must be a datastore id or a file uploaded
  in this request (kept in our own upload folder), the work runs on a bounded worker pool with a queue limit
  (503 when full) and a timeout (504), never on the event loop.
- ``POST /train/{model}``: the model and every training parameter checked before the job is queued.
- ``PUT /session/``: archives extracted with ``bratsmedsam.archive.safe_extract`` inside the session folder.
- ``/auth/``: the 3D Slicer login flow (username + password -> the identity provider's token), unchanged for the
  client, with wrong credentials answered 401 instead of 500.
Every other MONAI Label endpoint is kept but moved off the event loop (``offload``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from typing import List, Optional

from fastapi import BackgroundTasks, Depends, File, Form, HTTPException, UploadFile
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordRequestForm
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import remove_file

from bratsmedsam.errors import LimitError, UserError
from bratsmedsam.validation import VOLUME_SUFFIXES, check_image_file, volume_suffix

from .auth import AuthError, IdentityProviderError, OidcVerifier
from .checks import bad, check_image_id, check_infer_params, check_train_params, json_object, plain_params
from .settings import ServerSettings

logger = logging.getLogger(__name__)
class InferGate:
    """A bounded pool for inference: ``workers`` run, ``queue`` wait, the rest get 503; each waits ``timeout``."""

    def __init__(self, workers: int, queue: int, timeout: float):
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, workers), thread_name_prefix="infer")
        self.capacity, self.timeout = max(1, workers) + max(0, queue), timeout
        self.pending, self._lock = 0, threading.Lock()

    def run(self, fn, *args):
        with self._lock:
            if self.pending >= self.capacity:
                raise HTTPException(status_code=503, detail=f"the server is busy ({self.pending} requests running or "
                                                            "queued); try again shortly", headers={"Retry-After": "5"})
            self.pending += 1
        fut = self.pool.submit(fn, *args)
        fut.add_done_callback(lambda _: self._done())
        try:
            return fut.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise HTTPException(status_code=504, detail=f"inference took longer than {self.timeout:.0f} s; "
                                                        "try a smaller ROI") from None

    def _done(self):
        with self._lock:
            self.pending -= 1


def _save_upload(upload: UploadFile, folder: str, background_tasks: BackgroundTasks) -> str:
    name = upload.filename or "upload.nii.gz"
    ext = volume_suffix(name)
    if ext is None:
        bad(f"uploaded file {os.path.basename(name)!r}: expected one of {VOLUME_SUFFIXES}", 415)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="upload-", suffix=ext, dir=folder)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(upload.file, out)
    background_tasks.add_task(remove_file, path)
    return path


# MONAI Label's routes that ours replace (the rest of its routers is kept, moved off the event loop).
# Two are dropped without a replacement: POST /scoring/ (all methods) and PUT /datastore/updatelabelinfo (deprecated).
REPLACED = {("POST", "/infer/{model}"), ("POST", "/train/{model}"), ("POST", "/train/"), ("PUT", "/session/"),
            ("POST", "/activelearning/{strategy}"), ("POST", "/scoring/{method}"), ("POST", "/scoring/"),
            ("PUT", "/model/{model}"), ("DELETE", "/model/{model}"), ("PUT", "/datastore/image/info"),
            ("PUT", "/datastore/label/info"), ("PUT", "/datastore/updatelabelinfo")}


def install(app, s: ServerSettings, verifier: OidcVerifier | None) -> None:
    """Our endpoints on ``app`` (MONAI Label's routers are included by ``asgi.build``)."""
    gate = InferGate(s.infer_workers, s.infer_queue, s.infer_timeout_s)

    def infer(background_tasks: BackgroundTasks, model: str, image: str = "", session_id: str = "",
              params: str = Form("{}"), file: UploadFile = File(None), label: UploadFile = File(None),
              output: Optional[ResultType] = None):
        instance = app_instance()
        if instance.infer_task(model) is None:
            bad(f"model {model!r} is not available here (see GET /info/)", 404)
        p = check_infer_params(params)
        if output == ResultType.dicom_seg:
            bad("output dicom_seg needs a DICOM datastore; this server stores NIfTI")
        if label is not None:
            bad("this server's models take no label input")
        if session_id:
            if not s.sessions:
                bad("sessions are off on this server", 404)
            check_image_id(session_id)
            if instance.sessions() is None or instance.sessions().get_session(session_id) is None:
                bad(f"session {session_id!r} not found", 404)
            image = ""
        elif file is not None:
            image = _save_upload(file, s.upload_dir, background_tasks)
            try:
                check_image_file(image, instance.cfg.max_voxels)
            except UserError as exc:
                remove_file(image)
                bad(str(exc), 413 if isinstance(exc, LimitError) else 422)
        else:
            check_image_id(image)
            if not instance.datastore().get_image_uri(image):
                bad(f"image {image!r} is not in the datastore", 404)
        try:
            return gate.run(run_inference, background_tasks, model, image, session_id, json.dumps(p), None, None,
                            output)
        except BaseException:
            if file is not None:  # an error response runs no background task: the upload goes now
                remove_file(image)
            raise

    def train(model: str, params: Optional[dict] = None, run_sync: Optional[bool] = False,
              enqueue: Optional[bool] = False):
        from monailabel.endpoints.train import run_model

        if run_sync:
            bad("run_sync is not offered: training runs in the background (GET /train/ for its status)")
        trainers = app_instance().info()["trainers"]
        if model not in trainers:
            bad(f"trainer {model!r} does not exist; trainers: {', '.join(sorted(trainers))}", 404)
        return run_model(model, check_train_params(params, trainers[model].get("config", {})), False, bool(enqueue))

    def train_all(params: Optional[dict] = None, run_sync: Optional[bool] = False):
        from monailabel.endpoints.train import run

        if run_sync:
            bad("run_sync is not offered: training runs in the background (GET /train/ for its status)")
        trainers = app_instance().info()["trainers"]
        params = params or {}
        unknown = sorted(set(params) - set(trainers))
        if unknown:
            bad(f"unknown trainers in params: {', '.join(unknown)}")
        return run({m: check_train_params(params.get(m), trainers[m].get("config", {})) for m in trainers})

    def create_session(uncompress: bool = False, expiry: int = 0,
                       files: List[UploadFile] = File(...)):
        sessions = app_instance().sessions()
        if sessions is None:
            bad("sessions are off on this server", 404)
        if not files:
            bad("no file uploaded")
        incoming = os.path.join(s.session_dir, f".incoming-{uuid.uuid4().hex}")
        os.makedirs(incoming, mode=0o700)
        try:
            src = _receive_session_files(files, incoming, uncompress, s.max_upload_bytes * 4)
            sid, info = sessions.add_session(src, max(0, min(int(expiry), s.session_expiry_s)), False)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)  # add_session moved what it keeps into the session
        return {"session_id": sid, "session_info": info.to_json()}

    def next_sample(strategy: str, params: Optional[dict] = None):
        from monailabel.endpoints.activelearning import sample

        if strategy not in app_instance().info()["strategies"]:
            bad(f"strategy {strategy!r} does not exist (see GET /info/)", 404)
        return sample(strategy, plain_params(params))

    def score(method: str, params: Optional[dict] = None):
        from monailabel.endpoints.scoring import run_method

        if method not in app_instance().info()["scoring"]:
            bad(f"scoring method {method!r} does not exist (see GET /info/)", 404)
        return run_method(method, plain_params(params), False)

    def image_info(image: str, info: str = Form("{}")):
        app_instance().datastore().update_image_info(check_image_id(image), json_object(info, "info"))
        return {}

    def label_info(label: str, tag: str, info: str = Form("{}")):
        app_instance().datastore().update_label_info(check_image_id(label), tag, json_object(info, "info"))
        return {}

    def upload_model(model: str, file: UploadFile = File(...)):
        instance = app_instance()
        if instance.model_file(model, validate=False) is None:
            bad(f"model {model!r} has no uploadable file (medsam, detector)", 404)
        os.makedirs(s.upload_dir, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="model-", suffix=".pt", dir=s.upload_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(file.file, out)
            return {"model": model, "sha256": instance.publish_model(model, path)}
        finally:
            remove_file(path)

    def delete_model(model: str):
        return {"model": model, "moved_to": os.path.basename(app_instance().retire_model(model))}

    async def auth_enabled():
        return {"enabled": verifier is not None, "client_id": s.client_id if verifier else None,
                "realm": s.realm_uri if verifier else None}

    def auth_token(form: OAuth2PasswordRequestForm = Depends()):
        if verifier is None:
            return {"access_token": None, "token_type": None}
        try:
            return verifier.password_grant(form.username, form.password)
        except AuthError as exc:
            bad(str(exc), 401)
        except IdentityProviderError as exc:
            logger.error(str(exc))
            bad("the identity provider cannot be reached; try again later", 503)

    async def auth_valid():
        return {"valid": True}

    app.add_api_route("/infer/{model}", infer, methods=["POST"], summary="Run a model (validated, pooled)")
    app.add_api_route("/train/{model}", train, methods=["POST"], summary="Start training (validated)")
    app.add_api_route("/train/", train_all, methods=["POST"], include_in_schema=False)
    if s.sessions:
        app.add_api_route("/session/", create_session, methods=["PUT"], summary="Upload a volume as a session")
    app.add_api_route("/activelearning/{strategy}", next_sample, methods=["POST"], summary="Next study to annotate")
    app.add_api_route("/scoring/{method}", score, methods=["POST"], summary="Score unlabelled studies")
    app.add_api_route("/datastore/image/info", image_info, methods=["PUT"], summary="Update an image's info")
    app.add_api_route("/datastore/label/info", label_info, methods=["PUT"], summary="Update a label's info")
    app.add_api_route("/model/{model}", upload_model, methods=["PUT"], summary="Publish a model file (checked)")
    app.add_api_route("/model/{model}", delete_model, methods=["DELETE"], summary="Retire a model file (kept aside)")
    app.add_api_route("/auth/", auth_enabled, methods=["GET"], summary="Is authentication on")
    app.add_api_route("/auth/token", auth_token, methods=["POST"], summary="Username + password -> token")
    app.add_api_route("/auth/token/valid", auth_valid, methods=["GET"], summary="Check a token")


def _receive_session_files(files: List[UploadFile], folder: str, uncompress: bool, max_bytes: int) -> str:
    """The uploaded file (or the folder of several, or the unpacked archive) inside ``folder``."""
    from bratsmedsam.archive import safe_extract

    saved = []
    for f in files:
        name = check_image_id(os.path.basename((f.filename or "").replace("\\", "/")) or "upload")
        path = os.path.join(folder, name)
        if os.path.exists(path):
            bad(f"file {name!r} is uploaded twice")
        with open(path, "xb") as out:
            shutil.copyfileobj(f.file, out)
        saved.append(path)
    if not uncompress:
        return saved[0] if len(saved) == 1 else folder
    if len(saved) != 1:
        bad("uncompress takes exactly one archive")
    target = os.path.join(folder, "unpacked")
    try:
        extracted = safe_extract(saved[0], target, max_bytes=max_bytes)
    except UserError as exc:
        bad(f"archive refused: {exc}")
    return str(extracted[0]) if len(extracted) == 1 else target  # one volume: the session's image is that file


def offload(router, skip: set = REPLACED):
    """``router`` (one of MONAI Label's) without the routes in ``skip``, and with every ``async def`` endpoint
    (they run synchronous work, which would freeze the event loop) turned into a function FastAPI runs in its
    thread pool. Changes the router in place, before it is included; returns it."""
    keep, threaded = [], []
    for r in router.routes:
        if isinstance(r, APIRoute):
            if any((m, r.path) in skip for m in r.methods):
                continue
            if asyncio.iscoroutinefunction(r.endpoint):
                threaded.append(r)
                continue
        keep.append(r)
    router.routes[:] = keep
    for r in threaded:
        router.add_api_route(r.path[len(router.prefix):], _in_thread(r.endpoint), methods=sorted(r.methods),
                             name=r.name, summary=r.summary, include_in_schema=r.include_in_schema,
                             response_class=r.response_class, responses=r.responses, deprecated=r.deprecated,
                             tags=r.tags, dependencies=r.dependencies, response_model=r.response_model)
    return router


def _in_thread(fn):
    """A plain function with ``fn``'s signature (FastAPI reads it for parameters) that runs the coroutine in the
    worker thread's own event loop. Not ``functools.wraps``: FastAPI would unwrap it and see a coroutine again."""
    def call(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    call.__signature__ = inspect.signature(fn)
    call.__name__, call.__doc__ = fn.__name__, fn.__doc__
    return call
