"""Every call of the Client, Reader and Batch against a real shoald."""

from __future__ import annotations

import datetime
import gc
import os
import pickle
import threading
import time
import unittest
import warnings

import shoal
from shoaltest import NAME, BrokerTestCase


class TestConnect(BrokerTestCase):
    def test_context_manager_and_close(self) -> None:
        with shoal.connect(NAME, socket=self.broker.sock) as c:
            self.assertFalse(c.closed)
            c.ping()
            self.assertIn("pytest", repr(c))
        self.assertTrue(c.closed)
        c.close()  # idempotent
        for call in (lambda: c.get(b"k"), lambda: c.put(b"k", b"v"),
                     lambda: c.delete(b"k"), lambda: c.ping(),
                     lambda: c.read(), lambda: c.get_many([b"k"]),
                     lambda: list(c.scan()), lambda: c.batch(),
                     lambda: c.wait(b"k", timeout=0)):
            with self.assertRaises(shoal.Closed):
                call()

    def test_env_socket(self) -> None:
        old = os.environ.get("SHOAL_SOCKET")
        os.environ["SHOAL_SOCKET"] = self.broker.sock
        try:
            with shoal.Client(NAME) as c:
                c.ping()
        finally:
            if old is None:
                del os.environ["SHOAL_SOCKET"]
            else:
                os.environ["SHOAL_SOCKET"] = old

    def test_rundir(self) -> None:
        with shoal.connect(NAME, rundir=self.broker.rundir) as c:
            c.ping()
        with shoal.connect(None, socket=self.broker.sock) as c:
            c.ping()
            self.assertIsNone(c.name)

    def test_wrong_store_name(self) -> None:
        with self.assertRaises(shoal.InvalidArgument) as cm:
            shoal.connect("other", socket=self.broker.sock)
        self.assertIn("other", str(cm.exception))
        with self.assertRaises(shoal.InvalidArgument) as cm:
            shoal.connect("bad/name", socket=self.broker.sock)
        self.assertIn("invalid store name", str(cm.exception))

    def test_no_broker(self) -> None:
        sock = os.path.join(self.broker.dir, "nobody.sock")
        with self.assertRaises(shoal.BrokerUnavailable) as cm:
            shoal.connect(NAME, socket=sock)
        self.assertIsInstance(cm.exception, ConnectionError)
        self.assertIn(sock, str(cm.exception))
        self.assertEqual(cm.exception.name, "EUNAVAIL")

    def test_pickle(self) -> None:
        c = self.connect()
        c.put(b"pickle/k", b"v")
        c2 = pickle.loads(pickle.dumps(c))
        self.addCleanup(c2.close)
        self.assertEqual(c2.get(b"pickle/k"), b"v")

    def test_module_functions(self) -> None:
        self.assertEqual(shoal.key_max(), 1024)
        self.assertGreaterEqual(shoal.value_max(), 1 << 20)
        self.assertEqual(shoal.library_version(), "0.1.0")
        self.assertTrue(os.path.exists(shoal.library_path()))
        self.assertTrue(shoal.native_available())


class TestReadsWrites(BrokerTestCase):
    def setUp(self) -> None:
        self.c = self.connect()

    def test_put_get(self) -> None:
        c = self.c
        v1 = c.put(b"rw/a", b"one")
        self.assertIsInstance(v1, int)
        self.assertEqual(c.get(b"rw/a"), b"one")
        v2 = c.put(b"rw/a", b"two")
        self.assertGreater(v2, v1)
        self.assertEqual(c.get_with_version(b"rw/a"), (b"two", v2))
        self.assertIsNone(c.get(b"rw/none"))
        self.assertIsNone(c.get_with_version(b"rw/none"))
        self.assertEqual(c._get_fallback(b"rw/a"), b"two")
        self.assertIsNone(c._get_fallback(b"rw/none"))

    def test_key_and_value_types(self) -> None:
        c = self.c
        c.put("rw/str-\u00e9", "val-\u00e9")
        self.assertEqual(c.get("rw/str-\u00e9"), "val-\u00e9".encode())
        self.assertEqual(c.get("rw/str-\u00e9".encode()), "val-\u00e9".encode())
        c.put(bytearray(b"rw/ba"), memoryview(b"mv"))
        self.assertEqual(c.get(bytearray(b"rw/ba")), b"mv")
        self.assertEqual(c.get(memoryview(b"rw/ba")), b"mv")
        with self.assertRaises(TypeError):
            c.get(12)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            c.put(b"rw/x", 12)  # type: ignore[arg-type]
        c.put(b"rw/\x00bin\xff", b"\x00\x01\xff")
        self.assertEqual(c.get(b"rw/\x00bin\xff"), b"\x00\x01\xff")

    def test_empty(self) -> None:
        c = self.c
        c.put(b"rw/empty", b"")
        self.assertEqual(c.get(b"rw/empty"), b"")
        c.put(b"", b"empty key")
        self.assertEqual(c.get(b""), b"empty key")
        self.assertTrue(c.delete(b""))

    def test_large_values(self) -> None:
        c = self.c
        for size in (65535, 65536, 65537, 1 << 20, 5 << 20):
            v = os.urandom(size)
            c.put(b"rw/big", v)
            self.assertEqual(c.get(b"rw/big"), v, size)
            # the buffered path (get_with_version; get where libshoal can
            # not build bytes objects): grows, then one-off buffers
            self.assertEqual(c.get_with_version(b"rw/big")[0], v, size)
            self.assertEqual(c._get_fallback(b"rw/big"), v, size)
            self.assertEqual(c.get_many([b"rw/big", b"rw/none"]), [v, None])
            with c.read() as r:
                self.assertEqual(bytes(r.get(b"rw/big")), v)

    def test_mapping_protocol(self) -> None:
        c = self.c
        c[b"rw/m"] = b"x"
        self.assertEqual(c[b"rw/m"], b"x")
        self.assertIn(b"rw/m", c)
        del c[b"rw/m"]
        self.assertNotIn(b"rw/m", c)
        with self.assertRaises(KeyError):
            c[b"rw/m"]
        with self.assertRaises(shoal.NotFound):
            del c[b"rw/m"]

    def test_delete(self) -> None:
        c = self.c
        c.put(b"rw/d", b"x")
        self.assertTrue(c.delete(b"rw/d"))
        self.assertFalse(c.delete(b"rw/d"))
        self.assertIsNone(c.get(b"rw/d"))

    def test_ttl(self) -> None:
        c = self.c
        c.put(b"rw/ttl1", b"x", ttl=0.15)
        c.put(b"rw/ttl2", b"x", ttl_ms=150)
        c.put(b"rw/ttl3", b"x", ttl=datetime.timedelta(milliseconds=150))
        c.put(b"rw/ttl4", b"x", ttl=600)
        for k in (b"rw/ttl1", b"rw/ttl2", b"rw/ttl3"):
            self.assertEqual(c.get(k), b"x")
        time.sleep(0.3)
        for k in (b"rw/ttl1", b"rw/ttl2", b"rw/ttl3"):
            self.assertIsNone(c.get(k), k)
        self.assertEqual(c.get(b"rw/ttl4"), b"x")
        for bad in (0, -1, 2 ** 33):
            with self.assertRaises(shoal.InvalidArgument):
                c.put(b"rw/ttl", b"x", ttl=bad)
        with self.assertRaises(shoal.InvalidArgument):
            c.put(b"rw/ttl", b"x", ttl=1, ttl_ms=1000)
        with self.assertRaises(ValueError):  # InvalidArgument is one
            c.put(b"rw/ttl", b"x", ttl_ms=0)

    def test_cas(self) -> None:
        c = self.c
        v1 = c.cas(b"rw/cas", 0, b"first")
        with self.assertRaises(shoal.Conflict) as cm:
            c.cas(b"rw/cas", 0, b"again")
        self.assertEqual(cm.exception.current_version, v1)
        self.assertEqual(cm.exception.key, b"rw/cas")
        with self.assertRaises(shoal.Conflict):
            c.cas(b"rw/cas", v1 + 1000, b"stale")
        v2 = c.cas(b"rw/cas", v1, b"second")
        self.assertGreater(v2, v1)
        self.assertEqual(c.get(b"rw/cas"), b"second")
        c.delete(b"rw/cas")
        with self.assertRaises(shoal.Conflict) as cm:
            c.cas(b"rw/cas", v2, b"gone")
        self.assertEqual(cm.exception.current_version, 0)

    def test_get_many(self) -> None:
        c = self.c
        with c.batch() as b:
            for i in range(300):
                b.put(b"gm/%04d" % i, b"v%d" % i)
        keys = [b"gm/%04d" % i for i in range(0, 400, 3)]
        got = c.get_many(keys)
        self.assertEqual(got, [b"v%d" % i if i < 300 else None
                               for i in range(0, 400, 3)])
        self.assertEqual(c.get_many(iter(["gm/0001", b"gm/0002"])),
                         [b"v1", b"v2"])
        self.assertEqual(c.get_many([]), [])
        with self.assertRaises(shoal.TooBig):
            c.get_many([b"gm/0001", b"k" * 1025])
        many = [b"gm/%04d" % (i % 300) for i in range(5000)]
        self.assertEqual(len(c.get_many(many)), 5000)

    def test_scan(self) -> None:
        c = self.c
        for k in (b"sc/b", b"sc/a", b"sc/c", b"sc/a/x", b"sc0"):
            c.put(k, k + b"!")
        self.assertEqual([k for k, _ in c.scan(prefix=b"sc/")],
                         [b"sc/a", b"sc/a/x", b"sc/b", b"sc/c"])
        self.assertEqual(list(c.scan(start=b"sc/a/", end=b"sc/c")),
                         [(b"sc/a/x", b"sc/a/x!"), (b"sc/b", b"sc/b!")])
        self.assertEqual([k for k, _ in c.scan(prefix="sc/", limit=2)],
                         [b"sc/a", b"sc/a/x"])
        self.assertEqual(list(c.scan(prefix=b"sc/none/")), [])
        with self.assertRaises(shoal.InvalidArgument):
            c.scan(prefix=b"a", start=b"b")
        # pages: more items than a page, and values larger than the buffer
        with c.batch() as b:
            for i in range(1500):
                b.put(b"pg/%05d" % i, b"%d" % i)
        got = list(c.scan(prefix=b"pg/"))
        self.assertEqual(len(got), 1500)
        self.assertEqual(got[1234], (b"pg/01234", b"1234"))
        self.assertEqual(len(list(c.scan(prefix=b"pg/", limit=700))), 700)
        big = os.urandom(200000)
        for i in range(3):
            c.put(b"pb/%d" % i, big)
        self.assertEqual(list(c.scan(prefix=b"pb/")),
                         [(b"pb/%d" % i, big) for i in range(3)])
        # 0xff prefixes
        c.put(b"\xff\xff", b"1")
        c.put(b"\xff\xff\x00", b"2")
        self.assertEqual([k for k, _ in c.scan(prefix=b"\xff\xff")],
                         [b"\xff\xff", b"\xff\xff\x00"])

    def test_scan_is_one_snapshot(self) -> None:
        c = self.c
        for i in range(10):
            c.put(b"snap/%d" % i, b"old")
        it = c.scan(prefix=b"snap/")
        first = next(it)
        for i in range(10):
            c.put(b"snap/%d" % i, b"new")
        rest = list(it)
        self.assertEqual({v for _, v in [first] + rest}, {b"old"})
        it = c.scan(prefix=b"snap/")
        next(it)
        it.close()  # gives the handle back

    def test_batch(self) -> None:
        c = self.c
        c.put(b"bt/old", b"old")
        with c.batch() as b:
            b.put(b"bt/x", b"X").put(b"bt/y", b"Y", ttl=60)
            b.delete(b"bt/old")
            b.delete_any(b"bt/absent")
            self.assertEqual(len(b), 4)
        self.assertIsInstance(b.version, int)
        self.assertEqual(c.get_with_version(b"bt/x"), (b"X", b.version))
        self.assertIsNone(c.get(b"bt/old"))
        # discarded on exception
        with self.assertRaises(RuntimeError):
            with c.batch() as b2:
                b2.put(b"bt/z", b"Z")
                raise RuntimeError("boom")
        self.assertIsNone(b2.version)
        self.assertIsNone(c.get(b"bt/z"))
        # a failing op fails it all, and says which
        with self.assertRaises(shoal.NotFound) as cm:
            with c.batch() as b3:
                b3.put(b"bt/z", b"Z")
                b3.delete(b"bt/absent")
        self.assertEqual(cm.exception.index, 1)
        self.assertIsNone(c.get(b"bt/z"))
        with self.assertRaises(shoal.Conflict) as cm2:
            with c.batch() as b4:
                b4.put(b"bt/z", b"Z")
                b4.cas(b"bt/x", b.version + 1000, b"no")
        self.assertEqual(cm2.exception.index, 1)
        self.assertIsNone(c.get(b"bt/z"))
        with c.batch() as b5:
            b5.cas(b"bt/x", b.version, b"X2")
            b5.cas(b"bt/new", 0, b"N")
        self.assertEqual(c.get_many([b"bt/x", b"bt/new"]), [b"X2", b"N"])
        # explicit commit; a finished batch refuses more
        b6 = c.batch()
        b6.put(b"bt/e", b"E")
        v = b6.commit()
        self.assertEqual(b6.version, v)
        with self.assertRaises(shoal.Closed):
            b6.put(b"bt/e", b"F")
        # sizes are checked as ops are added
        b7 = c.batch()
        with self.assertRaises(shoal.TooBig):
            b7.put(b"k" * 1025, b"v")
        b7.discard()
        # an empty batch commits
        with c.batch() as b8:
            pass
        self.assertIsInstance(b8.version, int)

    def test_ping_stats(self) -> None:
        c = self.c
        self.assertIsNone(c.ping())
        c.put(b"st/k", b"v")
        st = c.stats()
        self.assertGreaterEqual(st["keys"], 1)
        self.assertEqual(st["broker_pid"], self.broker.proc.pid)
        self.assertGreater(st["commit_seq"], 0)
        self.assertIsInstance(st["requests"], dict)
        self.assertGreaterEqual(st["requests"].get("put", 0), 1)
        self.assertIsInstance(st["errors"], dict)
        for f in ("size", "bytes_used", "readers_claimed", "uptime_ms"):
            self.assertIn(f, st)

    def test_wait(self) -> None:
        c = self.c
        v = c.put(b"wt/k", b"1")
        self.assertEqual(c.wait(b"wt/k", 0, timeout=1), v)
        t0 = time.monotonic()
        self.assertIsNone(c.wait(b"wt/k", after=v, timeout=0.1))
        self.assertGreaterEqual(time.monotonic() - t0, 0.09)
        self.assertIsNone(c.wait(b"wt/never", timeout=0.05))
        # woken by another thread's write
        vs = []

        def later() -> None:
            time.sleep(0.1)
            vs.append(c.put(b"wt/k", b"2"))

        t = threading.Thread(target=later)
        t.start()
        got = c.wait(b"wt/k", after=v, timeout=5)
        t.join()
        self.assertEqual(got, vs[0])
        # a delete wakes with version 0
        t = threading.Thread(target=lambda: (time.sleep(0.05),
                                             c.delete(b"wt/k")))
        t.start()
        self.assertEqual(c.wait(b"wt/k", after=got, timeout=5), 0)
        t.join()
        with self.assertRaises(shoal.InvalidArgument):
            c.wait(b"wt/k", timeout=-1)
        with self.assertRaises(shoal.TooBig):
            c.wait(b"k" * 1025, timeout=0)

    def test_threads(self) -> None:
        """Threads share a client: each gets its own buffer, and its own
        handle for read blocks."""
        c = self.c
        n_threads, n_iter = 6, 300
        for t in range(n_threads):
            c.put(b"th/%d" % t, (b"%d" % t) * (1000 * (t + 1)))
        errors = []

        def work(t: int) -> None:
            try:
                mine = (b"%d" % t) * (1000 * (t + 1))
                for i in range(n_iter):
                    if c.get(b"th/%d" % t) != mine:
                        errors.append("get %d" % t)
                    if c.get_with_version(b"th/%d" % t)[0] != mine:
                        errors.append("get_with_version %d" % t)
                    if i % 10 == 0:
                        with c.read() as r:
                            if bytes(r.get(b"th/%d" % t)) != mine:
                                errors.append("view %d" % t)
                        c.put(b"th/w%d" % t, b"%d" % i)
                    if c.get_many([b"th/%d" % t])[0] != mine:
                        errors.append("get_many %d" % t)
            except Exception as e:  # pragma: no cover
                errors.append(repr(e))

        ts = [threading.Thread(target=work, args=(t,))
              for t in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])


class TestReader(BrokerTestCase):
    def setUp(self) -> None:
        self.c = self.connect()

    def test_views(self) -> None:
        c = self.c
        c.put(b"rd/a", b"alpha")
        c.put(b"rd/e", b"")
        with c.read() as r:
            self.assertTrue(r.active)
            v = r.get(b"rd/a")
            self.assertIsInstance(v, memoryview)
            self.assertTrue(v.readonly)
            self.assertEqual(v.format, "B")
            self.assertEqual(v, b"alpha")
            self.assertEqual(bytes(v[1:3]), b"lp")
            self.assertEqual(v[0], ord("a"))
            self.assertEqual(bytes(r.get(b"rd/e")), b"")
            self.assertIsNone(r.get(b"rd/none"))
            self.assertEqual(bytes(r[b"rd/a"]), b"alpha")
            self.assertIn(b"rd/a", r)
            with self.assertRaises(KeyError):
                r[b"rd/none"]
            with self.assertRaises(TypeError):
                v[0] = 1  # read-only: the mapping is PROT_READ
            vv, ver = r.get_with_version("rd/a")
            self.assertEqual(ver, c.get_with_version(b"rd/a")[1])
            with self.assertRaises(shoal.TooBig):
                r.get(b"k" * 1025)
        self.assertFalse(r.active)

    def test_views_invalid_after_block(self) -> None:
        c = self.c
        c.put(b"rd/x", b"x" * 100)
        c.put(b"rd/y", b"y")
        with c.read() as r:
            v = r.get(b"rd/x")
            many = r.get_many([b"rd/x", b"rd/y"])
            scanned = list(r.scan(prefix=b"rd/"))
        for view in [v] + many + [sv for _, sv in scanned]:
            with self.assertRaises(ValueError):
                view[0]
            with self.assertRaises(ValueError):
                bytes(view)
            with self.assertRaises(ValueError):
                view.tobytes()
        with self.assertRaises(shoal.Closed):
            r.get(b"rd/x")
        with self.assertRaises(shoal.Closed):
            r.get_many([b"rd/x"])
        with self.assertRaises(shoal.Closed):
            r.scan()
        r.close()  # idempotent

    def test_exported_view_warns(self) -> None:
        c = self.c
        c.put(b"rd/exp", b"abc")
        r = c.read()
        v = r.get(b"rd/exp")
        # an export (what numpy.frombuffer holds) keeps a view from being
        # released: the block warns instead of failing
        held = pickle.PickleBuffer(v)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            r.close()
        self.assertEqual(len(w), 1)
        self.assertIn("still exported", str(w[0].message))
        held.release()

    def test_snapshot(self) -> None:
        c = self.c
        c.put(b"rd/s1", b"old")
        c.put(b"rd/s2", b"old")
        with c.read() as r:
            self.assertEqual(r.get(b"rd/s1"), b"old")
            c.put(b"rd/s1", b"new")
            c.put(b"rd/s2", b"new")
            c.put(b"rd/s3", b"new")
            # the block keeps its snapshot; plain gets see the new commit
            self.assertEqual(r.get(b"rd/s2"), b"old")
            self.assertIsNone(r.get(b"rd/s3"))
            self.assertEqual(c.get(b"rd/s2"), b"new")
            self.assertEqual([k for k, _ in r.scan(prefix=b"rd/s")],
                             [b"rd/s1", b"rd/s2"])
            with c.read() as r2:  # another block: another snapshot
                self.assertEqual(r2.get(b"rd/s2"), b"new")
        with c.read() as r:
            self.assertEqual(r.get(b"rd/s2"), b"new")

    def test_get_many_and_scan(self) -> None:
        c = self.c
        with c.batch() as b:
            for i in range(1200):
                b.put(b"rm/%04d" % i, b"%d" % i)
        with c.read() as r:
            got = r.get_many([b"rm/0001", b"rm/none", "rm/0002"])
            self.assertEqual([g if g is None else bytes(g) for g in got],
                             [b"1", None, b"2"])
            self.assertEqual(r.get_many([]), [])
            items = list(r.scan(prefix=b"rm/"))
            self.assertEqual(len(items), 1200)
            self.assertEqual((items[7][0], bytes(items[7][1])),
                             (b"rm/0007", b"7"))
            self.assertEqual(len(list(r.scan(start=b"rm/0100",
                                             end=b"rm/0200"))), 100)
            self.assertEqual(len(list(r.scan(prefix=b"rm/", limit=3))), 3)

    def test_many_views(self) -> None:
        c = self.c
        c.put(b"rd/many", b"v")
        with c.read() as r:
            views = [r.get(b"rd/many") for _ in range(10000)]
            self.assertTrue(all(v == b"v" for v in views))
        with self.assertRaises(ValueError):
            views[-1].tobytes()

    def test_blocks_reuse_handles(self) -> None:
        c = self.c
        before = c.stats()["readers_claimed"]
        for _ in range(50):
            with c.read() as r:
                r.get(b"x")
        gc.collect()
        self.assertLessEqual(c.stats()["readers_claimed"], before + 1)

    def test_fork_inside_block(self) -> None:
        c = self.c
        c.put(b"rd/f", b"f")
        r = c.read()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            code = 1
            try:
                try:
                    r.get(b"rd/f")
                except shoal.Forked:
                    # ... but the client itself works in the child
                    if c.get(b"rd/f") == b"f":
                        code = 0
            finally:
                os._exit(code)
        _, st = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(st)
                         if hasattr(os, "waitstatus_to_exitcode")
                         else st >> 8, 0)
        self.assertEqual(bytes(r.get(b"rd/f")), b"f")  # parent unaffected
        r.close()


class TestFork(BrokerTestCase):
    def test_child_reopens(self) -> None:
        c = self.connect()
        c.put(b"fk/k", b"parent")
        slot_before = c.stats()["readers_claimed"]
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            code = 1
            try:
                ok = c.get(b"fk/k") == b"parent"
                v = c.put(b"fk/k", b"child")
                ok = ok and c.get(b"fk/k") == b"child" and v > 0
                with c.read() as r:
                    ok = ok and r.get(b"fk/k") == b"child"
                ok = ok and c.wait(b"fk/k", timeout=0.01) == v
                code = 0 if ok else 2
            finally:
                os._exit(code)
        _, st = os.waitpid(pid, 0)
        self.assertEqual(st, 0)
        # the parent's handles are untouched
        self.assertEqual(c.get(b"fk/k"), b"child")
        c.put(b"fk/k", b"parent again")
        self.assertEqual(c.get(b"fk/k"), b"parent again")
        self.assertGreaterEqual(c.stats()["readers_claimed"], slot_before - 1)


if __name__ == "__main__":
    unittest.main()
