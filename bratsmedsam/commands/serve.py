"""``serve``: the MONAI Label app on a BraTS studies folder (offline, 127.0.0.1 by default).

The studies folder keeps its BraTS layout. ``serve`` builds a flat MONAI Label datastore inside it,
``STUDIES/.brats_medsam/store/``: one image per case, ``<case_id>.nii.gz``, a symlink to the case's
displayed modality (t2f, else t1c); the app finds the sibling modalities through the link. A case's
BraTS segmentation becomes the label ``labels/<seg-tag>/<case_id>.nii.gz`` (the app's region as value 1).
Published models live in ``STUDIES/.brats_medsam/model/`` unless ``--model-dir`` says otherwise.

The server is MONAI Label behind our guard (``apps/brats_medsam/brats_server``): only listed endpoints, a role
per endpoint when ``--auth-realm`` names an OpenID Connect realm (Keycloak), no cross-origin access unless
``--cors-origin`` lists one, sessions off unless ``--sessions``. Without authentication it binds only to the
loopback address unless ``--insecure`` is given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..offline import PROJECT_ROOT
from ._stacks import add_stack_arguments

APP_DIR = PROJECT_ROOT / "apps" / "brats_medsam"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub) -> None:
    p = sub.add_parser("serve", help="start the MONAI Label app (detector / medsam / pipeline) on a studies folder",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--studies", type=Path, required=True, help="folder of BraTS case folders")
    p.add_argument("--detector", type=Path, help="YOLO weights to serve (copied into the model folder)")
    p.add_argument("--decoder", type=Path, help="fine-tuned mask decoder checkpoint (train-segmenter output)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-dir", type=Path, help="published models (default STUDIES/.brats_medsam/model)")
    add_stack_arguments(p, "the one the served model records (a model trained on other channels is refused)")
    p.add_argument("--region", default="WT", choices=["BraTS", "WT", "TC", "ET"],
                   help="WT (default), TC or ET: that one region, as label 1; BraTS: the label map NCR 1 / ED 2 / ET 3 "
                        "from one decoder pass per prompt (a head per region) - give it a --decoder trained with "
                        "`train-segmenter --regions BraTS` (or train it from the server): zero-shot, the TC and ET "
                        "heads draw about what WT draws")
    p.add_argument("--display", default="t2f,t1c", help="modality shown per study, first one present")
    p.add_argument("--seg-tag", default="final", choices=["final", "original", "none"],
                   help="datastore tag for existing BraTS segmentations (final = used for training)")
    p.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), default=[],
                   help="extra app setting (see apps/brats_medsam/lib/configs/settings.py)")
    a = p.add_argument_group("access (see README, Access)")
    a.add_argument("--auth-realm", metavar="URI", default=os.environ.get("BRATS_MEDSAM_AUTH_REALM", ""),
                   help="OpenID Connect realm, e.g. https://keycloak.example.org/realms/monailabel: turns on "
                        "bearer-token authentication and roles (env BRATS_MEDSAM_AUTH_REALM)")
    a.add_argument("--auth-client-id", default="monailabel-app", help="the realm's client for this server")
    a.add_argument("--auth-audience", default="", help="required token audience (default: the client id)")
    a.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin allowed to call the server from a browser (repeatable; default none)")
    a.add_argument("--sessions", action="store_true", help="allow PUT /session/ (volumes outside the datastore)")
    a.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without authentication (anyone who reaches it is admin)")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-upload-mb", type=int, default=512, help="largest request body (413 beyond)")
    lim.add_argument("--infer-workers", type=int, default=2, help="inference requests run at once")
    lim.add_argument("--infer-queue", type=int, default=8, help="inference requests waiting (503 beyond)")
    lim.add_argument("--infer-timeout", type=int, default=600, help="seconds an inference request may take (504)")
    p.add_argument("--dry-run", action="store_true", help="build the datastore, print the command, do not start")
    p.set_defaults(func=run)


def drop_stale_temps(*folders: Path) -> int:
    """Temp files a killed writer left beside its target (``atomic_path`` names them ``.<name>.*.tmp*``)."""
    n = 0
    for folder in folders:
        if folder.is_dir():
            for p in folder.rglob(".*.tmp*"):
                if p.is_file() and not p.is_symlink():
                    p.unlink()
                    n += 1
    return n


def check_exposure(args) -> None:
    from ..errors import UserError

    if args.host not in LOOPBACK and not args.auth_realm and not args.insecure:
        raise UserError(f"--host {args.host} would let anyone who reaches this machine read every study and act as "
                        "admin: give --auth-realm (OpenID Connect, see README, Access), or --insecure if this network "
                        "is trusted, or keep the default 127.0.0.1")


def server_settings(args, state: Path):
    sys.path.insert(0, str(APP_DIR))
    from brats_server.settings import ServerSettings

    return ServerSettings(state_dir=str(state),
                          auth=bool(args.auth_realm), realm_uri=args.auth_realm, client_id=args.auth_client_id,
                          client_secret=os.environ.get("BRATS_MEDSAM_AUTH_CLIENT_SECRET", ""),
                          audience=args.auth_audience, cors_origins=list(args.cors_origin), sessions=args.sessions,
                          max_upload_mb=args.max_upload_mb, infer_workers=args.infer_workers,
                          infer_queue=args.infer_queue, infer_timeout_s=args.infer_timeout)


def server_command(args, store: Path, model_dir: Path) -> list[str]:
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP_DIR), "--studies", str(store),
           "--host", args.host, "--port", str(args.port), "--uvicorn_app", "brats_server.asgi:app",
           "--conf", "model_dir", str(model_dir), "--conf", "detector_channels", ",".join(args.stacks.detector),
           "--conf", "segmenter_channels", ",".join(args.stacks.segmenter),
           "--conf", "region", args.region, "--conf", "sam2", "false"]
    for k, v in args.conf:
        cmd += ["--conf", k, v]
    return cmd


def run(args) -> int:
    from ..atomic import atomic_path
    from ..errors import UserError
    import shutil

    check_exposure(args)
    studies = args.studies.resolve()
    if not studies.is_dir():
        raise UserError(f"studies folder {studies} does not exist (expected one sub-folder per BraTS case)")
    state = studies / ".brats_medsam"
    store = state / "store"
    model_dir = (args.model_dir or studies / ".brats_medsam" / "model").resolve()
    model_dir.mkdir(parents=True, exist_ok=True)
    from ..studies import build_store

    shown = build_store(studies, store, tuple(args.display.split(",")), args.region, args.seg_tag)
    drop_stale_temps(store, model_dir)
    srv = server_settings(args, state)
    shutil.rmtree(srv.upload_dir, ignore_errors=True)  # uploads live for one request: none survive a restart
    for d in (srv.session_dir, srv.upload_dir):
        Path(d).mkdir(mode=0o700, parents=True, exist_ok=True)
    from ..channel_check import resolve_stacks
    from ._stacks import given_stacks

    # before anything is published: a model made for other channels is refused, not copied
    args.stacks = resolve_stacks(*given_stacks(args), args.detector or model_dir / "detector.pt",
                                 args.decoder or model_dir / "medsam_decoder.pt")
    for src, name in ((args.detector, "detector.pt"), (args.decoder, "medsam_decoder.pt")):
        if src is not None:
            if not src.is_file():
                raise UserError(f"{src}: no such weights file")
            with atomic_path(model_dir / name) as tmp:
                shutil.copyfile(src, tmp)
    cmd = server_command(args, store, model_dir)
    print(f"serving {len(shown)} studies from {studies} on http://{args.host}:{args.port}", flush=True)
    print(" ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), str(APP_DIR), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MONAI_LABEL_DATASTORE_AUTO_RELOAD", "true")
    env.update({
        "BRATS_MEDSAM_SERVER": srv.to_env(),
        "MONAI_LABEL_SESSIONS": "true" if srv.sessions else "false",
        "MONAI_LABEL_SESSION_PATH": srv.session_dir,
        "MONAI_LABEL_SESSION_EXPIRY": str(srv.session_expiry_s),
        "MONAI_LABEL_AUTH_ENABLE": "true" if srv.auth else "false",
        "MONAI_LABEL_AUTH_REALM_URI": srv.realm_uri,
        "MONAI_LABEL_AUTH_CLIENT_ID": srv.client_id,
    })
    os.execve(sys.executable, cmd, env)
    return 0  # not reached
