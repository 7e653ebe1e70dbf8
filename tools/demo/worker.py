#!/usr/bin/env python3
"""A Python worker for tools/quickstart: what a service of a cluster
orchestrator would do with shoal. It reads the shared configuration
(zero-copy, from shared memory), publishes its status with an atomic batch,
claims a job with compare-and-swap, then stays attached until another
process puts the stop key (signal/stop): it holds a read block open
meanwhile, so ``shoal-inspect readers`` shows its snapshot, and puts
ready/python once it is waiting. It prints each step, prefixed [python].

Runs against the broker named by SHOAL_RUNDIR / SHOAL_SOCKET; finds libshoal
through SHOAL_LIB (tools/quickstart sets both). Exits 1 if the stop key does
not come within --timeout seconds (default 60).
"""
import argparse
import os
import sys

import shoal


def say(msg: str) -> None:
    # Three workers print to one pipe at once: each line must be one
    # write(2) (print() may write the text and its newline apart).
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), f"[python] {msg}\n".encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="default")
    ap.add_argument("--stop-key", default="signal/stop")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    stop = args.stop_key.encode()
    me = f"py-worker-{os.getpid()}"
    with shoal.connect(args.name) as c:
        region = c.get(b"config/region")
        say(f"read config/region = {region!r}")
        with c.read() as r:  # one snapshot, zero-copy views
            cfg = {bytes(k).decode(): bytes(v).decode() for k, v in r.scan(prefix=b"config/")}
        say(f"read config/* in one snapshot: {cfg}")
        with c.batch() as b:  # atomic: readers see both or neither
            b.put(f"status/{me}", b"running")
            b.put(f"heartbeat/{me}", str(os.getpid()).encode())
        say(f"wrote status/{me} and heartbeat/{me} in one batch")
        try:
            v = c.cas(b"jobs/42/owner", 0, me.encode())  # 0: only if nobody owns it
            say(f"claimed jobs/42 (version {v})")
        except shoal.Conflict as e:
            say(f"jobs/42 already claimed: {e.current_version=}")
        say(f"jobs/42/owner = {c.get(b'jobs/42/owner')!r}")
        # Stay attached: a read block pins its snapshot until it ends (a
        # busy reader slot for shoal-inspect); wait() uses another handle.
        with c.read() as r:
            r.get(b"config/region")
            say(f"holding a read block open, waiting for {args.stop_key}")
            c.put(b"ready/python", str(os.getpid()).encode())
            v = c.wait(stop, after=0, timeout=args.timeout)
        if v is None:
            print(f"[python] {args.stop_key} did not come within {args.timeout:g} s",
                  file=sys.stderr, flush=True)
            return 1
        say(f"woken: {args.stop_key} is at version {v}; read block closed")
        c.put(f"status/{me}", b"done")
        say(f"set status/{me} = done; exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
