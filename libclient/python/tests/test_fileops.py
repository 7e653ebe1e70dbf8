"""Client.hash_file / tail / follow, and shoal.utils' broker path, against a
real shoald (the HashFile and TailLog requests)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from typing import Any, List
from unittest import mock

import shoal
from shoal import utils
from shoaltest import NAME, BrokerTestCase

import test_utils as tu  # its CASES, not its classes (unittest runs those)


def _have(*names: str) -> bool:
    try:
        from shoal import client
        return client._load().has(*names)
    except Exception:
        return False


class FileCase(BrokerTestCase):
    NEED = ("shoal_hash_fd", "shoal_tail_fd", "shoal_follow_open")

    @classmethod
    def setUpClass(cls) -> None:
        if not _have(*cls.NEED):
            raise unittest.SkipTest("libshoal has no %s yet" % (cls.NEED,))
        super().setUpClass()

    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="shoal-fileops-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.c = self.connect()

    def write(self, rel: str, data: bytes) -> str:
        p = os.path.join(self.tmp, rel)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def counters(self) -> dict:
        st = self.c.stats()
        return {"hits": st.get("hash_cache_hits", 0),
                "misses": st.get("hash_cache_misses", 0),
                "hash_req": st["requests"].get("hash_file", 0),
                "tail_req": st["requests"].get("tail_log", 0)}


class TestHashFile(FileCase):
    def test_equal_to_hashlib(self) -> None:
        for size in (0, 1, 2 ** 18 - 1, 2 ** 18, 2 ** 18 + 1, 3 << 20):
            data = os.urandom(size)
            p = self.write(f"f{size}", data)
            with self.subTest(size=size):
                self.assertEqual(self.c.hash_file(p),
                                 hashlib.blake2b(data,
                                                 digest_size=32).hexdigest())
                self.assertEqual(self.c.hash_file(p, digest_size=64),
                                 hashlib.blake2b(data).hexdigest())
                self.assertEqual(self.c.hash_file(p, "blake2b", 20),
                                 hashlib.blake2b(data,
                                                 digest_size=20).hexdigest())
                for alg in ("sha256", "sha512"):
                    self.assertEqual(self.c.hash_file(p, alg),
                                     hashlib.new(alg, data).hexdigest())

    def test_cache(self) -> None:
        data = os.urandom(1 << 20)
        p = self.write("cached", data)
        before = self.counters()
        first = self.c.hash_file(p, "sha256")
        mid = self.counters()
        second = self.c.hash_file(p, "sha256")
        after = self.counters()
        self.assertEqual(first, second)
        self.assertEqual(first, hashlib.sha256(data).hexdigest())
        self.assertEqual(mid["hash_req"] - before["hash_req"], 1)
        self.assertEqual(after["hash_req"] - mid["hash_req"], 1)
        self.assertEqual(mid["misses"] - before["misses"], 1)
        self.assertEqual(after["hits"] - mid["hits"], 1)
        self.assertEqual(after["misses"], mid["misses"])
        # another digest length of the same file is another cache entry
        b32 = self.c.hash_file(p, "blake2b", 32)
        b64 = self.c.hash_file(p, "blake2b", 64)
        self.assertEqual(b32,
                         hashlib.blake2b(data, digest_size=32).hexdigest())
        self.assertEqual(b64, hashlib.blake2b(data).hexdigest())
        # a change (size, mtime) is a miss again
        with open(p, "ab") as f:
            f.write(b"more")
        m0 = self.counters()["misses"]
        self.assertEqual(self.c.hash_file(p, "sha256"),
                         hashlib.sha256(data + b"more").hexdigest())
        self.assertEqual(self.counters()["misses"], m0 + 1)

    def test_errors(self) -> None:
        p = self.write("x", b"x")
        with self.assertRaises(FileNotFoundError):
            self.c.hash_file(os.path.join(self.tmp, "missing"))
        with self.assertRaises(shoal.NotRegularFile) as cm:
            self.c.hash_file(self.tmp)
        self.assertIsInstance(cm.exception, OSError)
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        with self.assertRaises(shoal.NotRegularFile):
            self.c.hash_file(fifo)  # refused, not hanging for a writer
        for bad in ("md5", "nope", "sha256x"):
            with self.assertRaises(shoal.InvalidArgument):
                self.c.hash_file(p, bad)
        for size in (0, -1, 65, 8):
            with self.assertRaises(shoal.InvalidArgument):
                self.c.hash_file(p, "blake2b", size)
        with self.assertRaises(shoal.InvalidArgument):
            self.c.hash_file(p, "sha256", 16)
        if os.geteuid() != 0:
            os.chmod(p, 0)
            with self.assertRaises(PermissionError):
                self.c.hash_file(p)

    def test_threads(self) -> None:
        files = []
        for i in range(8):
            data = os.urandom(100000 + i)
            files.append((self.write(f"t{i}", data),
                          hashlib.sha256(data).hexdigest()))
        errors: List[Any] = []

        def work() -> None:
            try:
                for _ in range(10):
                    for p, want in files:
                        if self.c.hash_file(p, "sha256") != want:
                            errors.append(p)
            except Exception as e:  # reported below
                errors.append(e)

        ts = [threading.Thread(target=work) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])

    def test_closed(self) -> None:
        c = shoal.connect(NAME, socket=self.broker.sock)
        c.close()
        with self.assertRaises(shoal.Closed):
            c.hash_file(self.write("y", b"y"))


class TestTail(FileCase):
    def test_cases_equal_fallback(self) -> None:
        cases = list(tu.ReadLastNLines.CASES) + [b"\r\n", b"\x00a\n\x00"]
        for ci, data in enumerate(cases):
            p = self.write(f"c{ci}", data)
            total = data.count(b"\n") + 2
            for n in sorted({0, 1, 2, 3, total - 1, total, total + 10}):
                for errors in ("replace", "ignore", "backslashreplace"):
                    with self.subTest(case=ci, n=n, errors=errors):
                        self.assertEqual(
                            self.c.tail(p, n, errors=errors),
                            utils._py_read_last_n_lines(p, n, errors=errors))

    def test_rules(self) -> None:
        self.assertEqual(self.c.tail(self.write("a", b"a\nb\n"), 2),
                         ["a\n", "b"])
        self.assertEqual(self.c.tail(self.write("b", b"\n"), 1), [""])
        self.assertEqual(self.c.tail(self.write("e", b""), 5), [])
        big = b"".join(b"line %d\n" % i for i in range(200000))
        p = self.write("big", big)
        self.assertEqual(self.c.tail(p), utils._py_read_last_n_lines(p, 100))
        self.assertEqual(len(self.c.tail(p)), 100)
        with self.assertRaises(shoal.InvalidArgument):
            self.c.tail(p, -1)
        with self.assertRaises(TypeError):
            self.c.tail(p, 1.5)  # type: ignore[arg-type]

    def test_errors(self) -> None:
        with self.assertRaises(FileNotFoundError):
            self.c.tail(os.path.join(self.tmp, "missing"))
        with self.assertRaises(shoal.NotRegularFile):
            self.c.tail(self.tmp)
        before = self.counters()["tail_req"]
        self.c.tail(self.write("z", b"z\n"))
        self.assertEqual(self.counters()["tail_req"], before + 1)

    def test_too_big(self) -> None:
        p = self.write("huge", (b"x" * (1 << 20) + b"\n") * 80)
        with self.assertRaises(shoal.TooBig):
            self.c.tail(p, 80)  # 80 MiB: over the default --max-frame


class TestFollow(FileCase):
    def test_initial_lines_then_appends(self) -> None:
        p = self.write("log", b"".join(b"old %d\n" % i for i in range(20)))
        with self.c.follow(p, n=3, timeout=5) as f:
            got = [next(f) for _ in range(3)]
            self.assertEqual(got, ["old 17\n", "old 18\n", "old 19\n"])
            with open(p, "ab") as w:
                w.write(b"new 1\r\nnew 2\npart")
            self.assertEqual(next(f), "new 1\n")
            self.assertEqual(next(f), "new 2\n")
            with open(p, "ab") as w:
                w.write(b"ial \xff\n")
            self.assertEqual(next(f), "partial \ufffd\n")
        self.assertTrue(f.closed)
        self.assertEqual(list(f), [])  # closed: iteration stops

    def test_2000_lines_from_a_writer(self) -> None:
        p = self.write("w", b"")
        want = ["line %05d %s\n" % (i, "x" * (i % 37)) for i in range(2000)]

        def writer() -> None:
            with open(p, "a") as w:
                for i, line in enumerate(want):
                    w.write(line)
                    if i % 7 == 0:
                        w.flush()
                    if i % 100 == 0:
                        time.sleep(0.005)

        with self.c.follow(p, n=0, timeout=10) as f:
            t = threading.Thread(target=writer)
            t.start()
            got = []
            for item in f:
                self.assertIsInstance(item, str)
                got.append(item)
                if len(got) == len(want):
                    break
            t.join()
        self.assertEqual(got, want)  # nothing lost, duplicated or reordered

    def test_writer_process(self) -> None:
        p = self.write("wp", b"")
        code = ("import sys\n"
                "with open(sys.argv[1], 'ab', buffering=0) as w:\n"
                "    for i in range(2000):\n"
                "        w.write(b'%d\\n' % i)\n")
        with self.c.follow(p, n=0, timeout=10) as f:
            proc = subprocess.Popen([sys.executable, "-c", code, p])
            got = []
            for item in f:
                got.append(item)
                if len(got) == 2000:
                    break
            proc.wait(30)
        self.assertEqual(got, ["%d\n" % i for i in range(2000)])

    def test_truncation(self) -> None:
        p = self.write("t", b"a\nb\n")
        with self.c.follow(p, n=2, timeout=5) as f:
            self.assertEqual([next(f), next(f)], ["a\n", "b\n"])
            with open(p, "r+b") as w:
                w.truncate(0)
            ev = next(f)
            self.assertEqual(ev, shoal.FollowEvent("truncated", 0, p))
            with open(p, "ab") as w:
                w.write(b"after\n")
            self.assertEqual(next(f), "after\n")

    def test_rotation_reopen(self) -> None:
        p = self.write("r", b"one\n")
        with self.c.follow(p, n=1, timeout=5) as f:
            self.assertEqual(next(f), "one\n")
            os.rename(p, p + ".1")
            with open(p, "wb") as w:
                w.write(b"two\n")
            items = []
            for item in f:
                items.append(item)
                if item == "two\n":
                    break
            kinds = [i.kind for i in items if isinstance(i, shoal.FollowEvent)]
            self.assertIn("rotated", kinds)
            ev = [i for i in items if isinstance(i, shoal.FollowEvent)][0]
            self.assertEqual(ev.path, p)
            with open(p, "ab") as w:
                w.write(b"three\n")
            self.assertEqual(next(f), "three\n")

    def test_rotation_no_reopen(self) -> None:
        p = self.write("rn", b"one\n")
        with self.c.follow(p, n=1, reopen=False, timeout=3) as f:
            self.assertEqual(next(f), "one\n")
            os.rename(p, p + ".1")
            ev = next(f)
            self.assertIsInstance(ev, shoal.FollowEvent)
            self.assertEqual(ev.kind, "rotated")
            with open(p + ".1", "ab") as w:
                w.write(b"old file\n")
            self.assertEqual(next(f), "old file\n")

    def test_timeout_and_close_from_thread(self) -> None:
        p = self.write("idle", b"")
        f = self.c.follow(p, n=0, timeout=0.3)
        t0 = time.monotonic()
        self.assertEqual(list(f), [])
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertLess(time.monotonic() - t0, 3)
        f.timeout = None
        threading.Timer(0.3, f.close).start()
        t0 = time.monotonic()
        self.assertEqual(list(f), [])  # close() ends a blocked iteration
        self.assertLess(time.monotonic() - t0, 3)

    def test_fileno_and_client_closed_first(self) -> None:
        p = self.write("fd", b"x\n")
        c = shoal.connect(NAME, socket=self.broker.sock)
        f = c.follow(p, n=1, timeout=0)
        c.close()  # the follower has its own connection
        self.assertEqual(list(f), ["x\n"])  # timeout 0: what is buffered
        import select
        with open(p, "ab") as w:
            w.write(b"y\n")
        r, _, _ = select.select([f.fileno()], [], [], 5)
        self.assertEqual(r, [f.fileno()])
        f.timeout = 5
        self.assertEqual(next(f), "y\n")
        f.close()
        with self.assertRaises(shoal.Closed):
            f.fileno()

    def test_errors(self) -> None:
        with self.assertRaises(FileNotFoundError):
            self.c.follow(os.path.join(self.tmp, "missing"))
        with self.assertRaises(shoal.NotRegularFile):
            self.c.follow(self.tmp)


def _child_hash(path: str, q: Any) -> None:
    try:
        q.put(utils.hash_file(path, "sha256").hexdigest())
    except Exception as e:  # reported to the parent
        q.put(repr(e))


class TestUtilsViaBroker(FileCase):
    """shoal.utils.hash_file takes the broker path when one is reachable
    ($SHOAL_SOCKET), so its cache serves every process."""

    def setUp(self) -> None:
        super().setUp()
        if not utils._load():
            self.skipTest("no native shoal.utils")
        env = mock.patch.dict(os.environ, {"SHOAL_SOCKET": self.broker.sock,
                                           "SHOAL_NAME": NAME})
        env.start()
        self.addCleanup(env.stop)
        utils._broker.after_fork()  # forget handles and failures so far
        utils._broker.down_until = 0.0
        self.addCleanup(utils._broker.after_fork)

    def test_cache_shared(self) -> None:
        data = os.urandom(300000)
        p = self.write("u", data)
        before = self.counters()
        for alg in ("sha256", "sha512", "blake2b"):
            h = utils._nat_hash_file(p, alg)
            ref = hashlib.new(alg, data)
            self.assertEqual((h.hexdigest(), h.name, h.digest_size),
                             (ref.hexdigest(), ref.name, ref.digest_size))
        mid = self.counters()
        self.assertEqual(mid["hash_req"] - before["hash_req"], 3)
        with mock.patch.object(utils, "_py_hash_file",
                               side_effect=AssertionError("not native")):
            utils._nat_hash_file(p, "sha256")
        self.assertEqual(self.counters()["hits"] - mid["hits"], 1)
        # a forked child uses its own handle, and the cache
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        pr = ctx.Process(target=_child_hash, args=(p, q))
        pr.start()
        self.assertEqual(q.get(timeout=30), hashlib.sha256(data).hexdigest())
        pr.join(30)
        self.assertEqual(self.counters()["hits"] - mid["hits"], 2)
        # the parent's handles still work
        self.assertEqual(utils._nat_hash_file(p, "sha256").hexdigest(),
                         hashlib.sha256(data).hexdigest())

    def test_small_files_stay_local(self) -> None:
        data = os.urandom(utils._HASH_BROKER_MIN - 1)
        p = self.write("small", data)
        before = self.counters()["hash_req"]
        for alg in ("sha256", "sha512", "blake2b", "md5"):
            self.assertEqual(utils._nat_hash_file(p, alg).hexdigest(),
                             hashlib.new(alg, data).hexdigest())
        self.assertEqual(self.counters()["hash_req"], before)

    def test_selected_function_uses_broker(self) -> None:
        utils._select("native")
        self.addCleanup(utils._select, utils._MODE)
        data = os.urandom(1 << 20)
        p = self.write("sel", data)
        before = self.counters()["hash_req"]
        h = utils.hash_file(p, "blake2b")
        self.assertEqual(h.hexdigest(), hashlib.blake2b(data).hexdigest())
        self.assertEqual(h.digest_size, 64)
        self.assertEqual(self.counters()["hash_req"], before + 1)

    def test_broker_gone_falls_back(self) -> None:
        data = os.urandom(200000)
        p = self.write("g", data)
        self.assertEqual(utils._nat_hash_file(p, "sha256").hexdigest(),
                         hashlib.sha256(data).hexdigest())
        with mock.patch.dict(os.environ,
                             {"SHOAL_SOCKET": self.tmp + "/nobody.sock"}):
            utils._broker.after_fork()
            t0 = time.monotonic()
            for _ in range(20):
                self.assertEqual(utils._nat_hash_file(p, "sha512").digest(),
                                 hashlib.sha512(data).digest())
            self.assertLess(time.monotonic() - t0, 5)
            self.assertGreater(utils._broker.down_until, time.monotonic())
        # errors are upstream's, whichever path answered
        with self.assertRaises(IsADirectoryError):
            utils._broker.down_until = 0.0
            utils._nat_hash_file(self.tmp, "sha256")


if __name__ == "__main__":
    unittest.main()
