#!/usr/bin/env python3
"""integration.quickstart: run tools/quickstart end to end and check what it
prints (issue 6: "a test that runs tools/quickstart end to end in CI").

    check_quickstart.py --root SRC --work DIR [--timeout SECONDS]

Runs ``tools/quickstart --no-install --no-bench --build-dir D`` with D a
fresh directory under DIR (the ctest build directory: tools/test holds
build/'s lock meanwhile, and quickstart takes D's), then checks that:

  - it exited 0 within the timeout;
  - every step header is there, in order;
  - the C, Python and Go workers each printed their steps ("[c] ...",
    "[python] ...", "[go] ...": the zero-copy read, the batch, the cas, the
    wake-up on signal/stop) and exited 0, and exactly one of them claimed
    jobs/42 (the others saw the conflict);
  - shoal-inspect summary showed the store ("keys:", "commit_seq:", the
    broker "running") and shoal-inspect readers listed every worker's pid,
    i.e. the workers were still attached when it ran;
  - the broker stopped cleanly: "shoald exited with status 0".

It prints quickstart's output, then every miss (exit 1) or one line saying
it is all there (exit 0). The build directory is removed on success and
kept on failure (its path is printed); stale ones of earlier runs are
removed first.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

STEPS = [
    "==> 1/8 dependencies",
    "==> 2/8 configure and build ",
    "==> 3/8 start the broker",
    "==> 4/8 the shoal CLI",
    "==> 5/8 a C, a Python and a Go worker",
    "==> 6/8 shoal-inspect while the workers run",
    "==> 7/8 benchmarks skipped (--no-bench)",
    "==> 8/8 stop the broker",
    "==> done",
]

# Lines every worker prints, as regular expressions after its "[lang] ".
WORKER_LINES = {
    "c": [
        r"read config/region = eu-west \(version \d+, zero-copy\)",
        r"read config/\* in the same snapshot: config/region=eu-west",
        r"wrote status/c-worker-\d+ and heartbeat/c-worker-\d+ in one batch",
        r"holding a snapshot open on reader slot \d+",
        r"woken: signal/stop is at version \d+",
        r"set status/c-worker-\d+ = done; exiting",
    ],
    "python": [
        r"read config/region = b'eu-west'",
        r"read config/\* in one snapshot: \{'config/region': 'eu-west'\}",
        r"wrote status/py-worker-\d+ and heartbeat/py-worker-\d+ in one batch",
        r"holding a read block open, waiting for signal/stop",
        r"woken: signal/stop is at version \d+",
        r"set status/py-worker-\d+ = done; exiting",
    ],
    "go": [
        r'read config/region = "eu-west" \(found true\)',
        r"wrote status/go-worker-\d+ and heartbeat/go-worker-\d+ in one batch",
        r"waiting for signal/stop",
        r"woken: signal/stop is at version \d+",
        r"set status/go-worker-\d+ = done; exiting",
    ],
}
# The outcome of each worker's cas on jobs/42: it won or it lost.
CLAIMED = {"c": r"claimed jobs/42", "python": r"claimed jobs/42",
           "go": r"claimed jobs/42"}
LOST = {"c": r"jobs/42 is already claimed by ",
        "python": r"jobs/42 already claimed",
        "go": r"jobs/42 is already claimed by "}
# The pid in each worker's status key.
PID_RE = {"c": r"status/c-worker-(\d+)", "python": r"status/py-worker-(\d+)",
          "go": r"status/go-worker-(\d+)"}


def section(out: str, command: str) -> Optional[str]:
    """The output of the shown command line ending in @command: the lines
    after "$ ...COMMAND" up to the next "$ " or "# " or "==> " line."""
    lines = out.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("$ ") and ln.rstrip().endswith(command):
            body = []
            for nxt in lines[i + 1:]:
                if nxt.startswith(("$ ", "# ", "==> ")):
                    break
                body.append(nxt)
            return "\n".join(body)
    return None


def check(out: str, rc: int) -> List[str]:
    miss: List[str] = []
    if rc != 0:
        miss.append("tools/quickstart exited with status %d, not 0" % rc)

    pos = 0
    for s in STEPS:
        i = out.find("\n" + s, pos)
        if i < 0:
            miss.append("step header %r missing (or out of order)" % s)
        else:
            pos = i + 1

    winners = []
    pids = {}
    for lang, pats in WORKER_LINES.items():
        mine = [ln[len(lang) + 3:] for ln in out.splitlines()
                if ln.startswith("[%s] " % lang)]
        text = "\n".join(mine)
        if not mine:
            miss.append("no line from the %s worker ([%s] ...)" % (lang, lang))
            continue
        for p in pats:
            if not re.search(r"^" + p, text, re.M):
                miss.append("[%s] worker line /%s/ missing" % (lang, p))
        won = re.search(r"^" + CLAIMED[lang], text, re.M)
        lost = re.search(r"^" + LOST[lang], text, re.M)
        if bool(won) == bool(lost):
            miss.append("[%s] worker: want exactly one of 'claimed jobs/42' "
                        "and 'already claimed'" % lang)
        if won:
            winners.append(lang)
        m = re.search(PID_RE[lang], text)
        if m:
            pids[lang] = m.group(1)
        if "%s worker exited with status 0" % lang not in out:
            miss.append("'%s worker exited with status 0' missing" % lang)
    if len(winners) != 1:
        miss.append("exactly one worker must claim jobs/42 with its cas; "
                    "claimed by: %s" % (winners or "none"))

    summary = section(out, "shoal-inspect summary")
    if summary is None:
        miss.append("no '$ .../shoal-inspect summary' command shown")
    else:
        for word in ("keys:", "commit_seq:", "broker:", "running"):
            if word not in summary:
                miss.append("shoal-inspect summary lacks %r" % word)
    readers = section(out, "shoal-inspect readers")
    if readers is None:
        miss.append("no '$ .../shoal-inspect readers' command shown")
    elif not readers.strip():
        miss.append("shoal-inspect readers printed nothing")
    else:
        # the workers were attached while it ran: their pids are listed
        for lang, pid in pids.items():
            if not re.search(r"\b%s\b" % pid, readers):
                miss.append("shoal-inspect readers does not list the %s "
                            "worker's pid %s" % (lang, pid))

    if "shoald exited with status 0" not in out:
        miss.append("'shoald exited with status 0' missing")
    return miss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="the source tree")
    ap.add_argument("--work", required=True,
                    help="where to make the build directory")
    ap.add_argument("--timeout", type=float, default=840.0,
                    help="seconds quickstart may take (default 840)")
    args = ap.parse_args()

    os.makedirs(args.work, exist_ok=True)
    for old in glob.glob(os.path.join(args.work, "quickstart-build-*")):
        shutil.rmtree(old, ignore_errors=True)
    bdir = tempfile.mkdtemp(prefix="quickstart-build-", dir=args.work)
    cmd = ["bash", os.path.join(args.root, "tools", "quickstart"),
           "--no-install", "--no-bench", "--build-dir", bdir]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.monotonic()
    # its own process group, so a timeout stops the broker and the workers
    # too; stdin closed: nothing may prompt
    # quickstart picks its own broker socket, store directory and library
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHOAL_SOCKET", "SHOAL_RUNDIR", "SHOAL_SHM_DIR",
                        "SHOAL_LIB", "PYTHONPATH")}
    p = subprocess.Popen(cmd, cwd=args.root, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        raw, _ = p.communicate(timeout=args.timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        raw, _ = p.communicate()
        rc = -1
    took = time.monotonic() - t0
    out = raw.decode("utf-8", "replace")
    miss = check(out, rc)
    if rc == -1:
        miss.insert(0, "tools/quickstart did not finish within %.0f s"
                    % args.timeout)
    print(out)  # kept in ctest's LastTest.log either way
    if miss:
        print("---- integration.quickstart: %d problem(s) (%.1f s); build "
              "directory kept: %s" % (len(miss), took, bdir))
        for m in miss:
            print("  - " + m)
        return 1
    shutil.rmtree(bdir, ignore_errors=True)
    print("integration.quickstart: ok, %d steps, 3 workers, inspect while "
          "attached, clean stop (%.1f s)" % (len(STEPS), took))
    return 0


if __name__ == "__main__":
    sys.exit(main())
