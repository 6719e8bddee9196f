"""A test OpenID Connect identity provider shaped like a Keycloak realm: its own RSA key, the discovery document,
the JWKS and a password-grant token endpoint, served on 127.0.0.1 from a thread. Not a test module.

``token(...)`` signs any token a test needs: valid, expired, from another key, issuer or audience.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from serverkit import free_port

CLIENT_ID = "monailabel-app"
ROLE = {"user": "monailabel-user", "annotator": "monailabel-annotator", "reviewer": "monailabel-reviewer",
        "admin": "monailabel-admin"}


class LocalIdP:
    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "brats-test-key"
        self.port = free_port()
        self.realm = f"http://127.0.0.1:{self.port}/realms/brats"
        # username -> (password, role); "nobody" has no MONAI Label role at all
        self.users = {name: (f"{name}-pw", name) for name in ROLE} | {"nobody": ("nobody-pw", None)}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()

    def token(self, role: str | None = "admin", username: str | None = None, expires_in: int = 300,
              key=None, issuer: str | None = None, audience: str | None = CLIENT_ID, kid: str | None = None,
              algorithm: str = "RS256") -> str:
        now = int(time.time())
        claims = {"iss": issuer or self.realm, "sub": f"id-{username or role}", "iat": now - 10,
                  "exp": now + expires_in, "preferred_username": username or role or "nobody",
                  "azp": CLIENT_ID, "realm_access": {"roles": [ROLE[role]] if role else ["offline_access"]}}
        if audience:
            claims["aud"] = [audience, "account"]
        signing = "a-secret-the-attacker-knows-32-bytes+" if algorithm == "HS256" else (key or self.key)
        return jwt.encode(claims, signing, algorithm=algorithm, headers={"kid": kid or self.kid})

    def _jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def _handler(self):
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                base = "/realms/brats"
                if self.path == f"{base}/.well-known/openid-configuration":
                    return self._json(200, {"issuer": idp.realm, "jwks_uri": f"{idp.realm}/protocol/openid-connect/certs",
                                            "token_endpoint": f"{idp.realm}/protocol/openid-connect/token"})
                if self.path == f"{base}/protocol/openid-connect/certs":
                    return self._json(200, idp._jwks())
                return self._json(404, {"error": "not found"})

            def do_POST(self):
                if self.path != "/realms/brats/protocol/openid-connect/token":
                    return self._json(404, {"error": "not found"})
                form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
                user = idp.users.get(form.get("username"))
                if form.get("grant_type") != "password" or form.get("client_id") != CLIENT_ID:
                    return self._json(400, {"error": "unauthorized_client"})
                if user is None or user[0] != form.get("password"):
                    return self._json(401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
                return self._json(200, {"access_token": idp.token(user[1], form["username"]), "token_type": "Bearer",
                                        "expires_in": 300})

        return Handler
