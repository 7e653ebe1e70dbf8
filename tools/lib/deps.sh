# shellcheck shell=bash
# tools/lib/deps.sh: the Debian packages shoal builds against, and how to
# install the missing ones. Sourced by tools/test and tools/quickstart.
#
# Targets Debian 12. A package is "missing" unless dpkg reports it as
# "install ok installed"; only missing packages are installed, so a machine
# that already has everything never touches apt or the network.

# DESIGN.md section 1 lists the dependencies. clang and libclang-rt-dev (the
# sanitizer and libFuzzer runtimes: on Debian 12 libFuzzer's
# libclang_rt.fuzzer-x86_64.a is in libclang-rt-14-dev, not in clang-14)
# serve the fuzz tier; valgrind the unit tier under memcheck; liblmdb-dev the
# side-by-side benchmark; libsystemd-dev the broker's sd_notify; python3 the
# benchmark's smoke test (bench/smoke.sh) and the Python package;
# redis-server and redis-tools (redis-benchmark) the put benchmark's peer;
# memcached the get peer of bench/shoal-peers-bench (issue 8);
# golang-go the Go module; python3-pip/-venv/-setuptools installing the
# Python package; python3-lmdb and python3-redis the Python benchmark's peers
# (Debian's /usr/bin/python3 has them; a pyenv python3 on PATH does not);
# gnuplot-nox draws bench/compare --plot.
SHOAL_DEPS=(
  build-essential
  cmake
  pkg-config
  liburcu-dev
  libsodium-dev
  libssl-dev
  libprotobuf-c-dev
  protobuf-c-compiler
  check
  libsystemd-dev
  liblmdb-dev
  clang
  libclang-rt-dev
  valgrind
  python3
  redis-server
  redis-tools
  memcached
  golang-go
  python3-pip
  python3-venv
  python3-setuptools
  python3-lmdb
  python3-redis
  gnuplot-nox
)

# deps_missing PKG...: print the packages among PKG that are not installed,
# one per line. Unknown package names count as missing (apt then says why).
deps_missing() {
  local pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
      printf '%s\n' "$pkg"
    fi
  done
}

# deps_install: install whichever of SHOAL_DEPS are missing. Uses apt-get as
# root, sudo apt-get otherwise; runs apt-get update first, and only when
# there is something to install. Returns non-zero when the packages can not
# be installed.
deps_install() {
  local -a want=("${SHOAL_DEPS[@]}") missing sudo=()

  if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps: dpkg-query not found; this script installs Debian packages only." >&2
    echo "deps: install these by hand, then rerun with --no-install: ${want[*]}" >&2
    return 1
  fi
  mapfile -t missing < <(deps_missing "${want[@]}")
  if ((${#missing[@]} == 0)); then
    echo "deps: all ${#want[@]} packages installed"
    return 0
  fi

  if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "deps: missing packages and not root, and sudo is not installed:" >&2
      echo "deps:   apt-get install ${missing[*]}" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  echo "deps: installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q "${missing[@]}"

  mapfile -t missing < <(deps_missing "${want[@]}")
  if ((${#missing[@]} > 0)); then
    echo "deps: still missing after apt-get install: ${missing[*]}" >&2
    return 1
  fi
}

# deps_check: only warn about missing packages (for --no-install).
deps_check() {
  local -a want=("${SHOAL_DEPS[@]}") missing
  command -v dpkg-query >/dev/null 2>&1 || return 0
  mapfile -t missing < <(deps_missing "${want[@]}")
  if ((${#missing[@]} > 0)); then
    echo "deps: warning: not installed (--no-install): ${missing[*]}" >&2
  fi
}
