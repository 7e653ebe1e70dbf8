#!/bin/sh
# bench-compare-smoke: run `bench/compare --quick --json -` (argv 2..) and
# check the JSON: the machine is named, every figure has a median inside
# [min, max], the C get rows have shoal and LMDB, every earlier issue's
# target has a verdict, and a step is skipped
# only because something is not built or installed here (a benchmark that
# crashes, times out or prints bad JSON fails the test).
# usage: compare-smoke.sh PYTHON3 bench/compare [ARGS...]
set -eu
py=$1
shift
out=$(mktemp "${TMPDIR:-/tmp}/compare-smoke.XXXXXX")
trap 'rm -f "$out"' EXIT
"$@" >"$out"
"$py" - "$out" <<'PY'
import json, math, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
m = d["machine"]
for k in ("cpu_model", "cores", "kernel", "date"):
    assert m.get(k), ("machine", k, m.get(k))
assert d["config"]["quick"] is True
figs = d["figures"]
assert figs, "no figures"
for f in figs:
    for k in ("workload", "system", "unit"):
        assert f[k], (k, f)
    lo, med, hi = f["min"], f["median"], f["max"]
    assert all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0
               for x in (lo, med, hi)), f
    assert lo <= med <= hi, f
    assert f["run_count"] >= 1, f
have = {(f["workload"], f["system"]) for f in figs}
for system in ("shoal", "LMDB"):
    assert ("random get, C, 1 reader", system) in have, system
    assert ("random get, C, 2 readers", system) in have, system
for s in d["steps"]:
    st = s["status"]
    assert st == "ok" or "not built" in st or "not found" in st, s
for r in d["ratios"]:
    assert r["ratio"] is None or r["ratio"] > 0, r
# every earlier issue's target gets a verdict; those whose benchmark ran
# here have a value (a quick run's verdicts themselves mean little)
ts = d["targets"]
assert {t["issue"] for t in ts} >= {2, 3, 4, 5, 7}, ts
ran = {s["step"] for s in d["steps"] if s["status"] == "ok"}
for t in ts:
    assert t["verdict"], t
    assert (t["value"] is None) == (t["met"] is None), t
    if t["value"] is not None:
        assert t["value"] >= 0 and math.isfinite(t["value"]), t
if {"c-get", "put", "py", "files"} <= ran:
    assert sum(t["value"] is not None for t in ts) >= 15, ts
for c in d["cross_checks"]:
    assert c["system"] in ("shoal", "LMDB") and c["median"] > 0, c
print("bench-compare-smoke: ok: %d figures, %d targets, %d missing, %d steps "
      "in %.0f s" % (len(figs), len(ts), len(d["missing"]), len(d["steps"]),
                     d["seconds"]))
PY
