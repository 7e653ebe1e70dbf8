"""The shared conformance cases (tests/conformance/cases.jsonl), run exactly
as tests/conformance/README.md says, against a fresh broker and store.

The file comes from $SHOAL_CONFORMANCE, else from the repository this
package sits in (../../tests/conformance/cases.jsonl). Every step's
mismatch is collected and reported with its case name and line number.
"""

from __future__ import annotations

import json
import os
import time
import unittest
from typing import Any, Dict, List, Optional

import shoal
from shoaltest import NAME, Broker, require_shoald

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "..", "tests", "conformance",
                       "cases.jsonl")


def cases_path() -> str:
    return os.path.abspath(os.environ.get("SHOAL_CONFORMANCE") or DEFAULT)


def load(path: str) -> List[Dict[str, Any]]:
    steps = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            step = json.loads(line)
            step["_line"] = n
            steps.append(step)
    return steps


def _bytes(step: Dict[str, Any], field: str, repeat: str) -> bytes:
    return step[field].encode("utf-8") * int(step.get(repeat, 1))


def _name(e: BaseException) -> str:
    return e.name if isinstance(e, shoal.Error) else type(e).__name__


class Runner:
    """Runs steps in order; records mismatches instead of stopping."""

    def __init__(self, c: shoal.Client, path: str) -> None:
        self.c = c
        self.file = os.path.basename(path)
        self.labels: Dict[str, int] = {}
        self.failures: List[str] = []

    def fail(self, step: Dict[str, Any], msg: str) -> None:
        self.failures.append("%s:%d: case %r, op %s: %s"
                             % (self.file, step["_line"], step.get("case"),
                                step.get("op"), msg))

    def version(self, step: Dict[str, Any], v: Any, delta: Any) -> int:
        """expect_version / after: 0, or a label (+ expect_delta)."""
        if isinstance(v, str):
            if v not in self.labels:
                self.fail(step, "unknown label %r" % v)
                return 0
            v = self.labels[v]
        return int(v) + int(delta or 0)

    def run(self, step: Dict[str, Any]) -> None:
        op = step["op"]
        if op == "sleep":
            time.sleep(step["ms"] / 1000.0)
            return
        want = step.get("result", "OK")
        fn = getattr(self, "op_" + op, None)
        if fn is None:
            self.fail(step, "unknown op %r" % op)
            return
        got: Any = None
        try:
            got = fn(step)
            result = "OK"
        except shoal.Error as e:
            result = _name(e)
            got = e
        if result != want:
            detail = " (%s)" % got if isinstance(got, Exception) else ""
            self.fail(step, "result %s, want %s%s" % (result, want, detail))
            return
        if result == "OK":
            self.check(step, got)
        elif op == "batch" and "failed_index" in step:
            if getattr(got, "index", None) != step["failed_index"]:
                self.fail(step, "failed_index %r, want %r"
                          % (getattr(got, "index", None),
                             step["failed_index"]))

    def check(self, step: Dict[str, Any], got: Any) -> None:
        op = step["op"]
        version = got if isinstance(got, int) else None
        if op == "get":
            value, version = got
            if "value" in step:
                want = _bytes(step, "value", "value_repeat")
                if value != want:
                    self.fail(step, "value %r (%d bytes), want %r (%d bytes)"
                              % (value[:40], len(value), want[:40],
                                 len(want)))
            if "version_of" in step and \
                    version != self.labels.get(step["version_of"]):
                self.fail(step, "version %d, want %s = %r"
                          % (version, step["version_of"],
                             self.labels.get(step["version_of"])))
        if op == "scan":
            keys = [k.decode("utf-8", "replace") for k in got]
            if keys != step["keys"]:
                self.fail(step, "keys %r, want %r" % (keys, step["keys"]))
        if "version_gt" in step:
            floor = self.labels.get(step["version_gt"])
            if version is None or floor is None or not version > floor:
                self.fail(step, "version %r not > %s = %r"
                          % (version, step["version_gt"], floor))
        if "save" in step and version is not None:
            self.labels[step["save"]] = version

    # ---------------------------------------------------------- ops --

    def op_put(self, step: Dict[str, Any]) -> int:
        k = _bytes(step, "key", "key_repeat")
        v = _bytes(step, "value", "value_repeat")
        if step.get("ttl_ms"):
            return self.c.put(k, v, ttl_ms=step["ttl_ms"])
        return self.c.put(k, v)

    def op_get(self, step: Dict[str, Any]) -> tuple:
        """Through the zero-copy path, in a read block (README)."""
        k = _bytes(step, "key", "key_repeat")
        with self.c.read() as r:
            got = r.get_with_version(k)
            if got is None:
                raise shoal.errors.make_error(shoal.NotFound.code, "not found")
            view, version = got
            value = bytes(view)
        # the copying path must agree
        copy = self.c.get_with_version(k)
        if copy != (value, version):
            self.fail(step, "Client.get %r disagrees with Reader.get %r"
                      % (copy and (copy[0][:40], copy[1]),
                         (value[:40], version)))
        return value, version

    def op_del(self, step: Dict[str, Any]) -> None:
        k = _bytes(step, "key", "key_repeat")
        if not self.c.delete(k):
            raise shoal.errors.make_error(shoal.NotFound.code, "not found")

    def op_cas(self, step: Dict[str, Any]) -> int:
        k = _bytes(step, "key", "key_repeat")
        v = _bytes(step, "value", "value_repeat")
        return self.c.cas(k, self.version(step, step["expect_version"],
                                          step.get("expect_delta")), v)

    def op_scan(self, step: Dict[str, Any]) -> List[bytes]:
        kw: Dict[str, Optional[bytes]] = {}
        for f in ("prefix", "start", "end"):
            if f in step:
                kw[f] = step[f].encode("utf-8")
        limit = step.get("limit") or None
        with self.c.read() as r:
            keys = [k for k, _ in r.scan(limit=limit, **kw)]
        copied = [k for k, _ in self.c.scan(limit=limit, **kw)]
        if copied != keys:
            self.fail(step, "Client.scan %r disagrees with Reader.scan %r"
                      % (copied, keys))
        return keys

    def op_batch(self, step: Dict[str, Any]) -> int:
        b = self.c.batch()
        try:
            for o in step["ops"]:
                k = o["key"].encode("utf-8")
                if o["op"] == "put":
                    b.put(k, o.get("value", "").encode("utf-8"))
                elif o["op"] == "del":
                    b.delete(k)
                elif o["op"] == "del_any":
                    b.delete_any(k)
                elif o["op"] == "cas":
                    b.cas(k, self.version(step, o["expect_version"],
                                          o.get("expect_delta")),
                          o.get("value", "").encode("utf-8"))
                else:
                    self.fail(step, "unknown batch op %r" % o["op"])
            return b.commit()
        finally:
            b.discard()

    def op_wait(self, step: Dict[str, Any]) -> int:
        k = _bytes(step, "key", "key_repeat")
        after = self.version(step, step.get("after", 0), None)
        v = self.c.wait(k, after=after, timeout=step["timeout_ms"] / 1000.0)
        if v is None:
            raise shoal.errors.make_error(shoal.Timeout.code, "timed out")
        return v


class TestConformance(unittest.TestCase):
    def test_cases(self) -> None:
        path = cases_path()
        if not os.path.exists(path):
            self.fail("conformance cases not found at %s (set "
                      "SHOAL_CONFORMANCE)" % path)
        require_shoald(self)
        steps = load(path)
        self.assertGreater(len(steps), 0, path)
        with Broker() as b:
            with shoal.connect(NAME, socket=b.sock) as c:
                runner = Runner(c, path)
                for step in steps:
                    runner.run(step)
        if runner.failures:
            self.fail("%d of %d steps of %s do not conform:\n%s"
                      % (len(runner.failures), len(steps), path,
                         "\n".join(runner.failures)))


if __name__ == "__main__":
    unittest.main()
