#!/usr/bin/env python3
"""A Python worker for tools/quickstart: what a service of a cluster
orchestrator would do with shoal. It reads the shared configuration
(zero-copy, from shared memory), publishes its status with an atomic batch,
claims a job with compare-and-swap, and prints each step.

Runs against the broker named by SHOAL_RUNDIR / SHOAL_SOCKET; finds libshoal
through SHOAL_LIB (tools/quickstart sets both).
"""
import os
import sys

import shoal


def main() -> int:
    me = f"py-worker-{os.getpid()}"
    with shoal.connect("default") as c:
        region = c.get(b"config/region")
        print(f"[python] read config/region = {region!r}")
        with c.read() as r:  # one snapshot, zero-copy views
            cfg = {bytes(k).decode(): bytes(v).decode() for k, v in r.scan(prefix=b"config/")}
        print(f"[python] read config/* in one snapshot: {cfg}")
        with c.batch() as b:  # atomic: readers see both or neither
            b.put(f"status/{me}", b"running")
            b.put(f"heartbeat/{me}", str(os.getpid()).encode())
        print(f"[python] wrote status/{me} and heartbeat/{me} in one batch")
        try:
            v = c.cas(b"jobs/42/owner", 0, me.encode())  # 0: only if nobody owns it
            print(f"[python] claimed jobs/42 (version {v})")
        except shoal.Conflict as e:
            print(f"[python] jobs/42 already claimed: {e.current_version=}")
        print(f"[python] jobs/42/owner = {c.get(b'jobs/42/owner')!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
