"""Every endpoint this server answers, with the least role that may call it. Anything not listed is 404.

Roles nest: admin > reviewer > annotator > user. Without authentication every caller is treated as admin, which
``serve`` allows on the loopback address only (or with ``--insecure``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PUBLIC = "public"


@dataclass(frozen=True)
class Rule:
    methods: frozenset
    pattern: re.Pattern
    role: str
    what: str
    needs_sessions: bool = False


def _r(methods: str, path: str, role: str, what: str, sessions: bool = False) -> Rule:
    return Rule(frozenset(methods.split(",")), re.compile(f"^{path}$"), role, what, sessions)


NAME = r"[A-Za-z0-9_.-]+"
RULES = (
    _r("GET", r"/auth/?", PUBLIC, "is authentication on (Slicer asks first)"),
    _r("POST", r"/auth/token", PUBLIC, "username + password -> bearer token (forwarded to the identity provider)"),
    _r("GET", r"/auth/token/valid", "user", "check a token"),
    _r("GET", r"/info/?", "user", "app, models, labels, trainers, strategies"),
    _r("GET", r"/(docs|openapi\.json)", "user", "API documentation"),
    _r("POST", rf"/infer/{NAME}", "user", "run a model"),
    _r("POST", rf"/activelearning/{NAME}", "user", "next study to annotate"),
    _r("GET", r"/datastore/?", "user", "list studies and labels"),
    _r("GET,HEAD", r"/datastore/image", "user", "download or check an image"),
    _r("GET", r"/datastore/image/info", "user", "image info"),
    _r("GET,HEAD", r"/datastore/label", "user", "download or check a label"),
    _r("GET", r"/datastore/label/info", "user", "label info"),
    _r("PUT", r"/datastore/label", "annotator", "submit a label"),
    _r("PUT", r"/datastore/label/info", "annotator", "update a label's info"),
    _r("PUT", r"/datastore/?", "admin", "upload an image (deprecated path)"),
    _r("PUT", r"/datastore/image", "admin", "upload an image"),
    _r("PUT", r"/datastore/image/info", "admin", "update an image's info"),
    _r("DELETE", r"/datastore/image", "admin", "remove an image from the store (never the original)"),
    _r("DELETE", r"/datastore/label", "admin", "remove a label"),
    _r("GET", r"/datastore/dataset", "admin", "download every image and label as a zip"),
    _r("GET", r"/train/?", "user", "training status"),
    _r("POST", rf"/train/({NAME})?", "admin", "start training"),
    _r("DELETE", r"/train/?", "admin", "stop training"),
    _r("GET", r"/scoring/?", "user", "scoring status"),
    _r("POST", rf"/scoring/{NAME}", "annotator", "score unlabelled studies"),
    _r("DELETE", r"/scoring/?", "admin", "stop scoring"),
    _r("GET", rf"/model/(info/)?{NAME}", "admin", "download a model or its checksum"),
    _r("PUT,DELETE", rf"/model/{NAME}", "admin", "replace or delete a model file"),
    _r("GET", r"/logs/?", "admin", "server log"),
    _r("GET", r"/logs/gpu", "admin", "GPU info"),
    _r("PUT", r"/session/?", "user", "upload a volume as a session", sessions=True),
    _r("GET,DELETE", rf"/session/{NAME}", "user", "read or end a session", sessions=True),
)


def match(method: str, path: str, sessions: bool) -> Rule | None:
    for rule in RULES:
        if method in rule.methods and rule.pattern.match(path) and (sessions or not rule.needs_sessions):
            return rule
    return None
