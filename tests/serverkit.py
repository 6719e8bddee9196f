"""Start and stop the real server (``python main.py serve``) for integration tests, and fingerprint folders.

Not a test module: the server tests import it. Each ``Server`` is one subprocess in its own process group, so a
test can SIGKILL it (and its training subprocesses) the way a power cut or the OOM killer would.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, studies: Path, log: Path, *args: str, env: dict | None = None):
        self.studies, self.log_path, self.args, self.env = Path(studies), Path(log), list(args), env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> "Server":
        cmd = [sys.executable, "main.py", "serve", "--studies", str(self.studies), "--port", str(self.port), *self.args]
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **self.env})
        deadline = time.time() + timeout
        while True:
            try:
                if requests.get(self.url + "/auth/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"server did not start; see {self.log_path}:\n{self.log_tail()}")
            time.sleep(1)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if getattr(self, "_log", None):
            self._log.close()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 600)
        return requests.request(method, self.url + path, **kw)


def tree_digest(folder: Path, skip: str = ".brats_medsam") -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (links followed: their targets' bytes) except under ``skip``."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts and rel.parts[0] == skip or not p.is_file():
            continue
        out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def tree_stat(folder: Path, skip: str = ".brats_medsam") -> dict[str, tuple]:
    """A cheap fingerprint (names, sizes, mtimes, inodes) for checks after every request."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = p.relative_to(folder)
        if rel.parts and rel.parts[0] == skip:
            continue
        st = p.lstat()
        out[str(rel)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out
