"""OpenID Connect bearer tokens, checked as MONAI Label 0.8.5 meant to and does not (it omits ``algorithms=``).

The issuer (Keycloak realm) is discovered from ``REALM/.well-known/openid-configuration``; its signing keys come
from the ``jwks_uri`` there and are refetched (at most every 30 s) when a token names an unknown key id. A token is
accepted only if it is RS256-signed by one of those keys, unexpired, issued by that issuer for our audience.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import jwt

from .settings import ServerSettings

logger = logging.getLogger(__name__)
ALGORITHMS = ["RS256"]
ROLES = ("user", "annotator", "reviewer", "admin")  # each includes the ones before it


class AuthError(Exception):
    """401: the token is missing or not one we accept (the message says which check failed)."""


class IdentityProviderError(Exception):
    """503: the identity provider could not be reached or answered nonsense."""


@dataclass(frozen=True)
class Identity:
    username: str
    roles: frozenset  # the token's role names as the identity provider spells them
    level: int  # highest of ROLES held, -1 for none

    def has(self, role: str) -> bool:
        return self.level >= ROLES.index(role)


def _get_json(url: str, timeout: float, data: bytes | None = None) -> dict:
    req = urllib.request.Request(url, data=data, headers={"Accept": "application/json"})
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (https/http URLs from our settings)
        return json.loads(r.read().decode("utf-8"))


class OidcVerifier:
    def __init__(self, s: ServerSettings):
        if not s.realm_uri.startswith(("https://", "http://")):
            raise ValueError(f"auth realm URI {s.realm_uri!r}: expected https://HOST/realms/REALM")
        self.s = s
        self.audience = s.audience or s.client_id
        self.role_names = {s.role_user: 0, s.role_annotator: 1, s.role_reviewer: 2, s.role_admin: 3}
        self._lock = threading.Lock()
        self._config: dict | None = None
        self._keys: dict[str, object] = {}
        self._keys_at = 0.0

    def config(self) -> dict:
        with self._lock:
            if self._config is None:
                url = self.s.realm_uri.rstrip("/") + "/.well-known/openid-configuration"
                try:
                    cfg = _get_json(url, self.s.auth_timeout_s)
                except (OSError, ValueError) as exc:
                    raise IdentityProviderError(f"identity provider {url} did not answer: {exc}") from None
                if not isinstance(cfg, dict) or not all(k in cfg for k in ("issuer", "jwks_uri", "token_endpoint")):
                    raise IdentityProviderError(f"{url} is not an OpenID configuration")
                self._config = cfg
            return self._config

    def _key(self, kid: str | None):
        with self._lock:
            if kid in self._keys:
                return self._keys[kid]
            if time.time() - self._keys_at < 30 and self._keys:
                return None
        cfg = self.config()
        try:
            jwks = _get_json(cfg["jwks_uri"], self.s.auth_timeout_s)
            keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_type == "RSA"}
        except (OSError, ValueError, jwt.PyJWKSetError) as exc:
            raise IdentityProviderError(f"signing keys at {cfg['jwks_uri']} unusable: {exc}") from None
        with self._lock:
            self._keys, self._keys_at = keys, time.time()
            return keys.get(kid)

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("the bearer token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise AuthError(f"token algorithm {header.get('alg')!r} is not accepted (RS256 only)")
        key = self._key(header.get("kid"))
        if key is None:
            raise AuthError("the token is not signed by a key of the configured identity provider")
        try:
            claims = jwt.decode(token, key.key, algorithms=ALGORITHMS, audience=self.audience,
                                issuer=self.config()["issuer"], leeway=30,
                                options={"require": ["exp", "iat", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(f"the token is not issued for audience {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token is from another issuer") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the token is invalid: {exc}") from None
        roles = claims
        for part in self.s.roles_claim.split("#"):
            roles = roles.get(part) if isinstance(roles, dict) else None
        roles = frozenset(r for r in (roles or []) if isinstance(r, str))
        level = max((self.role_names[r] for r in roles if r in self.role_names), default=-1)
        return Identity(str(claims.get(self.s.username_claim) or claims.get("sub") or "?"), roles, level)

    def password_grant(self, username: str, password: str) -> dict:
        """What 3D Slicer's MONAI Label plugin does through ``POST /auth/token``: trade a username and password
        for tokens at the identity provider's token endpoint. Raises ``AuthError`` for wrong credentials."""
        form = {"grant_type": "password", "client_id": self.s.client_id, "username": username, "password": password,
                "scope": "openid"}
        if self.s.client_secret:
            form["client_secret"] = self.s.client_secret
        url = self.config()["token_endpoint"]
        try:
            return _get_json(url, self.s.auth_timeout_s, urllib.parse.urlencode(form).encode())
        except urllib.error.HTTPError as exc:
            if exc.code in (400, 401, 403):
                raise AuthError("wrong username or password") from None
            raise IdentityProviderError(f"token endpoint answered {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise IdentityProviderError(f"token endpoint {url} did not answer: {exc}") from None
