"""The server's rules without starting it: every served route has a role, roles are what the README says, tokens
are checked as an identity provider signs them, an open server is refused, a killed publish leaves no half model."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from serverkit import ROOT

APP_DIR = ROOT / "apps" / "brats_medsam"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

from brats_server import policy  # noqa: E402
from brats_server.auth import AuthError, IdentityProviderError, OidcVerifier  # noqa: E402
from brats_server.settings import ServerSettings  # noqa: E402


@pytest.mark.parametrize("sessions", [False, True])
def test_every_route_the_app_serves_has_a_rule(monkeypatch, sessions):
    monkeypatch.setenv("BRATS_MEDSAM_SERVER", json.dumps({"sessions": sessions}))
    from brats_server import asgi

    app = asgi.build().app.app  # CORS -> Guard -> FastAPI
    served = [(m.upper(), re.sub(r"\{[^}]+\}", "x", path)) for path, ops in app.openapi()["paths"].items() for m in ops]
    assert len(served) > 25
    missing = [(m, p) for m, p in served if policy.match(m, p, sessions) is None]
    assert not missing, missing
    assert any(p.startswith("/session") for _, p in served) == sessions


def test_roles_follow_the_rule_only_admin_trains_deletes_uploads_or_changes_the_store():
    def role(method, path):
        return policy.match(method, path, sessions=True).role

    for m, p in [("POST", "/train/medsam"), ("DELETE", "/train/"), ("DELETE", "/datastore/image"),
                 ("DELETE", "/datastore/label"), ("PUT", "/datastore/image"), ("PUT", "/datastore/"),
                 ("PUT", "/model/medsam"), ("DELETE", "/model/medsam"), ("GET", "/datastore/dataset"),
                 ("PUT", "/datastore/image/info"), ("GET", "/model/medsam"), ("GET", "/logs/")]:
        assert role(m, p) == "admin", (m, p)
    assert role("PUT", "/datastore/label") == "annotator"
    for m, p in [("POST", "/infer/medsam"), ("GET", "/info/"), ("POST", "/activelearning/first"),
                 ("GET", "/datastore/image"), ("PUT", "/session/")]:
        assert role(m, p) == "user", (m, p)
    assert role("POST", "/auth/token") == policy.PUBLIC
    for m, p in [("GET", "/proxy/dicom/x"), ("POST", "/batch/infer/x"), ("GET", "/ohif/"), ("POST", "/reload")]:
        assert policy.match(m, p, sessions=True) is None
    assert policy.match("PUT", "/session/", sessions=False) is None


@pytest.fixture(scope="module")
def idp():
    from idp import LocalIdP

    with LocalIdP() as p:
        yield p


def test_tokens_are_verified_against_the_realms_keys(idp):
    v = OidcVerifier(ServerSettings(auth=True, realm_uri=idp.realm))
    who = v.verify(idp.token("annotator", username="ana"))
    assert who.username == "ana" and who.has("user") and who.has("annotator") and not who.has("admin")
    assert v.verify(idp.token(None)).level == -1
    for bad, words in [(idp.token("admin", expires_in=-3600), "expired"),
                       (idp.token("admin", key=idp.other_key), "invalid"),
                       (idp.token("admin", algorithm="HS256"), "RS256 only"),
                       (idp.token("admin", issuer="https://evil.example.org/realms/brats"), "another issuer"),
                       (idp.token("admin", audience="another-app"), "audience"),
                       (idp.token("admin", audience=None), "aud"),
                       ("garbage", "not a JWT")]:
        with pytest.raises(AuthError, match=words):
            v.verify(bad)
    assert v.password_grant("admin", "admin-pw")["access_token"]
    with pytest.raises(AuthError, match="wrong username or password"):
        v.password_grant("admin", "nope")


def test_an_unreachable_identity_provider_is_a_503_kind_of_error_not_a_401(idp):
    from serverkit import free_port

    v = OidcVerifier(ServerSettings(auth=True, realm_uri=f"http://127.0.0.1:{free_port()}/realms/x", auth_timeout_s=2))
    with pytest.raises(IdentityProviderError, match="did not answer"):
        v.verify(idp.token("admin"))


def _serve(*args, studies):
    return subprocess.run([sys.executable, "main.py", "serve", "--studies", str(studies), "--dry-run", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_an_open_server_on_the_network_is_refused_unless_auth_or_insecure(sample_studies, tmp_path):
    import shutil

    case = sorted(p for p in sample_studies.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    shutil.copytree(case, tmp_path / case.name)
    res = _serve("--host", "0.0.0.0", studies=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--auth-realm" in res.stderr and "--insecure" in res.stderr
    assert _serve("--host", "0.0.0.0", "--insecure", studies=tmp_path).returncode == 0
    assert _serve("--host", "0.0.0.0", "--auth-realm", "https://id.example.org/realms/x", studies=tmp_path).returncode == 0
    assert _serve(studies=tmp_path).returncode == 0  # loopback, the default


PUBLISH = """
import sys
sys.path.insert(0, {app!r})
from lib.trainers.common import publish
print("go", flush=True)
publish({src!r}, __import__("pathlib").Path({dst!r}))
"""


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_a_publish_killed_with_sigkill_leaves_the_old_or_the_new_model_never_part(tmp_path, delay):
    old, new = os.urandom(1024), os.urandom(300 * 1024 * 1024)
    dst, src = tmp_path / "model" / "medsam_decoder.pt", tmp_path / "new.pt"
    dst.parent.mkdir()
    dst.write_bytes(old)
    src.write_bytes(new)
    want = {hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()}
    code = PUBLISH.format(app=str(APP_DIR), src=str(src), dst=str(dst))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "go"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert hashlib.sha256(dst.read_bytes()).hexdigest() in want
