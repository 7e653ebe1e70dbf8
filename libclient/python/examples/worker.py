#!/usr/bin/env python3
"""A shoal worker in Python: reads a few keys, writes its own, waits.

    python3 worker.py [--name STORE] [--socket PATH] [--prefix P]

Uses the broker of $SHOAL_SOCKET / $SHOAL_RUNDIR like every client; prints
what it read and wrote (tools/quickstart runs it).
"""

from __future__ import annotations

import argparse
import os
import sys

import shoal


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", default="default")
    p.add_argument("--socket")
    p.add_argument("--prefix", default="demo/")
    a = p.parse_args()
    me = "py-%d" % os.getpid()
    try:
        c = shoal.connect(a.name, socket=a.socket)
    except shoal.Error as e:
        print("python worker: %s" % e, file=sys.stderr)
        return 1
    with c:
        pre = a.prefix.encode()
        with c.read() as r:  # one snapshot, zero-copy
            items = [(k, bytes(v)) for k, v in r.scan(prefix=pre, limit=10)]
        for k, v in items:
            print("python worker read  %s = %s" % (k.decode(errors="replace"),
                                                   v.decode(errors="replace")))
        key = pre + b"python"
        version = c.put(key, b"hello from " + me.encode())
        print("python worker wrote %s (version %d)" % (key.decode(), version))
        with c.batch() as b:
            b.put(pre + b"python/count", b"%d" % len(items))
            b.put(pre + b"python/pid", b"%d" % os.getpid())
        print("python worker wrote %spython/count, %spython/pid in one batch "
              "(version %d)" % (a.prefix, a.prefix, b.version))
        print("python worker got   %s = %s" % (key.decode(),
                                               c.get(key).decode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
