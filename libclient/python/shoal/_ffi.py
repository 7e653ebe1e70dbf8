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

__all__ = ["LibraryNotFound", "Lib", "load", "FfiBuf", "Options", "Stats"]

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


class Stats(Structure):
    """``shoal_stats``."""

    _fields_ = [(n, c_uint64) for n in _STAT_FIELDS] + [
        ("broker_pid", c_int),
        ("requests", c_char_p),
        ("errors", c_char_p),
    ]


STAT_FIELDS = tuple(_STAT_FIELDS)

_vp = c_void_p
_pvp = POINTER(c_void_p)
_pu64 = POINTER(c_uint64)
_pfb = POINTER(FfiBuf)

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
