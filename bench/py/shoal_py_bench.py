#!/usr/bin/env python3
"""shoal_py_bench: Python reads from shoal beside its peers, in one run.

Starts its own shoald and redis-server (Unix socket, no persistence) in a
temporary directory under /dev/shm, loads the same keys ("key:%012d", 16
bytes) with the same values (64 bytes by default) into shoal (atomic
batches through the Python API), redis (a redis-py pipeline) and an LMDB
environment in /dev/shm (py-lmdb), then measures random-key reads:

  py_get            shoal Client.get (a copy, bytes)
  py_get_zero_copy  shoal Reader.get in read blocks (memoryview; one block
                    per 10,000 gets, so the views it must track stay bounded)
  py_get_many       shoal Client.get_many, batches of --batch keys, per key
  redis_py_get      redis-py GET, one connection, not pipelined
  py_lmdb_get       py-lmdb txn.get in a loop, one read transaction
  manager_dict_get  multiprocessing.Manager().dict().get, for reference

Each figure is the median of --runs runs of --seconds each; the methods take
turns within each run, so a noisy neighbour hurts them all alike. Peers that
are missing (no redis-server, no redis or lmdb module) are reported as null.

Run it with the interpreter that has python3-redis and python3-lmdb
(Debian: /usr/bin/python3). Targets (issue 4): py_get >= 1M/s and >= 80x
redis-py; py_get_many >= 1.0x py-lmdb per key.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CHUNK = 10000  # operations between clock reads (and per zero-copy block)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=100000, help="keys loaded")
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=1.0,
                   help="length of one run of one method")
    p.add_argument("--runs", type=int, default=3, help="runs; the median "
                   "is reported")
    p.add_argument("--batch", type=int, default=100, help="get_many batch")
    p.add_argument("--json", action="store_true", help="print one JSON "
                   "object instead of the table")
    p.add_argument("--shoald", help="shoald binary (default: $SHOAL_SHOALD, "
                   "build/broker/shoald, shoald on PATH)")
    p.add_argument("--lib", help="libshoal.so (default: $SHOAL_LIB, "
                   "build/libclient/libshoal.so, the system's)")
    p.add_argument("--redis-server", default="redis-server")
    p.add_argument("--no-manager", action="store_true",
                   help="skip the multiprocessing.Manager reference")
    return p.parse_args()


def find_shoald(arg: Optional[str]) -> str:
    for c in (arg, os.environ.get("SHOAL_SHOALD"),
              os.path.join(REPO, "build", "broker", "shoald"),
              shutil.which("shoald")):
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("shoal_py_bench: shoald not found; pass --shoald PATH")


def setup_lib(arg: Optional[str]) -> None:
    if arg:
        os.environ["SHOAL_LIB"] = arg
    elif not os.environ.get("SHOAL_LIB"):
        built = os.path.join(REPO, "build", "libclient", "libshoal.so")
        if os.path.exists(built):
            os.environ["SHOAL_LIB"] = built
    sys.path.insert(0, os.path.join(REPO, "libclient", "python"))


def wait_socket(path: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return
        except OSError:
            pass
        finally:
            s.close()
        if proc.poll() is not None:
            sys.exit("shoal_py_bench: %s exited (%s)" % (what,
                                                         proc.returncode))
        time.sleep(0.01)
    sys.exit("shoal_py_bench: %s not listening on %s" % (what, path))


def loadavg() -> Optional[float]:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def timed(fn: Callable[[int], int], seconds: float) -> float:
    """Operations per second of fn(i) (which does some and says how many),
    called until @seconds pass."""
    ops = 0
    i = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        ops += fn(i)
        i += 1
        t = time.perf_counter()
        if t >= deadline:
            return ops / (t - t0)


def main() -> int:
    a = parse_args()
    shoald = find_shoald(a.shoald)
    setup_lib(a.lib)
    import shoal

    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="shoal-pybench-", dir=root)
    procs: List[subprocess.Popen] = []
    notes: List[str] = []
    try:
        return run(a, shoal, shoald, tmp, procs, notes)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def run(a: argparse.Namespace, shoal: Any, shoald: str, tmp: str,
        procs: List[subprocess.Popen], notes: List[str]) -> int:
    n = a.keys
    keys = [b"key:%012d" % i for i in range(n)]
    rnd = random.Random(42)
    val = bytes(rnd.getrandbits(8) for _ in range(a.value_size))
    values = [val[i % a.value_size:] + val[:i % a.value_size]
              for i in range(min(n, a.value_size))]

    def value(i: int) -> bytes:
        return values[i % len(values)]

    # random keys, the same sequence for everyone
    order = [keys[rnd.randrange(n)] for _ in range(max(CHUNK * 20, n))]
    chunks = [order[i:i + CHUNK] for i in range(0, len(order), CHUNK)]
    log = open(os.path.join(tmp, "servers.log"), "wb")

    # ------------------------------------------------------------ shoal --
    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    size = max(64 << 20, n * (a.value_size + 256) * 2)
    sp = subprocess.Popen([shoald, "--name", "pybench", "--rundir", rundir,
                           "--shm-dir", tmp, "--size", str(size), "--quiet"],
                          stdout=log, stderr=subprocess.STDOUT)
    procs.append(sp)
    sock = os.path.join(rundir, "pybench.sock")
    wait_socket(sock, sp, "shoald")
    c = shoal.connect("pybench", socket=sock)
    for i in range(0, n, 1000):
        with c.batch() as b:
            for j in range(i, min(n, i + 1000)):
                b.put(keys[j], value(j))
    assert c.get(keys[n - 1]) == value(n - 1)

    # ------------------------------------------------------------ redis --
    r = None
    try:
        import redis  # python3-redis
        rsock = os.path.join(tmp, "redis.sock")
        rp = subprocess.Popen([a.redis_server, "--port", "0", "--unixsocket",
                               rsock, "--save", "", "--appendonly", "no",
                               "--dir", tmp], stdout=log,
                              stderr=subprocess.STDOUT)
        procs.append(rp)
        wait_socket(rsock, rp, "redis-server")
        r = redis.Redis(unix_socket_path=rsock)
        pipe = r.pipeline(transaction=False)
        for i, k in enumerate(keys):
            pipe.set(k, value(i))
            if i % 10000 == 9999:
                pipe.execute()
        pipe.execute()
        assert r.get(keys[n - 1]) == value(n - 1)
    except (ImportError, OSError, SystemExit) as e:
        notes.append("redis skipped: %s" % e)
        r = None

    # ------------------------------------------------------------- lmdb --
    env = None
    try:
        import lmdb  # python3-lmdb
        env = lmdb.open(os.path.join(tmp, "lmdb"), map_size=max(
            64 << 20, n * (a.value_size + 64) * 4), sync=False,
            metasync=False)
        with env.begin(write=True) as txn:
            for i, k in enumerate(keys):
                txn.put(k, value(i))
    except ImportError as e:
        notes.append("lmdb skipped: %s" % e)
        env = None

    # ---------------------------------------------------------- manager --
    mgr = md = None
    if not a.no_manager:
        import multiprocessing
        mgr = multiprocessing.Manager()
        md = mgr.dict()
        md.update({k: value(i) for i, k in enumerate(keys)})

    # --------------------------------------------------------- methods --
    nch = len(chunks)
    get = c.get
    get_many = c.get_many
    bsz = a.batch
    batches = [[ch[i:i + bsz] for i in range(0, len(ch), bsz)]
               for ch in chunks]

    def m_get(i: int) -> int:
        for k in chunks[i % nch]:
            get(k)
        return CHUNK

    def m_zero_copy(i: int) -> int:
        with c.read() as rd:
            rget = rd.get
            for k in chunks[i % nch]:
                rget(k)
        return CHUNK

    def m_get_many(i: int) -> int:
        for ks in batches[i % nch]:
            get_many(ks)
        return CHUNK

    methods: Dict[str, Optional[Callable[[int], int]]] = {
        "py_get": m_get,
        "py_get_zero_copy": m_zero_copy,
        "py_get_many": m_get_many,
        "redis_py_get": None,
        "py_lmdb_get": None,
        "manager_dict_get": None,
    }
    if r is not None:
        rget = r.get
        small = [ch[:200] for ch in chunks]  # ~100x slower: smaller steps

        def m_redis(i: int) -> int:
            for k in small[i % nch]:
                rget(k)
            return 200

        methods["redis_py_get"] = m_redis
    txn = None
    if env is not None:
        txn = env.begin(buffers=False)
        lget = txn.get

        def m_lmdb(i: int) -> int:
            for k in chunks[i % nch]:
                lget(k)
            return CHUNK

        methods["py_lmdb_get"] = m_lmdb
    if md is not None:
        mget = md.get
        tiny = [ch[:100] for ch in chunks]

        def m_mgr(i: int) -> int:
            for k in tiny[i % nch]:
                mget(k)
            return 100

        methods["manager_dict_get"] = m_mgr

    # correctness, once, before timing
    k0 = order[0]
    i0 = int(k0[4:])
    assert c.get(k0) == value(i0)
    with c.read() as rd:
        assert bytes(rd.get(k0)) == value(i0)
    assert c.get_many([k0, b"absent"]) == [value(i0), None]
    if txn is not None:
        assert txn.get(k0) == value(i0)

    runs: Dict[str, List[float]] = {m: [] for m, f in methods.items() if f}
    load_before = loadavg()
    for _ in range(a.runs):
        for m, f in methods.items():
            if f is not None:
                runs[m].append(timed(f, a.seconds))
    load_after = loadavg()
    if txn is not None:
        txn.abort()
    if mgr is not None:
        mgr.shutdown()
    c.close()

    res: Dict[str, Any] = {}
    for m in methods:
        res[m + ("_keys_per_s" if m == "py_get_many" else "_ops_per_s")] = (
            round(statistics.median(runs[m])) if m in runs else None)

    def ratio(x: str, y: str) -> Optional[float]:
        if res.get(x) and res.get(y):
            return round(res[x] / res[y], 2)
        return None

    res["py_get_vs_redis_py"] = ratio("py_get_ops_per_s",
                                      "redis_py_get_ops_per_s")
    res["py_get_zero_copy_vs_redis_py"] = ratio("py_get_zero_copy_ops_per_s",
                                                "redis_py_get_ops_per_s")
    res["py_get_vs_py_lmdb"] = ratio("py_get_ops_per_s",
                                     "py_lmdb_get_ops_per_s")
    res["py_get_many_vs_py_lmdb"] = ratio("py_get_many_keys_per_s",
                                          "py_lmdb_get_ops_per_s")
    res["py_get_vs_manager_dict"] = ratio("py_get_ops_per_s",
                                          "manager_dict_get_ops_per_s")
    res["targets"] = {
        "py_get_ge_1M": res["py_get_ops_per_s"] >= 1e6,
        "py_get_ge_80x_redis_py": (None if res["py_get_vs_redis_py"] is None
                                   else res["py_get_vs_redis_py"] >= 80),
        "py_get_many_ge_1x_py_lmdb": (
            None if res["py_get_many_vs_py_lmdb"] is None
            else res["py_get_many_vs_py_lmdb"] >= 1.0),
    }
    res["runs"] = {m: [round(x) for x in v] for m, v in runs.items()}
    res["config"] = {
        "keys": n, "value_size": a.value_size, "key_size": len(keys[0]),
        "seconds": a.seconds, "runs": a.runs, "get_many_batch": bsz,
        "python": platform.python_version(), "cpus": os.cpu_count(),
        "shoal_lib": shoal.library_path(),
    }
    # the figures move with what else runs (and redis-py's round trips
    # with how deeply the idle core sleeps): say what the machine was doing
    res["machine"] = {"loadavg_1min_before": load_before,
                      "loadavg_1min_after": load_after}
    if notes:
        res["notes"] = notes

    if a.json:
        print(json.dumps(res, indent=1))
        return 0
    print("shoal Python reads: %d keys of %d bytes, values of %d bytes, "
          "random keys; median of %d x %.1f s (Python %s)"
          % (n, len(keys[0]), a.value_size, a.runs, a.seconds,
             platform.python_version()))
    redis_v = res["redis_py_get_ops_per_s"]
    lmdb_v = res["py_lmdb_get_ops_per_s"]
    print("%-22s %14s %10s %12s %12s" % ("", "ops/s", "ns/op", "vs redis-py",
                                         "vs py-lmdb"))
    for m in methods:
        key = m + ("_keys_per_s" if m == "py_get_many" else "_ops_per_s")
        v = res[key]
        if v is None:
            print("%-22s %14s" % (m, "skipped"))
            continue
        print("%-22s %14s %10.0f %12s %12s" % (
            m + (" (per key)" if m == "py_get_many" else ""),
            "{:,}".format(v), 1e9 / v,
            "%.1fx" % (v / redis_v) if redis_v else "-",
            "%.2fx" % (v / lmdb_v) if lmdb_v else "-"))
    t = res["targets"]
    print("targets: py_get >= 1M/s: %s; >= 80x redis-py: %s; get_many >= "
          "1.0x py-lmdb per key: %s" % (t["py_get_ge_1M"],
                                         t["py_get_ge_80x_redis_py"],
                                         t["py_get_many_ge_1x_py_lmdb"]))
    print("machine: load average (1 min) %s before, %s after (the bench "
          "itself adds up to 2)" % (load_before, load_after))
    for note in notes:
        print("note:", note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
