#!/bin/sh
# bench-peers-smoke: run shoal-peers-bench (argv 2..) and check that its
# stdout is one JSON object naming the machine, whose every figure is a
# positive number (median, min <= median <= max) or null with a reason.
# usage: peers-smoke.sh PYTHON3 SHOAL-PEERS-BENCH [ARGS...]
set -eu
py=$1
shift
out=$(mktemp "${TMPDIR:-/tmp}/bench-peers-smoke.XXXXXX")
trap 'rm -f "$out"' EXIT
"$@" >"$out"
"$py" - "$out" <<'PY'
import json, math, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
m = d["machine"]
assert m["cpu"] and m["cores"] > 0 and m["kernel"], m
figs = d["figures"]
assert len(figs) >= 17, len(figs)
measured = 0
for f in figs:
    for k in ("workload", "system", "variant", "unit"):
        assert isinstance(f[k], str) and f[k], (k, f)
    if f["median"] is None:
        assert f["min"] is None and f["max"] is None, f
        assert isinstance(f.get("reason"), str) and f["reason"], f
        continue
    for k in ("median", "min", "max"):
        assert isinstance(f[k], (int, float)) and math.isfinite(f[k]) and f[k] > 0, (k, f)
    assert f["min"] <= f["median"] <= f["max"], f
    assert f["runs"] >= 1, f
    measured += 1
# LMDB needs no server: its figures are always measured
assert all(f["median"] is not None for f in figs if f["system"] == "LMDB"), figs
print("bench-peers-smoke: ok: %d of %d figures measured, %d null with a reason"
      % (measured, len(figs), len(figs) - measured))
PY
