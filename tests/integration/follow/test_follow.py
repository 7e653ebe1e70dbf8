"""Following a log while it is written and rotated, from Python and Go.

A writer process appends numbered lines to a log at a steady rate; a Go
client (libclient/go/cmd/followcheck, over shoal.Client.Follow) and a
Python client (shoal.Client.follow, in a process of its own) follow it
from before the writer starts; midway the writer rotates the log as
logrotate's create mode does (rename log -> log.1, create a new log, go on
writing there). Each follower must receive every line exactly once, in
order (the last lines written before the follow started, then all the
writer's), and report the rotation between the old file's last line and
the new file's first.

The writer switches atomically: the rename, then the new file, then the
next line, all in one process, so every line before the switch is in
log.1 and every line after it in the new log; nothing is written to the
old file after the rename. The followers drain the old file before they
report the rotation, so the old file's lines all come before the event.
With reopen, libshoal reports a rotation once, when the new file is
followed; the checker still accepts a second rotation event at the same
place from Python (an older libshoal reported one at once and one on the
reopen), never one anywhere else.

Environment (ctest sets them; see libclient/go/CMakeLists.txt):
  SHOAL_TEST_SHOALD   the shoald binary
  SHOAL_LIB           libshoal.so for the Python package
  PYTHONPATH          libclient/python (the shoal package)
  SHOAL_GO_FOLLOWER   the built followcheck binary
  SHOAL_FOLLOW_LINES  lines the steady writer writes (default 1200)
  SHOAL_FOLLOW_RATE   its lines per second (default 800)

Run by hand: python3 tests/integration/follow/test_follow.py -v
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "libclient", "python",
                                "tests"))
import shoaltest  # noqa: E402  (the Broker fixture of the Python suite)

GO_FOLLOWER = os.environ.get("SHOAL_GO_FOLLOWER", "")
PRE_LINES = 20  # in the log before anyone follows
TAIL_N = 3      # the followers start with the last TAIL_N of them


def pre_line(i: int) -> str:
    return "pre %04d\n" % i


def line(i: int) -> str:
    # numbered, and long enough that reads and inotify events split lines
    return "line %06d %s\n" % (i, "x" * (i % 97))


# ------------------------------------------------------------ roles ---
# The writer and the Python follower run as processes of their own: this
# file with a role as its first argument.

def writer_main(log: str, count: int, rate: float, rotate_at: int) -> int:
    """Append line(0..count-1), one write(2) each (a whole line: a reader
    never sees half of it from this writer), at @rate lines a second
    (0: as fast as possible); before line @rotate_at, rotate."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    t0 = time.monotonic()
    for i in range(count):
        if i == rotate_at:
            # the atomic switch: rename, new file, then the next line
            os.rename(log, log + ".1")
            nfd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                          | os.O_EXCL, 0o644)
            os.close(fd)
            fd = nfd
            print("rotated before %d" % i, flush=True)
        data = line(i).encode()
        if os.write(fd, data) != len(data):
            print("short write at line %d" % i, file=sys.stderr)
            return 1
        if rate > 0:
            # a steady rate: sleep until this line's slot, not a fixed gap
            ahead = t0 + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    os.close(fd)
    print("wrote %d" % count, flush=True)
    return 0


def py_follower_main(sock: str, log: str, n: int) -> int:
    """shoal.Client.follow, printing followcheck's JSON lines."""
    import shoal

    stop = {"sig": 0}

    def on_signal(sig: int, _frame: Any) -> None:
        stop["sig"] = sig

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def emit(rec: Dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()

    c = shoal.connect(shoaltest.NAME, socket=sock)
    lines = 0
    try:
        # a timeout makes the iteration come back to look at the flag
        with c.follow(log, n=n, reopen=True, timeout=0.1) as f:
            emit({"event": "ready"})
            while not stop["sig"]:
                for item in f:
                    if isinstance(item, shoal.FollowEvent):
                        emit({"event": item.kind, "offset": item.offset,
                              "path": item.path})
                    else:
                        assert isinstance(item, str), repr(item)
                        emit({"event": "line", "line": item})
                        lines += 1
                    if stop["sig"]:
                        break
    except Exception as e:  # the follow failed: report it, exit 1
        emit({"event": "error", "error": "%s: %s" % (type(e).__name__, e)})
        return 1
    finally:
        c.close()
    emit({"event": "stopped", "lines": lines})
    return 0


# ------------------------------------------------------------ driver ---

class Follower:
    """A follower process whose JSON-lines output goes to a file."""

    def __init__(self, label: str, argv: List[str], out: str,
                 env: Dict[str, str]) -> None:
        self.label = label
        self.out = out
        self.errpath = out + ".err"
        with open(out, "wb") as o, open(self.errpath, "wb") as e:
            self.proc = subprocess.Popen(argv, stdout=o, stderr=e, env=env,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=shoaltest._pdeathsig)
        shoaltest._procs.append(self.proc)

    def records(self) -> List[Dict[str, Any]]:
        recs = []
        with open(self.out, "rb") as f:
            for raw in f.read().splitlines():
                recs.append(json.loads(raw))
        return recs

    def stderr(self) -> str:
        with open(self.errpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_for(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records()
            if pred(recs):
                return
            errs = [r for r in recs if r["event"] == "error"]
            if errs or self.proc.poll() is not None:
                raise AssertionError(
                    "%s follower ended before %s (exit %s): %s\nstderr: %s"
                    % (self.label, what, self.proc.poll(), errs,
                       self.stderr()))
            if time.monotonic() > deadline:
                got = [r for r in recs if r["event"] == "line"]
                raise AssertionError(
                    "%s follower: no %s within %.0f s; %d lines so far, "
                    "last %r\nstderr: %s"
                    % (self.label, what, timeout, len(got),
                       got[-1] if got else None, self.stderr()))
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM, then the exit status (it must come within 5 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("%s follower ignored SIGTERM for 5 s"
                                 % self.label)


class FollowRotationTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        shoaltest.require_shoald(cls)  # type: ignore[arg-type]
        if not GO_FOLLOWER or not os.access(GO_FOLLOWER, os.X_OK):
            raise unittest.SkipTest(
                "SHOAL_GO_FOLLOWER must name the built followcheck binary "
                "(got %r)" % GO_FOLLOWER)
        cls.broker = shoaltest.Broker().start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.broker.close()

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="follow-", dir=self.broker.dir)
        self.log = os.path.join(self.dir, "app.log")
        with open(self.log, "w") as f:
            for i in range(PRE_LINES):
                f.write(pre_line(i))
        self.env = dict(os.environ)
        self.env.pop("SHOAL_SOCKET", None)
        self.followers: List[Follower] = []

    def tearDown(self) -> None:
        for f in self.followers:
            if f.proc.poll() is None:
                f.proc.kill()
                f.proc.wait()

    def start_followers(self) -> None:
        go = Follower("Go", [GO_FOLLOWER, "--socket", self.broker.sock,
                             "-n", str(TAIL_N), self.log],
                      os.path.join(self.dir, "go.out"), self.env)
        py = Follower("Python", [sys.executable, os.path.abspath(__file__),
                                 "--py-follower", self.broker.sock, self.log,
                                 str(TAIL_N)],
                      os.path.join(self.dir, "py.out"), self.env)
        self.followers = [go, py]
        for f in self.followers:
            f.wait_for(lambda recs: any(r["event"] == "ready" for r in recs),
                       10, "ready")

    def run_writer(self, count: int, rate: float, rotate_at: int) -> str:
        w = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--writer", self.log,
             str(count), str(rate), str(rotate_at)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
            timeout=120)
        self.assertEqual(w.returncode, 0, w.stderr.decode())
        return w.stdout.decode()

    def check(self, f: Follower, count: int, rotate_at: int) -> None:
        """Every line once, in order; the rotation between the two files'
        lines."""
        recs = f.records()
        self.assertEqual(recs[0]["event"], "ready", recs[:3])
        self.assertEqual(recs[-1], {"event": "stopped",
                                    "lines": TAIL_N + count}, recs[-3:])
        body = recs[1:-1]
        errors = [r for r in body if r["event"] == "error"]
        self.assertEqual(errors, [], "%s follower" % f.label)
        got = [r["line"] for r in body if r["event"] == "line"]
        want = ([pre_line(i) for i in range(PRE_LINES - TAIL_N, PRE_LINES)]
                + [line(i) for i in range(count)])
        if got != want:
            # say where it went wrong: the first difference
            k = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
            self.fail("%s follower: %d lines, want %d; first difference at "
                      "%d: got %r, want %r"
                      % (f.label, len(got), len(want), k,
                         got[k] if k < len(got) else None,
                         want[k] if k < len(want) else None))
        # the rotation: reported between line(rotate_at - 1), the old
        # file's last, and line(rotate_at), the new file's first
        kinds = [r["event"] for r in body]
        self.assertNotIn("truncated", kinds, "%s follower" % f.label)
        rot = [i for i, k in enumerate(kinds) if k == "rotated"]
        self.assertTrue(rot, "%s follower did not report the rotation"
                        % f.label)
        last_old = next(i for i, r in enumerate(body) if r["event"] == "line"
                        and r["line"] == line(rotate_at - 1))
        first_new = next(i for i, r in enumerate(body) if r["event"] == "line"
                         and r["line"] == line(rotate_at))
        for i in rot:
            self.assertTrue(last_old < i < first_new,
                            "%s follower: rotation at event %d, not between "
                            "the old file's last line (%d) and the new "
                            "file's first (%d)"
                            % (f.label, i, last_old, first_new))
        # Go folds a rotation into one event (Python may give two: see the
        # top); it names the path
        if f.label == "Go":
            self.assertEqual(len(rot), 1, [body[i] for i in rot])
        for i in rot:
            self.assertTrue(body[i]["path"].endswith("app.log"), body[i])
        # offsets (Go): each file's lines are contiguous from where they
        # start; the new file's first line is at 0
        if f.label == "Go":
            lines = [r for r in body if r["event"] == "line"]
            new0 = [r for r in lines if r["line"] == line(rotate_at)][0]
            self.assertEqual(new0["offset"], 0)
            for a, b in zip(lines, lines[1:]):
                if b is new0:
                    continue
                self.assertEqual(b["offset"], a["offset"] + len(a["line"]),
                                 "Go offsets: %r then %r" % (a, b))

    def follow_through_rotation(self, count: int, rate: float) -> None:
        self.start_followers()
        rotate_at = count // 2
        out = self.run_writer(count, rate, rotate_at)
        self.assertIn("rotated before %d" % rotate_at, out)
        self.assertIn("wrote %d" % count, out)
        # the files hold what the checker expects of them
        with open(self.log + ".1") as f:
            old = f.read()
        with open(self.log) as f:
            new = f.read()
        self.assertTrue(old.endswith(line(rotate_at - 1)))
        self.assertTrue(new.startswith(line(rotate_at)))
        last = line(count - 1)
        for f in self.followers:
            f.wait_for(lambda recs: any(r.get("line") == last for r in recs),
                       30, "last line")
        # a moment for anything extra (a duplicate) to arrive
        time.sleep(0.3)
        for f in self.followers:
            t0 = time.monotonic()
            self.assertEqual(f.stop(), 0, "%s follower's exit status\n%s"
                             % (f.label, f.stderr()))
            self.assertLess(time.monotonic() - t0, 2.0,
                            "%s follower took long to stop" % f.label)
        for f in self.followers:
            self.check(f, count, rotate_at)

    def test_steady_writer_with_rotation(self) -> None:
        count = int(os.environ.get("SHOAL_FOLLOW_LINES", "1200"))
        rate = float(os.environ.get("SHOAL_FOLLOW_RATE", "800"))
        self.follow_through_rotation(count, rate)

    def test_burst_writer_with_rotation(self) -> None:
        # as fast as the writer can: the followers fall behind and catch
        # up, across the rotation
        self.follow_through_rotation(20000, 0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        sys.exit(writer_main(sys.argv[2], int(sys.argv[3]),
                             float(sys.argv[4]), int(sys.argv[5])))
    if len(sys.argv) > 1 and sys.argv[1] == "--py-follower":
        sys.exit(py_follower_main(sys.argv[2], sys.argv[3],
                                  int(sys.argv[4])))
    unittest.main()
