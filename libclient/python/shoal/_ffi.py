"""Loading libshoal and declaring its functions for ctypes (internal).

The library is found, in order, at:

1. ``$SHOAL_LIB`` (a file path);
2. a ``libshoal.so*`` copied next to this package;
3. the system loader path (``ctypes.util.find_library("shoal")``, then
   ``libshoal.so.0``).

Loading is lazy (the first :func:`load`, i.e. the first ``shoal.connect``),
so ``import shoal`` works without the library; when none of the places
works, :class:`LibraryNotFound` lists every path tried and how to fix it.

Each function is declared once. Two views of the same library are used:

* ``py`` (``ctypes.PyDLL``): calls keep the GIL. Used for the read path
  (get, get_many, scan, sections): those calls never block, and holding
  the GIL is what serialises the threads sharing a read handle (a libshoal
  handle is used by one thread at a time).
* ``c`` (``ctypes.CDLL``): calls release the GIL. Used for everything that
  may block: writes and broker requests (a round trip, reconnecting while
  the broker restarts), ``shoal_wait``, opening.

The hot read helpers (``shoal_ffi_get``, ``shoal_ffi_get_view``) are left
without ``argtypes`` on purpose: with ``argtypes`` ctypes calls a converter
and allocates a temporary object per argument, which costs more than the
lookup itself. Their callers pass exactly a ctypes pointer, a ``bytes`` and
a Python int (a C int, which is what the helpers take).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
import threading
from ctypes import (
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_long,
    c_size_t,
    c_uint,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import List, Optional, Tuple

__all__ = ["LibraryNotFound", "Lib", "load", "FfiBuf", "Options", "Stats",
           "Lines", "FollowEvent"]

_HERE = os.path.dirname(os.path.abspath(__file__))


class LibraryNotFound(ImportError):
    """libshoal could not be loaded; the message lists every path tried."""


class FfiBuf(Structure):
    """``shoal_ffi_buf`` (shoal.h, "FFI helpers"): handle + output buffer."""

    _fields_ = [
        ("c", c_void_p),
        ("buf", c_void_p),
        ("cap", c_size_t),
        ("need", c_size_t),
        ("version", c_uint64),
        ("base", c_uint64),
        ("at", c_uint64),
        # object constructors (function pointers, see pyapi())
        ("bytes", c_void_p),
        ("code", c_void_p),
    ]


class Options(Structure):
    """``shoal_options``."""

    _fields_ = [
        ("socket", c_char_p),
        ("rundir", c_char_p),
        ("connect_timeout_ms", c_int),
        ("timeout_ms", c_int),
        ("flags", c_uint),
        ("client", c_char_p),
    ]


OPEN_NO_SLOT = 0x1

_STAT_FIELDS = (
    "keys key_bytes value_bytes size bytes_used bytes_free commit_seq commits "
    "records retired retired_bytes reclaimed expired index_capacity index_used "
    "readers_claimed readers_busy oldest_snapshot oldest_snapshot_age_ms "
    "connections connections_total uptime_ms denied bytes_in bytes_out"
).split()


# appended to shoal_stats after `errors` (HashFile/TailLog counters)
_STAT_FIELDS_UTIL = (
    "hash_cache_hits hash_cache_misses hash_cache_entries hash_cache_bytes "
    "hash_bytes_read followers jobs_queued"
).split()


class Stats(Structure):
    """``shoal_stats``."""

    _fields_ = [(n, c_uint64) for n in _STAT_FIELDS] + [
        ("broker_pid", c_int),
        ("requests", c_char_p),
        ("errors", c_char_p),
    ] + [(n, c_uint64) for n in _STAT_FIELDS_UTIL] + [("workers", c_uint)]


STAT_FIELDS = tuple(_STAT_FIELDS) + tuple(_STAT_FIELDS_UTIL) + ("workers",)


class Lines(Structure):
    """``shoal_lines`` (a tail's lines; free with ``shoal_lines_free``).
    ``line`` is declared as ``void **``: a line may hold NUL bytes, so it
    is read with its length, never as a C string."""

    _fields_ = [
        ("n", c_size_t),
        ("line", POINTER(c_void_p)),
        ("len", POINTER(c_size_t)),
    ]


class FollowEvent(Structure):
    """``shoal_follow_event``; ``data`` is valid until the next call on the
    follower."""

    _fields_ = [
        ("kind", c_int),
        ("data", c_void_p),
        ("len", c_size_t),
        ("offset", c_uint64),
    ]


#: shoal_hash_fd's digest buffer (SHOAL_HASH_MAX) and hex (SHOAL_HASH_HEX_MAX)
HASH_MAX = 64
HASH_HEX_MAX = 129
FOLLOW_LINE, FOLLOW_TRUNCATED, FOLLOW_ROTATED, FOLLOW_IDLE = 0, 1, 2, 3
FOLLOW_REOPEN = 0x1

_vp = c_void_p
_pvp = POINTER(c_void_p)
_pu64 = POINTER(c_uint64)
_pfb = POINTER(FfiBuf)
_pplines = POINTER(POINTER(Lines))
_csz = c_size_t

# name: (restype, argtypes) for the functions called through CDLL (GIL
# released) ...
_C_DECLS = {
    "shoal_open": (c_int, [_pvp, c_char_p, POINTER(Options)]),
    "shoal_close": (None, [_vp]),
    "shoal_last_error": (c_char_p, [_vp]),
    "shoal_reader_slot": (c_int, [_vp]),
    "shoal_put": (c_int, [_vp, c_char_p, c_size_t, c_char_p, c_size_t, _pu64]),
    "shoal_put_ttl": (
        c_int,
        [_vp, c_char_p, c_size_t, c_char_p, c_size_t, c_uint32, _pu64],
    ),
    "shoal_del": (c_int, [_vp, c_char_p, c_size_t]),
    "shoal_cas": (
        c_int,
        [_vp, c_char_p, c_size_t, c_uint64, c_char_p, c_size_t, _pu64],
    ),
    "shoal_batch_new": (c_int, [_vp, _pvp]),
    "shoal_batch_put": (
        c_int,
        [_vp, c_char_p, c_size_t, c_char_p, c_size_t, c_uint32],
    ),
    "shoal_batch_del": (c_int, [_vp, c_char_p, c_size_t]),
    "shoal_batch_del_any": (c_int, [_vp, c_char_p, c_size_t]),
    "shoal_batch_cas": (
        c_int,
        [_vp, c_char_p, c_size_t, c_uint64, c_char_p, c_size_t],
    ),
    "shoal_batch_len": (c_size_t, [_vp]),
    "shoal_batch_commit": (c_int, [_vp, _vp, _pu64]),
    "shoal_batch_failed": (c_long, [_vp]),
    "shoal_batch_reset": (None, [_vp]),
    "shoal_batch_free": (None, [_vp]),
    "shoal_wait": (c_int, [_vp, c_char_p, c_size_t, c_uint64, c_int, _pu64]),
    "shoal_ping": (c_int, [_vp]),
    "shoal_stats_get": (c_int, [_vp, POINTER(Stats)]),
    "shoal_strerror": (c_char_p, [c_int]),
    "shoal_errname": (c_char_p, [c_int]),
    "shoal_key_max": (c_size_t, []),
    "shoal_value_max": (c_size_t, [_vp]),
    "shoal_version": (c_char_p, []),
}

# The utilities (shoal.h "utilities" and "local utility functions"): newer
# than the rest, so optional: a libshoal without them still loads, and
# Lib.has() tells whether they are there. Through CDLL (GIL released): they
# read files or wait for the broker.
_C_OPT_DECLS = {
    "shoal_hash_fd": (c_int, [_vp, c_int, c_char_p, _csz, _vp, _csz]),
    "shoal_hash_file": (c_int, [_vp, c_char_p, c_char_p, _vp, _csz]),
    "shoal_lines_free": (None, [POINTER(Lines)]),
    "shoal_tail_fd": (c_int, [_vp, c_int, _csz, _pplines]),
    "shoal_tail": (c_int, [_vp, c_char_p, _csz, _pplines]),
    "shoal_follow_open": (c_int, [_vp, c_char_p, _csz, c_uint, _pvp]),
    "shoal_follow_next": (c_int, [_vp, c_int, POINTER(FollowEvent)]),
    "shoal_follow_fd": (c_int, [_vp]),
    "shoal_follow_close": (None, [_vp]),
    "shoal_util_get_cpu_count": (c_int, []),
    "shoal_util_get_mem_size_gb": (c_int, [POINTER(ctypes.c_double)]),
    "shoal_util_get_max_workers_for_file_mounts": (
        c_int, [POINTER(c_char_p), _csz, c_char_p]),
    "shoal_util_estimate_fd_for_directory": (c_long, [c_char_p]),
    "shoal_util_find_free_port": (c_int, [c_int]),
    "shoal_util_read_last_n_lines": (c_int, [c_char_p, _csz, _csz, _pplines]),
    "shoal_util_hash_file": (c_int, [c_char_p, c_char_p, _csz, _vp, _csz]),
}

# ... and through PyDLL (GIL held: never blocks). None: no argtypes (the
# hot paths, see the module docstring).
_PY_DECLS = {
    "shoal_close": (None, [_vp]),  # never blocks; see client._Handle.close
    "shoal_read_begin": (c_int, [_vp]),
    "shoal_read_end": (None, [_vp]),
    "shoal_ffi_get": (c_int, None),
    "shoal_ffi_get_view": (c_int, None),
    "shoal_ffi_get_bytes": (ctypes.py_object, None),
    "shoal_ffi_get_many": (
        c_int,
        [_pfb, c_size_t, c_char_p, _vp, _vp, _vp, _vp, c_int],
    ),
    "shoal_ffi_scan": (
        c_int,
        [_pfb, c_char_p, c_size_t, c_char_p, c_size_t, c_size_t, _vp, c_int,
         POINTER(c_int)],
    ),
}

# Optional (see _C_OPT_DECLS), GIL held: pure computations, or one cheap
# system call, where releasing and retaking the GIL would cost more than
# the call (is_process_alive: kill(2) and one small /proc read).
_PY_OPT_DECLS = {
    "shoal_util_base36_encode": (c_int, [c_char_p, _csz, _vp, _csz]),
    "shoal_util_format_float": (c_int, [ctypes.c_double, c_int, _vp, _csz]),
    "shoal_util_truncate_long_string": (
        c_int, [c_char_p, _csz, _csz, c_int, _vp, _csz]),
    "shoal_util_get_parallel_threads": (c_int, [c_char_p]),
    "shoal_util_is_process_alive": (c_int, [c_long]),
}


class Lib:
    """libshoal, loaded: ``path``, and the functions as attributes.

    ``lib.c.<name>`` releases the GIL, ``lib.py.<name>`` keeps it.
    """

    def __init__(self, path: str, c: ctypes.CDLL, py: ctypes.PyDLL) -> None:
        self.path = path
        self.c = c
        self.py = py
        for name, (res, args) in _C_DECLS.items():
            f = getattr(c, name)
            f.restype = res
            if args is not None:
                f.argtypes = args
        for name, (res, args) in _PY_DECLS.items():
            f = getattr(py, name)
            f.restype = res
            if args is not None:
                f.argtypes = args
        #: optional functions this libshoal lacks (older than the package)
        self.missing = set()
        for dll, decls in ((c, _C_OPT_DECLS), (py, _PY_OPT_DECLS)):
            for name, (res, args) in decls.items():
                try:
                    f = getattr(dll, name)
                except AttributeError:
                    self.missing.add(name)
                    continue
                f.restype = res
                f.argtypes = args

    def has(self, *names: str) -> bool:
        """True if this libshoal exports every one of @names."""
        return not self.missing.intersection(names)

    def need(self, *names: str) -> None:
        """Raise NotImplementedError naming the first of @names this
        libshoal lacks."""
        for n in names:
            if n in self.missing:
                raise NotImplementedError(
                    "%s: libshoal at %s has no %s (a library older than "
                    "this package; rebuild or reinstall libshoal)"
                    % (n, self.path, n))

    def strerror(self, code: int) -> str:
        """``shoal_strerror(code)`` as a str."""
        return self.c.shoal_strerror(code).decode("utf-8", "replace")

    def errname(self, code: int) -> str:
        """``shoal_errname(code)`` as a str."""
        return self.c.shoal_errname(code).decode("ascii", "replace")


_lock = threading.Lock()
_lib: Optional[Lib] = None


def _candidates() -> List[Tuple[str, str]]:
    """(where it comes from, path or soname) in the order they are tried."""
    out: List[Tuple[str, str]] = []
    env = os.environ.get("SHOAL_LIB")
    if env:
        out.append(("$SHOAL_LIB", env))
    local = sorted(glob.glob(os.path.join(_HERE, "libshoal.so*")), key=len)
    if local:
        out.extend(("package directory", p) for p in local)
    else:
        out.append(("package directory", os.path.join(_HERE, "libshoal.so*")))
    found = ctypes.util.find_library("shoal")
    if found:
        out.append(("system loader (find_library)", found))
    out.append(("system loader", "libshoal.so.0"))
    return out


def load() -> Lib:
    """Load libshoal once and return it; raise :class:`LibraryNotFound`."""
    global _lib
    lib = _lib
    if lib is not None:
        return lib
    with _lock:
        if _lib is not None:
            return _lib
        tried = []
        for where, path in _candidates():
            if "*" in path:
                tried.append("  %s: %s: no such file" % (where, path))
                continue
            try:
                c = ctypes.CDLL(path)
                py = ctypes.PyDLL(path)
                if not hasattr(c, "shoal_ffi_get"):
                    raise OSError("%s has no shoal_ffi_get: a libshoal older "
                                  "than this package" % path)
                _lib = Lib(path, c, py)
                return _lib
            except OSError as e:
                tried.append("  %s: %s: %s" % (where, path, e))
        raise LibraryNotFound(
            "libshoal could not be loaded. Tried:\n%s\nFix: set SHOAL_LIB to "
            "the path of libshoal.so (e.g. build/libclient/libshoal.so), copy "
            "libshoal.so* next to the package (%s), or install it "
            "(`cmake --install build`, then `ldconfig`)."
            % ("\n".join(tried), _HERE)
        )


def pyapi() -> Optional[Tuple[int, int]]:
    """Addresses of PyBytes_FromStringAndSize and PyLong_FromLong, the
    object constructors shoal_ffi_get_bytes calls (with the GIL held: it is
    called through PyDLL). None where ctypes.pythonapi is not CPython's."""
    try:
        api = ctypes.pythonapi
        fns = (api.PyBytes_FromStringAndSize, api.PyLong_FromLong)
    except (AttributeError, OSError):
        return None
    if sys.implementation.name != "cpython":
        return None
    addrs = tuple(ctypes.cast(f, c_void_p).value for f in fns)
    if not all(addrs):
        return None
    return addrs  # type: ignore[return-value]


def is_free_threaded() -> bool:
    """True on a CPython build running without the GIL (3.13t)."""
    f = getattr(sys, "_is_gil_enabled", None)
    return f is not None and not f()
