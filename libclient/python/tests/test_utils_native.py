"""shoal.utils: the native path against the pure-Python one, call by call.

test_utils runs every rule of UTILITIES.md in both modes; this module feeds
the same edge inputs to both implementations of each function directly
(``utils._IMPLS["python"|"native"]``, whatever ``_NATIVE`` selects) and
requires identical outcomes: the same value, or the same exception type and
message. It also checks hash_file against hashlib and the coreutils tools on
random files (sizes around the 256 KiB read size, and 100 MB), and that the
native path really is native (no silent fallback to Python).

No broker: with no shoald reachable, hash_file hashes locally (the broker
path is tested in test_fileops).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from typing import Any, Tuple
from unittest import mock

from shoal import utils

import test_utils as tu  # not its classes: unittest would run them again

PY = utils._IMPLS["python"]
NAT = utils._IMPLS["native"]


def outcome(fn: Any, *args: Any, **kw: Any) -> Tuple[Any, ...]:
    try:
        v = fn(*args, **kw)
        # repr: a float nan equals no other nan, its repr does
        return ("ok", repr(v) if isinstance(v, float) else v, type(v))
    except Exception as e:  # the type and message must match
        return ("raises", type(e), str(e))


def digest_outcome(fn: Any, *args: Any) -> Tuple[Any, ...]:
    try:
        h = fn(*args)
        return ("ok", h.hexdigest(), h.digest(), h.name, h.digest_size)
    except Exception as e:
        return ("raises", type(e), str(e))


class NativeCase(unittest.TestCase):
    def setUp(self) -> None:
        if not utils._load():
            self.skipTest("libshoal with the shoal_util_* functions could "
                          "not be loaded (SHOAL_LIB)")
        self.tmp = tempfile.mkdtemp(prefix="shoal-utils-native-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # no broker: hash_file must not try one from the environment
        patcher = mock.patch.object(utils._broker, "down_until",
                                    time.monotonic() + 3600)
        patcher.start()
        self.addCleanup(patcher.stop)

    def same(self, name: str, *args: Any, **kw: Any) -> Any:
        want = outcome(PY[name], *args, **kw)
        got = outcome(NAT[name], *args, **kw)
        self.assertEqual(got, want, "%s%r %r" % (name, args, kw))
        return got

    def write(self, rel: str, data: bytes) -> str:
        p = os.path.join(self.tmp, rel)
        with open(p, "wb") as f:
            f.write(data)
        return p


class TailSame(NativeCase):
    def test_cases_all_modes(self) -> None:
        cases = list(tu.ReadLastNLines.CASES) + [
            b"\r\n", b"\r", b"a\r", b"\xff\n\xfe", b"\x00\n\x00x\x00",
            b"x" * 20000 + b"\n" + b"y" * 9000,
            b"\n" * 300, "é\n".encode() * 4000 + b"tail",
        ]
        for ci, data in enumerate(cases):
            p = self.write(f"c{ci}", data)
            total = data.count(b"\n") + 2
            for n in sorted({1, 2, 3, 7, total - 1, total, total + 5}):
                if n < 1:
                    continue
                for cs in (1, 2, 3, 8192):
                    for errors in ("replace", "ignore", "backslashreplace",
                                   "strict", "surrogateescape"):
                        with self.subTest(case=ci, n=n, cs=cs, errors=errors):
                            self.same("read_last_n_lines", p, n,
                                      chunk_size=cs, errors=errors)
            for enc in ("latin-1", "utf-16-le", "ascii"):
                with self.subTest(case=ci, encoding=enc):
                    self.same("read_last_n_lines", p, 3, encoding=enc)

    def test_edge_arguments(self) -> None:
        p = self.write("x", b"a\nb\n")
        for args in ((p, 0), (p, -1), (p, 1, 0), (p, 1, -3), (p, True),
                     (os.path.join(self.tmp, "missing"), 1), (self.tmp, 1),
                     (p.encode(), 2), (pathlib.Path(p), 2), (p, 2 ** 70),
                     (p, 1, 2 ** 70)):
            with self.subTest(args=args):
                self.same("read_last_n_lines", *args)
        empty = self.write("empty", b"")
        self.same("read_last_n_lines", empty, 5)
        if os.geteuid() != 0:
            os.chmod(p, 0)
            self.same("read_last_n_lines", p, 1)

    def test_random_against_python(self) -> None:
        rnd = random.Random(5)
        alphabet = [b"a", b"b", b"\n", b"\r", b"\xc3\xa9", b"\xff", b" "]
        for i in range(150):
            data = b"".join(rnd.choice(alphabet)
                            for _ in range(rnd.randrange(0, 300)))
            p = self.write(f"r{i}", data)
            n = rnd.randrange(1, 40)
            cs = rnd.choice((1, 2, 5, 64, 8192))
            with self.subTest(i=i, data=data, n=n, cs=cs):
                self.same("read_last_n_lines", p, n, chunk_size=cs)

    def test_really_native(self) -> None:
        p = self.write("y", b"a\nb\nc\n")
        with mock.patch.object(utils, "_py_tail",
                               side_effect=AssertionError("fell back")):
            self.assertEqual(NAT["read_last_n_lines"](p, 2), ["b\n", "c"])

    def test_large_sparse_file_cost(self) -> None:
        p = os.path.join(self.tmp, "sparse")
        with open(p, "wb") as f:
            f.truncate(1 << 36)
            f.seek(0, os.SEEK_END)
            f.write(b"\nline1\nline2\n")
        t = time.monotonic()
        self.assertEqual(NAT["read_last_n_lines"](p, 2), ["line1\n", "line2"])
        self.assertLess(time.monotonic() - t, 1.0)


class HashSame(NativeCase):
    SIZES = (0, 1, 2 ** 18 - 1, 2 ** 18, 2 ** 18 + 1, 3 * 2 ** 18 + 17)
    TOOLS = {"sha256": "sha256sum", "sha512": "sha512sum",
             "blake2b": "b2sum"}

    def check_file(self, p: str, data: bytes) -> None:
        for alg in ("sha256", "sha512", "blake2b", "md5", "sha1",
                    "sha3_256", "SHA256", "blake2s"):
            with self.subTest(size=len(data), alg=alg):
                ref = hashlib.new(alg, data)
                got = digest_outcome(NAT["hash_file"], p, alg)
                self.assertEqual(got, ("ok", ref.hexdigest(), ref.digest(),
                                       ref.name, ref.digest_size))
                self.assertEqual(got, digest_outcome(PY["hash_file"], p, alg))

    def tool(self, alg: str, p: str) -> str:
        exe = shutil.which(self.TOOLS[alg])
        if exe is None:
            self.skipTest("%s not installed" % self.TOOLS[alg])
        out = subprocess.run([exe, p], check=True, capture_output=True,
                             text=True, timeout=300).stdout
        return out.split()[0]

    def test_sizes(self) -> None:
        for size in self.SIZES:
            data = os.urandom(size)
            p = self.write(f"f{size}", data)
            self.check_file(p, data)
            for alg in self.TOOLS:
                with self.subTest(size=size, tool=alg):
                    self.assertEqual(NAT["hash_file"](p, alg).hexdigest(),
                                     self.tool(alg, p))

    def test_100mb(self) -> None:
        fd, p = tempfile.mkstemp(prefix="shoal-hash-100mb-", dir="/tmp")
        self.addCleanup(os.unlink, p)
        refs = {a: hashlib.new(a) for a in self.TOOLS}
        chunk = os.urandom(1 << 20)
        with os.fdopen(fd, "wb") as f:
            for i in range(100):
                block = bytes([i]) + chunk[1:]
                f.write(block)
                for h in refs.values():
                    h.update(block)
        for alg, ref in refs.items():
            with self.subTest(alg=alg):
                got = NAT["hash_file"](p, alg)
                self.assertEqual(got.hexdigest(), ref.hexdigest())
                self.assertEqual(got.hexdigest(), self.tool(alg, p))

    def test_errors_same(self) -> None:
        p = self.write("x", b"x")
        for args in ((p, "no-such-hash"), (p, ""), (p, None), (p, 5),
                     (os.path.join(self.tmp, "missing"), "sha256"),
                     (self.tmp, "sha256"), (self.tmp, "md5"),
                     (p + "\0", "sha256"), (p.encode(), "sha256"),
                     (pathlib.Path(p), "blake2b")):
            with self.subTest(args=args):
                self.assertEqual(digest_outcome(NAT["hash_file"], *args),
                                 digest_outcome(PY["hash_file"], *args))
        if os.geteuid() != 0:
            os.chmod(p, 0)
            self.assertEqual(digest_outcome(NAT["hash_file"], p, "sha256"),
                             digest_outcome(PY["hash_file"], p, "sha256"))

    def test_local_c_hash(self) -> None:
        # shoal_util_hash_file (not used by shoal.utils, hashlib is faster:
        # see utils._HASH_LOCAL_NATIVE) still equals hashlib
        lib = utils._load()
        for size in (0, 1, 2 ** 18 + 1):
            data = os.urandom(size)
            p = self.write(f"l{size}", data)
            for alg, n in utils._NATIVE_ALGS.items():
                buf = utils._buf(64)
                got = lib.c.shoal_util_hash_file(p.encode(), alg.encode(), n,
                                                 buf, 64)
                self.assertEqual(buf.raw[:got],
                                 hashlib.new(alg, data).digest())

    def test_digest_object(self) -> None:
        d = utils._Digest("sha256", hashlib.sha256(b"x").digest())
        ref = hashlib.sha256(b"x")
        self.assertEqual((d.name, d.digest_size, d.block_size, d.hexdigest()),
                         (ref.name, ref.digest_size, ref.block_size,
                          ref.hexdigest()))
        self.assertEqual(d.copy().digest(), ref.digest())
        with self.assertRaises(TypeError):
            d.update(b"more")


class StringsSame(NativeCase):
    def test_base36(self) -> None:
        rnd = random.Random(1)
        inputs = ["0", "0000", "a", "23", "24", "FF", "ff", "0x1f", "0X1F",
                  " ff ", "\tff\n", "f_f", "_ff", "ff_", "f__f", "+ff", "-1f",
                  "", " ", "xyz", "12g", "0x", "1.5", "١٢", "ｆｆ",
                  "f" * 32, "f" * 64, "1" + "0" * 127, "f" * 1000,
                  "0" * 50 + "1", "\u00a0ff"]
        inputs += ["%x" % rnd.getrandbits(rnd.randrange(1, 600))
                   for _ in range(300)]
        inputs += [hashlib.md5(str(i).encode()).hexdigest()
                   for i in range(100)]
        for s in inputs:
            with self.subTest(s=s):
                self.same("base36_encode", s)
        for bad in (b"ff", 255, None):
            with self.subTest(bad=bad):
                self.same("base36_encode", bad)

    def test_format_float(self) -> None:
        rnd = random.Random(2)
        nums: list = [0.0, -0.0, 1.0, -1.0, 0.5, 1.25, 2.5, 0.05, 1999.99,
                      1e12, 1e300, -1e300, 1e-300, 5e-324,
                      1.7976931348623157e308,
                      float("inf"), float("-inf"), float("nan"),
                      0.1 + 0.2, 123456789.123456789, 5, 0, -7, True, 10 ** 30]
        nums += [rnd.uniform(-1e6, 1e6) for _ in range(200)]
        nums += [rnd.random() * 10 ** rnd.randrange(-20, 20)
                 for _ in range(200)]
        for num in nums:
            for prec in (0, 1, 2, 3, 6, 17, 30):
                with self.subTest(num=num, precision=prec):
                    self.same("format_float", num, prec)
        self.same("format_float", 1.5, -1)
        self.same("format_float", 1.5, 2.0)
        self.same("format_float", "1.5")

    def test_truncate(self) -> None:
        rnd = random.Random(3)
        words = ["a", "bb", "ccc", "dddd", "é", "日本語", "😀😀", "",
                 " ", "x" * 40, "\x00", "tab\tx"]
        strings = ["", "short", "x" * 35, "x" * 36,
                   "The quick brown fox jumps over the lazy dog"]
        strings += [" ".join(rnd.choice(words)
                             for _ in range(rnd.randrange(1, 15)))
                    for _ in range(300)]
        for s in strings:
            for ml in (0, 1, 2, 3, 4, 5, 7, 10, 20, 35, 60):
                for mid in (False, True):
                    with self.subTest(s=s, ml=ml, mid=mid):
                        self.same("truncate_long_string", s, ml, mid)
        for args in (("abc\ud800def", 3), ("abcdef", -1), ("abcdef", 2.0),
                     (None, 3), ("abcdef", 3, 1), ("abcdef", 3, "")):
            with self.subTest(args=args):
                self.same("truncate_long_string", *args)


class SystemSame(NativeCase):
    def test_cpu_mem_env(self) -> None:
        for v in ("3", "2.7", "0.5", "", "two", "1e3", " 4 ", "1_0", "inf",
                  "nan", "-2", "0x10"):
            with self.subTest(cpu=v), \
                    tu.clean_env(SKYPILOT_POD_CPU_CORE_LIMIT=v):
                self.same("get_cpu_count")
            with self.subTest(gb=v), \
                    tu.clean_env(SKYPILOT_POD_MEMORY_GB_LIMIT=v):
                self.same("get_mem_size_gb")
            with self.subTest(bytes=v), \
                    tu.clean_env(SKYPILOT_POD_MEMORY_BYTES_LIMIT=v):
                self.same("get_mem_size_gb")
        with tu.clean_env():
            self.same("get_cpu_count")
            self.same("get_mem_size_gb")

    def test_parallel_threads(self) -> None:
        for cloud in (None, "aws", "kubernetes", "KUBERNETES", "Kubernetes",
                      "k8s", "", "kubernetes\0"):
            with self.subTest(cloud=cloud):
                self.same("get_parallel_threads", cloud)

    def test_max_workers(self) -> None:
        d = os.path.join(self.tmp, "d")
        os.mkdir(d)
        for i in range(30):
            open(os.path.join(d, str(i)), "w").close()
        f = self.write("f", b"")
        for mounts in ({}, {"/a": d}, {"/a": f}, {"/a": "/no/such"},
                       {"/a": d, "/b": f, "/c": self.tmp}):
            for cloud in (None, "kubernetes"):
                with self.subTest(mounts=mounts, cloud=cloud):
                    self.same("get_max_workers_for_file_mounts", mounts,
                              cloud)

    def test_processes(self) -> None:
        for pid in (os.getpid(), os.getppid(), 1, 0, -1, 2 ** 31, 2 ** 31 - 1,
                    2 ** 22 + 12345):
            with self.subTest(pid=pid):
                self.same("is_process_alive", pid)
        pid = os.posix_spawn("/bin/true", ["true"], os.environ)
        try:
            deadline = time.monotonic() + 5
            while True:  # a zombie
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    st = fh.read()
                if st[st.rfind(b")") + 2:][:1] == b"Z":
                    break
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.005)
            self.same("is_process_alive", pid)
            self.assertFalse(NAT["is_process_alive"](pid))
        finally:
            os.waitpid(pid, 0)
        self.same("is_process_alive", pid)

    def test_estimate_fd(self) -> None:
        d = os.path.join(self.tmp, "d")
        os.mkdir(d)
        for i in range(13):
            open(os.path.join(d, str(i)), "w").close()
        f = self.write("f", b"")
        for path in (d, d.encode(), pathlib.Path(d), f, "/no/such", "",
                     d + "\0x"):
            with self.subTest(path=path):
                self.same("estimate_fd_for_directory", path)
        if os.geteuid() != 0:
            os.chmod(d, 0)
            self.addCleanup(os.chmod, d, 0o755)
            self.same("estimate_fd_for_directory", d)

    def test_find_free_port(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            s.listen()
            busy = s.getsockname()[1]
            if busy < 65534:
                self.same("find_free_port", busy)
        for start in (65535, 65536, 70000):
            with self.subTest(start=start):
                self.same("find_free_port", start)
        for start in (-1, 1.5, None):
            with self.subTest(start=start):
                self.same("find_free_port", start)


if __name__ == "__main__":
    unittest.main()
