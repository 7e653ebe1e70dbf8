#!/bin/sh
# bench-smoke: run shoal-bench (argv 2..) and check that its stdout is one
# JSON object with positive rates, finite ratios and no read errors.
# usage: smoke.sh PYTHON3 SHOAL-BENCH [ARGS...]
set -eu
py=$1
shift
out=$(mktemp "${TMPDIR:-/tmp}/bench-smoke.XXXXXX")
trap 'rm -f "$out"' EXIT
"$@" >"$out"
"$py" - "$out" <<'PY'
import json, math, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
assert d["get_ops_per_s"] > 0, d["get_ops_per_s"]
for k in ("get_section_per_op_ops_per_s", "get_many_keys_per_s",
          "lmdb_get_ops_per_s", "get2_ops_per_s", "lmdb_get2_ops_per_s",
          "get_under_writes_ops_per_s", "writes_per_s_achieved",
          "put_ops_per_s", "load_seconds", "lmdb_load_seconds",
          "get_p50_ns", "get_p99_ns", "heap_used"):
    assert isinstance(d[k], (int, float)) and d[k] > 0, (k, d[k])
for k in ("ratio_get_vs_lmdb", "ratio_get_many_vs_lmdb", "scaling_2_readers",
          "lmdb_scaling_2_readers", "ratio_reads_under_writes",
          "overhead_bytes_per_key", "index_bytes_per_key"):
    assert isinstance(d[k], (int, float)) and math.isfinite(d[k]), (k, d[k])
assert d["errors"] == 0, d["errors"]
assert d["keys"] >= 100, d["keys"]
assert len(d["targets"]) == 6
print("bench-smoke: ok: get %.0f/s, get_many %.0f keys/s, lmdb %.0f/s"
      % (d["get_ops_per_s"], d["get_many_keys_per_s"], d["lmdb_get_ops_per_s"]))
PY
