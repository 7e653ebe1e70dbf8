"""shoal.utils against every rule of UTILITIES.md, in both modes.

Every test class runs twice: as is, on the pure-Python path (no libshoal
needed), and as ``<Class>Native`` with the native path selected
(``utils._select("native")``; skipped when libshoal or its utility
functions can not be loaded). Both answer to the same expectations, so
the two paths give identical results on every case here; test_utils_native
adds direct comparisons of the two. cgroup and /proc files are faked under
a temporary directory through SHOAL_CGROUP_ROOT / SHOAL_PROC_ROOT.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import resource
import shutil
import socket
import tempfile
import time
import unittest
from typing import List
from unittest import mock

from shoal import utils

GIB = 1024 ** 3
ENV_KEYS = ("SKYPILOT_POD_CPU_CORE_LIMIT", "SKYPILOT_POD_MEMORY_GB_LIMIT",
            "SKYPILOT_POD_MEMORY_BYTES_LIMIT", "SHOAL_CGROUP_ROOT",
            "SHOAL_PROC_ROOT")


def clean_env(**extra: str) -> "mock._patch_dict":
    """os.environ without the variables under test, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(extra)
    return mock.patch.dict(os.environ, env, clear=True)


def reference_tail(data: bytes, n: int, encoding: str = "utf-8",
                   errors: str = "replace") -> List[str]:
    """The rules of UTILITIES.md applied plainly to the whole content."""
    if n == 0 or not data:
        return []
    pieces = data.split(b"\n")
    if data.endswith(b"\n"):
        pieces = pieces[:-1]
    last = pieces[-n:] if n <= len(pieces) else pieces
    out = []
    for i, p in enumerate(last):
        line = p.decode(encoding, errors).rstrip("\r")
        out.append(line if i == len(last) - 1 else line + "\n")
    return out


class ModeCase(unittest.TestCase):
    """Runs its tests with shoal.utils in MODE ("python" or "native")."""

    MODE = "python"

    def setUp(self) -> None:
        if self.MODE == "native" and not utils._load():
            self.skipTest("libshoal with the shoal_util_* functions could "
                          "not be loaded (SHOAL_LIB)")
        utils._select(self.MODE)
        self.addCleanup(utils._select, utils._MODE)


class TmpDirCase(ModeCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="shoal-utils-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, rel: str, data: "bytes | str") -> str:
        path = os.path.join(self.tmp, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(path, mode) as f:
            f.write(data)
        return path


class ReadLastNLines(TmpDirCase):
    CASES = [
        b"", b"\n", b"\n\n", b"a", b"a\n", b"a\nb", b"a\nb\n", b"a\n\nb\n\n",
        b"one\r\ntwo\r\nthree\r\n", b"one\r\ntwo\r\nthree", b"x\r\r\n\r\n",
        b"no newline at all, just a long line of text",
        "héllo\n日本語\nemoji 😀 line\nlast é".encode(),
        b"bad \xff\xfe utf8\nok\n\xe6\x97\nend\xe6",
        b"\n".join(b"line %d " % i + b"x" * (i % 13) for i in range(200)),
        b"\n".join(b"line %d" % i for i in range(50)) + b"\n",
    ]

    def test_worked_examples(self) -> None:
        p = self.write("a", b"a\nb\n")
        self.assertEqual(utils.read_last_n_lines(p, 2), ["a\n", "b"])
        p = self.write("b", b"\n")
        self.assertEqual(utils.read_last_n_lines(p, 1), [""])

    def test_basic_rules(self) -> None:
        p = self.write("c", b"a\nb\nc")
        self.assertEqual(utils.read_last_n_lines(p, 1), ["c"])
        self.assertEqual(utils.read_last_n_lines(p, 2), ["b\n", "c"])
        self.assertEqual(utils.read_last_n_lines(p, 100), ["a\n", "b\n", "c"])
        self.assertEqual(utils.read_last_n_lines(p, 0), [])
        p = self.write("crlf", b"a\r\nb\r\n")
        self.assertEqual(utils.read_last_n_lines(p, 5), ["a\n", "b"])
        p = self.write("empty", b"")
        self.assertEqual(utils.read_last_n_lines(p, 3), [])
        p = self.write("blank", b"\n\n\n")
        self.assertEqual(utils.read_last_n_lines(p, 2), ["\n", ""])

    def test_against_reference_all_chunk_sizes(self) -> None:
        for ci, data in enumerate(self.CASES):
            p = self.write(f"case{ci}", data)
            total = data.count(b"\n") + 2
            for n in sorted({0, 1, 2, 3, 5, total - 1, total, total + 10}):
                if n < 0:
                    continue
                for cs in (1, 2, 3, 7, 8192):
                    with self.subTest(case=ci, n=n, chunk_size=cs):
                        self.assertEqual(
                            utils.read_last_n_lines(p, n, chunk_size=cs),
                            reference_tail(data, n))

    def test_invalid_utf8_errors_modes(self) -> None:
        data = b"good\nbad \xff here\nlast \xe6\x97"
        p = self.write("bad", data)
        for errors in ("replace", "ignore", "backslashreplace"):
            for cs in (1, 3, 8192):
                with self.subTest(errors=errors, chunk_size=cs):
                    got = utils.read_last_n_lines(p, 3, chunk_size=cs,
                                                  errors=errors)
                    self.assertEqual(got, reference_tail(data, 3,
                                                         errors=errors))
        self.assertEqual(utils.read_last_n_lines(p, 2, errors="replace"),
                         ["bad \ufffd here\n", "last \ufffd"])
        self.assertEqual(utils.read_last_n_lines(p, 2, errors="ignore"),
                         ["bad  here\n", "last "])
        with self.assertRaises(UnicodeDecodeError):
            utils.read_last_n_lines(p, 2, errors="strict")
        # strict is fine when the undecodable bytes are outside the tail
        p = self.write("bad2", b"\xff\xfe\nok\n")
        self.assertEqual(utils.read_last_n_lines(p, 1, errors="strict"),
                         ["ok"])

    def test_multibyte_split_across_chunks(self) -> None:
        data = "é日本語😀\n".encode() * 5
        p = self.write("mb", data)
        for cs in (1, 2, 3, 5, 7):
            self.assertEqual(
                utils.read_last_n_lines(p, 3, chunk_size=cs, errors="strict"),
                ["é日本語😀\n"] * 2 + ["é日本語😀"])

    def test_other_encoding(self) -> None:
        data = "a\nçé\n".encode("latin-1")
        p = self.write("l1", data)
        self.assertEqual(utils.read_last_n_lines(p, 1, encoding="latin-1"),
                         ["çé"])

    def test_bad_arguments(self) -> None:
        p = self.write("x", b"x\n")
        with self.assertRaises(AssertionError):
            utils.read_last_n_lines(p, -1)
        with self.assertRaises(AssertionError):
            utils.read_last_n_lines(p, 1, chunk_size=0)
        with self.assertRaises(AssertionError):
            utils.read_last_n_lines(p, 1, chunk_size=-5)
        with self.assertRaises(AssertionError):
            utils.read_last_n_lines(os.path.join(self.tmp, "missing"), 1)

    def test_oserror_becomes_runtimeerror(self) -> None:
        with self.assertRaises(RuntimeError):
            utils.read_last_n_lines(self.tmp, 1)  # a directory
        if os.geteuid() != 0:
            p = self.write("noperm", b"x\n")
            os.chmod(p, 0)
            with self.assertRaises(RuntimeError):
                utils.read_last_n_lines(p, 1)

    def test_reads_from_the_end_only(self) -> None:
        # A sparse 1 TiB-ish file: reading it whole would take forever.
        p = os.path.join(self.tmp, "sparse")
        with open(p, "wb") as f:
            f.truncate(1 << 36)
            f.seek(0, os.SEEK_END)
            f.write(b"\nline1\nline2\n")
        t = time.monotonic()
        self.assertEqual(utils.read_last_n_lines(p, 2), ["line1\n", "line2"])
        self.assertLess(time.monotonic() - t, 1.0)


class HashFile(TmpDirCase):
    SIZES = (0, 1, 2 ** 18 - 1, 2 ** 18, 2 ** 18 + 1, 3 * 2 ** 18 + 17)
    ALGS = ("sha256", "sha512", "blake2b", "md5", "sha1", "sha3_256")

    def test_equal_to_hashlib(self) -> None:
        for size in self.SIZES:
            data = os.urandom(size)
            p = self.write(f"f{size}", data)
            for alg in self.ALGS:
                with self.subTest(size=size, alg=alg):
                    h = utils.hash_file(p, alg)
                    ref = hashlib.new(alg, data)
                    self.assertEqual(h.hexdigest(), ref.hexdigest())
                    self.assertEqual(h.digest(), ref.digest())
                    self.assertEqual(h.name, ref.name)
                    self.assertEqual(h.digest_size, ref.digest_size)

    def test_unknown_algorithm(self) -> None:
        p = self.write("x", b"x")
        with self.assertRaises(ValueError):
            utils.hash_file(p, "no-such-hash")

    def test_missing_file(self) -> None:
        with self.assertRaises(FileNotFoundError):
            utils.hash_file(os.path.join(self.tmp, "missing"), "sha256")


class FindFreePort(ModeCase):
    def test_skips_bound_port(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            s.listen()
            busy = s.getsockname()[1]
            if busy >= 65534:
                self.skipTest("ephemeral port at the top of the range")
            port = utils.find_free_port(busy)
            self.assertGreater(port, busy)
            self.assertLess(port, 65535)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", port))  # it really was free

    def test_none_free(self) -> None:
        with self.assertRaises(OSError) as cm:
            utils.find_free_port(65535)
        self.assertEqual(str(cm.exception), "No free ports available.")


class Base36(ModeCase):
    def test_values(self) -> None:
        self.assertEqual(utils.base36_encode("0"), "0")
        self.assertEqual(utils.base36_encode("0000"), "0")
        self.assertEqual(utils.base36_encode("a"), "a")
        self.assertEqual(utils.base36_encode("23"), "z")  # 35
        self.assertEqual(utils.base36_encode("24"), "10")  # 36
        self.assertEqual(utils.base36_encode("FF"), "73")  # 255
        for hexs in (hashlib.md5(b"x").hexdigest(),
                     hashlib.sha256(b"x").hexdigest(),
                     "f" * 32, "f" * 64, "1" + "0" * 127):
            with self.subTest(hexs=hexs):
                got = utils.base36_encode(hexs)
                self.assertEqual(int(got, 36), int(hexs, 16))
                self.assertRegex(got, r"^[0-9a-z]+$")
                self.assertFalse(len(got) > 1 and got[0] == "0")

    def test_invalid(self) -> None:
        for bad in ("", "xyz", "12g", "0x", " ", "1.5"):
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    utils.base36_encode(bad)

    def test_negative_is_valueerror(self) -> None:
        with self.assertRaises(ValueError):
            utils.base36_encode("-1f")


class FormatFloat(ModeCase):
    def test_cases(self) -> None:
        f = utils.format_float
        self.assertEqual(f(5), "5")
        self.assertEqual(f(0), "0")
        self.assertEqual(f(-12), "-12")
        self.assertEqual(f(10 ** 12), "1000000000000")  # no K/M/B
        self.assertEqual(f(5.0), "5")
        self.assertEqual(f(-3.0), "-3")
        self.assertEqual(f(1e12), "1000000000000")
        self.assertEqual(f(1.25), "1.2")  # banker's-free: binary 1.25 -> 1.2
        self.assertEqual(f(1.26), "1.3")
        self.assertEqual(f(3.14159, 3), "3.142")
        self.assertEqual(f(3.14159, 0), "3")
        self.assertEqual(f(2.5, 3), "2.500")
        self.assertEqual(f(0.05), "0.1")
        self.assertEqual(f(1999.99), "2000.0")
        self.assertEqual(f(float("inf")), "inf")
        self.assertEqual(f(float("nan")), "nan")


class TruncateLongString(ModeCase):
    def test_unchanged(self) -> None:
        t = utils.truncate_long_string
        self.assertEqual(t("short"), "short")
        self.assertEqual(t("x" * 35), "x" * 35)
        self.assertEqual(t("日本語", 3), "日本語")  # 9 bytes, 3 characters
        self.assertEqual(t("😀😀", 2, True), "😀😀")
        self.assertEqual(t("", 0), "")

    def test_middle(self) -> None:
        t = utils.truncate_long_string
        s = "abcdefghijklmnopqrstuvwxyz"
        self.assertEqual(t(s, 0, True), "...")
        self.assertEqual(t(s, 3, True), "...")
        self.assertEqual(t(s, 4, True), "a...")
        self.assertEqual(t(s, 5, True), "a...z")
        self.assertEqual(t(s, 6, True), "ab...z")
        self.assertEqual(t(s, 10, True), "abcd...xyz")
        self.assertEqual(t(s, 11, True), "abcd...wxyz")
        for ml in range(4, 26):
            r = t(s, ml, True)
            self.assertEqual(len(r), ml)
            k = ml - 3
            self.assertEqual(r, s[:math.ceil(k / 2)] + "..." +
                             (s[-(k // 2):] if k // 2 else ""))

    def test_middle_multibyte(self) -> None:
        t = utils.truncate_long_string
        self.assertEqual(t("é" * 10, 7, True), "éé...éé")
        self.assertEqual(t("日本語テキスト文字列", 6, True), "日本...列")
        s = "😀🎉🚀✨🔥💡🌍"
        self.assertEqual(t(s, 5, True), "😀...🌍")
        self.assertEqual(t(s, 4, True), "😀...")

    def test_end_mode(self) -> None:
        t = utils.truncate_long_string
        # first word longer than max_length
        self.assertEqual(t("abcdefghij klm", 5), "abcde...")
        # words while the running total stays below max_length, then pad
        self.assertEqual(t("hello world foo bar", 12), "hello world ...")
        # word lengths 2, 4, 6 stay below 7: three words kept, and the
        # spaces between them make the result longer than max_length + 3
        self.assertEqual(t("aa bb cc dd ee", 7), "aa bb cc...")
        self.assertEqual(t("aa bb cc dd ee", 9), "aa bb cc dd...")
        self.assertEqual(t("a b c", 4), "a b ...")
        self.assertEqual(t("aaaa bbbb", 5), "aaaa ...")
        s = "The quick brown fox jumps over the lazy dog again and again"
        self.assertEqual(t(s), "The quick brown fox jumps over the lazy...")
        self.assertEqual(t(s, 20), "The quick brown fox ...")
        r = t(s, 20)
        self.assertLessEqual(len(r), 23)
        self.assertTrue(r.endswith("..."))

    def test_end_mode_small_max(self) -> None:
        t = utils.truncate_long_string
        self.assertEqual(t("abcdef", 0), "...")
        self.assertEqual(t("abcdef", 1), "a...")
        self.assertEqual(t("abcdef", 2), "ab...")
        self.assertEqual(t("abcdef", 3), "abc...")
        self.assertEqual(t("abcdef", 4), "abcd...")
        self.assertEqual(t("abcdef", 5), "abcde...")
        self.assertEqual(t("a bcdef", 0), "...")
        self.assertEqual(t("a bcdef", 1), "a...")
        self.assertEqual(t("a bcdef", 2), "a ...")
        self.assertEqual(t("a bcdef", 3), "a b...")
        self.assertEqual(t(" abc", 0), "...")
        self.assertEqual(t(" abc", 1), " ...")

    def test_end_mode_multibyte(self) -> None:
        t = utils.truncate_long_string
        self.assertEqual(t("ééééé ééé", 3), "ééé...")
        self.assertEqual(t("日本語 テキスト 文字列", 8), "日本語 テキスト...")
        self.assertEqual(t("日本語 テキスト 文字列", 6), "日本語 テキ...")
        self.assertEqual(t("😀😀 🎉🎉 🚀🚀", 5), "😀😀 🎉🎉...")
        self.assertEqual(t("😀😀😀😀", 2), "😀😀...")


class CpuAndMemory(TmpDirCase):
    def cgroup(self, files: dict, v2: bool) -> str:
        root = os.path.join(self.tmp, "cg2" if v2 else "cg1")
        os.makedirs(root, exist_ok=True)
        if v2:
            self.write(os.path.join(root, "cgroup.controllers"),
                       "cpu memory\n")
        for rel, content in files.items():
            self.write(os.path.join(root, rel), content)
        return root

    @staticmethod
    def host_cpus() -> int:
        n = os.cpu_count() or 1
        return min(n, len(os.sched_getaffinity(0)))

    def test_cpu_env_override(self) -> None:
        for v, want in (("3", 3), ("2.7", 2), ("0.5", 0), ("64", 64)):
            with clean_env(SKYPILOT_POD_CPU_CORE_LIMIT=v):
                self.assertEqual(utils.get_cpu_count(), want)
        for bad in ("", "two", "1,5"):
            with clean_env(SKYPILOT_POD_CPU_CORE_LIMIT=bad):
                with self.assertRaises(ValueError):
                    utils.get_cpu_count()

    def test_cpu_cgroup_v2(self) -> None:
        host = self.host_cpus()
        cases = (("max 100000\n", host), ("200000 100000\n", min(host, 2)),
                 ("50000 100000\n", 0), ("150000 100000", min(host, 1)),
                 ("100000000 100000", host), ("garbage\n", host), ("", host))
        for content, want in cases:
            root = self.cgroup({"cpu.max": content}, v2=True)
            with self.subTest(content=content), \
                    clean_env(SHOAL_CGROUP_ROOT=root):
                self.assertEqual(utils.get_cpu_count(), want)
        # cpu.max missing or unreadable: no limit
        root = self.cgroup({}, v2=True)
        os.remove(os.path.join(root, "cpu.max"))
        with clean_env(SHOAL_CGROUP_ROOT=root):
            self.assertEqual(utils.get_cpu_count(), host)
        os.mkdir(os.path.join(root, "cpu.max"))  # unreadable as a file
        with clean_env(SHOAL_CGROUP_ROOT=root):
            self.assertEqual(utils.get_cpu_count(), host)

    def test_cpu_cgroup_v1(self) -> None:
        host = self.host_cpus()
        cases = (("-1", "100000", host), ("200000", "100000", min(host, 2)),
                 ("50000", "100000", 0), ("100000", "0", host),
                 ("0", "100000", host), ("300000", "100000", min(host, 3)))
        for quota, period, want in cases:
            root = self.cgroup({"cpu/cpu.cfs_quota_us": quota + "\n",
                                "cpu/cpu.cfs_period_us": period + "\n"},
                               v2=False)
            with self.subTest(quota=quota, period=period), \
                    clean_env(SHOAL_CGROUP_ROOT=root):
                self.assertEqual(utils.get_cpu_count(), want)
        root = self.cgroup({"cpu/cpu.cfs_quota_us": "50000"}, v2=False)
        os.remove(os.path.join(root, "cpu/cpu.cfs_period_us"))
        with clean_env(SHOAL_CGROUP_ROOT=root):
            self.assertEqual(utils.get_cpu_count(), host)
        with clean_env(SHOAL_CGROUP_ROOT=os.path.join(self.tmp, "none")):
            self.assertEqual(utils.get_cpu_count(), host)

    def test_mem_env_override(self) -> None:
        with clean_env(SKYPILOT_POD_MEMORY_GB_LIMIT="3.5"):
            self.assertEqual(utils.get_mem_size_gb(), 3.5)
        with clean_env(SKYPILOT_POD_MEMORY_GB_LIMIT="8",
                       SKYPILOT_POD_MEMORY_BYTES_LIMIT="1024"):
            self.assertEqual(utils.get_mem_size_gb(), 8.0)
        with clean_env(SKYPILOT_POD_MEMORY_BYTES_LIMIT=str(3 * GIB)):
            self.assertEqual(utils.get_mem_size_gb(), 3.0)
        with clean_env(SKYPILOT_POD_MEMORY_BYTES_LIMIT="536870912.0"):
            self.assertEqual(utils.get_mem_size_gb(), 0.5)
        for var in ("SKYPILOT_POD_MEMORY_GB_LIMIT",
                    "SKYPILOT_POD_MEMORY_BYTES_LIMIT"):
            for bad in ("", "lots", "4G"):
                with self.subTest(var=var, bad=bad), clean_env(**{var: bad}):
                    with self.assertRaises(ValueError):
                        utils.get_mem_size_gb()

    def fake_proc(self, kb: int) -> str:
        proc = os.path.join(self.tmp, "proc")
        self.write(os.path.join(proc, "meminfo"),
                   f"MemTotal:       {kb} kB\nMemFree:        1 kB\n")
        return proc

    def test_mem_cgroup_v2(self) -> None:
        proc = self.fake_proc(16 * 1024 * 1024)  # 16 GiB
        cases = (("max\n", 16.0), ("", 16.0), (str(2 * GIB) + "\n", 2.0),
                 (str(32 * GIB), 16.0), (str(GIB // 2), 0.5),
                 ("junk", 16.0), ("0", 16.0), ("-1", 16.0))
        for content, want in cases:
            root = self.cgroup({"memory.max": content}, v2=True)
            with self.subTest(content=content), \
                    clean_env(SHOAL_CGROUP_ROOT=root, SHOAL_PROC_ROOT=proc):
                self.assertEqual(utils.get_mem_size_gb(), want)
        os.remove(os.path.join(root, "memory.max"))
        with clean_env(SHOAL_CGROUP_ROOT=root, SHOAL_PROC_ROOT=proc):
            self.assertEqual(utils.get_mem_size_gb(), 16.0)

    def test_mem_cgroup_v1(self) -> None:
        proc = self.fake_proc(8 * 1024 * 1024)  # 8 GiB
        cases = (("9223372036854771712", 8.0), (str(GIB), 1.0),
                 (str(3 * GIB // 2), 1.5))
        for content, want in cases:
            root = self.cgroup({"memory/memory.limit_in_bytes": content},
                               v2=False)
            with self.subTest(content=content), \
                    clean_env(SHOAL_CGROUP_ROOT=root, SHOAL_PROC_ROOT=proc):
                self.assertEqual(utils.get_mem_size_gb(), want)
        with clean_env(SHOAL_CGROUP_ROOT=os.path.join(self.tmp, "none"),
                       SHOAL_PROC_ROOT=proc):
            self.assertEqual(utils.get_mem_size_gb(), 8.0)

    def test_mem_real_host(self) -> None:
        with clean_env(SHOAL_CGROUP_ROOT=os.path.join(self.tmp, "none")):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            got = utils.get_mem_size_gb()
            self.assertGreater(got, 0)
            self.assertAlmostEqual(got, total / GIB, delta=0.01 * got + 0.01)
        self.assertGreater(utils.get_mem_size_gb(), 0)
        self.assertGreaterEqual(utils.get_cpu_count(), 0)


class Threads(TmpDirCase):
    def test_parallel_threads(self) -> None:
        base = max(4, (os.cpu_count() or 1) - 1)
        self.assertEqual(utils.get_parallel_threads(), base)
        self.assertEqual(utils.get_parallel_threads(None), base)
        self.assertEqual(utils.get_parallel_threads("aws"), base)
        for k in ("kubernetes", "Kubernetes", "KUBERNETES"):
            self.assertEqual(utils.get_parallel_threads(k), 4 * base)
        self.assertEqual(utils.get_parallel_threads("k8s"), base)
        for cpus, want in ((None, 4), (1, 4), (5, 4), (6, 5), (64, 63)):
            with mock.patch("os.cpu_count", return_value=cpus):
                self.assertEqual(utils.get_parallel_threads(), want)
                self.assertEqual(utils.get_parallel_threads("kubernetes"),
                                 4 * want)

    def test_max_workers_for_file_mounts(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        threads = utils.get_parallel_threads()
        src = os.path.join(self.tmp, "src")
        os.mkdir(src)
        for i in range(40):
            open(os.path.join(src, f"f{i}"), "w").close()
        afile = self.write("plain", b"x")

        def expect(limit: int, per: int, cloud=None) -> int:
            return min(max((limit - 100) // per, 1),
                       utils.get_parallel_threads(cloud))

        got = utils.get_max_workers_for_file_mounts({"/dst": src})
        if soft != resource.RLIM_INFINITY:
            self.assertEqual(got, expect(soft, 200))
        self.assertGreaterEqual(got, 1)
        self.assertLessEqual(got, threads)
        self.assertEqual(utils.get_max_workers_for_file_mounts({}, "aws"),
                         expect(soft, 5) if soft != resource.RLIM_INFINITY
                         else threads)
        with mock.patch("resource.getrlimit", return_value=(1124, 4096)):
            self.assertEqual(
                utils.get_max_workers_for_file_mounts({"/d": src}), 5
                if threads >= 5 else threads)
            self.assertEqual(
                utils.get_max_workers_for_file_mounts({"/d": afile}),
                min(204, threads))
            self.assertEqual(
                utils.get_max_workers_for_file_mounts(
                    {"/d": afile, "/e": src, "/m": "/no/such/dir"},
                    "Kubernetes"),
                min(5, 4 * threads))
        with mock.patch("resource.getrlimit", return_value=(50, 4096)), \
                mock.patch.object(utils, "_fd_warned", False), \
                self.assertLogs("shoal.utils", logging.WARNING):
            self.assertEqual(
                utils.get_max_workers_for_file_mounts({"/d": src}), 1)
        with mock.patch("resource.getrlimit",
                        return_value=(resource.RLIM_INFINITY,) * 2):
            self.assertEqual(
                utils.get_max_workers_for_file_mounts({"/d": src}), threads)

    def test_low_fd_limit_warns_once(self) -> None:
        with mock.patch.object(utils, "_fd_warned", False), \
                mock.patch("resource.getrlimit", return_value=(256, 4096)):
            with self.assertLogs("shoal.utils", logging.WARNING) as cm:
                self.assertEqual(
                    utils.get_max_workers_for_file_mounts({}), min(
                        (256 - 100) // 5, utils.get_parallel_threads()))
                utils.get_max_workers_for_file_mounts({})
                utils.get_max_workers_for_file_mounts({})
            self.assertEqual(len(cm.records), 1)
            self.assertIn("256", cm.output[0])


class Processes(TmpDirCase):
    def test_own_pid(self) -> None:
        self.assertTrue(utils.is_process_alive(os.getpid()))
        self.assertTrue(utils.is_process_alive(os.getppid()))

    def test_bad_pids(self) -> None:
        for pid in (0, -1, -12345):
            with self.assertRaises(ValueError):
                utils.is_process_alive(pid)

    def test_zombie_then_reaped(self) -> None:
        pid = os.posix_spawn("/bin/true", ["true"], os.environ)
        try:
            deadline = time.monotonic() + 5
            while True:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    stat = f.read()
                if stat[stat.rfind(b")") + 2:][:1] == b"Z":
                    break
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.005)
            # a zombie: kill(pid, 0) still succeeds, but it is not alive
            os.kill(pid, 0)
            self.assertFalse(utils.is_process_alive(pid))
        finally:
            os.waitpid(pid, 0)
        self.assertFalse(utils.is_process_alive(pid))

    def test_running_child(self) -> None:
        pid = os.posix_spawn("/bin/sleep", ["sleep", "30"], os.environ)
        try:
            self.assertTrue(utils.is_process_alive(pid))
        finally:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        self.assertFalse(utils.is_process_alive(pid))

    def test_comm_with_parens_and_spaces(self) -> None:
        proc = os.path.join(self.tmp, "proc")
        me = os.getpid()
        self.write(os.path.join(proc, str(me), "stat"),
                   f"{me} (a) Z (b) R 1 2 3\n")
        with clean_env(SHOAL_PROC_ROOT=proc):
            self.assertTrue(utils.is_process_alive(me))
        self.write(os.path.join(proc, str(me), "stat"),
                   f"{me} (x) R (y) Z 1 2 3\n")
        with clean_env(SHOAL_PROC_ROOT=proc):
            self.assertFalse(utils.is_process_alive(me))

    def test_no_proc_falls_back_to_kill(self) -> None:
        with clean_env(SHOAL_PROC_ROOT=os.path.join(self.tmp, "none")):
            self.assertTrue(utils.is_process_alive(os.getpid()))

    def test_estimate_fd_for_directory(self) -> None:
        d = os.path.join(self.tmp, "d")
        os.mkdir(d)
        self.assertEqual(utils.estimate_fd_for_directory(d), 0)
        for i in range(7):
            open(os.path.join(d, f"f{i}"), "w").close()
        os.mkdir(os.path.join(d, "sub"))
        open(os.path.join(d, "sub", "deep"), "w").close()
        self.assertEqual(utils.estimate_fd_for_directory(d), 40)
        self.assertEqual(
            utils.estimate_fd_for_directory(os.path.join(d, "f0")), 0)
        self.assertEqual(
            utils.estimate_fd_for_directory(os.path.join(d, "missing")), 0)


class NoLibshoalNeeded(unittest.TestCase):
    def test_imports_without_libshoal(self) -> None:
        import subprocess
        import sys
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, SHOAL_LIB="/nonexistent/libshoal.so",
                   PYTHONPATH=here, LD_LIBRARY_PATH="")
        code = ("import shoal.utils as u, sys; "
                "assert u.base36_encode('ff') == '73'; "
                "assert u.format_float(1.0) == '1'; "
                "assert u.read_last_n_lines is not None; "
                "from shoal import utils; assert utils is u; "
                "assert 'libshoal' not in open('/proc/self/maps').read()")
        r = subprocess.run([sys.executable, "-c", code], env=env,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)


def _native(cls: type) -> type:
    return type(cls.__name__ + "Native", (cls,), {
        "MODE": "native", "__module__": __name__,
        "__doc__": "%s with the native path selected." % cls.__name__})


for _cls in (ReadLastNLines, HashFile, FindFreePort, Base36, FormatFloat,
             TruncateLongString, CpuAndMemory, Threads, Processes):
    globals()[_cls.__name__ + "Native"] = _native(_cls)
del _cls


if __name__ == "__main__":
    unittest.main()
