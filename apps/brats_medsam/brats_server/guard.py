"""ASGI middleware in front of MONAI Label: endpoint table, bearer tokens and roles, body-size limit.

Runs before any MONAI Label code sees the request, so an unknown route, a missing or bad token, a missing
role or an oversized body never reaches the app (404 / 401 / 403 / 413, JSON ``{"detail": ...}``).
"""

from __future__ import annotations

import json
import logging

import anyio

from . import policy
from .auth import AuthError, IdentityProviderError, OidcVerifier

logger = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    pass


async def send_json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class Guard:
    def __init__(self, app, verifier: OidcVerifier | None, max_body: int, sessions: bool):
        self.app, self.verifier, self.max_body, self.sessions = app, verifier, max_body, sessions

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        rule = policy.match(method, path, self.sessions)
        if rule is None:
            return await send_json(send, 404,
                                   f"{method} {path} is not served by this server")
        scope.setdefault("state", {})
        if self.verifier is not None and rule.role != policy.PUBLIC:
            denied = await self._authorise(scope, rule)
            if denied:
                return await send_json(send, *denied)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await send_json(send, 400, "Content-Length is not a number")
            if n > self.max_body:
                return await send_json(send, 413, f"request body of {n:,} bytes is over this server's limit of "
                                                  f"{self.max_body:,} bytes")
        received, started = 0, False

        async def limited_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge()
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_json(send, 413, f"request body is over this server's limit of {self.max_body:,} bytes")

    async def _authorise(self, scope, rule) -> tuple | None:
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        challenge = [(b"www-authenticate", b"Bearer")]
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            return 401, "authentication required: send 'Authorization: Bearer <token>' (POST /auth/token)", challenge
        try:
            ident = await anyio.to_thread.run_sync(self.verifier.verify, auth[7:].strip())
        except AuthError as exc:
            return 401, str(exc), challenge
        except IdentityProviderError as exc:
            logger.error(str(exc))
            return 503, "the identity provider cannot be reached; try again later"
        if not ident.has(rule.role):
            return 403, f"{rule.what}: needs role {rule.role!r} or higher; {ident.username!r} does not have it"
        scope["state"]["identity"] = ident
        return None
