"""The lock file agrees with requirements.txt, with what the code imports, and with the installed venv.

requirements.txt names the direct dependencies; requirements.lock pins the tested set (scripts/setup.sh installs
``-r requirements.txt -c requirements.lock``). ``BRATSMEDSAM_LOCK_FILE`` points these tests at a candidate lock
(scripts/relock.sh checks a freshly resolved set before it replaces the lock).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = Path(os.environ.get("BRATSMEDSAM_LOCK_FILE") or ROOT / "requirements.lock")
# Top-level packages of this project (the app's `lib` and `brats_server` are put on sys.path by the app).
LOCAL = {"bratsmedsam", "lib", "brats_server", "main"}


def _lines(path: Path) -> list[str]:
    return [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines() if ln.split("#", 1)[0].strip()]


def requirements() -> list[Requirement]:
    return [Requirement(ln) for ln in _lines(ROOT / "requirements.txt")]


def lock() -> dict[str, Version]:
    pins = {}
    for ln in _lines(LOCK):
        req = Requirement(ln)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{LOCK.name}: {ln!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = Version(specs[0].version)
    return pins


def imported_top_level() -> dict[str, str]:
    """Top-level module imported anywhere in main.py, bratsmedsam/ and apps/ -> one file that imports it."""
    files = [ROOT / "main.py", *sorted((ROOT / "bratsmedsam").rglob("*.py")), *sorted((ROOT / "apps").rglob("*.py"))]
    found: dict[str, str] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                found.setdefault(n.split(".")[0], str(f.relative_to(ROOT)))
    return {m: f for m, f in found.items() if m not in sys.stdlib_module_names and m not in LOCAL}


def test_every_lock_line_is_an_exact_pin_and_the_lock_is_not_empty():
    pins = lock()
    assert len(pins) > 50  # the whole resolved set, not the direct dependencies alone
    assert "bratsmedsam" not in pins  # the project itself is not a dependency


def test_every_requirement_is_pinned_in_the_lock_at_a_version_it_allows():
    pins = lock()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in requirements.txt but not pinned in {LOCK.name}"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{LOCK.name} pins {req.name}=={pins[name]}, which requirements.txt's {req} does not allow"


def test_every_imported_package_is_a_listed_requirement():
    listed = {canonicalize_name(r.name) for r in requirements()}
    dists = md.packages_distributions()
    missing = []
    for module, where in sorted(imported_top_level().items()):
        provided_by = {canonicalize_name(d) for d in dists.get(module, [])}
        if not provided_by & listed:
            missing.append(f"{module} (imported in {where}; provided by {sorted(provided_by) or 'nothing installed'})")
    assert not missing, "imported but not in requirements.txt: " + "; ".join(missing)


def installed_in_venv(paths: list[str] | None = None) -> dict[str, Version]:
    """Name -> version of what pip installed into this interpreter's site-packages.

    Only the venv's own site-packages count: ``md.distributions()`` searches all of ``sys.path``, and once
    anything has imported ``setuptools`` that includes ``setuptools/_vendor``, whose older
    importlib-metadata, packaging and zipp are not what the venv runs. That made this check fail in CI
    depending on which tests ran before it.
    """
    if paths is None:
        paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    found: dict[str, Version] = {}
    for d in md.distributions(path=paths):
        found.setdefault(canonicalize_name(d.metadata["Name"]), Version(d.version))  # first on the path wins
    return found


def test_a_vendored_copy_on_sys_path_does_not_count_as_installed(tmp_path, monkeypatch):
    vendored = tmp_path / "_vendor"
    (vendored / "zipp-0.0.1.dist-info").mkdir(parents=True)
    (vendored / "zipp-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: zipp\nVersion: 0.0.1\n")
    monkeypatch.syspath_prepend(str(vendored))
    assert any(d.version == "0.0.1" for d in md.distributions())  # what the old check saw
    assert installed_in_venv().get("zipp") != Version("0.0.1")
    assert installed_in_venv([str(vendored)]) == {"zipp": Version("0.0.1")}


def test_the_installed_venv_matches_the_lock():
    """scripts/setup.sh installed with the lock as constraints: what the lock names is what runs the tests."""
    pins = lock()
    installed = installed_in_venv()
    wrong = [f"{n}: installed {installed[n]}, locked {v}" for n, v in sorted(pins.items())
             if n in installed and installed[n] != v]
    absent = [n for n in sorted(pins) if n not in installed]
    assert not wrong and not absent, (f"the venv differs from {LOCK.name} (run scripts/setup.sh): "
                                      f"{'; '.join(wrong)} missing: {', '.join(absent) or 'none'}")


def test_the_setup_stamp_keys_on_both_requirement_files():
    text = (ROOT / "scripts" / "setup.sh").read_text()
    assert '"$root/requirements.txt" "$root/requirements.lock" | sha256sum' in text
    assert '-r "$root/requirements.txt" -c "$root/requirements.lock"' in text


@pytest.mark.parametrize("script", ["setup.sh", "relock.sh"])
def test_the_dependency_scripts_are_executable(script):
    assert os.access(ROOT / "scripts" / script, os.X_OK)
