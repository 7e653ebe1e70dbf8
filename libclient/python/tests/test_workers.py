"""multiprocessing workers against a real shoald: 8 readers (fork and spawn)
while another process writes batches, wait across processes, and broker
restarts (SIGTERM, SIGKILL) while workers read."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
import unittest
from typing import Any, List, Tuple

import shoal
from shoaltest import NAME, Broker, BrokerTestCase, require_shoald

N_READERS = 8
N_KEYS = 16
KEYS = [b"snap/%02d" % i for i in range(N_KEYS)]


def _gen(vals: List[Any]) -> Tuple[bool, int]:
    """(all the same generation, that generation)."""
    if len(vals) != N_KEYS or any(v is None for v in vals):
        return False, -1
    gens = set()
    for i, v in enumerate(vals):
        g, _, pad = bytes(v).partition(b":")
        if len(pad) != (int(g) * 7 + i) % 50 if int(g) else len(pad) != 0:
            return False, -1  # a value that was never written
        gens.add(int(g))
    return len(gens) == 1, gens.pop()


def writer(sock: str, stop: Any, count: Any) -> None:
    """Batches that set every key to the next generation, as one commit;
    values differ in length, so a torn read would show."""
    c = shoal.connect(NAME, socket=sock)
    gen = 0
    while not stop.is_set():
        gen += 1
        with c.batch() as b:
            for i, k in enumerate(KEYS):
                b.put(k, b"%d:" % gen + b"x" * ((gen * 7 + i) % 50))
        count.value = gen


def reader(c: shoal.Client, stop: Any, ready: Any, out: Any) -> None:
    """Check every snapshot: all keys of one batch, one generation."""
    try:
        reads = bad = 0
        seen = set()
        pid_ok = c.get(KEYS[0]) is not None  # reopens in a forked child
        ready.put(os.getpid())
        while not stop.is_set():
            with c.read() as r:
                ok, g = _gen([r.get(k) for k in KEYS])
                ok2, g2 = _gen(r.get_many(KEYS))
                ok3, g3 = _gen([v for _, v in r.scan(prefix=b"snap/")])
                if not (ok and ok2 and ok3 and g == g2 == g3):
                    bad += 1
            ok, g = _gen(c.get_many(KEYS))
            if not ok:
                bad += 1
            seen.add(g)
            reads += 1
        out.put((os.getpid(), reads, bad, len(seen), pid_ok, None))
    except BaseException:
        out.put((os.getpid(), 0, 0, 0, False, traceback.format_exc()))


def waiter(sock: str, key: bytes, after: int, ready: Any, out: Any) -> None:
    c = shoal.connect(NAME, socket=sock)
    ready.put(1)
    out.put(c.wait(key, after=after, timeout=10))


def putter(sock: str, key: bytes, delay: float, out: Any) -> None:
    c = shoal.connect(NAME, socket=sock)
    time.sleep(delay)
    out.put(c.put(key, b"from %d" % os.getpid()))


def restart_reader(c: shoal.Client, stop: Any, down: Any, down_reads: Any,
                   ready: Any, out: Any) -> None:
    """Reads of every kind, counting failures and reads while down."""
    reads = fails = while_down = 0
    err = None
    c.get(b"rs/k")  # own handles, opened while the broker is up
    with c.read() as r:  # and a pooled one for read blocks
        r.get(b"rs/k")
    ready.put(os.getpid())
    while not stop.is_set():
        try:
            d = down.value
            v = c.get(b"rs/k")
            with c.read() as r:
                v2 = r.get(b"rs/k")
                if v2 is None:
                    raise AssertionError("rs/k vanished")
            if v is None or c.get_many([b"rs/k"])[0] is None:
                raise AssertionError("rs/k vanished")
            list(c.scan(prefix=b"rs/", limit=5))
            reads += 1
            if d and down.value:
                while_down += 1
                with down_reads.get_lock():
                    down_reads.value += 1
        except Exception:
            fails += 1
            err = traceback.format_exc()
    out.put((reads, fails, while_down, err))


def restart_writer(sock: str, stop: Any, ok: Any) -> None:
    c = shoal.connect(NAME, socket=sock, connect_timeout=0.5)
    i = 0
    while not stop.is_set():
        i += 1
        try:
            c.put(b"rs/w", b"%d" % i)
            ok.value += 1
        except (shoal.BrokerUnavailable, shoal.Timeout):
            time.sleep(0.01)


class TestConcurrentReaders(BrokerTestCase):
    def run_readers(self, method: str) -> None:
        ctx = mp.get_context(method)
        c = self.connect()
        with c.batch() as b:
            for k in KEYS:
                b.put(k, b"0:")  # generation 0: no padding
        stop, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
        count = ctx.Value("q", 0)
        # fork: the children inherit c; spawn: c is pickled (reconnects)
        readers = [ctx.Process(target=reader, args=(c, stop, ready, out))
                   for _ in range(N_READERS)]
        w = ctx.Process(target=writer, args=(self.broker.sock, stop, count))
        procs = readers + [w]
        try:
            for p in readers:
                p.start()
            for _ in readers:
                ready.get(timeout=60)
            w.start()
            deadline = time.monotonic() + 10
            # enough batches and enough time that readers overlap them
            time.sleep(0.8)
            while count.value < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            results = [out.get(timeout=30) for _ in readers]
        finally:
            stop.set()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
        self.assertGreaterEqual(count.value, 20)
        for pid, reads, bad, gens, pid_ok, err in results:
            self.assertIsNone(err)
            self.assertTrue(pid_ok)
            self.assertEqual(bad, 0, "reader %d saw a torn batch" % pid)
            self.assertGreater(reads, 0)
        # the readers did overlap the writer
        self.assertGreater(max(r[3] for r in results), 1)
        self.assertEqual(w.exitcode, 0)
        # the parent's client is untouched by its children
        self.assertEqual(len(c.get_many(KEYS)), N_KEYS)

    def test_fork(self) -> None:
        self.run_readers("fork")

    def test_spawn(self) -> None:
        self.run_readers("spawn")


class TestWaitAcrossProcesses(BrokerTestCase):
    def test_wait_woken_by_another_process(self) -> None:
        ctx = mp.get_context("fork")
        c = self.connect()
        v0 = c.put(b"wx/k", b"0")
        out = ctx.Queue()
        p = ctx.Process(target=putter, args=(self.broker.sock, b"wx/k", 0.2,
                                             out))
        p.start()
        t0 = time.monotonic()
        got = c.wait(b"wx/k", after=v0, timeout=10)
        took = time.monotonic() - t0
        put_version = out.get(timeout=10)
        p.join(10)
        self.assertEqual(got, put_version)
        self.assertLess(took, 5)

    def test_process_waits_for_us(self) -> None:
        ctx = mp.get_context("spawn")
        c = self.connect()
        v0 = c.put(b"wy/k", b"0")
        ready, out = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=waiter, args=(self.broker.sock, b"wy/k", v0,
                                             ready, out))
        p.start()
        ready.get(timeout=60)
        time.sleep(0.1)
        v1 = c.put(b"wy/k", b"1")
        self.assertEqual(out.get(timeout=20), v1)
        p.join(10)


class TestBrokerRestart(unittest.TestCase):
    def test_restart_while_reading(self) -> None:
        require_shoald(self)
        ctx = mp.get_context("fork")
        b = Broker().start()
        self.addCleanup(b.close)
        c = shoal.connect(NAME, socket=b.sock)
        self.addCleanup(c.close)
        c.put(b"rs/k", b"stays")
        stop, ready, out = ctx.Event(), ctx.Queue(), ctx.Queue()
        down = ctx.Value("i", 0)
        down_reads = ctx.Value("q", 0)
        ok = ctx.Value("q", 0)
        readers = [ctx.Process(target=restart_reader,
                               args=(c, stop, down, down_reads, ready, out))
                   for _ in range(4)]
        w = ctx.Process(target=restart_writer, args=(b.sock, stop, ok))
        try:
            for p in readers:
                p.start()
            for _ in readers:
                ready.get(timeout=30)
            w.start()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                self.wait_for_writes(ok)
                down.value = 1
                b.stop(sig)
                # stay down until the readers have read a while
                start = down_reads.value
                deadline = time.monotonic() + 5
                time.sleep(0.2)
                while (down_reads.value < start + 40 and
                       time.monotonic() < deadline):
                    time.sleep(0.02)
                b.start()
                down.value = 0
            self.wait_for_writes(ok)  # writes resume after the restart
            time.sleep(0.2)
            stop.set()
            results = [out.get(timeout=30) for _ in readers]
        finally:
            stop.set()
            for p in readers + [w]:
                p.join(10)
                if p.is_alive():
                    p.kill()
        for reads, fails, while_down, err in results:
            self.assertEqual(fails, 0, err)
            self.assertGreater(reads, 0)
        self.assertGreater(sum(r[2] for r in results), 0,
                           "no reads while the broker was down")
        self.assertEqual(c.get(b"rs/k"), b"stays")
        c.put(b"rs/k", b"after")  # the parent's writes resume too
        self.assertEqual(c.get(b"rs/k"), b"after")

    def wait_for_writes(self, ok: Any, n: int = 5) -> None:
        start = ok.value
        deadline = time.monotonic() + 10
        while ok.value < start + n:
            if time.monotonic() > deadline:
                self.fail("writes did not resume within 10 s")
            time.sleep(0.01)


if __name__ == "__main__":
    unittest.main()
