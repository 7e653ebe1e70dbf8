"""Test support: a real shoald with a private rundir and shm dir.

Environment:
  SHOAL_TEST_SHOALD  the shoald binary (required; ctest sets it)
  SHOAL_LIB          libshoal.so for the package (ctest sets it)
  SHOAL_TEST_SHM_DIR parent of the test directories (default /dev/shm)

Every broker runs with PR_SET_PDEATHSIG, so it dies with the test process
even if that is killed; its directory is removed at stop() and, for
anything left behind, at interpreter exit.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from typing import List, Optional

SHOALD = os.environ.get("SHOAL_TEST_SHOALD", "")
NAME = "pytest"

_dirs: List[str] = []
_procs: List[subprocess.Popen] = []


def _cleanup() -> None:
    for p in _procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for d in _dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def _pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _sweep_stale(root: str) -> None:
    """Remove test directories a crashed run left behind: older than ten
    minutes, and no broker accepting on their socket."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for n in names:
        d = os.path.join(root, n)
        if not n.startswith("shoal-pytest-"):
            continue
        try:
            if time.time() - os.stat(d).st_mtime < 600:
                continue
        except OSError:
            continue
        sock = os.path.join(d, "run", NAME + ".sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            continue  # alive
        except OSError:
            shutil.rmtree(d, ignore_errors=True)
        finally:
            s.close()


def require_shoald(test: unittest.TestCase) -> None:
    if not SHOALD or not os.access(SHOALD, os.X_OK):
        raise unittest.SkipTest(
            "SHOAL_TEST_SHOALD must name the shoald binary (got %r)" % SHOALD)


class Broker:
    """One store and its broker process (start, stop, restart)."""

    def __init__(self, *args: str, name: str = NAME) -> None:
        root = os.environ.get("SHOAL_TEST_SHM_DIR") or "/dev/shm"
        if not os.path.isdir(root):
            root = tempfile.gettempdir()
        _sweep_stale(root)
        self.dir = tempfile.mkdtemp(prefix="shoal-pytest-", dir=root)
        _dirs.append(self.dir)
        os.chmod(self.dir, 0o755)
        self.name = name
        self.rundir = os.path.join(self.dir, "run")
        self.shmdir = os.path.join(self.dir, "shm")
        os.mkdir(self.rundir, 0o755)
        os.mkdir(self.shmdir, 0o755)
        self.sock = os.path.join(self.rundir, name + ".sock")
        self.log = os.path.join(self.dir, "broker.log")
        self.args = list(args)
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 10.0) -> "Broker":
        argv = [SHOALD, "--name", self.name, "--rundir", self.rundir,
                "--shm-dir", self.shmdir, "--quiet"] + self.args
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        with open(self.log, "ab") as log:
            log.write(("---- start %s\n" % " ".join(argv)).encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, preexec_fn=_pdeathsig)
        _procs.append(self.proc)
        deadline = time.monotonic() + timeout
        while True:
            if self.accepting():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("shoald exited (%s) before listening:\n%s"
                                   % (self.proc.returncode, self.log_text()))
            if time.monotonic() > deadline:
                raise RuntimeError("shoald not listening on %s after %.0f s:"
                                   "\n%s" % (self.sock, timeout,
                                             self.log_text()))
            time.sleep(0.01)

    def accepting(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the broker and wait for it; returns its exit status."""
        p = self.proc
        if p is None or p.poll() is not None:
            return p.returncode if p else 0
        p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise RuntimeError("shoald ignored signal %d for %.0f s"
                               % (sig, timeout))

    def restart(self, sig: int = signal.SIGTERM) -> "Broker":
        self.stop(sig)
        return self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class BrokerTestCase(unittest.TestCase):
    """One broker for the whole class, started in setUpClass."""

    broker_args: List[str] = []
    broker: Broker

    @classmethod
    def setUpClass(cls) -> None:
        require_shoald(cls)  # type: ignore[arg-type]
        cls.broker = Broker(*cls.broker_args).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.broker.close()

    def connect(self, **kw: object):  # type: ignore[no-untyped-def]
        import shoal
        c = shoal.connect(NAME, socket=self.broker.sock, **kw)
        self.addCleanup(c.close)
        return c
