"""``brats_server.asgi:app``: MONAI Label's routers in our FastAPI app, behind our guard. Started by ``serve``.

MONAI Label reads its own settings (``MONAI_LABEL_*``) from the environment at import; ``serve`` sets them
(sessions, session folder, auth on/off) together with ours (``BRATS_MEDSAM_SERVER``).
"""

from __future__ import annotations

import json
import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.middleware.cors import CORSMiddleware

from . import routes
from .auth import OidcVerifier
from .guard import Guard
from .settings import ServerSettings

logger = logging.getLogger(__name__)


def build():
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from monailabel.datastore.local import ImageNotFoundException, LabelNotFoundException
    from monailabel.endpoints import activelearning, datastore, info, logs, model, scoring, session, train
    from monailabel.endpoints.user.auth import DEFAULT_USER, User, get_current_user
    from monailabel.interfaces.utils.app import app_instance

    from bratsmedsam.errors import UserError

    s = ServerSettings.from_env()
    verifier = OidcVerifier(s) if s.auth else None

    @asynccontextmanager
    async def lifespan(_):
        instance = app_instance()  # MONAI Label's app start: the datastore, tasks, background scoring
        instance.server_mode(True)
        instance.on_init_complete()
        yield

    # Not MONAI Label's FastAPI object: its CORS middleware allows every origin with credentials, and it
    # includes routers we do not serve (DICOM proxy, OHIF, batch and WSI inference).
    ml = FastAPI(title="brats-medsam (MONAI Label)", docs_url=None, redoc_url="/docs", openapi_url="/openapi.json",
                 lifespan=lifespan)
    for module in (info, activelearning, datastore, train, scoring, model, logs) + ((session,) if s.sessions else ()):
        ml.include_router(routes.offload(module.router))
    routes.install(ml, s, verifier)

    names = [s.role_user, s.role_annotator, s.role_reviewer, s.role_admin]

    async def current_user(request: Request):
        """MONAI Label's own role checks see the identity our guard verified, with the roles it implies."""
        ident = request.scope.get("state", {}).get("identity")
        if ident is None:
            return DEFAULT_USER
        return User(username=ident.username, roles=names[: ident.level + 1])

    ml.dependency_overrides[get_current_user] = current_user

    def handler(status: int, message):
        async def handle(request, exc):
            return JSONResponse({"detail": message(exc)}, status_code=status)
        return handle

    ml.add_exception_handler(json.JSONDecodeError, handler(422, lambda e: f"not valid JSON: {e.msg}"))
    ml.add_exception_handler(ImageNotFoundException, handler(404, str))
    ml.add_exception_handler(LabelNotFoundException, handler(404, str))
    ml.add_exception_handler(UserError, handler(400, str))

    guarded = Guard(ml, verifier, s.max_upload_bytes, s.sessions)
    return CORSMiddleware(guarded, allow_origins=list(s.cors_origins), allow_credentials=bool(s.cors_origins),
                          allow_methods=["GET", "POST", "PUT", "DELETE", "HEAD"],
                          allow_headers=["Authorization", "Content-Type"])


app = build()
