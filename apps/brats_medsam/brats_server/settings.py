"""Server settings (HTTP side): one JSON object in ``BRATS_MEDSAM_SERVER``, written by ``serve``, read once here."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

ENV = "BRATS_MEDSAM_SERVER"


@dataclass
class ServerSettings:
    state_dir: str = ""  # STUDIES/.brats_medsam: sessions, uploads
    # Authentication (OIDC, e.g. Keycloak). realm_uri: https://HOST/realms/REALM
    auth: bool = False
    realm_uri: str = ""
    client_id: str = "monailabel-app"
    client_secret: str = ""  # only for a confidential client; a public client (Slicer's usual) has none
    audience: str = ""  # required 'aud' of access tokens; empty = client_id
    roles_claim: str = "realm_access#roles"
    username_claim: str = "preferred_username"
    role_admin: str = "monailabel-admin"
    role_reviewer: str = "monailabel-reviewer"
    role_annotator: str = "monailabel-annotator"
    role_user: str = "monailabel-user"
    auth_timeout_s: float = 10.0
    # Cross-origin access: none unless listed (exact origins, e.g. https://viewer.example.org)
    cors_origins: list[str] = field(default_factory=list)
    # Sessions (upload a volume without adding it to the datastore): off unless asked for
    sessions: bool = False
    session_expiry_s: int = 3600
    # Limits
    max_upload_mb: int = 512
    infer_workers: int = 2
    infer_queue: int = 8
    infer_timeout_s: int = 600

    @property
    def session_dir(self) -> str:
        return os.path.join(self.state_dir, "sessions")

    @property
    def upload_dir(self) -> str:
        return os.path.join(self.state_dir, "uploads")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb) * 1024 * 1024

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServerSettings":
        raw = json.loads(os.environ.get(ENV) or "{}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown server settings: {', '.join(unknown)}")
        return cls(**raw)
