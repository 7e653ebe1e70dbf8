#!/bin/sh
# bench-files-smoke: run shoal-files-bench (argv 2..) and check that its
# stdout is one JSON object with every figure positive and the cache used.
# usage: files-smoke.sh PYTHON3 SHOAL-FILES-BENCH [ARGS...]
set -eu
py=$1
shift
out=$(mktemp "${TMPDIR:-/tmp}/bench-files-smoke.XXXXXX")
trap 'rm -f "$out"' EXIT
"$@" >"$out"
"$py" - "$out" <<'PY'
import json, math, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
for k in ("hash_blake2b_cold_mb_per_s", "b2sum_mb_per_s", "ratio_hash_vs_b2sum",
          "hash_sha256_cold_mb_per_s", "sha256sum_mb_per_s",
          "hash_cached_req_per_s", "hash_cached_req_per_s_2_clients",
          "tail_100_p50_us", "tail_100_p99_us", "tail_cmd_us"):
    assert isinstance(d[k], (int, float)) and math.isfinite(d[k]) and d[k] > 0, (k, d[k])
assert d["hash_cache_hits"] > 0 and d["hash_cache_misses"] >= 2, d
assert d["tail_100_p99_us"] >= d["tail_100_p50_us"]
print("bench-files-smoke: ok: blake2b %.0f MiB/s (b2sum %.0f), cached %.0f req/s, "
      "tail p99 %.0f us" % (d["hash_blake2b_cold_mb_per_s"], d["b2sum_mb_per_s"],
                            d["hash_cached_req_per_s"], d["tail_100_p99_us"]))
PY
