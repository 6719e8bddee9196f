"""Who may call the server: real tokens from a test identity provider, against the real server over HTTP.

The server runs with ``--auth-realm`` pointing at ``idp.LocalIdP`` (a Keycloak-shaped realm with its own RSA key),
sessions on and one allowed web origin. Every mutating endpoint is called with no token, a garbage token, an
expired one, one signed by another key, one with HS256 and a public secret, one from another issuer, one for
another audience, one with a role too low, and one with the right role. Requests that pass are built to fail
harmlessly afterwards (unknown ids, invalid parameters), so the matrix changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from idp import LocalIdP
from serverkit import Server, tree_digest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ORIGIN = "https://viewer.example.org"
RESULTS: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="module")
def idp():
    with LocalIdP() as p:
        yield p


@pytest.fixture(scope="module")
def studies(studies_copy):
    return studies_copy


@pytest.fixture(scope="module")
def server(studies, idp, tmp_path_factory):
    log = tmp_path_factory.mktemp("access-log") / "server.log"
    srv = Server(studies, log, "--auth-realm", idp.realm, "--sessions", "--cors-origin", ORIGIN,
                 "--max-upload-mb", "8").start()
    yield srv
    srv.stop()
    if not RESULTS:
        return
    print("\nstatus per endpoint and token (2-core CPU):")
    kinds = list(next(iter(RESULTS.values())))
    print("  " + "endpoint".ljust(44) + " ".join(k[:9].rjust(9) for k in kinds))
    for ep, row in RESULTS.items():
        print("  " + ep.ljust(44) + " ".join(str(row[k]).rjust(9) for k in kinds))


def _file(name: str, data: bytes = b"not a volume"):
    return (name, io.BytesIO(data), "application/octet-stream")


# (endpoint, least role, request kwargs). Allowed calls fail afterwards on purpose (4xx), so nothing changes.
MUTATING = [
    ("POST /infer/medsam", "user", {"params": {"image": "BraTS-GLI-77777-000"}, "data": {"params": "[]"}}),
    ("POST /activelearning/nosuch", "user", {"json": {}}),
    ("PUT /session/", "user", {"params": {"uncompress": "true"}, "files": {"files": _file("x.tar")}}),
    ("PUT /datastore/label", "annotator", {"params": {"image": "BraTS-GLI-77777-000", "tag": "final"},
                                           "files": {"label": _file("x.nii.gz")}}),
    ("PUT /datastore/label/info", "annotator", {"params": {"label": "nosuch", "tag": "final"}, "data": {"info": "{}"}}),
    ("POST /scoring/nosuch", "annotator", {"json": {}}),
    ("PUT /datastore/image", "admin", {"params": {"image": "x"}, "files": {"file": _file("x.exe")}}),
    ("PUT /datastore/image/info", "admin", {"params": {"image": "nosuch"}, "data": {"info": "{}"}}),
    ("DELETE /datastore/image", "admin", {"params": {"id": "BraTS-GLI-77777-000"}}),
    ("DELETE /datastore/label", "admin", {"params": {"id": "BraTS-GLI-77777-000", "tag": "final"}}),
    ("GET /datastore/dataset", "admin", {"params": {"limit_cases": "abc"}}),
    ("POST /train/medsam", "admin", {"json": {"max_epochs": "abc"}}),
    ("POST /train/", "admin", {"json": {"nosuch": {}}}),
    ("DELETE /train/", "admin", {}),
    ("DELETE /scoring/", "admin", {}),
    ("PUT /model/medsam", "admin", {"files": {"file": _file("decoder.pt")}}),
    ("DELETE /model/nosuch", "admin", {}),
    ("GET /model/medsam", "admin", {}),
    ("GET /logs/", "admin", {"params": {"lines": "abc"}}),
]
READING = ["GET /info/", "GET /datastore/", "GET /datastore/?output=stats", "GET /scoring/", "GET /auth/token/valid"]
LOWER = {"user": None, "annotator": "user", "reviewer": "annotator", "admin": "reviewer"}


def bad_tokens(idp) -> dict[str, str | None]:
    return {
        "no token": None,
        "garbage": "not-a-jwt",
        "expired": idp.token("admin", expires_in=-3600),
        "other key": idp.token("admin", key=idp.other_key),
        "HS256": idp.token("admin", algorithm="HS256"),
        "unknown kid": idp.token("admin", key=idp.other_key, kid="someone-else"),
        "other issuer": idp.token("admin", issuer="https://evil.example.org/realms/brats"),
        "other audience": idp.token("admin", audience="another-app"),
        "no audience": idp.token("admin", audience=None),
    }


def _call(server, endpoint: str, token: str | None, kw: dict):
    method, path = endpoint.split(" ", 1)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kw = {k: ({f: (n, io.BytesIO(b.getvalue()), t) for f, (n, b, t) in v.items()} if k == "files" else v)
          for k, v in kw.items()}
    return server(method, path, headers=headers, **kw).status_code


@pytest.mark.parametrize("endpoint, role, kw", MUTATING, ids=[m[0] for m in MUTATING])
def test_every_mutating_endpoint_needs_a_valid_token_with_its_role(server, idp, studies, endpoint, role, kw):
    before = tree_digest(studies)
    row = {name: _call(server, endpoint, tok, kw) for name, tok in bad_tokens(idp).items()}
    if LOWER[role]:
        row[f"role {LOWER[role]}"] = _call(server, endpoint, idp.token(LOWER[role]), kw)
    row["no role"] = _call(server, endpoint, idp.token(None), kw)
    row[f"role {role}"] = _call(server, endpoint, idp.token(role), kw)
    row["admin"] = _call(server, endpoint, idp.token("admin"), kw)
    RESULTS[endpoint] = {k: row.get(k, "-") for k in
                         list(bad_tokens(idp)) + ["no role", "role user", "role annotator", "role reviewer", "admin"]}
    for name in bad_tokens(idp):
        assert row[name] == 401, (name, row)
    assert row["no role"] == 403, row
    if LOWER[role]:
        assert row[f"role {LOWER[role]}"] == 403, row
    for k in (f"role {role}", "admin"):
        assert row[k] not in (401, 403) and row[k] < 500, (k, row)  # passed the guard, then 4xx (or a no-op)
    assert tree_digest(studies) == before


@pytest.mark.parametrize("endpoint", READING)
def test_a_plain_user_can_read_and_nobody_without_a_token_can(server, idp, endpoint):
    assert _call(server, endpoint, idp.token("user"), {}) == 200
    assert _call(server, endpoint, None, {}) == 401


def test_slicer_login_flow_username_password_to_bearer_token(server, idp):
    """What the 3D Slicer plugin does: GET /auth/, POST /auth/token with username + password, then the token."""
    from monailabel.client import MONAILabelClient
    from monailabel.client.client import MONAILabelClientException

    client = MONAILabelClient(server.url)
    assert client.auth_enabled() is True
    with pytest.raises(MONAILabelClientException) as err:
        client.auth_token("annotator", "wrong password")
    assert err.value.status_code == 401
    token = client.auth_token("annotator", "annotator-pw")
    assert token["token_type"] == "Bearer" and token["access_token"]
    client.update_auth(token)
    assert client.auth_valid_token() is True
    assert "medsam" in client.info()["models"]
    with pytest.raises(MONAILabelClientException) as err:
        client.train_start("medsam", {"max_epochs": 1})
    assert "403" in err.value.msg


def test_cors_answers_only_the_listed_origin(server, idp):
    ok = server("GET", "/info/", headers={"Origin": ORIGIN, "Authorization": f"Bearer {idp.token('user')}"})
    assert ok.headers.get("access-control-allow-origin") == ORIGIN
    evil = server("GET", "/info/", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {idp.token('user')}"})
    assert "access-control-allow-origin" not in evil.headers
    pre = server("OPTIONS", "/datastore/label", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "PUT"})
    assert pre.status_code == 400 and "access-control-allow-origin" not in pre.headers


def _tar(members: list[tuple[str, bytes | None, str | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize("what, archive, name", [
    ("tar member ../../", _tar([("../../../../../tmp/brats-escape-1", b"x", None)]), "a.tar.gz"),
    ("tar absolute member", _tar([("/tmp/brats-escape-2", b"x", None)]), "a.tar.gz"),
    ("tar symlink", _tar([("link", None, "/tmp/brats-escape-3")]), "a.tar.gz"),
    ("zip member ../", _zip("../../../../../tmp/brats-escape-4", b"x"), "a.zip"),
])
def test_session_archives_that_reach_outside_are_refused_and_write_nothing(server, idp, studies, what, archive, name):
    before = sorted(p.name for p in Path("/tmp").glob("brats-escape-*"))
    r = server("PUT", "/session/", params={"uncompress": "true"}, files={"files": (name, io.BytesIO(archive))},
               headers={"Authorization": f"Bearer {idp.token('user')}"})
    assert r.status_code == 422, r.text
    assert "archive refused" in r.json()["detail"]
    assert sorted(p.name for p in Path("/tmp").glob("brats-escape-*")) == before
    sessions = studies / ".brats_medsam" / "sessions"
    assert not [p for p in sessions.rglob("*") if p.is_file() and "escape" in p.name]


def test_a_session_archive_unpacks_inside_the_studies_session_folder_and_can_be_segmented(server, idp, studies):
    from bratsmedsam.cases import discover_cases

    case = sorted(discover_cases(studies), key=lambda c: c.case_id)[0]
    flair = Path(case.images["t2f"])
    archive = _tar([(flair.name, flair.read_bytes(), None)])
    auth = {"Authorization": f"Bearer {idp.token('user')}"}
    r = server("PUT", "/session/", params={"uncompress": "true"}, files={"files": ("study.tar.gz", io.BytesIO(archive))},
               headers=auth)
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    path = Path(r.json()["session_info"]["path"])
    assert path.is_relative_to(studies / ".brats_medsam" / "sessions") and os.path.isdir(path)
    assert server("GET", f"/session/{sid}", headers=auth).status_code == 200
    r = server("POST", f"/infer/medsam?image=&session_id={sid}", headers=auth,
               data={"params": json.dumps({"roi": [60, 120, 60, 120, 70, 70]})})
    assert r.status_code == 200, r.text[:300]
