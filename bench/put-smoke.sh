#!/bin/sh
# bench-put-smoke: run shoal-put-bench (argv 2..) and check that its stdout
# is one JSON object with every figure positive.
# usage: put-smoke.sh PYTHON3 SHOAL-PUT-BENCH [ARGS...]
set -eu
py=$1
shift
out=$(mktemp "${TMPDIR:-/tmp}/bench-put-smoke.XXXXXX")
trap 'rm -f "$out"' EXIT
"$@" >"$out"
"$py" - "$out" <<'PY'
import json, math, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
for k in ("put_ops_per_s", "put_pipelined16_ops_per_s", "put_pipelined_ops_per_s",
          "put_batched_ops_per_s", "put_p50_us", "put_p99_us",
          "redis_set_ops_per_s", "redis_set_pipelined16_ops_per_s",
          "redis_set_pipelined_ops_per_s"):
    assert isinstance(d[k], (int, float)) and d[k] > 0, (k, d[k])
for k in ("ratio_unpipelined", "ratio_pipelined16", "ratio_pipelined"):
    assert math.isfinite(d[k]) and d[k] > 0, (k, d[k])
assert d["put_p99_us"] >= d["put_p50_us"]
print("bench-put-smoke: ok: put %.0f/s, pipelined %.0f/s, batched %.0f/s, "
      "redis SET %.0f/s" % (d["put_ops_per_s"], d["put_pipelined_ops_per_s"],
                            d["put_batched_ops_per_s"], d["redis_set_ops_per_s"]))
PY
