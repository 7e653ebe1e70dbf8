#!/bin/sh
# install-smoke: install this build into a temporary prefix, then build a
# program outside the tree against it twice (pkg-config, and CMake's
# find_package(shoal) with shoal::shoal) and run both against the installed
# shoald. Proves the installed headers, libraries, shoal.pc and CMake
# package are complete and usable.
# usage: install-smoke.sh BUILD_DIR SOURCE_DIR(of this script)
set -eu
build=$1
here=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shoal-install-smoke.XXXXXX")
broker=
cleanup() {
  if [ -n "$broker" ]; then kill -TERM "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; echo "install-smoke: cmake --install failed" >&2; exit 1; }
for f in include/shoal/shoal.h include/shoal/error.h bin/shoald bin/shoal; do
  [ -e "$tmp/prefix/$f" ] || { echo "install-smoke: $f was not installed" >&2; exit 1; }
done
if [ -e "$tmp/prefix/include/shoal/shm.h" ]; then
  echo "install-smoke: the internal header shm.h was installed" >&2
  exit 1
fi
pc=$(find "$tmp/prefix" -name shoal.pc | head -n 1)
[ -n "$pc" ] || { echo "install-smoke: shoal.pc was not installed" >&2; exit 1; }
libdir=$(dirname "$(find "$tmp/prefix" -name 'libshoal.so.0' | head -n 1)")

# 1. pkg-config
export PKG_CONFIG_PATH="$(dirname "$pc")"
# shellcheck disable=SC2046
cc -o "$tmp/consumer-pc" "$here/consumer.c" $(pkg-config --cflags --libs shoal)

# 2. find_package
mkdir -p "$tmp/proj"
cp "$here/consumer.c" "$tmp/proj/"
cp "$here/CMakeLists.txt.in" "$tmp/proj/CMakeLists.txt"
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/proj.log" 2>&1 &&
  cmake --build "$tmp/proj/build" >>"$tmp/proj.log" 2>&1 ||
  { cat "$tmp/proj.log"; echo "install-smoke: find_package(shoal) project failed" >&2; exit 1; }

# the installed broker, in a private directory
mkdir -p "$tmp/run"
"$tmp/prefix/bin/shoald" --name smoke --rundir "$tmp/run" --shm-dir "$tmp/run" \
  --size 16M --quiet 2>"$tmp/shoald.log" &
broker=$!
i=0
while [ ! -S "$tmp/run/smoke.sock" ]; do
  i=$((i + 1))
  if [ $i -gt 500 ] || ! kill -0 "$broker" 2>/dev/null; then
    cat "$tmp/shoald.log" >&2
    echo "install-smoke: the installed shoald did not start" >&2
    exit 1
  fi
  sleep 0.02
done
LD_LIBRARY_PATH=$libdir "$tmp/consumer-pc" "$tmp/run/smoke.sock"
"$tmp/proj/build/consumer" "$tmp/run/smoke.sock"
out=$("$tmp/prefix/bin/shoal" --socket "$tmp/run/smoke.sock" get installed)
[ "$out" = yes ] || { echo "install-smoke: the installed CLI read '$out'" >&2; exit 1; }
echo "install-smoke: ok (pkg-config, find_package, installed shoald and shoal CLI)"
