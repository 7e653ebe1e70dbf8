#!/usr/bin/env python3
"""utils_bench: shoal.utils' twelve functions, native vs fallback vs upstream.

Default sizes: the large file (hash_file, tail) is 1 GiB, written under
--dir (default /tmp) and deleted at exit; --quick makes it 8 MiB and every
timing short (the CI smoke test, well under 30 s).

Part 1, per call, in one run: each function called through
  native    shoal.utils' native wrapper (libshoal's shoal_util_*; hash_file
            locally, no broker), whether or not shoal.utils selects it
  fallback  shoal.utils' pure-Python implementation (SHOAL_NATIVE=0)
  upstream  SkyPilot's own code, verbatim (bench/py/upstream_utils.py)
and "selected" says which one ``import shoal.utils`` uses (utils._NATIVE).
Figures are ns per call, best of 3 repeats; ratios are upstream/native and
fallback/native (> 1: native is faster).

Part 2, hash_file of the large file (in the page cache: it was just
written): the broker's first request (cold: the broker reads and hashes
it), the tools (b2sum, sha256sum), hashlib (the fallback), libshoal
locally; then warm requests per second (the broker's cache answers).

Part 3, the last 100 lines of a large log: Client.tail (broker), native
(local), fallback, upstream.

Run with the interpreter that runs the tests (Debian: /usr/bin/python3).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MIB = 1 << 20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes and short timings (CI smoke test)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of the tables")
    p.add_argument("--size", type=int, default=None,
                   help="bytes of the large file (default 1 GiB; --quick "
                   "8 MiB)")
    p.add_argument("--seconds", type=float, default=None,
                   help="time per measurement (default 0.3; --quick 0.02)")
    p.add_argument("--dir", default="/tmp", help="where the large files go")
    p.add_argument("--shoald", help="shoald binary (default: $SHOAL_SHOALD, "
                   "build/broker/shoald, shoald on PATH)")
    p.add_argument("--lib", help="libshoal.so (default: $SHOAL_LIB, "
                   "build/libclient/libshoal.so, the system's)")
    p.add_argument("--no-broker", action="store_true",
                   help="skip the broker's figures")
    a = p.parse_args()
    if a.size is None:
        a.size = 8 * MIB if a.quick else 1 << 30
    if a.seconds is None:
        a.seconds = 0.02 if a.quick else 0.3
    return a


def find_shoald(arg: Optional[str]) -> Optional[str]:
    for c in (arg, os.environ.get("SHOAL_SHOALD"),
              os.path.join(REPO, "build", "broker", "shoald"),
              shutil.which("shoald")):
        if c and os.access(c, os.X_OK):
            return c
    return None


def setup_lib(arg: Optional[str]) -> None:
    if arg:
        os.environ["SHOAL_LIB"] = os.path.abspath(arg)
    elif not os.environ.get("SHOAL_LIB"):
        built = os.path.join(REPO, "build", "libclient", "libshoal.so")
        if os.path.exists(built):
            os.environ["SHOAL_LIB"] = built
    sys.path.insert(0, os.path.join(REPO, "libclient", "python"))
    sys.path.insert(0, HERE)


# ------------------------------------------------------------- timing --


def ns_per_call(fn: Callable[..., Any], args: Tuple[Any, ...],
                seconds: float) -> float:
    """Best of 3 repeats of a loop sized to last about @seconds / 3."""
    n = 1
    while True:
        t = time.perf_counter()
        for _ in itertools.repeat(None, n):
            fn(*args)
        dt = time.perf_counter() - t
        if dt >= seconds / 3 or n >= 1 << 24:
            break
        n = max(n * 2, int(n * (seconds / 3) / max(dt, 1e-9)))
    best = dt / n
    for _ in range(2):
        t = time.perf_counter()
        for _ in itertools.repeat(None, n):
            fn(*args)
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e9


def once(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ------------------------------------------------------------- broker --


class Broker:
    def __init__(self, shoald: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="shoal-ubench-", dir="/dev/shm"
                                    if os.path.isdir("/dev/shm") else None)
        self.sock = os.path.join(self.dir, "bench.sock")
        os.mkdir(os.path.join(self.dir, "shm"))
        self.log = open(os.path.join(self.dir, "log"), "wb")
        self.proc = subprocess.Popen(
            [shoald, "--name", "bench", "--socket", self.sock, "--rundir",
             self.dir, "--shm-dir", os.path.join(self.dir, "shm"),
             "--quiet"], stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(self.sock)
                break
            except OSError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    raise RuntimeError("shoald did not start")
                time.sleep(0.01)
            finally:
                s.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -------------------------------------------------------------- files --


def write_big(path: str, size: int, lines: bool) -> None:
    """@size bytes: random bytes, or log lines of about 100 bytes."""
    if lines:
        block = b"".join(b"2026-01-01 00:00:%02d INFO worker %06d: %s\n"
                         % (i % 60, i, os.urandom(24).hex().encode())
                         for i in range(8000))
    else:
        block = os.urandom(MIB)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:left])
            left -= len(block)


def tool_seconds(tool: str, path: str) -> Optional[float]:
    exe = shutil.which(tool)
    if exe is None:
        return None
    t = time.perf_counter()
    subprocess.run([exe, path], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


# --------------------------------------------------------------- main --


def main() -> int:
    a = parse_args()
    setup_lib(a.lib)
    import shoal
    from shoal import utils
    import upstream_utils as up

    if not utils._load():
        print("utils_bench: libshoal with the shoal_util_* functions could "
              "not be loaded (--lib)", file=sys.stderr)
        return 1
    nat, py = utils._IMPLS["native"], utils._IMPLS["python"]

    work = tempfile.mkdtemp(prefix="shoal-ubench-", dir=a.dir)
    out: Dict[str, Any] = {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "quick": a.quick, "size": a.size,
        "library": shoal.library_path(), "native_selected":
        sorted(utils._NATIVE), "per_call_ns": {}, "hash": {}, "tail": {}}
    broker = None
    c = None
    try:
        shoald = None if a.no_broker else find_shoald(a.shoald)
        if shoald:
            broker = Broker(shoald)
            c = shoal.connect("bench", socket=broker.sock)
            # shoal.utils finds the broker as a worker would: environment
            os.environ["SHOAL_SOCKET"] = broker.sock
            os.environ["SHOAL_NAME"] = "bench"
        else:
            os.environ["SHOAL_SOCKET"] = os.path.join(work, "none.sock")
        utils._broker.after_fork()
        utils._broker.down_until = 0.0
        d50 = os.path.join(work, "d50")
        os.mkdir(d50)
        for i in range(50):
            open(os.path.join(d50, "f%d" % i), "w").close()
        log_small = os.path.join(work, "small.log")
        write_big(log_small, 1 * MIB, lines=True)
        small = os.path.join(work, "small.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(4 << 10))
        mid = os.path.join(work, "mid.bin")
        with open(mid, "wb") as f:
            f.write(os.urandom(1 << 20))
        bw = " (broker warm)" if broker else " (no broker)"
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        md5 = hashlib.md5(b"bench").hexdigest()
        cases: List[Tuple[str, str, Tuple[Any, ...]]] = [
            ("read_last_n_lines", "1 MiB log, n=100", (log_small, 100)),
            ("hash_file", "1 MiB, sha256" + bw, (mid, "sha256")),
            ("hash_file", "1 MiB, blake2b" + bw, (mid, "blake2b")),
            ("hash_file", "4 KiB, sha256", (small, "sha256")),
            ("find_free_port", "a free port", (port,)),
            ("base36_encode", "md5 hexdigest", (md5,)),
            ("format_float", "3.14159", (3.14159,)),
            ("format_float", "int 42", (42,)),
            ("truncate_long_string", "60 chars, 35", (
                "The quick brown fox jumps over the lazy dog again and "
                "again", 35)),
            ("truncate_long_string", "short (unchanged)", ("short", 35)),
            ("get_cpu_count", "", ()),
            ("get_mem_size_gb", "", ()),
            ("get_parallel_threads", "'kubernetes'", ("kubernetes",)),
            ("get_max_workers_for_file_mounts", "1 dir of 50",
             ({"/dst": d50},)),
            ("is_process_alive", "own pid", (os.getpid(),)),
            ("estimate_fd_for_directory", "50 entries", (d50,)),
        ]
        rows = []
        for name, what, args in cases:
            r: Dict[str, Any] = {"function": name, "input": what}
            for col, impl in (("native", nat[name]), ("fallback", py[name]),
                              ("upstream", getattr(up, name))):
                r[col] = ns_per_call(impl, args, a.seconds)
            r["selected"] = "native" if name in utils._NATIVE else "python"
            r["upstream_over_native"] = r["upstream"] / r["native"]
            r["fallback_over_native"] = r["fallback"] / r["native"]
            r["upstream_over_selected"] = r["upstream"] / r[
                "native" if name in utils._NATIVE else "fallback"]
            rows.append(r)
            out["per_call_ns"][name + (" / " + what if what else "")] = r

        # -------------------------------------------- large files --
        big = os.path.join(work, "big.bin")
        write_big(big, a.size, lines=False)
        h: Dict[str, Any] = out["hash"]
        if c is not None:
            h["broker_cold_blake2b_s"] = once(
                lambda: c.hash_file(big, "blake2b", 64))
            h["broker_cold_sha256_s"] = once(
                lambda: c.hash_file(big, "sha256"))
            n = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < max(a.seconds * 3, 0.1):
                c.hash_file(big, "blake2b", 64)
                n += 1
            h["broker_warm_req_per_s"] = n / (time.perf_counter() - t0)
            h["utils_broker_warm_ns"] = ns_per_call(
                nat["hash_file"], (big, "sha256"), a.seconds)
        h["b2sum_s"] = tool_seconds("b2sum", big)
        h["sha256sum_s"] = tool_seconds("sha256sum", big)
        lib = utils._load()
        buf = utils._buf(64)
        for alg in ("blake2b", "sha256"):
            # libshoal locally (shoal_util_hash_file, libsodium); not what
            # shoal.utils uses without a broker (hashlib is faster)
            h["libshoal_local_%s_s" % alg] = once(
                lambda: lib.c.shoal_util_hash_file(
                    big.encode(), alg.encode(), 64 if alg == "blake2b"
                    else 32, buf, 64))
            h["fallback_%s_s" % alg] = once(lambda: py["hash_file"](big, alg))
            h["upstream_%s_s" % alg] = once(lambda: up.hash_file(big, alg))
        os.unlink(big)

        log = os.path.join(work, "big.log")
        write_big(log, a.size, lines=True)
        t: Dict[str, Any] = out["tail"]
        if c is not None:
            t["broker_ns"] = ns_per_call(c.tail, (log, 100), a.seconds)
        t["native_ns"] = ns_per_call(nat["read_last_n_lines"], (log, 100),
                                     a.seconds)
        t["fallback_ns"] = ns_per_call(py["read_last_n_lines"], (log, 100),
                                       a.seconds)
        t["upstream_ns"] = ns_per_call(up.read_last_n_lines, (log, 100),
                                       a.seconds)
        if c is not None:
            st = c.stats()
            out["broker_stats"] = {k: st.get(k) for k in (
                "hash_cache_hits", "hash_cache_misses", "hash_bytes_read")}
            out["broker_stats"]["requests"] = st.get("requests")
            c.close()
    finally:
        if broker is not None:
            broker.close()
        shutil.rmtree(work, ignore_errors=True)

    if a.json:
        print(json.dumps(out, indent=1, sort_keys=True))
        return 0
    print("shoal.utils: ns per call (best of 3), one run; libshoal %s"
          % out["library"])
    print("large file: %d MiB%s" % (a.size // MIB,
                                    " (--quick)" if a.quick else ""))
    print()
    fmt = "%-32s %-18s %10s %10s %10s %8s %8s  %s"
    print(fmt % ("function", "input", "native", "fallback", "upstream",
                 "up/nat", "fb/nat", "selected"))
    for r in rows:
        print(fmt % (r["function"], r["input"][:18], "%.0f" % r["native"],
                     "%.0f" % r["fallback"], "%.0f" % r["upstream"],
                     "%.2f" % r["upstream_over_native"],
                     "%.2f" % r["fallback_over_native"], r["selected"]))
    print()
    print("hash_file of %d MiB (seconds; page cache warm):" % (a.size // MIB))
    for k in sorted(out["hash"]):
        v = out["hash"][k]
        print("  %-30s %s" % (k, "n/a" if v is None else "%.4g" % v))
    print()
    print("last 100 lines of a %d MiB log (ns per call):" % (a.size // MIB))
    for k in sorted(out["tail"]):
        print("  %-30s %.0f" % (k, out["tail"][k]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
