"""Every exception class: the table against libshoal, and each error a user
can cause, caused against a real shoald."""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import unittest

import shoal
from shoal import errors
from shoaltest import NAME, Broker, BrokerTestCase, require_shoald

# class -> (errname, builtin it must also be)
EXPECTED = {
    shoal.NotFound: ("ENOTFOUND", KeyError),
    shoal.Conflict: ("ECONFLICT", None),
    shoal.NoSpace: ("ENOSPC", None),
    shoal.TooBig: ("ETOOBIG", ValueError),
    shoal.Corrupt: ("ECORRUPT", None),
    shoal.VersionMismatch: ("EVERSION", None),
    shoal.Closed: ("ECLOSED", ValueError),
    shoal.Forked: ("EFORKED", None),
    shoal.Protocol: ("EPROTOCOL", None),
    shoal.Denied: ("EDENIED", PermissionError),
    shoal.Timeout: ("ETIMEOUT", TimeoutError),
    shoal.InvalidArgument: ("EINVAL", ValueError),
    shoal.Locked: ("ELOCKED", None),
    shoal.NoReaders: ("ENOREADERS", None),
    shoal.NoSection: ("ENOSECTION", None),
    shoal.Busy: ("EBUSY", None),
    shoal.BrokerUnavailable: ("EUNAVAIL", ConnectionError),
    shoal.NotRegularFile: ("ENOTREG", OSError),
    shoal.FileChanged: ("ECHANGED", OSError),
}


class TestTable(unittest.TestCase):
    """The exception table matches libshoal's X-macro, code for code."""

    def setUp(self) -> None:
        from shoal.client import _load
        self.lib = _load()

    def test_every_code_has_its_class(self) -> None:
        code = errors.BASE - 1
        seen = set()
        while self.lib.errname(code) != "EUNKNOWN":
            name = self.lib.errname(code)
            cls = errors.error_class(code)
            self.assertTrue(issubclass(cls, shoal.Error), name)
            self.assertEqual(cls.code, code)
            self.assertEqual(cls.name, name)
            self.assertIn(cls, EXPECTED, "no test for %s" % name)
            seen.add(cls)
            code -= 1
        self.assertEqual(seen, set(EXPECTED), "codes missing in libshoal")

    def test_classes(self) -> None:
        for cls, (name, builtin) in EXPECTED.items():
            e = errors.make_error(cls.code, self.lib.strerror(cls.code),
                                  "the detail", key=b"k")
            self.assertIs(type(e), cls)
            self.assertIsInstance(e, shoal.Error)
            if builtin is not None:
                self.assertIsInstance(e, builtin)
            self.assertEqual(e.name, name)
            self.assertEqual(e.code, cls.code)
            self.assertEqual(e.detail, "the detail")
            self.assertEqual(e.key, b"k")
            msg = str(e)
            self.assertIn(self.lib.strerror(cls.code), msg)
            self.assertIn("the detail", msg)
            self.assertIn("b'k'", msg)
            self.assertTrue(cls.__doc__)
            # crosses process boundaries (multiprocessing results)
            e2 = pickle.loads(pickle.dumps(e))
            self.assertIs(type(e2), cls)
            self.assertEqual((str(e2), e2.code, e2.key), (msg, e.code, b"k"))
        self.assertEqual(getattr(shoal, "NotFound").__mro__[1], shoal.Error)

    def test_errno_codes(self) -> None:
        e = errors.make_error(-errno.ENOMEM, self.lib.strerror(-errno.ENOMEM))
        self.assertIsInstance(e, shoal.OSFailure)
        self.assertIsInstance(e, OSError)
        self.assertIsInstance(e, shoal.Error)
        self.assertEqual(e.errno, errno.ENOMEM)
        self.assertEqual(e.name, "ENOMEM")
        self.assertEqual(self.lib.errname(-errno.ENOMEM), "ENOMEM")
        e = errors.make_error(-errno.ENAMETOOLONG, "x")
        self.assertEqual(e.name, "ENAMETOOLONG")
        e = pickle.loads(pickle.dumps(e))
        self.assertEqual(e.errno, errno.ENAMETOOLONG)

    def test_library_not_found(self) -> None:
        env = dict(os.environ, SHOAL_LIB="/nonexistent/libshoal.so")
        code = textwrap.dedent("""
            import shoal, sys
            if shoal.native_available():
                # found elsewhere (installed system-wide): not this test
                print("LOADED", shoal.library_path()); sys.exit(0)
            try:
                shoal.connect()
            except shoal.LibraryNotFound as e:
                print(e); sys.exit(0)
            sys.exit(3)
        """)
        p = subprocess.run([sys.executable, "-c", code], env=env,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        if p.stdout.startswith("LOADED"):
            if "/nonexistent" in p.stdout:  # pragma: no cover
                self.fail(p.stdout)
            self.skipTest("libshoal is installed system-wide: " + p.stdout)
        self.assertIn("/nonexistent/libshoal.so", p.stdout)
        self.assertIn("$SHOAL_LIB", p.stdout)
        self.assertIn("package directory", p.stdout)
        self.assertIn("libshoal.so.0", p.stdout)
        self.assertIn("cmake --install", p.stdout)


class TestUserErrors(BrokerTestCase):
    def setUp(self) -> None:
        self.c = self.connect()

    def test_not_found(self) -> None:
        c = self.c
        self.assertIsNone(c.get(b"nf/k"))
        self.assertFalse(c.delete(b"nf/k"))
        with c.read() as r:
            self.assertIsNone(r.get(b"nf/k"))
        with self.assertRaises(shoal.NotFound) as cm:
            c[b"nf/k"]
        self.assertIsInstance(cm.exception, KeyError)
        self.assertEqual(cm.exception.key, b"nf/k")
        self.assertIn("key not found", str(cm.exception))

    def test_too_big_key(self) -> None:
        c = self.c
        k = b"k" * 1025
        calls = {
            "put": lambda: c.put(k, b"v"),
            "get": lambda: c.get(k),
            "delete": lambda: c.delete(k),
            "cas": lambda: c.cas(k, 0, b"v"),
            "wait": lambda: c.wait(k, timeout=0),
            "get_many": lambda: c.get_many([k]),
            "batch": lambda: c.batch().put(k, b"v"),
            "read": lambda: c.read().get(k),
        }
        for what, call in calls.items():
            with self.assertRaises(shoal.TooBig, msg=what) as cm:
                call()
            self.assertIsInstance(cm.exception, ValueError)
            self.assertEqual(cm.exception.name, "ETOOBIG")
        with self.assertRaises(shoal.TooBig) as cm:
            c.put(k, b"v")
        self.assertIn("1025", str(cm.exception))  # the library's detail
        c.put(b"k" * 1024, b"max")
        self.assertEqual(c.get(b"k" * 1024), b"max")

    def test_invalid_argument(self) -> None:
        with self.assertRaises(shoal.InvalidArgument):
            shoal.connect("no/slash", socket=self.broker.sock)
        with self.assertRaises(shoal.InvalidArgument):
            shoal.connect("x" * 65, socket=self.broker.sock)
        with self.assertRaises(shoal.InvalidArgument):
            self.c.put(b"k", b"v", ttl=-5)
        with self.assertRaises(shoal.InvalidArgument):
            self.c.wait(b"k", timeout=-0.5)
        with self.assertRaises(shoal.InvalidArgument):
            shoal.connect(NAME, socket=self.broker.sock, timeout=-1)

    def test_closed(self) -> None:
        c = shoal.connect(NAME, socket=self.broker.sock)
        c.close()
        with self.assertRaises(shoal.Closed) as cm:
            c.get(b"k")
        self.assertIsInstance(cm.exception, ValueError)
        with self.assertRaises(shoal.Closed):
            c.put(b"k", b"v")

    def test_socket_too_long(self) -> None:
        with self.assertRaises(shoal.OSFailure) as cm:
            shoal.connect(NAME, socket="/tmp/" + "x" * 200)
        self.assertEqual(cm.exception.errno, errno.ENAMETOOLONG)
        self.assertEqual(cm.exception.name, "ENAMETOOLONG")

    def test_denied(self) -> None:
        if os.geteuid() != 0:
            self.skipTest("needs root to run a client as another uid "
                          "(uid 65534)")
        code = textwrap.dedent("""
            import sys, shoal
            try:
                shoal.connect(%r, socket=%r)
            except shoal.Denied as e:
                assert isinstance(e, PermissionError)
                print("DENIED", e); sys.exit(0)
            except Exception as e:
                print("OTHER", type(e).__name__, e); sys.exit(2)
            print("CONNECTED"); sys.exit(3)
        """ % (NAME, self.broker.sock))

        def drop() -> None:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        pkg = os.path.dirname(os.path.dirname(os.path.abspath(shoal.__file__)))
        env = dict(os.environ, PYTHONPATH=pkg,
                   SHOAL_LIB=os.path.abspath(shoal.library_path()))
        try:
            p = subprocess.run([sys.executable, "-c", code],
                               preexec_fn=drop, capture_output=True,
                               text=True, timeout=30, cwd="/", env=env)
        except PermissionError as e:
            self.skipTest("uid 65534 can not run %s: %s"
                          % (sys.executable, e))
        if "ModuleNotFoundError" in p.stderr or "LibraryNotFound" in p.stderr:
            self.skipTest("uid 65534 can not read the package or libshoal: "
                          + p.stderr.strip().splitlines()[-1])
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("DENIED", p.stdout)


class TestNoSpace(BrokerTestCase):
    broker_args = ["--size", "4M"]

    def test_no_space(self) -> None:
        c = self.connect()
        v = b"x" * (256 << 10)
        with self.assertRaises(shoal.NoSpace) as cm:
            for i in range(64):
                c.put(b"ns/%d" % i, v)
        self.assertEqual(cm.exception.name, "ENOSPC")
        self.assertIn("--size", str(cm.exception))
        self.assertGreater(i, 0)
        # reads still work, and deleting makes room again
        self.assertEqual(c.get(b"ns/0"), v)
        for j in range(i):
            c.delete(b"ns/%d" % j)
        deadline = time.monotonic() + 5
        while True:
            try:
                c.put(b"ns/again", v)
                break
            except shoal.NoSpace:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


class TestTooBigValue(BrokerTestCase):
    broker_args = ["--max-frame", "64k"]

    def test_value_over_max_frame(self) -> None:
        c = self.connect()
        with self.assertRaises(shoal.TooBig) as cm:
            c.put(b"tb/v", b"v" * (100 << 10))
        self.assertIn("max-frame", str(cm.exception))
        with self.assertRaises(shoal.TooBig):
            c.cas(b"tb/v", 0, b"v" * (100 << 10))
        with self.assertRaises(shoal.TooBig):
            c.batch().put(b"tb/v", b"v" * (100 << 10))
        c.put(b"tb/v", b"v" * (32 << 10))


class TestNoReaders(BrokerTestCase):
    # one slot is the broker's own, one is left
    broker_args = ["--reader-slots", "2"]

    def test_no_readers(self) -> None:
        c = self.connect()
        with self.assertRaises(shoal.NoReaders) as cm:
            shoal.connect(NAME, socket=self.broker.sock)
        self.assertIn("reader slots", str(cm.exception))
        # a read block would take a slot of its own; with none left it
        # shares the client's read handle, and works
        c.put(b"nr/k", b"v")
        with c.read() as r:
            v = r.get(b"nr/k")
            self.assertEqual(v, b"v")
            self.assertEqual(c.get(b"nr/k"), b"v")
            self.assertEqual(list(c.scan(prefix=b"nr/")), [(b"nr/k", b"v")])
            c.close()  # keeps the mapping until the block ends
            self.assertEqual(bytes(v), b"v")
            with self.assertRaises(shoal.Closed):
                r.get(b"nr/k")
        with self.assertRaises(ValueError):
            bytes(v)
        # a waiter needs a slot of its own (it blocks outside a section)
        c2 = self.connect()
        with self.assertRaises(shoal.NoReaders):
            c2.wait(b"nr/k", timeout=0.1)


class TestTimeout(unittest.TestCase):
    def test_reply_timeout(self) -> None:
        require_shoald(self)
        with Broker() as b:
            c = shoal.connect(NAME, socket=b.sock, timeout=0.3,
                              connect_timeout=2)
            self.addCleanup(c.close)
            c.put(b"to/k", b"v")
            os.kill(b.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                with self.assertRaises(shoal.Timeout) as cm:
                    c.put(b"to/k", b"w")
                self.assertIsInstance(cm.exception, TimeoutError)
                self.assertLess(time.monotonic() - t0, 5)
                self.assertEqual(c.get(b"to/k"), b"v")  # reads: unaffected
            finally:
                os.kill(b.proc.pid, signal.SIGCONT)
            c.put(b"to/k", b"x")  # reconnects
            self.assertEqual(c.get(b"to/k"), b"x")


class TestBrokerGone(unittest.TestCase):
    def test_unavailable_then_back(self) -> None:
        require_shoald(self)
        with Broker() as b:
            c = shoal.connect(NAME, socket=b.sock, connect_timeout=0.3)
            self.addCleanup(c.close)
            c.put(b"bg/k", b"v")
            b.stop()
            with self.assertRaises(shoal.BrokerUnavailable) as cm:
                c.put(b"bg/k", b"w")
            self.assertIsInstance(cm.exception, ConnectionError)
            with self.assertRaises(shoal.BrokerUnavailable):
                c.ping()
            self.assertEqual(c.get(b"bg/k"), b"v")
            # no pooled handle yet, and none can be opened: a read block
            # then shares the read handle, and still works
            with c.read() as r:
                view = r.get(b"bg/k")
                self.assertEqual(bytes(view), b"v")
                self.assertEqual([k for k, _ in r.scan(prefix=b"bg/")],
                                 [b"bg/k"])
                self.assertEqual(c.get(b"bg/k"), b"v")
            self.assertEqual(list(c.scan(prefix=b"bg/")), [(b"bg/k", b"v")])
            with self.assertRaises(ValueError):
                bytes(view)
            self.assertIsNone(c.wait(b"bg/k", after=10 ** 9, timeout=0.2))
            b.start()
            c.put(b"bg/k", b"back")
            self.assertEqual(c.get(b"bg/k"), b"back")


if __name__ == "__main__":
    unittest.main()
