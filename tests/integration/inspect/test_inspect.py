#!/usr/bin/env python3
"""test_inspect.py - integration tests of shoal-inspect (issue 6, "Must show" 1).

Every test starts a REAL shoald in a private directory under /dev/shm (or
$SHOAL_TEST_SHM_DIR) and drives it with real client processes: the `shoal`
CLI for writes and, when libshoal loads into this python, the Python client
(writer with batches and TTLs, a reader that pins a snapshot). shoal-inspect
then reads the segment, and its output is held to its contract: the commands,
exit codes and JSON field names `shoal-inspect --help` documents (issue 6):

  TestLive       inspect under a continuous write load: every command exits 0,
                 never crashes, JSON parses, `get` returns only values the
                 writer wrote (self-verifying values: a torn read shows), the
                 live check is consistent.
  TestLifecycle  the broker killed -9 (state "crashed", every acknowledged put
                 readable, check "unclean" and consistent), restarted
                 (recovery counted), stopped with SIGTERM ("stopped").
  TestJson       --json of every command parsed and checked field by field
                 against what the test wrote; text forms; exit codes 1, 3, 64.
  TestCorrupt    copies of a stopped store with each header field of the data
                 and readers objects set to wrong values, then random byte
                 flips, truncated / empty / random / foreign files: never a
                 crash, exit 0/1/2, exit 2 with a diagnosis naming the field
                 for a segment that can not be used, and `check` exit 2 for
                 damage it can see.

Environment (ctest sets them, tests/integration/inspect/CMakeLists.txt):
  SHOAL_TEST_SHOALD   the shoald binary            (required)
  SHOAL_TEST_CLI      the shoal CLI                (required)
  SHOAL_TEST_INSPECT  the shoal-inspect binary     (required)
  SHOAL_TEST_LIB      libshoal.so for the Python client (optional: without it
                      the writer is the CLI, so no batches and no pinned reader)
  SHOAL_TEST_SEED     seed of the random byte flips (default: the time; the
                      seed is printed, so a failure can be replayed)

Run by hand:
  SHOAL_TEST_SHOALD=build/broker/shoald SHOAL_TEST_CLI=build/tools/shoal \\
  SHOAL_TEST_INSPECT=build/tools/inspect/shoal-inspect \\
  SHOAL_TEST_LIB=build/libclient/libshoal.so \\
  /usr/bin/python3 tests/integration/inspect/test_inspect.py -v [TestCorrupt]

Header offsets below come from struct shm_header / shm_readers_hdr /
shm_reader_slot in shm/shm-internal.h (pinned there by _Static_assert: the
hot line at 256, skip_next at 320, writer_pid at 576); keep them in sync.
TestCorrupt.test_0_pristine_copy cross-checks them against inspect's own
figures, so a drift of the format shows there first.
"""

import base64
import concurrent.futures
import ctypes
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
PYPKG = os.path.join(SRC, "libclient", "python")

SHOALD = os.environ.get("SHOAL_TEST_SHOALD", "")
CLI = os.environ.get("SHOAL_TEST_CLI", "")
INSPECT = os.environ.get("SHOAL_TEST_INSPECT", "")
LIB = os.environ.get("SHOAL_TEST_LIB") or os.environ.get("SHOAL_LIB") or ""
SHM_BASE = os.environ.get("SHOAL_TEST_SHM_DIR") or "/dev/shm"

STORE_SIZE = "64M"
RUN_TIMEOUT = 20  # s: a hung inspect is a failure, not a stuck ctest
CORRUPT_TIMEOUT = 5  # s: on a 64 MiB store a run takes well under 0.1 s
OUTPUT_CAP = 16 << 20  # bytes: the stores here list far less than this

# exit status of shoal-inspect (spec)
EX_OK, EX_NOTFOUND, EX_CORRUPT, EX_NOSTORE, EX_USAGE = 0, 1, 2, 3, 64

# ------------------------------------------------- the segment format ----
# struct shm_header (shm/shm-internal.h): name -> (offset, width)
SHM_NCLASSES = 48
HDR = {
    "magic": (0, 8), "format": (8, 4), "fingerprint": (12, 4),
    "size": (16, 8), "heap_start": (24, 8), "npages": (32, 8),
    "store_id": (40, 8), "reader_slots": (48, 4), "doorbells": (52, 4),
    "sipkey": (56, 16), "name": (72, 64), "created_ms": (136, 8),
    # hot line
    "commit_seq": (256, 8), "index_off": (264, 8), "backed_end": (272, 8),
    "skip_height": (280, 4),
    "skip_next": (320, 8 * 24),
    # writer
    "writer_pid": (576, 8), "writer_start": (584, 8), "writer_gen": (592, 8),
    "clean": (600, 8), "last_commit_ms": (608, 8), "recoveries": (616, 8),
    # allocator
    "heap_top": (640, 8), "run_free_head": (648, 8),
    "class_free": (656, 8 * SHM_NCLASSES),
    # counters
    "c_keys": (1088, 8), "c_key_bytes": (1096, 8), "c_value_bytes": (1104, 8),
    "c_records": (1112, 8), "c_entries": (1120, 8), "c_commits": (1128, 8),
    "c_expired": (1136, 8), "c_reclaimed": (1144, 8),
    "c_index_used": (1152, 8), "c_heap_used": (1160, 8),
    "c_heap_free": (1168, 8), "c_retired": (1176, 8),
    "c_retired_bytes": (1184, 8), "c_extent_pages": (1192, 8),
    "c_free_pages": (1200, 8),
    "c_class_used": (1208, 8 * SHM_NCLASSES),
    "c_class_free": (1592, 8 * SHM_NCLASSES),
}
HDR_BYTES = 1984  # sizeof(struct shm_header)
PAGE = 4096
PAGETAB_OFF = 8192
SLAB = 65536
# struct shm_readers_hdr, then struct shm_reader_slot[nslots] (64 bytes each)
RHDR = {"magic": (0, 8), "format": (8, 4), "nslots": (12, 4),
        "store_id": (16, 8), "waiters": (24, 4), "hwm": (32, 8)}
RSLOT = {"snap": (0, 8), "pid": (8, 4), "nest": (12, 4), "pid_start": (16, 8),
         "begin_ms": (24, 8), "leased": (32, 8)}
RSLOT_BYTES = 64
RHDR_BYTES = 64

U64_MAX = (1 << 64) - 1
# random byte flips over the used parts of a stopped store; sanitizer builds
# ask for fewer (SHOAL_TEST_FLIPS), each inspect run there costs ~10x
FLIPS = int(os.environ.get("SHOAL_TEST_FLIPS", "1000"))
# what a diagnosis of a store_id mismatch may say
STORE_ID_WORDS = r"store_id|store id|another store|other store|incarnation|readers"


def u64(v):
    return struct.pack("<Q", v & U64_MAX)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def get_u(buf, off, width):
    return int.from_bytes(buf[off:off + width], "little")


# ------------------------------------------------------------ helpers ----

def _pdeathsig():
    """preexec_fn: the child dies with this test process, even a killed one."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - best effort
        pass


def isint(x):
    return isinstance(x, int) and not isinstance(x, bool)


def isnum(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def decode_bytes(obj, field, enc_field):
    """The CLI's convention: a JSON string when valid UTF-8, else base64 with
    a sibling "<x>_encoding"/"encoding": "base64"."""
    v = obj[field]
    if obj.get(enc_field) == "base64":
        return base64.b64decode(v)
    return v.encode("utf-8")


def make_value(key, n):
    """Self-verifying value: a torn or mixed read does not rebuild itself."""
    return ("%s:%d;" % (key, n)) * (1 + n % 13)


def value_ok(key, value):
    m = re.match(r"^(.*?):(\d+);", value)
    return bool(m) and m.group(1) == key and value == make_value(key, int(m.group(2)))


def tail(s, n=1500):
    s = s if isinstance(s, str) else s.decode("utf-8", "replace")
    return s if len(s) <= n else "..." + s[-n:]


class Run:
    """One finished shoal-inspect run."""

    def __init__(self, argv, rc, out, err, secs, problem=None):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, out, err, secs
        self.problem = problem  # "hung ...", "runaway output ...": killed by us

    def __str__(self):
        return "%s -> %s (%.2fs)\n--- stdout:\n%s\n--- stderr:\n%s" % (
            " ".join(a if isinstance(a, str) else repr(a) for a in self.argv),
            self.problem or "exit %s" % self.rc, self.secs, tail(self.out), tail(self.err))

    def json(self):
        return json.loads(self.out)


def run_inspect(args, name, shm_dir, env=None, timeout=RUN_TIMEOUT, cap=OUTPUT_CAP):
    """Run shoal-inspect; kill it after @timeout seconds (hung) or once it
    wrote more than @cap bytes (a runaway listing): both are failures the
    returned Run's .problem names."""
    argv = [INSPECT, "--name", name, "--shm-dir", shm_dir] + list(args)
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    bufs = {p.stdout: bytearray(), p.stderr: bytearray()}
    problem = None
    with selectors.DefaultSelector() as sel:
        for f in bufs:
            sel.register(f, selectors.EVENT_READ)
        open_fds = len(bufs)
        while open_fds and not problem:
            left = t0 + timeout - time.monotonic()
            if left <= 0:
                problem = "hung: killed after %ds" % timeout
                break
            for key, _ in sel.select(left):
                b = os.read(key.fileobj.fileno(), 1 << 16)
                if not b:
                    sel.unregister(key.fileobj)
                    open_fds -= 1
                    continue
                buf = bufs[key.fileobj]
                buf += b
                if len(buf) > cap:
                    problem = "runaway output: killed after %d bytes" % len(buf)
                    break
    if problem:
        p.kill()
    rc = p.wait()
    out, err = bufs[p.stdout], bufs[p.stderr]
    p.stdout.close()
    p.stderr.close()
    return Run(argv, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
               time.monotonic() - t0, problem)


def crash_problem(r):
    """Why run @r counts as a crash, or None."""
    if r.problem:
        return r.problem
    if r.rc < 0:
        return "killed by signal %d" % -r.rc
    if r.rc in (126, 127, 134, 136, 139):
        return "exit %d (a crash or no binary)" % r.rc
    for s in ("Sanitizer", "runtime error:", "core dumped", "Assertion `"):
        if s in r.err:
            return "stderr has %r" % s
    return None


_PY_OK = None


def python_client_ok():
    """Does the Python client load libshoal here? (Not in sanitizer builds.)"""
    global _PY_OK
    if _PY_OK is None:
        _PY_OK = False
        if LIB and os.path.exists(LIB):
            p = subprocess.run(
                [sys.executable, "-c", "import shoal._ffi as f; f.load()"],
                env=py_env(), capture_output=True, timeout=60)
            _PY_OK = p.returncode == 0
            if not _PY_OK:
                sys.stderr.write("note: the Python client does not load (%s); "
                                 "CLI writer only\n" % tail(p.stderr, 300))
    return _PY_OK


def py_env(base=None):
    """@base (default: ours) plus what the Python client needs."""
    env = dict(base if base is not None else os.environ)
    env["SHOAL_LIB"] = LIB
    env["PYTHONPATH"] = PYPKG + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# ----------------------------------------------------------- the store ----

class Store:
    """A real shoald serving store @name from a private directory."""

    def __init__(self, tc, name, base=None):
        self.tc = tc
        self.name = name
        self.dir = base or tempfile.mkdtemp(prefix="shoal-it-inspect-", dir=SHM_BASE)
        if base is None:
            tc.addCleanup(shutil.rmtree, self.dir, True)
        self.shm = os.path.join(self.dir, "shm")
        self.run = os.path.join(self.dir, "run")
        os.makedirs(self.shm, exist_ok=True)
        os.makedirs(self.run, exist_ok=True)
        self.sock = os.path.join(self.run, name + ".sock")
        self.log = os.path.join(self.dir, name + ".log")
        self.env = dict(os.environ, SHOAL_SHM_DIR=self.shm, SHOAL_RUNDIR=self.run,
                        SHOAL_SOCKET=self.sock)
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc = None

    @property
    def data_path(self):
        return os.path.join(self.shm, "shoal.%s.data" % self.name)

    @property
    def readers_path(self):
        return os.path.join(self.shm, "shoal.%s.readers" % self.name)

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [SHOALD, "--name", self.name, "--socket", self.sock, "--shm-dir",
             self.shm, "--size", STORE_SIZE, "--quiet"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=self.env,
            preexec_fn=_pdeathsig)
        logf.close()
        proc = self.proc
        self.tc.addCleanup(self._reap, proc)
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                self.tc.fail("shoald exited %s at start:\n%s" % (proc.returncode, self.log_text()))
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(self.sock)
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.tc.fail("shoald did not listen on %s:\n%s" % (self.sock, self.log_text()))
            time.sleep(0.02)

    @staticmethod
    def _reap(proc):
        """Kill @proc if it still runs; reap it and close its pipes."""
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return tail(f.read(), 3000)
        except OSError:
            return "(no log)"

    def stop(self):
        """SIGTERM: drain and close the store cleanly (exit 0)."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.tc.assertEqual(rc, 0, "shoald after SIGTERM:\n" + self.log_text())

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=30)

    # the CLI
    def cli(self, *args, input=None, check=True):
        argv = [CLI, "--socket", self.sock, "--name", self.name] + list(args)
        p = subprocess.run(argv, input=input, capture_output=True,
                           env=self.env, timeout=60,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            self.tc.fail("%s -> exit %d: %s" % (argv, p.returncode, tail(p.stderr)))
        return p

    def put(self, key, value, ttl_ms=None):
        """`shoal put`: returns the version it printed."""
        args = ["put", key, "-"]
        if ttl_ms:
            args += ["--ttl", str(ttl_ms)]
        if isinstance(value, str):
            value = value.encode()
        p = self.cli(*args, input=value)
        return int(p.stdout.split()[0])

    def delete(self, key):
        return self.cli("del", key, check=False).returncode

    def bulk_put(self, items):
        """Many puts: one Python client if it loads, else one CLI per key."""
        if python_client_ok():
            code = ("import sys, shoal\n"
                    "c = shoal.Client(%r, socket=%r)\n"
                    "for line in sys.stdin.buffer:\n"
                    "    k, v = line.rstrip(b'\\n').split(b'\\t', 1)\n"
                    "    c.put(k, v)\n"
                    "c.close()\n" % (self.name, self.sock))
            data = b"".join(k.encode() + b"\t" + v.encode() + b"\n" for k, v in items)
            p = subprocess.run([sys.executable, "-c", code], input=data,
                               capture_output=True, env=py_env(self.env), timeout=120)
            self.tc.assertEqual(p.returncode, 0, tail(p.stderr))
        else:
            for k, v in items:
                self.put(k, v)

    def inspect(self, *args, **kw):
        return run_inspect(args, self.name, self.shm, **kw)


# ---------------------------------------------- helper processes ------
# The test file runs itself as a helper: `test_inspect.py --helper MODE ...`.

def helper_load(name, sock, seconds, seed):
    """Continuous puts, deletes, batches and TTL puts on keys w/00..w/63
    with self-verifying values, for @seconds. Prints a JSON summary."""
    import shoal
    rnd = random.Random(seed)
    c = shoal.Client(name, socket=sock)
    n = 0
    ops = {"put": 0, "del": 0, "batch": 0, "ttl": 0}
    end = time.monotonic() + seconds
    keys = ["w/%02d" % i for i in range(64)]
    while time.monotonic() < end:
        n += 1
        k = rnd.choice(keys)
        r = rnd.random()
        if r < 0.5:
            c.put(k.encode(), make_value(k, n).encode())
            ops["put"] += 1
        elif r < 0.65:
            c.delete(k.encode())
            ops["del"] += 1
        elif r < 0.85:
            with c.batch() as b:
                for j in range(rnd.randint(2, 6)):
                    k2 = rnd.choice(keys)
                    if rnd.random() < 0.2:
                        b.delete_any(k2.encode())
                    else:
                        b.put(k2.encode(), make_value(k2, n * 10 + j).encode())
            ops["batch"] += 1
        else:
            c.put(k.encode(), make_value(k, n).encode(), ttl_ms=rnd.randint(20, 400))
            ops["ttl"] += 1
    c.close()
    print(json.dumps(ops), flush=True)


def helper_pin(name, sock):
    """Pin a snapshot (a read section) until stdin closes."""
    import shoal
    c = shoal.Client(name, socket=sock)
    with c.read() as r:
        r.get(b"h")
        print("pinned %d" % os.getpid(), flush=True)
        sys.stdin.read()
    c.close()


class CliLoadWriter(threading.Thread):
    """The writer without the Python client: CLI puts, dels, TTL puts."""

    def __init__(self, store, seconds, seed):
        super().__init__(daemon=True)
        self.store, self.seconds, self.rnd = store, seconds, random.Random(seed)
        self.ops = 0
        self.error = None

    def run(self):
        try:
            end = time.monotonic() + self.seconds
            n = 0
            while time.monotonic() < end:
                n += 1
                k = "w/%02d" % self.rnd.randrange(64)
                r = self.rnd.random()
                if r < 0.6:
                    self.store.put(k, make_value(k, n))
                elif r < 0.8:
                    self.store.delete(k)
                else:
                    self.store.put(k, make_value(k, n), ttl_ms=self.rnd.randint(20, 400))
                self.ops += 1
        except BaseException as e:  # reported by the test
            self.error = e


class AckWriter(threading.Thread):
    """CLI puts of fresh keys until told to stop; remembers each acknowledged
    (key, version, value): the CLI printed the version and exited 0."""

    def __init__(self, store):
        super().__init__(daemon=True)
        self.store = store
        self.acked = []
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            k = "ack/%05d" % n
            v = make_value(k, n)
            p = self.store.cli("put", k, v, check=False)
            if p.returncode != 0:
                if self.stop.is_set():
                    return
                time.sleep(0.01)  # the broker is gone: nothing more is acked
                continue
            self.acked.append((k, int(p.stdout.split()[0]), v))
            n += 1


# --------------------------------------------------- the test base ----

class InspectCase(unittest.TestCase):
    maxDiff = 4000

    @classmethod
    def setUpClass(cls):
        missing = [n for n, p in (("SHOAL_TEST_SHOALD", SHOALD), ("SHOAL_TEST_CLI", CLI),
                                  ("SHOAL_TEST_INSPECT", INSPECT))
                   if not p or not os.access(p, os.X_OK)]
        if missing:
            raise unittest.SkipTest("set %s to the binaries under test" % ", ".join(missing))

    def ok(self, r, codes=(EX_OK,)):
        """@r did not crash and exited with one of @codes."""
        why = crash_problem(r)
        self.assertIsNone(why, "shoal-inspect crashed (%s): %s" % (why, r))
        self.assertIn(r.rc, codes, "unexpected exit status: %s" % r)
        return r

    def js(self, r, codes=(EX_OK,)):
        self.ok(r, codes)
        try:
            return r.json()
        except ValueError as e:
            err = e
        self.fail("output is not one JSON object (%s): %s" % (err, r))

    def fields(self, obj, spec, where):
        """Every field of @spec exists in @obj with a value passing its check."""
        self.assertIsInstance(obj, dict, where)
        for f, chk in spec.items():
            self.assertIn(f, obj, "%s: field %r missing in %s" % (where, f, tail(json.dumps(obj), 800)))
            self.assertTrue(chk(obj[f]), "%s: field %r has a wrong type/value: %r" % (where, f, obj[f]))


T_INT = isint
T_NUM = isnum
T_STR = lambda x: isinstance(x, str)
T_BOOL = lambda x: isinstance(x, bool)
T_LIST = lambda x: isinstance(x, list)
T_DICT = lambda x: isinstance(x, dict)
T_INT_NULL = lambda x: x is None or isint(x)
T_HEX = lambda x: isinstance(x, str) and re.fullmatch(r"(0x)?[0-9a-fA-F]+", x) is not None

SUMMARY = {
    "name": T_STR, "path": T_STR, "format": T_INT,
    "fingerprint": lambda x: isinstance(x, str) and re.fullmatch(r"0x[0-9a-fA-F]+", x) is not None,
    "store_id": T_HEX, "created_ms": T_INT, "size": T_INT, "backed": T_INT,
    "used": T_INT, "free": T_INT, "meta_bytes": T_INT, "heap_top": T_INT,
    "keys": T_INT, "key_bytes": T_INT, "value_bytes": T_INT, "records": T_INT,
    "entries": T_INT, "commit_seq": T_INT, "commits": T_INT,
    "last_commit_ms": T_INT, "index": T_DICT, "allocator": T_DICT,
    "retired": T_INT, "retired_bytes": T_INT, "reclaimed": T_INT,
    "expired": T_INT, "broker": T_DICT, "readers": T_DICT, "pinned": T_BOOL,
}
SUMMARY_INDEX = {"offset": T_INT, "capacity": T_INT, "used": T_INT,
                 "live": T_INT, "load": T_NUM}
SUMMARY_ALLOC = {"classes": T_LIST, "extent_pages": T_INT, "free_pages": T_INT,
                 "fragmentation": T_NUM}
SUMMARY_CLASS = {"class": T_INT, "size": T_INT, "used": T_INT, "free": T_INT,
                 "slabs": T_INT}
SUMMARY_BROKER = {"pid": T_INT, "alive": T_BOOL, "start_time": T_INT,
                  "generation": T_INT, "clean_shutdown": T_BOOL,
                  "state": lambda x: x in ("running", "stopped", "crashed"),
                  "recoveries": T_INT}
SUMMARY_READERS = {"slots": T_INT, "claimed": T_INT, "busy": T_INT,
                   "oldest_snapshot": T_INT_NULL,
                   "oldest_snapshot_age_ms": T_INT_NULL,
                   "oldest_snapshot_lag": T_INT_NULL}
KEYS = {"keys": T_LIST, "count": T_INT, "truncated": T_BOOL, "snapshot": T_INT}
KEYS_ITEM = {"key": T_STR, "version": T_INT, "len": T_INT, "expires_at": T_INT_NULL}
GET = {"key": T_STR, "found": T_BOOL, "version": T_INT, "len": T_INT,
       "expires_at": T_INT_NULL, "ttl_ms": T_INT_NULL, "value": T_STR,
       "printable": T_BOOL, "history": T_LIST, "snapshot": T_INT}
GET_HIST = {"version": T_INT, "len": T_INT, "tombstone": T_BOOL,
            "expires_at": T_INT_NULL}
READERS = {"slots": T_INT, "claimed": T_INT, "busy": T_INT, "commit_seq": T_INT,
           "readers": T_LIST}
READERS_ITEM = {"slot": T_INT, "pid": T_INT, "alive": T_BOOL, "leased": T_BOOL,
                "busy": T_BOOL, "snapshot": T_INT_NULL, "lag": T_INT_NULL,
                "age_ms": T_INT_NULL, "nesting": T_INT}
LAYOUT = {"size": T_INT, "backed_end": T_INT, "heap_start": T_INT,
          "heap_top": T_INT, "regions": T_LIST, "index": T_DICT, "pages": T_DICT}
LAYOUT_REGION = {"name": T_STR, "offset": T_INT, "bytes": T_INT}
LAYOUT_INDEX = {"offset": T_INT, "bytes": T_INT, "capacity": T_INT}
LAYOUT_PAGES = {"meta": T_INT, "slab": T_INT, "extent": T_INT, "free": T_INT,
                "uncarved": T_INT}
LAYOUT_RUN = {"offset": T_INT, "pages": T_INT, "kind": T_STR, "class": T_INT_NULL}
TOP = {"time_ms": T_INT, "commit_seq": T_INT, "commits_per_s": T_NUM,
       "keys": T_INT, "used": T_INT, "readers_busy": T_INT,
       "oldest_snapshot_age_ms": T_INT_NULL, "broker_alive": T_BOOL}
CHECK = {"consistent": T_BOOL, "problems": T_LIST,
         "mode": lambda x: x in ("live", "quiescent", "unclean")}

PROM_NAMES = [
    "shoal_up", "shoal_keys", "shoal_commit_seq", "shoal_commits_total",
    "shoal_size_bytes", "shoal_used_bytes", "shoal_free_bytes",
    "shoal_backed_bytes", "shoal_index_capacity", "shoal_index_used",
    "shoal_records", "shoal_retired_bytes", "shoal_reclaimed_total",
    "shoal_expired_total", "shoal_readers_claimed", "shoal_readers_busy",
    "shoal_oldest_snapshot_age_seconds"]


class SummaryChecks:
    """Structure checks of the --json objects, shared by the tests."""

    def check_summary(self, s, store):
        self.fields(s, SUMMARY, "summary")
        self.fields(s["index"], SUMMARY_INDEX, "summary.index")
        self.fields(s["allocator"], SUMMARY_ALLOC, "summary.allocator")
        for c in s["allocator"]["classes"]:
            self.fields(c, SUMMARY_CLASS, "summary.allocator.classes[]")
        self.fields(s["broker"], SUMMARY_BROKER, "summary.broker")
        self.fields(s["readers"], SUMMARY_READERS, "summary.readers")
        self.assertEqual(s["name"], store.name)
        self.assertEqual(os.path.realpath(s["path"]), os.path.realpath(store.data_path))
        self.assertEqual(s["format"], 1)
        self.assertEqual(s["size"], 64 << 20)
        self.assertGreater(s["commit_seq"], 0)
        self.assertLessEqual(s["used"], s["size"])
        self.assertLessEqual(s["backed"], s["size"])
        self.assertLessEqual(s["heap_top"], s["backed"])
        self.assertGreater(s["index"]["capacity"], 0)
        self.assertLessEqual(s["index"]["live"], s["index"]["used"])
        self.assertLessEqual(s["index"]["used"], s["index"]["capacity"])

    def check_keys(self, k):
        self.fields(k, KEYS, "keys")
        prev = None
        for item in k["keys"]:
            self.fields(item, KEYS_ITEM, "keys.keys[]")
            if "key_encoding" in item:
                self.assertEqual(item["key_encoding"], "base64")
            kb = decode_bytes(item, "key", "key_encoding")
            if prev is not None:
                self.assertLess(prev, kb, "keys not in byte order")
            prev = kb
            self.assertLessEqual(item["version"], k["snapshot"], "a key newer than the listing's snapshot")
        if not k["truncated"]:
            self.assertEqual(k["count"], len(k["keys"]))

    def check_history(self, g):
        """get's history: the OLDER versions still retained (spec: "older
        versions still retained"), newest first."""
        hv = []
        for h in g["history"]:
            self.fields(h, GET_HIST, "get.history[]")
            hv.append(h["version"])
        self.assertTrue(all(v < g["version"] for v in hv),
                        "history holds versions not older than the value's %d: %r"
                        % (g["version"], g["history"]))
        self.assertEqual(hv, sorted(hv, reverse=True), "history newest first")

    def check_not_found(self, g, key):
        """spec: exit 1, JSON {"key","found":false} (more fields allowed:
        the versions a deleted key still has)."""
        self.assertEqual((g.get("key"), g.get("found")), (key, False), g)
        for h in g.get("history", []):
            self.fields(h, GET_HIST, "get (not found).history[]")

    def check_prometheus(self, text, store, expect=None):
        helped, typed, samples = set(), set(), {}
        for line in text.splitlines():
            if not line.strip():
                continue
            m = re.match(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$", line)
            if m:
                (helped if m.group(1) == "HELP" else typed).add(m.group(2))
                if m.group(1) == "TYPE":
                    self.assertIn(m.group(3), ("gauge", "counter", "untyped", "summary", "histogram"), line)
                continue
            self.assertFalse(line.startswith("#"), "stray comment: %r" % line)
            m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)( \d+)?$', line)
            self.assertIsNotNone(m, "not a Prometheus sample line: %r" % line)
            name, labels, val = m.group(1), m.group(2), m.group(3)
            self.assertIn('store="%s"' % store.name, labels, line)
            float(val)
            samples[name] = float(val)
        for n in PROM_NAMES:
            self.assertIn(n, samples, "metric %s missing:\n%s" % (n, tail(text)))
        for n in samples:
            self.assertIn(n, helped, "no HELP line for " + n)
            self.assertIn(n, typed, "no TYPE line for " + n)
        if expect:
            for n, v in expect.items():
                self.assertEqual(samples[n], v, n)
        return samples


# ================================================================ live ====

class TestLive(InspectCase, SummaryChecks):
    """shoal-inspect while a writer commits continuously (~3 s)."""

    LOAD_SECONDS = 3.0

    def test_under_write_load(self):
        st = Store(self, "live").start()
        st.bulk_put([("pre/%03d" % i, make_value("pre/%03d" % i, i)) for i in range(100)])
        seed = int(os.environ.get("SHOAL_TEST_SEED", "0")) or int(time.time())
        writer = None
        if python_client_ok():
            writer = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--helper", "load",
                 st.name, st.sock, str(self.LOAD_SECONDS), str(seed)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=py_env(st.env), preexec_fn=_pdeathsig)
            self.addCleanup(Store._reap, writer)
            alive = lambda: writer.poll() is None
        else:
            th = CliLoadWriter(st, self.LOAD_SECONDS, seed)
            th.start()
            alive = th.is_alive

        allowed = lambda k: re.fullmatch(r"pre/\d{3}|w/\d{2}", k) is not None
        cmds = [
            ("summary", ["--json", "summary"]),
            ("keys", ["--json", "keys"]),
            ("keys-prefix", ["--json", "keys", "w/", "--limit", "20"]),
            ("get", None),
            ("readers", ["--json", "readers", "--all"]),
            ("layout", ["--json", "layout", "--runs"]),
            ("prometheus", ["stats", "--prometheus"]),
            ("check", ["--json", "check"]),
            ("check-text", ["--check"]),
            ("top", ["--json", "top", "--count", "2", "--interval", "0.2"]),
            ("summary-text", ["summary"]),
            ("keys-text", ["keys"]),
            ("get-pre", None),
            ("keys-pin", ["--json", "--pin", "keys", "w/"]),
            ("summary-pin", ["--json", "--pin", "summary"]),
        ]
        rnd = random.Random(seed)
        runs = {}
        gets_found = 0
        last_seq = 0
        i = 0
        t_end = time.monotonic() + self.LOAD_SECONDS + 5  # the writer's end bounds it too
        while (alive() or i < len(cmds)) and time.monotonic() < t_end:
            label, args = cmds[i % len(cmds)]
            i += 1
            if label == "get":
                key = "w/%02d" % rnd.randrange(64)
                args = ["--json", "get", key]
            elif label == "get-pre":
                key = "pre/%03d" % rnd.randrange(100)
                args = ["get", key]
            r = st.inspect(*args)
            runs[label] = runs.get(label, 0) + 1
            if label == "summary":
                s = self.js(r)
                self.check_summary(s, st)
                self.assertGreaterEqual(s["commit_seq"], last_seq, "commit_seq went back")
                last_seq = s["commit_seq"]
                self.assertEqual(s["broker"]["state"], "running", r)
                self.assertTrue(s["broker"]["alive"])
                self.assertEqual(s["broker"]["pid"], st.proc.pid)
                self.assertFalse(s["pinned"])
            elif label == "summary-pin":
                s = self.js(r)
                self.check_summary(s, st)
                self.assertTrue(s["pinned"])
            elif label in ("keys", "keys-prefix", "keys-pin"):
                k = self.js(r)
                self.check_keys(k)
                for item in k["keys"]:
                    self.assertTrue(allowed(item["key"]), "a key nobody wrote: %r" % item)
                    if label != "keys":
                        self.assertTrue(item["key"].startswith("w/"))
                if label == "keys-prefix":
                    self.assertLessEqual(len(k["keys"]), 20)
                elif label == "keys":
                    pre = [it["key"] for it in k["keys"] if it["key"].startswith("pre/")]
                    self.assertEqual(pre, ["pre/%03d" % n for n in range(100)],
                                     "pre/ is never touched: all 100 listed: %s" % r)
            elif label == "get":
                g = self.js(r, (EX_OK, EX_NOTFOUND))
                if r.rc == EX_OK:
                    self.fields(g, GET, "get")
                    self.assertTrue(g["found"])
                    self.assertEqual(g["key"], key)
                    self.assertTrue(value_ok(key, g["value"]),
                                    "get returned a value the writer never wrote: %r" % g["value"])
                    self.assertEqual(g["len"], len(g["value"].encode()))
                    self.assertLessEqual(g["version"], g["snapshot"])
                    self.check_history(g)
                    gets_found += 1
                else:
                    self.check_not_found(g, key)
            elif label == "get-pre":
                self.ok(r)
                self.assertIn(make_value(key, int(key.split("/")[1])), r.out, r)
            elif label == "readers":
                rd = self.js(r)
                self.fields(rd, READERS, "readers")
                for item in rd["readers"]:
                    self.fields(item, READERS_ITEM, "readers.readers[]")
            elif label == "layout":
                self.check_layout(self.js(r), runs=True)
            elif label == "prometheus":
                self.ok(r)
                smp = self.check_prometheus(r.out, st)
                self.assertEqual(smp["shoal_up"], 1)
                self.assertGreaterEqual(smp["shoal_keys"], 100)
            elif label == "check":
                c = self.js(r)
                self.fields(c, CHECK, "check")
                self.assertEqual(c["mode"], "live", r)
                self.assertTrue(c["consistent"], r)
                self.assertEqual(c["problems"], [], r)
            elif label == "check-text":
                self.ok(r)
            elif label == "top":
                self.ok(r)
                frames = [json.loads(l) for l in r.out.splitlines() if l.strip()]
                self.assertEqual(len(frames), 2, r)
                for f in frames:
                    self.fields(f, TOP, "top frame")
                    self.assertTrue(f["broker_alive"])
                self.assertLessEqual(frames[0]["commit_seq"], frames[1]["commit_seq"])
            elif label == "summary-text":
                self.ok(r)
                for w in ("broker:", "running", "keys:", "commit_seq:"):
                    self.assertIn(w, r.out, r)
            elif label == "keys-text":
                self.ok(r)
                lines = r.out.splitlines()
                self.assertTrue(all(allowed(l) for l in lines), r)
                self.assertEqual(lines, sorted(lines))
        # the writer did its job and ended well
        if writer is not None:
            out, err = writer.communicate(timeout=60)
            self.assertEqual(writer.returncode, 0, "writer failed:\n" + tail(err))
            ops = json.loads(out.decode().strip().splitlines()[-1])
            self.assertGreater(ops["batch"], 0)
            self.assertGreater(ops["ttl"], 0)
        else:
            th.join(60)
            self.assertIsNone(th.error, "CLI writer failed: %r" % th.error)
        self.assertGreaterEqual(i, 2 * len(cmds), "too few inspect runs under load: %s" % runs)
        self.assertGreater(gets_found, 0, "no get ever found a w/ key")
        sys.stderr.write("\n  [live: %d inspect runs during the load, seed %d] " % (i, seed))

        # after the load: commit_seq is at least what the writer saw
        s = self.js(st.inspect("--json", "summary"))
        self.assertGreaterEqual(s["commit_seq"], last_seq)
        c = self.js(st.inspect("--json", "check"))
        self.assertTrue(c["consistent"], c)

    def check_layout(self, lay, runs=False):
        self.fields(lay, LAYOUT, "layout")
        names = {}
        for reg in lay["regions"]:
            self.fields(reg, LAYOUT_REGION, "layout.regions[]")
            names[reg["name"]] = reg
        for n in ("header", "doorbells", "page table", "heap"):
            self.assertIn(n, names, "layout region %r missing" % n)
        self.assertEqual(names["header"]["offset"], 0)
        self.assertEqual(names["doorbells"]["offset"], 4096)
        self.assertEqual(names["page table"]["offset"], 8192)
        self.assertEqual(names["heap"]["offset"], lay["heap_start"])
        self.fields(lay["index"], LAYOUT_INDEX, "layout.index")
        self.fields(lay["pages"], LAYOUT_PAGES, "layout.pages")
        self.assertTrue(lay["heap_start"] <= lay["index"]["offset"] < lay["heap_top"] <= lay["backed_end"] <= lay["size"])
        self.assertEqual(lay["heap_start"] % SLAB, 0)
        if runs:
            # the runs tile the heap, [heap_start, size), and add up to
            # the page counts by kind
            self.assertIn("runs", lay)
            at = lay["heap_start"]
            by_kind = {}
            for run in lay["runs"]:
                self.fields(run, LAYOUT_RUN, "layout.runs[]")
                self.assertEqual(run["offset"], at, "runs not contiguous: %r" % run)
                self.assertGreater(run["pages"], 0, run)
                self.assertIn(run["kind"], ("slab", "extent", "free", "uncarved"), run)
                if run["kind"] == "slab":
                    self.assertTrue(0 <= run["class"] < SHM_NCLASSES, run)
                    self.assertEqual(run["pages"], SLAB // PAGE, run)
                by_kind[run["kind"]] = by_kind.get(run["kind"], 0) + run["pages"]
                at += run["pages"] * PAGE
            self.assertEqual(at, lay["size"], "runs end at the end of the heap")
            for kind in ("slab", "extent", "free", "uncarved"):
                self.assertEqual(by_kind.get(kind, 0), lay["pages"][kind], "pages of kind " + kind)


# =========================================================== lifecycle ====

class TestLifecycle(InspectCase, SummaryChecks):
    """kill -9 of the broker under writes, restart (recovery), SIGTERM."""

    def test_crash_restart_stop(self):
        st = Store(self, "crash").start()
        # keys with several versions, a delete, a TTL far away
        vers = {}
        for i in range(10):
            k = "k/%d" % i
            vers[k] = st.put(k, make_value(k, i))
        vers["k/3"] = st.put("k/3", make_value("k/3", 103))
        self.assertEqual(st.delete("k/4"), 0)
        del vers["k/4"]
        vers["ttl"] = st.put("ttl", make_value("ttl", 7), ttl_ms=600000)
        # a client holding a leased reader slot when the broker dies
        waiter = subprocess.Popen([CLI, "--socket", st.sock, "--name", st.name,
                                   "wait", "never", "--timeout", "60000"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=st.env, preexec_fn=_pdeathsig)
        self.addCleanup(Store._reap, waiter)
        # kill -9 while a CLI writer is acknowledging puts
        w = AckWriter(st)
        w.start()
        deadline = time.monotonic() + 10
        while len(w.acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        broker_pid = st.proc.pid
        st.kill9()
        w.stop.set()
        w.join(30)
        self.assertGreaterEqual(len(w.acked), 30, "the writer got too few acks")
        waiter.kill()
        waiter.wait()

        s = self.js(st.inspect("--json", "summary"))
        self.check_summary(s, st)
        b = s["broker"]
        self.assertEqual(b["state"], "crashed", s)
        self.assertFalse(b["alive"])
        self.assertFalse(b["clean_shutdown"])
        self.assertEqual(b["pid"], broker_pid)
        expect_keys = len(vers) + len(w.acked)
        # a put in flight at the kill may have been committed without its ack
        self.assertIn(s["keys"], (expect_keys, expect_keys + 1), s)
        txt = self.ok(st.inspect("summary"))
        self.assertIn("crashed", txt.out)

        # every acknowledged put, with the version the CLI printed
        self.assert_visible(st, list(vers.items()) + [(k, v) for k, v, _ in w.acked],
                            {k: val for k, _, val in w.acked})
        g = self.js(st.inspect("--json", "get", "ttl"))
        self.assertIsNotNone(g["ttl_ms"])
        self.assertTrue(0 < g["ttl_ms"] <= 600000, g)
        self.js(st.inspect("--json", "get", "k/4"), (EX_NOTFOUND,))

        k = self.js(st.inspect("--json", "keys", "--limit", "0"))
        self.check_keys(k)
        listed = {it["key"] for it in k["keys"]}
        self.assertTrue(set(vers) | {a[0] for a in w.acked} <= listed)
        self.assertNotIn("k/4", listed)

        c = self.js(st.inspect("--json", "check"))
        self.fields(c, CHECK, "check")
        self.assertEqual(c["mode"], "unclean", c)
        self.assertTrue(c["consistent"], c)
        self.ok(st.inspect("check"))

        rd = self.js(st.inspect("--json", "readers", "--all"))
        self.fields(rd, READERS, "readers")
        for item in rd["readers"]:
            self.fields(item, READERS_ITEM, "readers.readers[]")
            self.assertFalse(item["alive"] and item["pid"] in (waiter.pid, broker_pid),
                             "a dead process shown alive: %r" % item)
        self.ok(st.inspect("layout"))
        self.ok(st.inspect("stats", "--prometheus"))
        top = self.ok(st.inspect("--json", "top", "--count", "1", "--interval", "0.1"))
        self.assertFalse(json.loads(top.out.splitlines()[0])["broker_alive"])

        # restart: recovery runs, everything is still there
        st.start()
        s2 = self.js(st.inspect("--json", "summary"))
        self.assertEqual(s2["broker"]["state"], "running", s2)
        self.assertEqual(s2["broker"]["pid"], st.proc.pid)
        self.assertGreaterEqual(s2["broker"]["recoveries"], 1, s2)
        self.assertGreater(s2["broker"]["generation"], b["generation"])
        self.assertGreaterEqual(s2["commit_seq"], s["commit_seq"])
        self.assertEqual(s2["keys"], s["keys"])
        after = st.put("after", "restart")

        # SIGTERM: stopped, clean
        st.stop()
        s3 = self.js(st.inspect("--json", "summary"))
        self.assertEqual(s3["broker"]["state"], "stopped", s3)
        self.assertFalse(s3["broker"]["alive"])
        self.assertTrue(s3["broker"]["clean_shutdown"])
        self.assertGreaterEqual(s3["commit_seq"], after)
        self.assertIn("stopped", self.ok(st.inspect("summary")).out)
        c = self.js(st.inspect("--json", "check"))
        self.assertEqual(c["mode"], "quiescent", c)
        self.assertTrue(c["consistent"], c)
        self.assert_visible(st, [("after", after)], {"after": "restart"})

    def assert_visible(self, st, pairs, values):
        """Each (key, version) is what `get` shows (value too when known)."""
        for key, ver in pairs:
            g = self.js(st.inspect("--json", "get", key))
            self.fields(g, GET, "get " + key)
            self.assertEqual(g["version"], ver, "get %s: version" % key)
            if key in values:
                self.assertEqual(g["value"], values[key], "get %s: value" % key)
            else:
                self.assertTrue(value_ok(key, g["value"]), g)


# ================================================================ json ====

class TestJson(InspectCase, SummaryChecks):
    """--json of every command, checked against what the test wrote."""

    BIN_KEY = b"bin/\xff\x01"
    BIN_VAL = bytes(range(256)) * 3

    def test_every_command(self):
        st = Store(self, "json").start()
        vers = {}
        for i in range(1, 6):
            vers["a/%d" % i] = st.put("a/%d" % i, "value %d" % i)
        vers["b"] = st.put("b", "plain text")
        vers["ttl"] = st.put("ttl", "expires", ttl_ms=600000)
        p = st.cli("put", self.BIN_KEY, "-", input=self.BIN_VAL)
        vers[self.BIN_KEY] = int(p.stdout.split()[0])
        v1 = st.put("h", "one")
        nkeys = len(vers) + 1

        # a reader pinning the snapshot that holds h = "one", and a client
        # with a leased slot (a CLI wait), both alive
        pin = None
        if python_client_ok():
            pin = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--helper",
                                    "pin", st.name, st.sock],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=py_env(st.env),
                                   preexec_fn=_pdeathsig)
            self.addCleanup(Store._reap, pin)
            line = pin.stdout.readline().decode()
            self.assertTrue(line.startswith("pinned"), "pin helper: %r %s" % (line, tail(pin.stderr.read() if pin.poll() is not None else b"")))
        waiter = subprocess.Popen([CLI, "--socket", st.sock, "--name", st.name, "wait",
                                   "never", "--timeout", "60000"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=st.env, preexec_fn=_pdeathsig)
        self.addCleanup(Store._reap, waiter)
        v2 = st.put("h", "two")
        v3 = st.put("h", "three")
        vers["h"] = v3
        # the waiter's slot is leased once its Hello is answered
        deadline = time.monotonic() + 10
        while True:
            rd = self.js(st.inspect("--json", "readers"))
            if any(r["pid"] == waiter.pid for r in rd["readers"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)

        # ---- summary (and stats --json: the same object)
        s = self.js(st.inspect("--json", "summary"))
        self.check_summary(s, st)
        self.assertEqual(s["keys"], nkeys)
        self.assertGreaterEqual(s["commit_seq"], v3)
        self.assertGreaterEqual(s["commits"], len(vers) + 2)
        self.assertEqual(s["broker"]["state"], "running")
        self.assertTrue(s["broker"]["alive"])
        self.assertFalse(s["broker"]["clean_shutdown"])
        self.assertEqual(s["broker"]["pid"], st.proc.pid)
        self.assertFalse(s["pinned"])
        self.assertGreaterEqual(s["readers"]["claimed"], 1 + (pin is not None))
        self.assertGreaterEqual(s["index"]["live"], nkeys)
        self.assertGreater(s["last_commit_ms"], 0)
        self.assertGreater(s["created_ms"], 1500000000000)
        self.assertGreaterEqual(s["key_bytes"], sum(len(k) for k in vers))
        st_json = self.js(st.inspect("--json", "stats"))
        self.assertEqual(set(st_json), set(s))
        self.assertEqual(st_json["keys"], nkeys)
        if pin is not None:
            self.assertGreaterEqual(s["readers"]["busy"], 1)
            self.assertIsNotNone(s["readers"]["oldest_snapshot"])
            self.assertTrue(v1 <= s["readers"]["oldest_snapshot"] < v2, s["readers"])
            self.assertGreaterEqual(s["readers"]["oldest_snapshot_lag"], v3 - v2)
            self.assertIsNotNone(s["readers"]["oldest_snapshot_age_ms"])
        claimed = self.js(st.inspect("--json", "readers"))["claimed"]
        for _ in range(3):
            pinned = self.js(st.inspect("--json", "--pin", "summary"))
            self.assertTrue(pinned["pinned"])
            self.assertGreaterEqual(pinned["readers"]["claimed"], claimed + 1, "--pin claims a slot")
        self.assertEqual(self.js(st.inspect("--json", "readers"))["claimed"], claimed,
                         "--pin gives its reader slot back on exit")
        txt = self.ok(st.inspect("summary")).out
        for w in ("broker:", "running", "keys:", "commit_seq:"):
            self.assertIn(w, txt)
        self.assertIn(str(nkeys), txt)
        self.assertEqual(self.ok(st.inspect("--json")).json()["keys"], nkeys)  # summary is the default

        # ---- keys
        k = self.js(st.inspect("--json", "keys"))
        self.check_keys(k)
        self.assertEqual(k["count"], nkeys)
        self.assertFalse(k["truncated"])
        got = {decode_bytes(it, "key", "key_encoding"): it for it in k["keys"]}
        want = {(kk if isinstance(kk, bytes) else kk.encode()): v for kk, v in vers.items()}
        self.assertEqual(set(got), set(want))
        for kk, v in want.items():
            self.assertEqual(got[kk]["version"], v, kk)
        self.assertEqual(got[self.BIN_KEY].get("key_encoding"), "base64")
        self.assertEqual(got[self.BIN_KEY]["len"], len(self.BIN_VAL))
        self.assertEqual(got[b"b"]["len"], len("plain text"))
        self.assertTrue(isint(got[b"ttl"]["expires_at"]) and got[b"ttl"]["expires_at"] > time.time() * 1000)
        self.assertIn(got[b"b"]["expires_at"], (None, 0))
        self.assertGreaterEqual(k["snapshot"], v3)
        kp = self.js(st.inspect("--json", "keys", "a/"))
        self.assertEqual([it["key"] for it in kp["keys"]], ["a/%d" % i for i in range(1, 6)])
        kl = self.js(st.inspect("--json", "keys", "--limit", "2"))
        self.assertEqual(len(kl["keys"]), 2)
        self.assertTrue(kl["truncated"])
        self.assertEqual([it["key"] for it in kl["keys"]], ["a/1", "a/2"])
        k0 = self.js(st.inspect("--json", "keys", "--limit", "0"))
        self.assertEqual(len(k0["keys"]), nkeys)
        kt = self.ok(st.inspect("keys")).out.splitlines()
        self.assertEqual(len(kt), nkeys)
        self.assertIn("bin/\\xff\\x01", kt)
        self.assertEqual(self.ok(st.inspect("keys", "a/", "--limit", "3")).out.splitlines(),
                         ["a/1", "a/2", "a/3"])

        # ---- get
        g = self.js(st.inspect("--json", "get", "b"))
        self.fields(g, GET, "get")
        self.assertEqual((g["key"], g["found"], g["version"], g["len"], g["value"]),
                         ("b", True, vers["b"], 10, "plain text"))
        self.assertTrue(g["printable"])
        self.assertIsNone(g["ttl_ms"])
        self.assertIn(g["expires_at"], (None, 0))
        self.assertNotIn("encoding", g)
        g = self.js(st.inspect("--json", "get", "ttl"))
        self.assertTrue(isint(g["ttl_ms"]) and 590000 < g["ttl_ms"] <= 600000, g)
        self.assertTrue(isint(g["expires_at"]) and g["expires_at"] > time.time() * 1000)
        g = self.js(st.inspect("--json", "get", self.BIN_KEY))
        self.fields(g, GET, "get binary")
        self.assertEqual(g["encoding"], "base64")
        self.assertEqual(base64.b64decode(g["value"]), self.BIN_VAL)
        self.assertFalse(g["printable"])
        self.assertEqual(g["version"], vers[self.BIN_KEY])
        self.assertEqual(g.get("key_encoding"), "base64")
        self.assertEqual(decode_bytes(g, "key", "key_encoding"), self.BIN_KEY)
        bt = self.ok(st.inspect("get", self.BIN_KEY)).out
        self.assertRegex(bt, r"(?i)00 ?01 ?02 ?03", "hex dump of a binary value")
        gt = self.ok(st.inspect("get", "b")).out
        self.assertIn("plain text", gt)
        self.assertIn(str(vers["b"]), gt)
        g = self.js(st.inspect("--json", "get", "h"))
        self.assertEqual((g["version"], g["value"]), (v3, "three"))
        self.check_history(g)
        for h in g["history"]:
            self.assertFalse(h["tombstone"])
        if pin is not None:
            hv = [h["version"] for h in g["history"]]
            self.assertIn(v1, hv, "history while a reader pins v1: %r" % g["history"])
            self.assertEqual(hv, sorted(hv, reverse=True), "history newest first")
            self.assertEqual([h["len"] for h in g["history"] if h["version"] == v1], [3])

        # ---- readers
        rd = self.js(st.inspect("--json", "readers"))
        self.fields(rd, READERS, "readers")
        self.assertGreaterEqual(rd["commit_seq"], v3)
        by_pid = {}
        for it in rd["readers"]:
            self.fields(it, READERS_ITEM, "readers.readers[]")
            by_pid.setdefault(it["pid"], []).append(it)
        self.assertIn(waiter.pid, by_pid, "the CLI waiter's slot: %s" % rd)
        self.assertTrue(all(it["alive"] and it["leased"] for it in by_pid[waiter.pid]))
        if pin is not None:
            self.assertIn(pin.pid, by_pid, rd)
            busy = [it for it in by_pid[pin.pid] if it["busy"]]
            self.assertEqual(len(busy), 1, rd)
            it = busy[0]
            self.assertTrue(it["alive"])
            self.assertTrue(v1 <= it["snapshot"] < v2, it)
            self.assertGreaterEqual(it["lag"], v3 - v2)
            self.assertGreaterEqual(it["nesting"], 1)
            self.assertTrue(isint(it["age_ms"]) and it["age_ms"] >= 0)
            self.assertGreaterEqual(rd["busy"], 1)
        self.assertEqual(rd["claimed"], len(rd["readers"]))
        rall = self.js(st.inspect("--json", "readers", "--all"))
        self.assertGreaterEqual(len(rall["readers"]), len(rd["readers"]))
        self.assertIn(str(waiter.pid), self.ok(st.inspect("readers")).out)

        # ---- layout
        TestLive.check_layout(self, self.js(st.inspect("--json", "layout")))
        lay = self.js(st.inspect("--json", "layout", "--runs"))
        TestLive.check_layout(self, lay, runs=True)
        self.assertEqual(lay["size"], 64 << 20)
        self.assertEqual(lay["index"]["offset"], s["index"]["offset"])
        self.assertEqual(lay["index"]["capacity"], s["index"]["capacity"])
        self.assertNotIn("runs", self.js(st.inspect("--json", "layout")))
        self.ok(st.inspect("layout"))

        # ---- top
        r = self.ok(st.inspect("--json", "top", "--count", "2", "--interval", "0.2"))
        frames = [json.loads(l) for l in r.out.splitlines() if l.strip()]
        self.assertEqual(len(frames), 2, r)
        for f in frames:
            self.fields(f, TOP, "top")
            self.assertEqual(f["keys"], nkeys)
            self.assertTrue(f["broker_alive"])
            self.assertGreaterEqual(f["commit_seq"], v3)
        self.assertGreaterEqual(frames[1]["time_ms"] - frames[0]["time_ms"], 150)
        self.assertTrue(self.ok(st.inspect("top", "--count", "1")).out.strip())

        # ---- stats --prometheus
        r = self.ok(st.inspect("stats", "--prometheus"))
        smp = self.check_prometheus(r.out, st, {"shoal_up": 1, "shoal_keys": nkeys,
                                                "shoal_size_bytes": 64 << 20})
        self.assertGreaterEqual(smp["shoal_commit_seq"], v3)
        plain = self.ok(st.inspect("stats")).out
        self.assertRegex(plain, r"(?m)^\S+ \S+$")

        # ---- check
        c = self.js(st.inspect("--json", "check"))
        self.fields(c, CHECK, "check")
        self.assertEqual((c["consistent"], c["problems"], c["mode"]), (True, [], "live"))
        self.js(st.inspect("--json", "--check"))
        self.ok(st.inspect("check"))

        # ---- help, not found, usage errors
        h = self.ok(st.inspect("--help"))
        for f in ("commit_seq", "oldest_snapshot_age_ms", "broker_alive", "consistent", "history"):
            self.assertIn(f, h.out + h.err, "--help documents the JSON field " + f)
        r = st.inspect("--json", "get", "nope")
        self.check_not_found(self.js(r, (EX_NOTFOUND,)), "nope")
        st.put("gone", "soon")
        st.delete("gone")
        self.check_not_found(self.js(st.inspect("--json", "get", "gone"), (EX_NOTFOUND,)), "gone")
        self.ok(st.inspect("get", "nope"), (EX_NOTFOUND,))
        for args in (["frobnicate"], ["--bogus", "summary"], ["get"], ["get", "a", "b"],
                     ["keys", "--limit", "abc"], ["keys", "--limit"], ["top", "--interval", "-1"],
                     ["top", "--count", "x"], ["summary", "extra"], ["--name"],
                     ["readers", "--bogus"]):
            r = st.inspect(*args)
            self.ok(r, (EX_USAGE,))
            self.assertTrue(r.err.strip(), "usage error without a message: %s" % r)

        # ---- no such store: 3, naming the path
        for name in ("nosuch", "json"):
            shm = st.shm if name == "nosuch" else os.path.join(st.dir, "empty")
            os.makedirs(shm, exist_ok=True)
            for args in (["summary"], ["--json", "keys"], ["check"]):
                r = run_inspect(args, name, shm)
                self.ok(r, (EX_NOSTORE,))
                self.assertIn(os.path.join(shm, "shoal.%s.data" % name), r.err, r)
        env = dict(os.environ, SHOAL_SHM_DIR=os.path.join(st.dir, "empty"))
        r = subprocess.run([INSPECT, "--name", "json", "summary"], capture_output=True, env=env,
                           timeout=RUN_TIMEOUT)
        self.assertEqual(r.returncode, EX_NOSTORE, "SHOAL_SHM_DIR is the default directory")
        env["SHOAL_SHM_DIR"] = st.shm
        r = subprocess.run([INSPECT, "--name", "json", "--json", "summary"], capture_output=True,
                           env=env, timeout=RUN_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["keys"], nkeys)

        if pin is not None:
            pin.stdin.close()
            self.assertEqual(pin.wait(30), 0)


# ============================================================= corrupt ====

def sparse_copy(src, dst):
    """Copy a sparse file: only its data, the holes stay holes."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        size = os.fstat(f.fileno()).st_size
        chunk = 1 << 20
        off = 0
        while off < size:
            b = f.read(chunk)
            if not b:
                break
            if b.count(0) != len(b):
                g.seek(off)
                g.write(b)
            off += len(b)
        g.truncate(size)


class TestCorrupt(InspectCase):
    """Copies of a stopped store, damaged on purpose."""

    NAME = "cor"
    # every corrupted copy goes through each command, in text and in JSON
    CMDS = [["summary"], ["--json", "summary"], ["keys"], ["--json", "keys", "k/", "--limit", "0"],
            ["get", "k/001"], ["--json", "get", "big/1"], ["readers", "--all"],
            ["--json", "readers"], ["layout", "--runs"], ["--json", "layout", "--runs"],
            ["check"], ["--json", "check"], ["stats", "--prometheus"],
            ["--json", "top", "--count", "1", "--interval", "0.05"]]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.base = tempfile.mkdtemp(prefix="shoal-it-inspect-", dir=SHM_BASE)
        try:
            cls._make_stores()
        except BaseException:
            shutil.rmtree(cls.base, True)
            raise

    @classmethod
    def _make_stores(cls):
        class Fix(unittest.TestCase):  # a fixture owner for Store's asserts
            def runTest(self):
                pass
        fx = Fix()
        try:
            st = Store(fx, cls.NAME, base=os.path.join(cls.base, "orig")).start()
            items = [("k/%03d" % i, make_value("k/%03d" % i, i)) for i in range(300)]
            items += [("big/%d" % i, make_value("big/%d" % i, 1000 + i) * 50) for i in range(5)]
            items += [("huge", "x" * 300000)]
            st.bulk_put(items)
            for i in range(0, 300, 7):  # free blocks on the class free lists
                st.delete("k/%03d" % i)
            for i in range(1, 40, 3):  # replaced records, reclaimed
                st.put("k/%03d" % i, make_value("k/%03d" % i, 5000 + i))
            st.put("ttl", "t", ttl_ms=600000)
            time.sleep(0.5)  # a sweep or two: retired records reclaimed
            st.stop()
            other = Store(fx, "other", base=os.path.join(cls.base, "other")).start()
            other.put("x", "y")
            other.stop()
        finally:
            fx.doCleanups()
        cls.orig = st
        cls.other = other
        with open(st.data_path, "rb") as f:
            cls.hdr = f.read(PAGE)
        with open(st.readers_path, "rb") as f:
            cls.rdr = f.read()
        cls.size = get_u(cls.hdr, *HDR["size"])
        cls.heap_start = get_u(cls.hdr, *HDR["heap_start"])
        cls.heap_top = get_u(cls.hdr, *HDR["heap_top"])
        cls.backed_end = get_u(cls.hdr, *HDR["backed_end"])
        cls.index_off = get_u(cls.hdr, *HDR["index_off"])
        cls.nslots = get_u(cls.rdr, *RHDR["nslots"])
        cls.hwm = get_u(cls.rdr, *RHDR["hwm"])
        # the working copy every case damages and restores
        cls.work = os.path.join(cls.base, "work")
        os.makedirs(cls.work)
        cls.wdata = os.path.join(cls.work, "shoal.%s.data" % cls.NAME)
        cls.wreaders = os.path.join(cls.work, "shoal.%s.readers" % cls.NAME)
        sparse_copy(st.data_path, cls.wdata)
        shutil.copyfile(st.readers_path, cls.wreaders)
        cls.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    @classmethod
    def tearDownClass(cls):
        pool = getattr(cls, "pool", None)
        if pool:
            pool.shutdown()
        shutil.rmtree(cls.base, True)

    def tearDown(self):
        # every case leaves the working copy as it found it
        self.restore_all()

    # -- the working copy
    def poke(self, path, off, data):
        with open(path, "r+b") as f:
            f.seek(off)
            old = f.read(len(data))
            f.seek(off)
            f.write(data)
        return old

    def restore_all(self):
        if os.path.getsize(self.wdata) != self.size or os.path.getsize(self.wreaders) != len(self.rdr):
            sparse_copy(self.orig.data_path, self.wdata)
        else:
            with open(self.orig.data_path, "rb") as f:
                f.seek(self.heap_start)
                heap = f.read(self.heap_top - self.heap_start)
            with open(self.orig.data_path, "rb") as f:
                meta = f.read(PAGETAB_OFF + 4 * (self.size // PAGE))
            self.poke(self.wdata, 0, meta)
            self.poke(self.wdata, self.heap_start, heap)
        with open(self.wreaders, "wb") as f:
            f.write(self.rdr)

    def run_all(self, cmds=None, shm=None, name=None):
        cmds = cmds or self.CMDS
        futs = [self.pool.submit(run_inspect, c, name or self.NAME, shm or self.work,
                                 timeout=CORRUPT_TIMEOUT)
                for c in cmds]
        return [f.result() for f in futs]

    def assert_sane(self, runs, what, codes=(EX_OK, EX_NOTFOUND, EX_CORRUPT)):
        for r in runs:
            why = crash_problem(r)
            self.assertIsNone(why, "%s: shoal-inspect crashed, hung or ran away (%s): %s" % (what, why, r))
            self.assertIn(r.rc, codes, "%s: exit status: %s" % (what, r))
            if r.rc == EX_CORRUPT and "check" not in r.argv and "--check" not in r.argv:
                self.assertTrue(r.err.strip(), "%s: exit 2 without a diagnosis: %s" % (what, r))
            if "--json" in r.argv and (r.rc in (EX_OK, EX_NOTFOUND) or r.out.strip()):
                # what it prints, it prints as promised: JSON (top: a line each)
                try:
                    objs = [json.loads(l) for l in r.out.splitlines() if l.strip()] \
                        if "top" in r.argv else [json.loads(r.out)]
                except ValueError as e:
                    self.fail("%s: --json output does not parse (%s): %s" % (what, e, r))
                if "keys" in r.argv and r.rc == EX_OK:
                    self.assert_listing(objs[0], r, what)

    def assert_listing(self, k, r, what):
        """A listing that exits 0 keeps its own contract even on a damaged
        store: byte order, inside the prefix asked for, count == listed.
        (If the store is too damaged for that, say so: exit 2.)"""
        prefix = r.argv[r.argv.index("keys") + 1]
        prefix = b"" if prefix.startswith("--") else os.fsencode(prefix)
        prev = None
        for item in k.get("keys", []):
            kb = decode_bytes(item, "key", "key_encoding")
            self.assertTrue(kb.startswith(prefix),
                            "%s: keys %r listed %r, outside the prefix (exit 0): %s"
                            % (what, prefix, kb, r))
            self.assertTrue(prev is None or prev < kb,
                            "%s: keys out of order or repeated (%r then %r) with exit 0: %s"
                            % (what, prev, kb, r))
            prev = kb
        if not k.get("truncated"):
            self.assertEqual(k.get("count"), len(k.get("keys", [])), "%s: %s" % (what, r))

    def assert_diagnosis(self, runs, what, words, paths):
        """Unusable segment: every command exits 2 and says why on stderr,
        naming the file (one of @paths: a mismatch between the data and the
        readers object may be told from either side) and the field."""
        paths = [paths] if isinstance(paths, str) else paths
        for r in runs:
            self.assertEqual(r.rc, EX_CORRUPT, "%s: expected exit 2: %s" % (what, r))
            self.assertTrue(r.err.startswith("shoal-inspect: "), "%s: %s" % (what, r))
            self.assertTrue(any(p in r.err for p in paths),
                            "%s: the diagnosis names the file: %s" % (what, r))
            # the field, not just the file's name ("...readers")
            err = r.err
            for p in paths:
                err = err.replace(p, "")
            self.assertRegex(err.lower(), words,
                             "%s: the diagnosis names the field: %s" % (what, r))

    def assert_check_finds(self, what):
        r = run_inspect(["--json", "check"], self.NAME, self.work)
        self.assertIsNone(crash_problem(r), "%s: %s" % (what, r))
        self.assertEqual(r.rc, EX_CORRUPT, "%s: check must find it: %s" % (what, r))
        if r.out.strip():
            c = json.loads(r.out)
            self.assertFalse(c["consistent"], r)
            self.assertTrue(c["problems"] and all(isinstance(p, str) for p in c["problems"]), r)
        r = run_inspect(["check"], self.NAME, self.work)
        self.assertEqual(r.rc, EX_CORRUPT, "%s (text): %s" % (what, r))

    # -- the cases
    def test_0_pristine_copy(self):
        runs = self.run_all()
        for r in runs:
            self.assertEqual(r.rc, EX_OK, r)
            self.assertIsNone(crash_problem(r), r)
        chk = [r for r in runs if r.argv[-2:] == ["--json", "check"]][0]
        c = self.js(chk)
        self.assertEqual((c["consistent"], c["mode"]), (True, "quiescent"), chk)
        self.assertIn("stopped", runs[0].out)
        # the offsets this file pokes at are the fields inspect reports
        s = self.js([r for r in runs if r.argv[-2:] == ["--json", "summary"]][0])
        lay = self.js([r for r in runs if "layout" in r.argv and "--json" in r.argv][0])
        H, R = self.hdr, self.rdr
        f = lambda name: get_u(H, *HDR[name])
        self.assertEqual(H[0:8], b"SHOALSEG")
        self.assertEqual(R[0:8], b"SHOALRDR")
        self.assertEqual(f("format"), s["format"])
        self.assertEqual(f("fingerprint"), int(s["fingerprint"], 16))
        self.assertEqual(f("size"), s["size"])
        self.assertEqual(f("heap_start"), lay["heap_start"])
        self.assertEqual(f("npages"), s["size"] // PAGE)
        self.assertEqual(f("store_id"), int(s["store_id"], 16))
        self.assertEqual(get_u(R, *RHDR["store_id"]), f("store_id"))
        self.assertEqual(f("reader_slots"), s["readers"]["slots"])
        self.assertEqual(get_u(R, *RHDR["nslots"]), f("reader_slots"))
        self.assertEqual(f("doorbells"), 1024)
        self.assertEqual(H[72:72 + len(self.NAME) + 1], self.NAME.encode() + b"\0")
        self.assertEqual(f("created_ms"), s["created_ms"])
        self.assertEqual(f("commit_seq"), s["commit_seq"])
        self.assertEqual(f("index_off"), s["index"]["offset"])
        self.assertEqual(f("backed_end"), s["backed"])
        self.assertTrue(1 <= f("skip_height") <= 24)
        self.assertEqual(f("clean"), 1)
        self.assertEqual(f("last_commit_ms"), s["last_commit_ms"])
        self.assertEqual(f("recoveries"), s["broker"]["recoveries"])
        self.assertEqual(f("writer_gen"), s["broker"]["generation"])
        self.assertEqual(f("heap_top"), s["heap_top"])
        for name, key in (("c_keys", "keys"), ("c_key_bytes", "key_bytes"),
                          ("c_value_bytes", "value_bytes"), ("c_records", "records"),
                          ("c_entries", "entries"), ("c_commits", "commits"),
                          ("c_index_used", "index")):
            want = s[key]["used"] if key == "index" else s[key]
            self.assertEqual(f(name), want, name)
        for cl in s["allocator"]["classes"]:
            self.assertEqual(get_u(H, HDR["c_class_used"][0] + 8 * cl["class"], 8), cl["used"], cl)
            self.assertEqual(get_u(H, HDR["c_class_free"][0] + 8 * cl["class"], 8), cl["free"], cl)

    def header_cases(self):
        """(field, offset, bytes, expectation) for each header field;
        expectation: "diag" (unusable: exit 2 naming the field), "check"
        (the check finds it), "any" (never a crash, exit 0/1/2)."""
        H = self.hdr
        hs, sz, io, be, top = self.heap_start, self.size, self.index_off, self.backed_end, self.heap_top
        first = get_u(H, 320, 8)  # skip_next[0]: the first entry
        cases = []

        def add(field, vals, expect, idx=0):
            off, w = HDR[field]
            if field in ("skip_next", "class_free", "c_class_used", "c_class_free"):
                off, w = off + 8 * idx, 8
            orig = get_u(H, off, w)
            for v in vals:
                v = v(orig) if callable(v) else v
                data = v if isinstance(v, bytes) else (u64(v) if w == 8 else u32(v))
                if data == H[off:off + w]:
                    continue
                label = "%s%s=%s" % (field, "[%d]" % idx if idx else "", data.hex() if w > 8 else hex(int.from_bytes(data, "little")))
                cases.append((label, off, data, expect))

        flip = lambda o: o ^ 0x10
        add("magic", [flip, 0, U64_MAX, int.from_bytes(b"SHOALRDR", "little")], ("diag", r"magic"))
        add("format", [2, 0, 0xFFFFFFFF], ("diag", r"format|version"))
        add("fingerprint", [flip, 0, lambda o: ~o], ("diag", r"fingerprint|layout"))
        add("size", [sz * 2, sz - PAGE, 0, 1 << 63, U64_MAX, flip], ("diag", r"size"))
        add("heap_start", [0, PAGE, hs + 8, hs + SLAB, sz, U64_MAX], ("diag", r"heap_start|heap start|heap"))
        add("npages", [lambda o: o + 1, 0, 1 << 60, U64_MAX], ("diag", r"npages|pages"))
        add("store_id", [flip, 0], ("diag", STORE_ID_WORDS))
        add("reader_slots", [0, lambda o: o + 1, 65537, 0xFFFFFFFF], ("diag", r"reader_slots|reader slots|slots|readers"))
        add("doorbells", [0, 1023, 0xFFFFFFFF], ("diag", r"doorbell"))
        add("sipkey", [bytes(16), bytes(b ^ 0xA5 for b in H[56:72])], ("check",))
        add("name", [b"other".ljust(64, b"\0"), b"\xff" * 64, bytes(64)], ("any",))
        add("created_ms", [0, U64_MAX], ("any",))
        add("commit_seq", [1], ("check",))
        add("commit_seq", [0, U64_MAX, lambda o: o + 1000], ("any",))
        add("index_off", [0, 8, hs - 8, io + 4, be, sz, U64_MAX], ("diag", r"index"))
        add("index_off", [io + 64, first, hs if hs != io else hs + SLAB], ("check",))
        add("backed_end", [0, hs - PAGE, sz + PAGE, U64_MAX], ("diag", r"backed_end|backed"))
        add("skip_height", [25, 1000, 0xFFFFFFFF], ("diag", r"skip_height|skip|height"))
        add("skip_height", [0, 1, 24], ("any",))
        add("skip_next", [0, first + 8, io, 1 << 62, U64_MAX, hs - 8], ("check",), 0)
        add("skip_next", [io, U64_MAX, first], ("any",), 1)
        add("skip_next", [first, 12345], ("any",), 23)
        add("writer_pid", [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40, U64_MAX, os.getpid()], ("any",))
        add("writer_start", [0, U64_MAX], ("any",))
        add("writer_gen", [0, U64_MAX], ("any",))
        add("clean", [2, U64_MAX], ("any",))
        add("last_commit_ms", [0, U64_MAX], ("any",))
        add("recoveries", [U64_MAX], ("any",))
        add("heap_top", [0, be + PAGE, U64_MAX], ("check",))
        add("heap_top", [hs, hs + 8, top - 8], ("any",))
        add("run_free_head", [8, hs + 8, U64_MAX], ("any",))
        add("class_free", [U64_MAX, 12345, hs + 8], ("check",), 0)
        # three classes with blocks on their free list: first, middle, last
        freed = [c for c in range(SHM_NCLASSES) if get_u(H, 656 + 8 * c, 8)]
        some = sorted(set(freed[:1] + freed[len(freed) // 2:len(freed) // 2 + 1] + freed[-1:]))
        for c in some:
            add("class_free", [U64_MAX, lambda o: o + 8, 0], ("check",), c)
        for f in ("c_keys", "c_key_bytes", "c_value_bytes", "c_index_used"):
            add(f, [lambda o: o + 1, U64_MAX], ("check",))
        for f in ("c_records", "c_entries", "c_commits", "c_expired", "c_reclaimed",
                  "c_heap_used", "c_heap_free", "c_retired", "c_retired_bytes",
                  "c_extent_pages", "c_free_pages"):
            add(f, [U64_MAX, 0], ("any",))
        for c in (0, 5, 47):
            add("c_class_used", [U64_MAX], ("any",), c)
        for c in [0] + some:
            add("c_class_free", [lambda o: o + 1], ("check",), c)
        return cases

    def test_1_each_header_field(self):
        n = 0
        for label, off, data, expect in self.header_cases():
            with self.subTest(field=label):
                self.poke(self.wdata, off, data)
                try:
                    runs = self.run_all()
                    self.assert_sane(runs, label)
                    if expect[0] == "diag":
                        both = label.startswith(("store_id", "reader_slots"))
                        self.assert_diagnosis(runs, label, expect[1],
                                              [self.wdata, self.wreaders] if both else self.wdata)
                    elif expect[0] == "check":
                        self.assert_check_finds(label)
                finally:
                    self.poke(self.wdata, off, self.hdr[off:off + len(data)])
                n += 1
        sys.stderr.write("\n  [%d header corruptions] " % n)

    def test_2_clean_flag(self):
        """clean = 0 on a stopped store reads as a crash: state "crashed",
        check in "unclean" mode (the copy is otherwise consistent)."""
        self.poke(self.wdata, HDR["clean"][0], u64(0))
        s = self.js(run_inspect(["--json", "summary"], self.NAME, self.work))
        self.assertEqual(s["broker"]["state"], "crashed", s["broker"])
        c = self.js(run_inspect(["--json", "check"], self.NAME, self.work))
        self.assertEqual((c["mode"], c["consistent"]), ("unclean", True), c)

    def test_3_readers_fields(self):
        R = self.rdr
        cases = []
        for f, vals, expect in (
                ("magic", [R[0:8][::-1], bytes(8), b"SHOALSEG"], ("diag", r"magic")),
                ("format", [u32(2), u32(0)], ("diag", r"format|version")),
                ("nslots", [u32(self.nslots + 1), u32(0), u32(0xFFFFFFFF)], ("diag", r"slots")),
                ("store_id", [u64(get_u(R, 16, 8) ^ 1), bytes(8)], ("diag", STORE_ID_WORDS)),
                ("waiters", [u32(0xFFFFFFFF)], ("any",)),
                ("hwm", [u64(0), u64(self.nslots + 5), u64(U64_MAX), u64(1 << 31)], ("any",))):
            off, w = RHDR[f]
            for v in vals:
                cases.append(("readers.%s=%s" % (f, v.hex()), off, v, expect))
        for slot in (0, 1, 2):
            base = RHDR_BYTES + RSLOT_BYTES * slot
            for f, vals in (("snap", [1, U64_MAX]), ("pid", [0xFFFFFFFF, 0x7FFFFFFF, os.getpid(), 1]),
                            ("nest", [0xFFFFFFFF]), ("pid_start", [U64_MAX]),
                            ("begin_ms", [0, U64_MAX]), ("leased", [U64_MAX])):
                off, w = RSLOT[f]
                for v in vals:
                    cases.append(("readers.slot[%d].%s=%#x" % (slot, f, v), base + off,
                                  u64(v) if w == 8 else u32(v), ("any",)))
        # every slot busy with an absurd snapshot, up to the high-water mark
        allb = bytearray(R)
        for slot in range(min(self.nslots, 64)):
            b = RHDR_BYTES + RSLOT_BYTES * slot
            allb[b:b + 16] = u64(U64_MAX - slot) + u32(0x7FFFFFF0 + slot) + u32(slot)
        cases.append(("readers.all-slots-busy", 0, bytes(allb), ("any",)))
        cmds = self.CMDS
        for label, off, data, expect in cases:
            with self.subTest(field=label):
                self.poke(self.wreaders, off, data)
                try:
                    runs = self.run_all(cmds)
                    self.assert_sane(runs, label)
                    if expect[0] == "diag":
                        self.assert_diagnosis(runs, label, expect[1], [self.wreaders, self.wdata])
                finally:
                    self.poke(self.wreaders, off, R[off:off + len(data)])

    def live_objects(self):
        """Offsets of the entries the hash index names (each with its key
        and, usually, its first record right behind), read from the copy."""
        with open(self.orig.data_path, "rb") as f:
            f.seek(self.index_off)
            ih = f.read(64)
            cap = get_u(ih, 8, 8)
            slots = f.read(8 * cap)
        ents = []
        for i in range(cap):
            v = get_u(slots, 8 * i, 8)
            if v > 1:
                ents.append(v & 0xFFFFFFFFFFFF)
        return cap, ents

    def test_4_random_flips(self):
        seed = int(os.environ.get("SHOAL_TEST_SEED", "0")) or int(time.time() * 1000) % 1000000007
        sys.stderr.write("\n  [random flips: seed %d; replay with SHOAL_TEST_SEED=%d] " % (seed, seed))
        rnd = random.Random(seed)
        pt_used = PAGETAB_OFF + 4 * (self.heap_top // PAGE + 1)
        rd_used = RHDR_BYTES + RSLOT_BYTES * max(min(self.hwm, self.nslots), 4)
        cap, ents = self.live_objects()
        self.assertGreater(len(ents), 200)
        regions = [  # (file, start, end, weight): the used parts
            (self.wdata, 0, HDR_BYTES, 25),
            (self.wdata, 256, 1088, 10),         # the hot, writer and allocator lines
            (self.wdata, PAGETAB_OFF, pt_used, 10),
            (self.wdata, self.heap_start, self.heap_top, 20),
            (self.wdata, self.index_off, self.index_off + 64 + 8 * cap, 10),
            (self.wdata, None, None, 20),       # a live entry, its key, its record
            (self.wreaders, 0, rd_used, 5),
        ]
        total_w = sum(r[3] for r in regions)
        flips = iters = 0
        failures = []
        while flips < FLIPS:
            iters += 1
            done = []
            for _ in range(rnd.randint(1, 3)):
                x = rnd.uniform(0, total_w)
                for path, a, b, w in regions:
                    if x < w:
                        break
                    x -= w
                if a is None:
                    a = rnd.choice(ents)
                    b = a + 112
                off = rnd.randrange(a, b)
                with open(path, "rb") as f:
                    f.seek(off)
                    old = f.read(1)
                mask = rnd.choice([1 << rnd.randrange(8), rnd.randrange(1, 256), 0xFF])
                self.poke(path, off, bytes([old[0] ^ mask]))
                done.append((path, off, old, mask))
                flips += 1
            what = "seed %d iteration %d, flips %s" % (
                seed, iters, ", ".join("%s@%d^%#x" % (os.path.basename(p), o, m) for p, o, _, m in done))
            try:
                self.assert_sane(self.run_all(), what)
            except AssertionError as e:
                failures.append(str(e))
                if len(failures) >= 10:
                    break
            finally:
                for path, off, old, _ in reversed(done):
                    self.poke(path, off, old)
        sys.stderr.write("[%d flips in %d rounds of %d commands] " % (flips, iters, len(self.CMDS)))
        if failures:
            self.fail("%d of %d runs of random flips failed (seed %d); the first ones:\n\n%s"
                      % (len(failures), iters, seed, "\n\n".join(f[:2500] for f in failures[:4])))
        # inspect never wrote: the copy is byte for byte the original again
        with open(self.wdata, "rb") as f, open(self.orig.data_path, "rb") as g:
            self.assertEqual(f.read(self.heap_top), g.read(self.heap_top))

    def test_5_bad_files(self):
        """Truncated, empty, random, foreign or missing objects."""
        work2 = os.path.join(self.base, "bad")
        os.makedirs(work2, exist_ok=True)
        d = os.path.join(work2, "shoal.%s.data" % self.NAME)
        r = os.path.join(work2, "shoal.%s.readers" % self.NAME)
        rnd = random.Random(7)

        def put_files(data=None, readers=None, data_len=None):
            for p in (d, r):
                if os.path.exists(p):
                    os.unlink(p)
            if data is not None:
                with open(d, "wb") as f:
                    f.write(data)
                    if data_len:
                        f.truncate(data_len)
            if readers is not None:
                with open(r, "wb") as f:
                    f.write(readers)

        with open(self.orig.data_path, "rb") as f:
            head = f.read(self.heap_top)  # the used part
        hdr_rnd = bytearray(rnd.randbytes(PAGE) if hasattr(rnd, "randbytes") else os.urandom(PAGE))
        hdr_rnd[0:8] = self.hdr[0:8]  # right magic, the rest random
        hdr_rnd2 = bytearray(self.hdr[:HDR_BYTES] + os.urandom(PAGE - HDR_BYTES))
        cases = [
            ("empty data", dict(data=b"", readers=self.rdr), True),
            ("100-byte data", dict(data=head[:100], readers=self.rdr), True),
            ("header-only data", dict(data=head[:PAGE], readers=self.rdr), True),
            ("data cut at 8 KiB", dict(data=head[:8192], readers=self.rdr), True),
            ("data cut in the page table", dict(data=head[:PAGETAB_OFF + 1000], readers=self.rdr), True),
            ("data cut at heap_start", dict(data=head[:self.heap_start], readers=self.rdr), True),
            ("data cut at half the used heap", dict(data=head[:(self.heap_start + self.heap_top) // 2 & ~7], readers=self.rdr), True),
            ("data cut at heap_top", dict(data=head, readers=self.rdr), True),
            ("data cut at half its size", dict(data=head, data_len=self.size // 2, readers=self.rdr), True),
            ("random data", dict(data=os.urandom(1 << 20), readers=self.rdr), True),
            ("random data with the magic", dict(data=bytes(hdr_rnd) + os.urandom(SLAB), readers=self.rdr), True),
            ("random data, full size", dict(data=os.urandom(1 << 16), data_len=self.size, readers=self.rdr), True),
            ("a good header, random after it", dict(data=bytes(hdr_rnd2) + os.urandom(self.heap_top - PAGE), data_len=self.size, readers=self.rdr), False),
            ("zeros, full size", dict(data=b"", data_len=self.size, readers=self.rdr), True),
            ("empty readers", dict(data=head, data_len=self.size, readers=b""), True),
            ("readers cut short", dict(data=head, data_len=self.size, readers=self.rdr[:100]), True),
            ("random readers", dict(data=head, data_len=self.size, readers=os.urandom(len(self.rdr))), True),
        ]
        for label, kw, must2 in cases:
            with self.subTest(case=label):
                put_files(**kw)
                runs = self.run_all(shm=work2)
                self.assert_sane(runs, label)
                if must2:
                    self.assert_diagnosis(runs, label, r".", d if "readers" not in label else [r, d])
        # a readers object of another store (same name, other store_id)
        with self.subTest(case="readers of another store"):
            with open(self.other.readers_path, "rb") as f:
                put_files(head, f.read(), self.size)
            runs = self.run_all(shm=work2)
            self.assert_sane(runs, "foreign readers")
            self.assert_diagnosis(runs, "foreign readers", STORE_ID_WORDS, [r, d])
        # the data object of another store beside our readers object
        with self.subTest(case="data of another store"):
            sparse_copy(self.other.data_path, d)
            with open(r, "wb") as f:
                f.write(self.rdr)
            runs = self.run_all(shm=work2)
            self.assert_sane(runs, "foreign data")
            self.assert_diagnosis(runs, "foreign data", STORE_ID_WORDS + r"|name", [d, r])
        # the readers object missing: the spec is silent; no crash
        with self.subTest(case="no readers object"):
            put_files(head, None, self.size)
            runs = self.run_all(shm=work2)
            self.assert_sane(runs, "no readers", (EX_OK, EX_NOTFOUND, EX_CORRUPT, EX_NOSTORE))
        # a directory where the data object should be
        with self.subTest(case="data is a directory"):
            put_files(None, self.rdr)
            os.mkdir(d)
            runs = self.run_all(shm=work2)
            self.assert_sane(runs, "dir", (EX_CORRUPT, EX_NOSTORE))
            os.rmdir(d)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--helper":
        mode, args = sys.argv[2], sys.argv[3:]
        if mode == "load":
            helper_load(args[0], args[1], float(args[2]), int(args[3]))
        elif mode == "pin":
            helper_pin(args[0], args[1])
        else:
            sys.exit("unknown helper " + mode)
        return
    unittest.main()


if __name__ == "__main__":
    main()
