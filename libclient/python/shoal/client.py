"""The shoal client: :class:`Client`, :class:`Reader`, :class:`Batch`.

How a :class:`Client` uses libshoal handles (the C rule is: one thread per
handle at a time):

* the **read handle** serves :meth:`Client.get`, :meth:`Client.get_many`
  and friends, one C call each, through ``PyDLL`` (the GIL is held during
  the call: that is what serialises the threads sharing it, at no cost).
  ``get`` has libshoal copy the value straight into a new ``bytes`` (it is
  handed ``PyBytes_FromStringAndSize``: see ``shoal_ffi_get_bytes``); the
  calls that copy into a buffer and slice it afterwards (``get_many``,
  ``get_with_version``) use one buffer per thread (a ``threading.local``);
* the **write handle** (opened without a reader slot) serves writes, ping
  and stats under a ``threading.Lock``, through ``CDLL`` (the GIL is
  released while waiting for the broker);
* a **pool of handles** serves what needs a handle for longer: read blocks
  (:meth:`Client.read`: a pinned snapshot), :meth:`Client.scan` and
  :meth:`Client.wait` (blocking, GIL released). A handle taken from the
  pool belongs to one block/scan/wait until it ends; the pool opens more
  when all are taken and keeps a few idle ones for reuse.

* **request handles** (no reader slot, like the write handle) serve the
  file requests (:meth:`Client.hash_file`, :meth:`Client.tail`,
  :meth:`Client.follow`'s opening): one per request at a time, from a small
  pool, so a long hash never holds up the writes or another hash.

So a Client is safe to share between threads; threads never see each
other's snapshots. Reads make no system call and keep working while the
broker is down.

After ``fork()`` (``multiprocessing`` with the fork start method) the child
notices on its first call (libshoal answers ``SHOAL_EFORKED`` from inherited
handles, which costs nothing on the fast path) and opens its own handles;
the inherited ones are freed without touching the parent's connection or
reader slots. For ``spawn``, a Client pickles as its connection parameters
and reconnects in the child.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import itertools
import datetime
import errno as _errno
import math
import mmap
import os
import sys
import threading
import time
import warnings
import weakref
from array import array
from ctypes import byref, c_int, c_uint64, c_void_p
from itertools import compress
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _ffi
from . import errors as _e
from .errors import Error

__all__ = ["Client", "Reader", "Batch", "Follower", "FollowEvent", "connect",
           "Key", "Value"]

Key = Union[bytes, bytearray, memoryview, str]
Value = Union[bytes, bytearray, memoryview, str]
TTL = Union[None, int, float, datetime.timedelta]

# First size of a thread's value buffer; it grows up to _BUF_KEEP for a
# larger value and stays that size; a value larger still gets a one-off
# buffer, so one huge value does not pin memory for the thread's life.
_BUF_INIT = 64 << 10
_BUF_KEEP = 4 << 20
# Items per scan page: enough that the per-page call is noise, few enough
# that a page of small items stays in L2.
_SCAN_PAGE = 512
# Idle pool handles kept for reuse (each holds a connection and a slot).
_POOL_KEEP = 4
# The array typecode of C size_t (get_many's key lengths).
_SZ = "Q" if ctypes.sizeof(ctypes.c_size_t) == 8 else "I"

_lib: Optional[_ffi.Lib] = None
# Bound at the first load (module globals: the fastest lookup there is).
_get: Any = None
_get_view: Any = None
_get_bytes: Any = None
_PYAPI: Optional[Tuple[int, int]] = None
_CLOSED_X: Any = None
_get_many: Any = None
_scan: Any = None
_read_begin: Any = None
_read_end: Any = None
_AS: Any = None  # see _address_space()
_AS_BASE = 4096

_NOTFOUND = _e.NotFound.code
_TOOBIG = _e.TooBig.code
_FORKED = _e.Forked.code
_CLOSED = _e.Closed.code
_TIMEOUT = _e.Timeout.code
_EINVAL = _e.InvalidArgument.code
_EINTR = -_errno.EINTR


class _FallbackAS:
    """Zero-copy views where ``PyMemoryView_FromMemory`` is not available:
    one ctypes array per view (slower, same semantics)."""

    def __getitem__(self, s: slice) -> memoryview:
        n = s.stop - s.start
        a = (ctypes.c_ubyte * n).from_address(s.start + _AS_BASE)
        return memoryview(a).toreadonly()


def _address_space() -> Any:
    """A read-only memoryview (format "B") over all addresses from
    _AS_BASE up. ``_AS[a:a+n]`` is then a zero-copy view of the n bytes at
    address a + _AS_BASE: one slice, no ctypes call per get. The FFI
    helpers report addresses minus _AS_BASE (shoal_ffi_buf.base). Only
    ranges libshoal reported (values inside a section) are ever sliced."""
    try:
        f = ctypes.pythonapi.PyMemoryView_FromMemory
    except AttributeError:  # not CPython
        return _FallbackAS()
    f.restype = ctypes.py_object
    f.argtypes = [c_void_p, ctypes.c_ssize_t, c_int]
    pybuf_read = 0x100
    return f(_AS_BASE, sys.maxsize - _AS_BASE, pybuf_read)


def _load() -> _ffi.Lib:
    global _lib, _get, _get_view, _get_many, _scan, _read_begin, _read_end
    global _AS, _get_bytes, _PYAPI, _CLOSED_X
    lib = _lib
    if lib is not None:
        return lib
    if _ffi.is_free_threaded():
        raise RuntimeError(
            "shoal does not support free-threaded CPython (running without "
            "the GIL) yet: it relies on the GIL to serialise the reads that "
            "threads make on a shared libshoal handle")
    lib = _ffi.load()
    _e.check_library(lib.errname)
    _get = lib.py.shoal_ffi_get
    _get_view = lib.py.shoal_ffi_get_view
    _get_bytes = lib.py.shoal_ffi_get_bytes
    _PYAPI = _ffi.pyapi()
    _get_many = lib.py.shoal_ffi_get_many
    _scan = lib.py.shoal_ffi_scan
    _read_begin = lib.py.shoal_read_begin
    _read_end = lib.py.shoal_read_end
    _AS = _address_space()
    _CLOSED_X = _Bufs(None, 0).xp  # what an ended Reader calls with
    if _PYAPI is None:  # not CPython: the buffer-and-slice paths
        Client.get = Client._get_fallback  # type: ignore[assignment]
    _lib = lib
    return lib


# --------------------------------------------------------------- helpers --


def _key(k: Any) -> bytes:
    """A key as bytes: bytes-like as is, str as UTF-8."""
    if isinstance(k, bytes):
        return k
    if isinstance(k, str):
        return k.encode("utf-8")
    if isinstance(k, (bytearray, memoryview)):
        return bytes(k)
    try:
        return bytes(memoryview(k))
    except TypeError:
        raise TypeError(
            "shoal keys and values are bytes-like or str, not %s"
            % type(k).__name__) from None


_val = _key


def _ttl_ms(ttl: TTL, ttl_ms: Optional[int]) -> int:
    """TTL in milliseconds for libshoal (0: none)."""
    if ttl is not None and ttl_ms is not None:
        raise _err(_EINVAL, "give ttl (seconds) or ttl_ms, not both")
    if ttl_ms is None:
        if ttl is None:
            return 0
        if isinstance(ttl, datetime.timedelta):
            ttl = ttl.total_seconds()
        # round up: a TTL never ends early
        ms = math.ceil(float(ttl) * 1000) if ttl > 0 else 0
    else:
        ms = int(ttl_ms)
    if not 0 < ms <= 0xFFFFFFFF:
        raise _err(_EINVAL, "ttl must be > 0 and at most 2^32-1 ms "
                   "(about 49 days), got %r" % (ttl if ttl_ms is None
                                                 else ttl_ms))
    return ms


def _ms(seconds: Optional[float], what: str, forever: int = -1) -> int:
    """Seconds (None: forever) as libshoal milliseconds."""
    if seconds is None or seconds == math.inf:
        return forever
    if seconds < 0:
        raise _err(_EINVAL, "%s must be >= 0 seconds, got %r"
                   % (what, seconds))
    return min(int(math.ceil(seconds * 1000)), 0x7FFFFFFF)


def _prefix_end(p: bytes) -> Optional[bytes]:
    """The smallest key above every key starting with p (None: none)."""
    p = p.rstrip(b"\xff")
    if not p:
        return None
    return p[:-1] + bytes((p[-1] + 1,))


def _range(prefix: Optional[Key], start: Optional[Key],
           end: Optional[Key]) -> Tuple[bytes, bytes]:
    if prefix is not None:
        if start is not None or end is not None:
            raise _err(_EINVAL, "scan takes prefix, or start/end, not both")
        s = _key(prefix)
        return s, _prefix_end(s) or b""
    return (_key(start) if start is not None else b"",
            _key(end) if end is not None else b"")


def _err(code: int, detail: str = "", key: Optional[bytes] = None,
         **attrs: Any) -> Error:
    lib = _lib
    msg = lib.strerror(code) if lib else _e.error_class(code).__name__
    return _e.make_error(code, msg, detail, key, **attrs)


def _join(keys: Sequence[Any]) -> Tuple[List[bytes], bytes, array]:
    """Keys packed for shoal_ffi_get_many, and their lengths."""
    try:
        packed = b"".join(keys)
        lens = array(_SZ, map(len, keys))
        if sum(lens) == len(packed):
            return keys, packed, lens  # type: ignore[return-value]
    except TypeError:
        pass
    keys = [_key(k) for k in keys]
    return keys, b"".join(keys), array(_SZ, map(len, keys))


# --------------------------------------------------------------- buffers --


class _Bufs:
    """A shoal_ffi_buf and the buffers it points to: the value buffer (an
    anonymous mmap: slicing one gives bytes, cheaply) and the get_many and
    scan output arrays. Used by one thread at a time."""

    __slots__ = ("x", "xp", "raw", "_anchor", "n", "start", "end", "status",
                 "smv", "emv", "stmv", "meta", "mmv", "__weakref__")

    def __init__(self, ptr: Optional[int], cap: int = _BUF_INIT) -> None:
        self.x = _ffi.FfiBuf()
        self.x.c = ptr
        self.x.base = _AS_BASE
        # a byref() object, made once: ctypes passes it as is, where a
        # pointer() instance would get a temporary argument object per call
        self.xp = ctypes.byref(self.x)
        if _PYAPI is not None:
            self.x.bytes, self.x.code = _PYAPI
        self.raw: Any = None
        self._anchor: Any = None
        if cap:
            self.grow(cap)
        self.n = 0
        self.meta: Optional[array] = None

    def grow(self, cap: int) -> None:
        """Make the value buffer at least @cap bytes (a new one)."""
        cap = max(cap, 4096)
        # MAP_PRIVATE: an anonymous mmap is MAP_SHARED by default, and a
        # forked child would then fill its parent's buffer
        raw = mmap.mmap(-1, cap, flags=mmap.MAP_PRIVATE)
        anchor = ctypes.c_char.from_buffer(raw)  # an export: pins raw
        self.raw, self._anchor = raw, anchor
        self.x.buf = ctypes.addressof(anchor)
        self.x.cap = cap

    def arrays(self, n: int) -> None:
        """get_many outputs for at least @n keys."""
        if n <= self.n:
            return
        n = max(n, 2 * self.n, 128)
        self.start = array("Q", bytes(8 * n))
        self.end = array("Q", bytes(8 * n))
        self.status = array("i", bytes(4 * n))
        self.smv = memoryview(self.start)
        self.emv = memoryview(self.end)
        self.stmv = memoryview(self.status)
        self.n = n

    def scan_meta(self) -> memoryview:
        if self.meta is None:
            self.meta = array("Q", bytes(8 * 5 * _SCAN_PAGE))
            self.mmv = memoryview(self.meta)
        return self.mmv


class _Local(threading.local):
    """Per-thread value buffers on the client's read handle."""

    def __init__(self, owner: "weakref.ref[Client]") -> None:
        c = owner()
        b = _Bufs(c._r.ptr if c is not None and c._r is not None else None)
        if c is not None:
            c._tbufs.add(b)
        self.b = b


class _Handle:
    """One libshoal handle (a shoal*), owned by a Client."""

    __slots__ = ("ptr", "pid", "b", "__weakref__")

    def __init__(self, ptr: int, with_bufs: bool) -> None:
        self.ptr = ptr
        self.pid = os.getpid()
        self.b = _Bufs(ptr) if with_bufs else None

    def close(self) -> None:
        """shoal_close, after invalidating the buffers pointing at it. In a
        child after fork this only frees the child's copy (shoal.h)."""
        if self.b is not None:
            self.b.x.c = None
        ptr, self.ptr = self.ptr, 0
        if ptr and _lib is not None:
            # PyDLL (GIL held): no read of another thread can be inside a
            # call on this handle while it goes away
            _lib.py.shoal_close(ptr)


# ----------------------------------------------------------------- fork --

_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Locks held by threads of the parent would stay held forever here.
    for c in list(_clients):
        c._wlock = threading.Lock()
        c._plock = threading.Lock()
        c._slock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- client --


class Client:
    """A connection to a shoal store: reads from shared memory, writes
    through the broker.

    :param name: store name (``None``: whichever store the socket serves).
    :param socket: broker socket path (default ``$SHOAL_SOCKET``, else
        ``RUNDIR/NAME.sock``).
    :param rundir: directory of the socket (default ``$SHOAL_RUNDIR``,
        ``$XDG_RUNTIME_DIR/shoal``, ``/tmp/shoal-UID``).
    :param timeout: seconds to wait for a reply to a write (default 30;
        ``None``: the default; ``math.inf``: forever).
    :param connect_timeout: seconds to connect, and how long a write keeps
        retrying while the broker restarts (default 5).
    :param client_name: shown in the broker's log.
    :raises BrokerUnavailable: no broker is listening (start ``shoald``).
    :raises Denied: the broker does not accept this user.
    :raises LibraryNotFound: libshoal could not be loaded.

    Use it as a context manager (``with shoal.connect() as c:``) or call
    :meth:`close`. It is safe to share between threads and survives fork().
    """

    def __init__(
        self,
        name: Optional[str] = "default",
        socket: Optional[Union[str, "os.PathLike[str]"]] = None,
        rundir: Optional[Union[str, "os.PathLike[str]"]] = None,
        timeout: Optional[float] = None,
        connect_timeout: Optional[float] = None,
        client_name: Optional[str] = None,
    ) -> None:
        _load()
        self._params = (name, socket, rundir, timeout, connect_timeout,
                        client_name)
        self._name = name
        self._opts = _ffi.Options()
        self._opts_keep = []
        for field, v in (("socket", socket), ("rundir", rundir)):
            if v is not None:
                b = os.fsencode(v)
                self._opts_keep.append(b)
                setattr(self._opts, field, b)
        if client_name is None and sys.argv and sys.argv[0]:
            client_name = os.path.basename(sys.argv[0])
        cn = "python:" + client_name if client_name else "python"
        self._cname = cn.encode("utf-8", "replace")[:200]
        self._opts.client = self._cname
        self._opts.timeout_ms = _ms(timeout, "timeout") if timeout else 0
        self._opts.connect_timeout_ms = (
            _ms(connect_timeout, "connect_timeout") or 1
            if connect_timeout is not None else 0)
        self._name_b = name.encode("utf-8") if name is not None else None
        self._wlock = threading.Lock()  # the write handle
        self._plock = threading.Lock()  # the pool
        self._slock = threading.RLock()  # opening, reopening, closing
        self._closed = False
        self._pid = os.getpid()
        self._r: Optional[_Handle] = None
        self._w: Optional[_Handle] = None
        self._pool: List[_Handle] = []
        self._rq: List[_Handle] = []  # idle request handles (no slot)
        self._busy: "weakref.WeakSet[_Handle]" = weakref.WeakSet()
        self._tbufs: "weakref.WeakSet[_Bufs]" = weakref.WeakSet()
        self._r_users = 0  # read blocks and scans sharing the read handle
        self._r = self._open(True)
        try:
            self._w = self._open(False)
        except BaseException:
            self._r.close()
            raise
        # get's parameter block: no buffer (the value goes straight into a
        # new bytes object), so one for all threads will do
        self._ob = _Bufs(self._r.ptr, 0)
        self._tbufs.add(self._ob)
        self._xo = self._ob.xp
        self._tl = _Local(weakref.ref(self))
        _clients.add(self)

    # ----------------------------------------------------- handles --

    def _open(self, slot: bool) -> _Handle:
        lib = _lib
        assert lib is not None
        # a copy per call: threads open pool and request handles at once
        opts = _ffi.Options.from_buffer_copy(self._opts)
        opts.flags = 0 if slot else _ffi.OPEN_NO_SLOT
        out = c_void_p()
        code = lib.c.shoal_open(byref(out), self._name_b, byref(opts))
        if code:
            detail = lib.c.shoal_last_error(None) or b""
            raise _err(code, detail.decode("utf-8", "replace"))
        return _Handle(out.value or 0, slot)

    def _check_fork(self) -> bool:
        """In a child after fork: open our own handles; True if it did."""
        if self._pid == os.getpid():
            return False
        with self._slock:
            if self._pid == os.getpid():
                return True
            # invalidate every buffer first (GIL held), then free the
            # inherited handles (their memory only), then open ours
            old = ([self._r, self._w] + self._pool + self._rq
                   + list(self._busy))
            for b in list(self._tbufs):
                b.x.c = None
            for h in old:
                if h is not None:
                    h.close()
            self._pool = []
            self._rq = []
            self._busy = weakref.WeakSet()
            self._r = self._w = None
            self._r_users = 0
            if self._closed:
                self._pid = os.getpid()
                return True
            r = self._open(True)
            try:
                self._w = self._open(False)
            except BaseException:
                r.close()
                raise
            self._r = r
            for b in list(self._tbufs):
                b.x.c = r.ptr
            self._pid = os.getpid()
            return True

    def _raise_closed(self) -> None:
        raise _err(_CLOSED, "the client is closed")

    def _borrow(self) -> _Handle:
        """A pool handle for this thread's exclusive use."""
        if self._closed:
            self._raise_closed()
        self._check_fork()
        with self._plock:
            h = self._pool.pop() if self._pool else None
        if h is None:
            h = self._open(True)
        self._busy.add(h)
        return h

    def _section(self) -> Tuple[_Handle, _Bufs, bool]:
        """A handle with a read section begun, for a read block or a scan:
        (handle, its buffers, shared). Normally a pool handle. When none is
        idle and none can be opened (the broker is down, or the store has
        no reader slot left), the read handle itself: shared, so the plain
        reads of other threads nest in the section and see its snapshot
        until it ends; a fair price for reads that keep working."""
        try:
            h = self._borrow()
            b, shared = h.b, False
        except (_e.BrokerUnavailable, _e.NoReaders):
            h = self._r  # type: ignore[assignment]
            if h is None or not h.ptr:
                raise
            b, shared = _Bufs(h.ptr), True
            self._tbufs.add(b)
        assert b is not None
        code = _read_begin(h.ptr)
        if code:
            if not shared:
                self._give_back(h)
            raise _err(code)
        if shared:
            with self._plock:
                self._r_users += 1
        return h, b, shared

    def _end_section(self, h: _Handle, shared: bool) -> None:
        if h.ptr:
            _read_end(h.ptr)
        if not shared:
            self._give_back(h)
            return
        if h.pid != os.getpid():
            return  # begun before fork(): the child reopened without it
        with self._plock:
            self._r_users -= 1
            last = self._r_users == 0
        if last and self._closed and h is self._r:
            h.close()  # close() left it open for us: views pointed into it

    def _give_back(self, h: _Handle) -> None:
        self._busy.discard(h)
        if h.ptr == 0:
            return
        if self._closed or h.pid != os.getpid():
            h.close()
            return
        with self._plock:
            if len(self._pool) < _POOL_KEEP:
                self._pool.append(h)
                return
        h.close()

    def close(self) -> None:
        """Close the client's handles (idempotent).

        Read blocks, scans and waits still in progress keep their handle
        until they end. Views from ended read blocks stay invalid."""
        with self._slock:
            if self._closed:
                return
            self._closed = True
            for b in list(self._tbufs):
                b.x.c = None
            # unless blocks sharing it are open: their views point into it
            if self._r is not None and self._r_users == 0:
                self._r.close()
            with self._plock:
                pool, self._pool = self._pool, []
                pool += self._rq
                self._rq = []
            for h in pool:
                h.close()
        with self._wlock:
            if self._w is not None:
                self._w.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def name(self) -> Optional[str]:
        """The store name given to the constructor."""
        return self._name

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __reduce__(self) -> Tuple[Any, ...]:
        # multiprocessing "spawn"/"forkserver": reconnect in the child
        return (Client, self._params)

    def __repr__(self) -> str:
        return "<shoal.Client name=%r%s>" % (
            self._name, " closed" if self._closed else "")

    # ------------------------------------------------------- reads --

    def get(self, key: Key) -> Optional[bytes]:
        """The value of @key (a copy), or ``None`` if it does not exist.

        No system call, no broker round trip; works while the broker is
        down. :raises TooBig: the key is longer than ``shoal.key_max()``.
        """
        if type(key) is not bytes:
            key = _key(key)
        # one call: libshoal copies the value into a new bytes object
        # (PyBytes_FromStringAndSize), or returns the error code as an int
        v = _get_bytes(self._xo, key, len(key))
        if type(v) is not int:
            return v  # type: ignore[no-any-return]
        return self._get_code(key, v)

    def _get_code(self, key: bytes, code: int) -> Optional[bytes]:
        """get's rare outcomes: not found, the first call in a child after
        fork, a closed client, errors."""
        for _ in range(4):
            if code == _NOTFOUND:
                return None
            if code != _FORKED and code != _CLOSED:
                break
            if self._closed:
                self._raise_closed()
            if not self._check_fork():
                with self._slock:  # wait for a reopen in progress
                    pass
            v = _get_bytes(self._xo, key, len(key))
            if type(v) is not int:
                return v  # type: ignore[no-any-return]
            code = v
        raise _err(code, key=key)

    def _get_fallback(self, key: Key) -> Optional[bytes]:
        """get where libshoal can not build Python objects (not CPython):
        copy into this thread's buffer, then slice."""
        if type(key) is not bytes:
            key = _key(key)
        b = self._tl.b
        n = _get(b.xp, key, len(key))
        if n >= 0:
            return b.raw[:n]
        return self._get_slow(key, n, False)  # type: ignore[no-any-return]

    def get_with_version(self, key: Key) -> Optional[Tuple[bytes, int]]:
        """``(value, version)`` of @key, or ``None`` if it does not exist.
        The version is the commit that wrote the value."""
        if type(key) is not bytes:
            key = _key(key)
        b = self._tl.b
        n = _get(b.xp, key, len(key))
        if n >= 0:
            return b.raw[:n], b.x.version
        return self._get_slow(key, n, True)  # type: ignore[return-value]

    def _get_slow(self, key: bytes, n: int, ver: bool) -> Any:
        """get's rare outcomes: not found, a value larger than the buffer,
        the first call in a child after fork, a closed client, errors."""
        for _ in range(8):
            if n == _NOTFOUND:
                return None
            b = self._tl.b
            if n == _TOOBIG and b.x.need:
                need = b.x.need
                if need <= _BUF_KEEP:
                    b.grow(max(need, 2 * b.x.cap))
                else:  # a one-off buffer, on the same handle
                    b = _Bufs(b.x.c, need)
            elif n == _FORKED or n == _CLOSED:
                if self._closed:
                    self._raise_closed()
                if not self._check_fork():
                    with self._slock:  # wait for a reopen in progress
                        pass
                b = self._tl.b
            else:
                raise _err(n, key=key)
            n = _get(b.xp, key, len(key))
            if n >= 0:
                return (b.raw[:n], b.x.version) if ver else b.raw[:n]
        raise _err(n, key=key)

    def __getitem__(self, key: Key) -> bytes:
        """``c[key]``: like :meth:`get`, but raises :class:`NotFound`
        (a KeyError) for a missing key."""
        v = self.get(key)
        if v is None:
            raise _err(_NOTFOUND, key=_key(key))
        return v

    def __contains__(self, key: Key) -> bool:
        return self.get(key) is not None

    def get_many(self, keys: Iterable[Key]) -> List[Optional[bytes]]:
        """The values of @keys (copies; ``None`` for missing ones), all from
        one snapshot, in one call into libshoal (prefetching lookups)."""
        if not isinstance(keys, (list, tuple)):
            keys = list(keys)
        n = len(keys)
        if n == 0:
            return []
        keys, packed, lens = _join(keys)
        la = lens.buffer_info()[0]
        while True:
            b = self._tl.b
            b.arrays(n)
            r = _get_many(b.xp, n, packed, la, b.start.buffer_info()[0],
                          b.end.buffer_info()[0], b.status.buffer_info()[0],
                          0)
            if r >= 0:
                break
            if r == _TOOBIG and b.x.need:
                b.grow(b.x.need)
                continue
            if (r == _FORKED or r == _CLOSED) and not self._closed:
                self._check_fork()
                with self._slock:
                    pass
                continue
            raise _err(r)
        out = list(map(b.raw.__getitem__,
                       map(slice, b.smv[:n], b.emv[:n])))
        if r < n:
            _fill_missing(out, b.stmv[:n], keys)
        return out

    def scan(
        self,
        prefix: Optional[Key] = None,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        limit: Optional[int] = None,
    ) -> Iterator[Tuple[bytes, bytes]]:
        """``(key, value)`` pairs (copies) in key order, from one snapshot.

        Keys starting with @prefix, or in ``[start, end)`` (either may be
        omitted); at most @limit pairs (``None``/0: all). The iterator
        holds a snapshot (and a pooled handle) until it is exhausted or
        closed; close it (or use ``contextlib.closing``) if you stop early.
        """
        s, e = _range(prefix, start, end)
        return self._scan_gen(s, e, limit or 0)

    def _scan_gen(self, s: bytes, e: bytes,
                  limit: int) -> Iterator[Tuple[bytes, bytes]]:
        h, b, shared = self._section()
        try:
            yield from _pages(b, s, e, limit, None)
        finally:
            self._end_section(h, shared)

    def read(self) -> "Reader":
        """A read block: one snapshot, zero-copy views::

            with c.read() as r:
                v = r.get(b"k")        # memoryview into shared memory
                ...                    # valid until the block ends

        Everything read inside sees the store as of one commit. Views
        returned inside the block raise ValueError once it has ended.
        """
        return Reader(self)

    def wait(self, key: Key, after: int = 0,
             timeout: Optional[float] = None) -> Optional[int]:
        """Block until @key's version exceeds @after (0: until it exists;
        a delete counts), or @timeout seconds pass (``None``: forever).

        Returns the key's version (0: deleted; pass it back as @after to
        wait for it to exist again), or ``None`` on timeout. Wakes through
        a futex on the shared mapping: no polling, no socket traffic.
        """
        k = _key(key)
        if timeout is not None:
            _ms(timeout, "timeout")  # checks it
        deadline = None if timeout is None else time.monotonic() + timeout
        ver = c_uint64()
        lib = _lib
        assert lib is not None
        while True:
            try:
                h = self._borrow()
            except _e.BrokerUnavailable:
                # no idle handle and none can be opened while the broker is
                # away; nothing can change before it is back either
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return None
                time.sleep(min(0.1, left))
                continue
            try:
                while True:
                    if deadline is None:
                        ms = -1
                    else:
                        ms = _ms(max(0.0, deadline - time.monotonic()),
                                 "timeout")
                    code = lib.c.shoal_wait(h.ptr, k, len(k), after, ms,
                                            byref(ver))
                    if code == 0:
                        return ver.value
                    if code == _TIMEOUT:
                        if ms == 0x7FFFFFFF:
                            continue  # a very long timeout, in slices
                        return None
                    if code == _EINTR:
                        continue  # Python runs signal handlers meanwhile
                    break
            finally:
                self._give_back(h)
            if code == _FORKED and self._check_fork():
                continue
            raise _err(code, key=k)

    # ------------------------------------------------------ writes --

    def _call(self, fn: Any, *args: Any, key: Optional[bytes] = None,
              conflict: Optional[c_uint64] = None) -> None:
        """fn(write handle, *args) under the write lock; raise on error."""
        while True:
            with self._wlock:
                w = self._w
                if self._closed or w is None or not w.ptr:
                    code = _CLOSED if self._closed else _FORKED
                    detail = ""
                else:
                    code = fn(w.ptr, *args)
                    if not code:
                        return
                    detail = _lib.c.shoal_last_error(w.ptr) or b""
                    detail = detail.decode("utf-8", "replace")
            if code == _FORKED and self._check_fork():
                continue
            if code == _CLOSED and self._closed:
                self._raise_closed()
            attrs = {}
            if conflict is not None and code == _e.Conflict.code:
                attrs["current_version"] = conflict.value
            raise _err(code, detail, key, **attrs)

    def put(self, key: Key, value: Value, ttl: TTL = None, *,
            ttl_ms: Optional[int] = None) -> int:
        """Store @value under @key; return the commit's version.

        :param ttl: time to live in seconds (float or timedelta), or
            ``ttl_ms`` in milliseconds; the key then expires (reads stop
            seeing it at once, the broker frees it soon after).
        :raises TooBig: key or value over the limits.
        :raises NoSpace: the store is full.
        :raises BrokerUnavailable: no broker (retried for connect_timeout
            first); the write may or may not have been applied if the
            broker went away after receiving it.
        """
        k = _key(key)
        v = _val(value)
        ms = _ttl_ms(ttl, ttl_ms)
        ver = c_uint64()
        lib = _lib
        assert lib is not None
        if ms:
            self._call(lib.c.shoal_put_ttl, k, len(k), v, len(v), ms,
                       byref(ver), key=k)
        else:
            self._call(lib.c.shoal_put, k, len(k), v, len(v), byref(ver),
                       key=k)
        return ver.value

    def __setitem__(self, key: Key, value: Value) -> None:
        self.put(key, value)

    def delete(self, key: Key) -> bool:
        """Delete @key; ``False`` if it did not exist."""
        k = _key(key)
        try:
            self._call(_lib.c.shoal_del, k, len(k), key=k)
        except _e.NotFound:
            return False
        return True

    def __delitem__(self, key: Key) -> None:
        if not self.delete(key):
            raise _err(_NOTFOUND, key=_key(key))

    def cas(self, key: Key, version: int, value: Value) -> int:
        """Store @value if @key's version is @version (0: if it does not
        exist); return the new version.

        :raises Conflict: the version differs; ``.current_version`` holds
            the key's version now (0: absent).
        """
        k = _key(key)
        v = _val(value)
        ver = c_uint64()
        self._call(_lib.c.shoal_cas, k, len(k), version, v, len(v),
                   byref(ver), key=k, conflict=ver)
        return ver.value

    def batch(self) -> "Batch":
        """An atomic batch::

            with c.batch() as b:
                b.put(b"a", b"1")
                b.delete(b"b")
            b.version    # the commit, once the block has exited

        Committed when the block exits normally (all operations in one
        commit, or none), discarded if it exits with an exception.
        """
        return Batch(self)

    def ping(self) -> None:
        """A round trip to the broker; raises if it is not reachable."""
        self._call(_lib.c.shoal_ping)

    def stats(self) -> Dict[str, Any]:
        """The broker's statistics (``shoal stats``): keys, bytes, commits,
        readers, connections, ...; ``requests`` and ``errors`` are dicts of
        counters by request type and error name."""
        st = _ffi.Stats()
        self._call(_lib.c.shoal_stats_get, byref(st))
        d: Dict[str, Any] = {f: getattr(st, f) for f in _ffi.STAT_FIELDS}
        d["broker_pid"] = st.broker_pid
        for f in ("requests", "errors"):
            raw = (getattr(st, f) or b"").decode("utf-8", "replace")
            pairs = (p.partition("=") for p in raw.split())
            d[f] = {k: int(v) for k, _, v in pairs if v.isdigit()}
        return d

    # ------------------------------------------------------- files --

    def _rq_borrow(self) -> _Handle:
        """A request handle (no reader slot) for this call only."""
        if self._closed:
            self._raise_closed()
        self._check_fork()
        with self._plock:
            h = self._rq.pop() if self._rq else None
        return h if h is not None else self._open(False)

    def _rq_give_back(self, h: _Handle) -> None:
        if h.ptr == 0:
            return
        if self._closed or h.pid != os.getpid():
            h.close()
            return
        with self._plock:
            if len(self._rq) < _POOL_KEEP:
                self._rq.append(h)
                return
        h.close()

    def _request(self, fn: Any, *args: Any) -> int:
        """fn(request handle, *args); its result if >= 0, else raise."""
        while True:
            h = self._rq_borrow()
            try:
                code = fn(h.ptr, *args)
                if code >= 0:
                    return int(code)
                detail = (_lib.c.shoal_last_error(h.ptr) or b"").decode(
                    "utf-8", "replace")
            finally:
                self._rq_give_back(h)
            if code == _FORKED and self._check_fork():
                continue
            raise _err(code, detail)

    def hash_file(self, path: Union[str, bytes, "os.PathLike[Any]"],
                  alg: str = "blake2b",
                  digest_size: Optional[int] = None) -> str:
        """The hex digest of the whole file at @path, computed by the broker.

        The file is opened here (``O_RDONLY``, as this process may) and its
        descriptor passed to the broker, which hashes it on its worker pool
        and keeps the digest in a cache shared by every client on the host,
        keyed by the file's identity, size, mtime and ctime: hashing an
        unchanged file again costs a round trip, not a read.

        :param alg: ``"blake2b"``, ``"sha256"`` or ``"sha512"``.
        :param digest_size: digest length in bytes; ``None``: the
            algorithm's default *as libshoal defines it* (blake2b: 32 bytes,
            as ``shoal hash`` prints; pass 64 to match ``hashlib.blake2b()``
            and ``b2sum``). blake2b takes 16..64, the others only their own.
        :raises InvalidArgument: an unknown algorithm or digest size.
        :raises NotRegularFile: @path is a directory, FIFO, socket or device.
        :raises FileChanged: the file kept changing while it was read.
        :raises OSError: the file can not be opened (``FileNotFoundError``,
            ``PermissionError``...), or a read failed (:class:`OSFailure`).
        :raises BrokerUnavailable: no broker (see :mod:`shoal.utils` for a
            hash that falls back to local hashing).
        """
        lib = _lib
        assert lib is not None
        lib.need("shoal_hash_fd")
        a = _alg(alg)
        size = 0
        if digest_size is not None:
            size = int(digest_size)
            if size <= 0:
                raise _err(_EINVAL, "digest_size must be > 0, got %r"
                           % (digest_size,))
        buf = ctypes.create_string_buffer(_ffi.HASH_MAX)
        fd = _open_ro(path)
        try:
            n = self._request(lib.c.shoal_hash_fd, fd, a, size, buf,
                              _ffi.HASH_MAX)
        finally:
            os.close(fd)
        return buf.raw[:n].hex()

    def tail(self, path: Union[str, bytes, "os.PathLike[Any]"],
             n: int = 100, encoding: str = "utf-8",
             errors: str = "replace") -> List[str]:
        """The last @n lines of the file at @path, read from its end by the
        broker (the cost does not grow with the file's size).

        Lines are decoded as ``shoal.utils.read_last_n_lines`` (SkyPilot's)
        decodes them: each is decoded with @encoding/@errors and
        ``rstrip('\\r')``-ed; every line but the last gets ``'\\n'`` back;
        the last has none (whether or not the file ends with one). So
        ``b"a\\nb\\n"``, n=2 -> ``['a\\n', 'b']``; an empty file -> ``[]``.

        :raises InvalidArgument: @n < 0.
        :raises TooBig: the lines do not fit in one reply (the broker's
            ``--max-frame``): ask for fewer.
        :raises NotRegularFile, OSError, BrokerUnavailable: as
            :meth:`hash_file`.
        """
        lib = _lib
        assert lib is not None
        lib.need("shoal_tail_fd", "shoal_lines_free")
        n = _count(n, "n")
        out = ctypes.POINTER(_ffi.Lines)()
        fd = _open_ro(path)
        try:
            self._request(lib.c.shoal_tail_fd, fd, n, byref(out))
        finally:
            os.close(fd)
        try:
            return decode_lines(out, encoding, errors)
        finally:
            lib.c.shoal_lines_free(out)

    def follow(self, path: Union[str, bytes, "os.PathLike[Any]"],
               n: int = 10, *, reopen: bool = True,
               encoding: str = "utf-8", errors: str = "replace",
               timeout: Optional[float] = None) -> "Follower":
        """Follow the file at @path as ``tail -F`` does: its last @n lines,
        then every line appended, as they are written (the broker watches
        the file with inotify: no polling)::

            with c.follow("/var/log/app.log", n=0, timeout=60) as f:
                for item in f:
                    if isinstance(item, shoal.FollowEvent):
                        print("--", item.kind, "at", item.offset)
                    else:
                        print(item, end="")     # a str ending in "\\n"

        The iterator yields ``str`` lines *with* their ``'\\n'`` (as
        iterating over a file does; decoded with @encoding/@errors, a
        ``'\\r'`` before the ``'\\n'`` removed as :meth:`tail` does), and a
        :class:`FollowEvent` when the file is truncated (``'truncated'``,
        offset: its new size; following goes on from its start) or rotated
        (``'rotated'``: renamed or unlinked; with @reopen the new file at
        @path is followed from its start, otherwise the old one). A line is
        delivered once its ``'\\n'`` is written.

        :param timeout: iteration stops after that many seconds without a
            line or event (``None``: never). Iterating again waits anew.
        :returns: a :class:`Follower` (its own broker connection; this
            client stays usable, and may even be closed first). Close it,
            or use it as a context manager.
        """
        lib = _lib
        assert lib is not None
        lib.need("shoal_follow_open", "shoal_follow_next",
                 "shoal_follow_close")
        n = _count(n, "n")
        if timeout is not None:
            _ms(timeout, "timeout")  # checks it
        # libshoal opens @path itself (again at each rotation); opening it
        # here first gives Python's own exceptions (FileNotFoundError,
        # PermissionError), as hash_file and tail do
        os.close(_open_ro(path))
        p = os.fsencode(path)
        out = c_void_p()
        self._request(lib.c.shoal_follow_open, p, n,
                      _ffi.FOLLOW_REOPEN if reopen else 0, byref(out))
        return Follower(out.value or 0, os.fsdecode(path), encoding, errors,
                        timeout)


# ----------------------------------------------------------------- files --


def _alg(alg: Optional[str]) -> bytes:
    if alg is None:
        return b""
    if not isinstance(alg, str):
        raise TypeError("alg must be a str, not %s" % type(alg).__name__)
    try:
        return alg.encode("ascii")
    except UnicodeEncodeError:
        raise _err(_EINVAL, "unknown hash algorithm %r" % alg) from None


def _count(n: Any, what: str) -> int:
    if not isinstance(n, int):
        raise TypeError("%s must be an int, not %s" % (what,
                                                       type(n).__name__))
    if n < 0:
        raise _err(_EINVAL, "%s must be >= 0, got %d" % (what, n))
    return min(n, 1 << 62)


def _open_ro(path: Any) -> int:
    """@path opened for the broker: read-only, close-on-exec, and
    non-blocking so that a FIFO is refused (NotRegularFile) instead of
    hanging until a writer comes (no effect on a regular file's reads)."""
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)


def lines_blob(p: Any) -> Tuple[bytes, List[int]]:
    """A ``shoal_lines *`` (non-NULL) as (blob, lengths): every line of it
    followed by a NUL, in file order, in one bytes object.

    libshoal packs them that way in its one allocation (shoal.h: "One
    allocation"; libclient/util.c and fileops.c, the line after its
    predecessor's NUL): one copy instead of a ctypes call per line. The
    layout is checked, and a different one is copied line by line."""
    lines = p.contents
    n = lines.n
    if n == 0:
        return b"", []
    lens = (ctypes.c_size_t * n).from_address(
        ctypes.cast(lines.len, c_void_p).value or 0)[:]
    first, last = lines.line[0], lines.line[n - 1]
    total = sum(lens) + n
    if first and last and last - first == total - lens[-1] - 1:
        return ctypes.string_at(first, total), lens
    line = lines.line
    return b"".join(ctypes.string_at(line[i], lens[i]) + b"\0"
                    for i in range(n)), lens


def lines_bytes(p: Any) -> List[bytes]:
    """A ``shoal_lines *`` (non-NULL) as a list of bytes, in file order."""
    blob, lens = lines_blob(p)
    ends = list(itertools.accumulate(map((1).__add__, lens)))
    starts = [0] + ends[:-1]
    return list(map(blob.__getitem__,
                    map(slice, starts, map(int.__add__, starts, lens))))


# Encodings and error handlers for which decoding the lines joined by NULs
# and splitting the text at the NULs gives exactly the per-line decoding:
# each byte of a NUL is a character of its own in these codecs, so no
# sequence spans two lines, and these handlers treat a sequence cut short by
# the NUL as they treat one cut short by the end of the line. ('strict' is
# left out: its message counts positions from the start of the line.)
_JOINED_CODECS = frozenset(("utf-8", "ascii", "iso8859-1"))
_JOINED_ERRORS = frozenset(("replace", "ignore", "backslashreplace",
                            "surrogateescape"))


def decode_tail(raw: List[bytes], encoding: str = "utf-8",
                errors: str = "replace") -> List[str]:
    """SkyPilot's read_last_n_lines decoding of raw lines (no '\n'):
    each decoded and rstrip('\r')-ed, '\n' after all but the last."""
    if not raw:
        return []
    out = [line.decode(encoding, errors=errors).rstrip("\r") + "\n"
           for line in raw[:-1]]
    out.append(raw[-1].decode(encoding, errors=errors).rstrip("\r"))
    return out


def decode_lines(p: Any, encoding: str = "utf-8",
                 errors: str = "replace") -> List[str]:
    """decode_tail() of the lines of a ``shoal_lines *`` (non-NULL), in one
    decode when that is exactly equivalent (see _JOINED_CODECS)."""
    blob, lens = lines_blob(p)
    n = len(lens)
    if not n:
        return []
    parts: List[str] = []
    if errors in _JOINED_ERRORS:
        try:
            joined = codecs.lookup(encoding).name in _JOINED_CODECS
        except LookupError:
            joined = False  # decode() below raises what upstream raises
        if joined:
            # a NUL in the text comes from a NUL byte and nothing else: n
            # of them are the separators exactly when no line holds one
            parts = blob[:-1].decode(encoding, errors=errors).split("\0")
    if len(parts) != n:
        return decode_tail(lines_bytes(p), encoding, errors)
    if b"\r" in blob:
        parts = list(map(str.rstrip, parts, itertools.repeat("\r")))
    last = parts.pop()
    out = list(map(str.__add__, parts, itertools.repeat("\n")))
    out.append(last)
    return out


class FollowEvent(collections.namedtuple("FollowEvent", "kind offset path")):
    """Something that happened to a followed file (:meth:`Client.follow`).

    ``kind``: ``'truncated'`` (the file shrank below what was read;
    ``offset`` is its new size and following goes on from its start) or
    ``'rotated'`` (it was renamed or unlinked; with ``reopen`` the new file
    at ``path`` is followed from its start). ``path``: the followed path.
    """

    __slots__ = ()


_FOLLOW_KINDS = {_ffi.FOLLOW_TRUNCATED: "truncated",
                 _ffi.FOLLOW_ROTATED: "rotated"}
# Longest single wait in libshoal: Python runs signal handlers (Ctrl-C)
# only between calls, so a wait forever is made of slices this long.
_FOLLOW_SLICE_MS = 100


class Follower:
    """An open follow (:meth:`Client.follow`): an iterator of ``str`` lines
    (with their ``'\\n'``) and :class:`FollowEvent` items.

    ``next()`` waits in slices of 100 ms, so Ctrl-C (KeyboardInterrupt)
    interrupts it promptly; with a ``timeout`` it stops (StopIteration)
    after that many seconds without anything to yield. Once closed, or
    once the follow ended on an error (raised once: BrokerUnavailable
    means lines may have been missed; open a new follower), iteration
    stops. A Follower belongs to the process that opened it: after fork()
    the child gets :class:`shoal.Forked` and must open its own.

    ``fileno()`` is its connection's descriptor, for selectors (drain the
    buffered lines first: see :meth:`fileno`).
    """

    def __init__(self, ptr: int, path: str, encoding: str, errors: str,
                 timeout: Optional[float]) -> None:
        self._f = ptr
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._ev = _ffi.FollowEvent()
        self._evp = byref(self._ev)
        self.path = path
        self.encoding = encoding
        self.errors = errors
        self.timeout = timeout

    def __iter__(self) -> "Follower":
        return self

    def __next__(self) -> Union[str, FollowEvent]:
        lib = _lib
        assert lib is not None
        nxt = lib.c.shoal_follow_next
        timeout = self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        ev = self._ev
        first = True
        while True:
            ms = _FOLLOW_SLICE_MS
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 and not first:
                    raise StopIteration
                # timeout=0: one call that takes only what is there
                ms = min(ms, max(0, int(math.ceil(left * 1000))))
            first = False
            # the lock per slice, not per next(): close() from another
            # thread gets in within one slice
            with self._lock:
                if not self._f:
                    raise StopIteration
                if self._pid != os.getpid():
                    raise _err(_FORKED, "a follower does not survive "
                               "fork(); open a new one in the child")
                code = nxt(self._f, ms, self._evp)
                if code == 0:
                    kind = ev.kind
                    if kind == _ffi.FOLLOW_LINE:
                        # ev.data is valid until the next call: copy now
                        raw = ctypes.string_at(ev.data, ev.len)
                        return raw.decode(self.encoding,
                                          errors=self.errors).rstrip(
                                              "\r") + "\n"
                    name = _FOLLOW_KINDS.get(kind)
                    if name is not None:
                        return FollowEvent(name, int(ev.offset), self.path)
                    continue  # SHOAL_FOLLOW_IDLE, or a kind not known yet
                if code != _TIMEOUT and code != _EINTR:
                    self._close_locked()
                    raise _err(code, "following %s" % self.path)
            # _TIMEOUT/_EINTR: Python runs signal handlers (Ctrl-C) here

    def fileno(self) -> int:
        """The follower's connection (``shoal_follow_fd``), for selectors.

        It polls readable when the broker has sent something, but lines
        that already arrived (a reply carries several; the first one the
        initial @n lines) are buffered and do not make it readable: drain
        them before waiting on it, e.g. with ``timeout = 0`` (iteration
        then stops as soon as nothing is buffered)."""
        with self._lock:
            if not self._f:
                raise _err(_CLOSED, "the follower is closed")
            return int(_lib.c.shoal_follow_fd(self._f))  # type: ignore

    def _close_locked(self) -> None:
        f, self._f = self._f, 0
        if f and _lib is not None and self._pid == os.getpid():
            # in a child after fork the connection is the parent's: leave
            # it alone (a few bytes leak there, the parent's follow lives)
            _lib.c.shoal_follow_close(f)

    def close(self) -> None:
        """Stop following (idempotent). A ``next()`` blocked in another
        thread returns within its 100 ms slice, then stops."""
        with self._lock:
            self._close_locked()

    @property
    def closed(self) -> bool:
        return not self._f

    def __enter__(self) -> "Follower":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return "<shoal.Follower %r%s>" % (self.path,
                                          " closed" if not self._f else "")


def _fill_missing(out: List[Any], st: memoryview, keys: Sequence[Any]) -> None:
    """None for missing keys; raise for any other per-key error."""
    for i in compress(range(len(st)), st):
        code = st[i]
        if code != _NOTFOUND:
            raise _err(code, key=_key(keys[i]))
        out[i] = None


def _pages(b: _Bufs, s: bytes, e: bytes, limit: int,
           views: Optional[List[memoryview]]) -> Iterator[Tuple[bytes, Any]]:
    """Scan [s, e) page by page inside the caller's section."""
    mv = b.scan_meta()
    more = c_int()
    left = limit
    addr = b.meta.buffer_info()[0]  # type: ignore[union-attr]
    while True:
        want = _SCAN_PAGE if not left else min(left, _SCAN_PAGE)
        n = _scan(b.xp, s, len(s), e, len(e), want, addr,
                  1 if views is not None else 0, byref(more))
        if n < 0:
            if n == _TOOBIG and b.x.need:
                b.grow(b.x.need)
                continue
            if n == _CLOSED:
                raise _err(n, "the client or the read block was closed")
            raise _err(n)
        if n == 0:
            return
        raw = b.raw
        m = mv[:5 * n]
        keys = list(map(raw.__getitem__, map(slice, m[0::5], m[1::5])))
        if views is None:
            vals: List[Any] = list(map(raw.__getitem__,
                                       map(slice, m[2::5], m[3::5])))
        else:
            vals = list(map(_AS.__getitem__, map(slice, m[2::5], m[3::5])))
            views.extend(vals)
        yield from zip(keys, vals)
        if left:
            left -= n
            if left <= 0:
                return
        if not more.value:
            return
        s = keys[-1] + b"\x00"


# ---------------------------------------------------------------- reader --


class Reader:
    """A read block (:meth:`Client.read`): one snapshot of the store and
    zero-copy reads from it.

    Values are read-only ``memoryview`` objects pointing into the shared
    mapping, valid until the block ends; after that, using one raises
    ``ValueError`` (they are released). Copy what you keep (``bytes(v)``).
    Views derived from them (slices, ``memoryview(v)``, numpy arrays) are
    not tracked: do not keep them past the block either.

    The snapshot holds back the reclamation of memory the broker freed
    since: keep blocks short. A Reader belongs to the thread that opened it.
    """

    __slots__ = ("_client", "_h", "_xp", "_x", "_b", "_views", "_active",
                 "_shared")

    def __init__(self, client: Client) -> None:
        self._active = False
        self._views: List[memoryview] = []
        self._xp: Any = None
        self._client = client
        h, b, shared = client._section()
        self._h, self._b, self._shared = h, b, shared
        self._x = b.x
        self._xp = b.xp
        self._active = True

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """End the block: release every view, unpin the snapshot."""
        if not self._active:
            return
        self._active = False
        self._xp = _CLOSED_X  # calls now answer SHOAL_ECLOSED
        busy = 0
        for v in self._views:
            if v is not None:
                try:
                    v.release()
                except BufferError:
                    busy += 1
        self._views = []
        self._client._end_section(self._h, self._shared)
        if busy:
            warnings.warn(
                "%d view(s) from a shoal read block were still exported "
                "(e.g. to numpy) when it ended; they keep pointing into the "
                "shared mapping, whose contents may change" % busy,
                RuntimeWarning, stacklevel=3)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def get(self, key: Key) -> Optional[memoryview]:
        """A zero-copy view of @key's value, or ``None`` if it does not
        exist. Valid until the block ends."""
        if type(key) is not bytes:
            key = _key(key)
        n = _get_view(self._xp, key, len(key))
        if n >= 0:
            # a slice of the one view over all memory: cheaper than a new
            # view per value (PyMemoryView_FromMemory makes two objects)
            a = self._x.at
            v = _AS[a:a + n]
            self._views.append(v)
            return v
        return self._miss(key, n)

    def get_with_version(self, key: Key) -> Optional[Tuple[memoryview, int]]:
        """``(view, version)`` of @key, or ``None`` if it does not exist."""
        v = self.get(key)
        if v is None:
            return None
        return v, self._x.version

    def _miss(self, key: bytes, n: int) -> None:
        if n == _NOTFOUND:
            return None
        if not self._active:
            raise _err(_CLOSED, "the read block has ended")
        if n == _CLOSED and self._h.pid == os.getpid():
            raise _err(n, "the client was closed")
        if n == _FORKED or n == _CLOSED:
            raise _err(n, "this read block was opened before fork(); open "
                       "a new one in the child")
        raise _err(n, key=key)

    def __getitem__(self, key: Key) -> memoryview:
        v = self.get(key)
        if v is None:
            raise _err(_NOTFOUND, key=_key(key))
        return v

    def __contains__(self, key: Key) -> bool:
        return self.get(key) is not None

    def get_many(self, keys: Iterable[Key]) -> List[Optional[memoryview]]:
        """Zero-copy views of @keys' values (``None`` for missing ones)."""
        if not self._active:
            raise _err(_CLOSED, "the read block has ended")
        if not isinstance(keys, (list, tuple)):
            keys = list(keys)
        n = len(keys)
        if n == 0:
            return []
        keys, packed, lens = _join(keys)
        b = self._b
        b.arrays(n)
        r = _get_many(b.xp, n, packed, lens.buffer_info()[0],
                      b.start.buffer_info()[0], b.end.buffer_info()[0],
                      b.status.buffer_info()[0], 1)
        if r < 0:
            self._miss(b"", r)
        out: List[Any] = list(map(_AS.__getitem__,
                                  map(slice, b.smv[:n], b.emv[:n])))
        self._views.extend(out)
        if r < n:
            _fill_missing(out, b.stmv[:n], keys)
        return out

    def scan(
        self,
        prefix: Optional[Key] = None,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        limit: Optional[int] = None,
    ) -> Iterator[Tuple[bytes, memoryview]]:
        """``(key, view)`` pairs in key order from the block's snapshot
        (keys are bytes, values zero-copy views); see :meth:`Client.scan`.
        """
        if not self._active:
            raise _err(_CLOSED, "the read block has ended")
        s, e = _range(prefix, start, end)
        return _pages(self._b, s, e, limit or 0, self._views)

    @property
    def active(self) -> bool:
        """True until the block ends."""
        return self._active


# ----------------------------------------------------------------- batch --


class Batch:
    """Operations committed atomically (:meth:`Client.batch`).

    Each method checks its sizes at once (``TooBig``). :meth:`commit` (or
    leaving the ``with`` block normally) applies them all in one commit,
    visible to readers all at once; on failure none is applied and the
    exception's ``index`` names the failing operation (``None``: a
    transport error). ``version`` holds the commit's version afterwards.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._b: Optional[int] = None
        self._n = 0
        self.version: Optional[int] = None
        out = c_void_p()
        lib = _lib
        assert lib is not None
        # the write handle gives the broker's limits; nothing is sent
        while True:
            with client._wlock:
                w = client._w
                if client._closed:
                    client._raise_closed()
                code = lib.c.shoal_batch_new(w.ptr if w else None, byref(out))
            if code == _FORKED and client._check_fork():
                continue
            if code:
                raise _err(code)
            break
        self._b = out.value

    def _add(self, code: int, key: bytes) -> "Batch":
        if code:
            raise _err(code, "operation %d of the batch" % self._n, key)
        self._n += 1
        return self

    def _live(self) -> int:
        if self._b is None:
            raise _err(_CLOSED, "the batch was committed or discarded")
        return self._b

    def put(self, key: Key, value: Value, ttl: TTL = None, *,
            ttl_ms: Optional[int] = None) -> "Batch":
        """Add a put (with an optional TTL, as :meth:`Client.put`)."""
        k, v = _key(key), _val(value)
        ms = _ttl_ms(ttl, ttl_ms)
        return self._add(_lib.c.shoal_batch_put(self._live(), k, len(k), v,
                                                len(v), ms), k)

    def delete(self, key: Key) -> "Batch":
        """Add a delete; if the key is absent the whole batch fails
        (:class:`NotFound`). See :meth:`delete_any`."""
        k = _key(key)
        return self._add(_lib.c.shoal_batch_del(self._live(), k, len(k)), k)

    def delete_any(self, key: Key) -> "Batch":
        """Add a delete that is fine with an absent key."""
        k = _key(key)
        return self._add(_lib.c.shoal_batch_del_any(self._live(), k, len(k)),
                         k)

    def cas(self, key: Key, version: int, value: Value) -> "Batch":
        """Add a compare-and-swap (version 0: the key must not exist); a
        mismatch fails the whole batch (:class:`Conflict`)."""
        k, v = _key(key), _val(value)
        return self._add(_lib.c.shoal_batch_cas(self._live(), k, len(k),
                                                version, v, len(v)), k)

    def __len__(self) -> int:
        return self._n

    def commit(self) -> int:
        """Apply every operation in one commit; return its version. The
        batch is finished afterwards, whether it succeeded or not."""
        b = self._live()
        c = self._client
        seq = c_uint64()
        lib = _lib
        try:
            while True:
                with c._wlock:
                    w = c._w
                    if c._closed or w is None or not w.ptr:
                        code = _CLOSED if c._closed else _FORKED
                        detail, idx = "", -1
                    else:
                        code = lib.c.shoal_batch_commit(w.ptr, b, byref(seq))
                        idx = lib.c.shoal_batch_failed(b)
                        detail = (lib.c.shoal_last_error(w.ptr) or b"").decode(
                            "utf-8", "replace")
                if code == _FORKED and c._check_fork():
                    continue
                break
            if code:
                attrs: Dict[str, Any] = {"index": idx if idx >= 0 else None}
                if code == _e.Conflict.code:
                    attrs["current_version"] = None
                if idx >= 0 and not detail:
                    detail = "operation %d of the batch" % idx
                raise _err(code, detail, **attrs)
            self.version = seq.value
            return seq.value
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the operations without applying them."""
        b, self._b = self._b, None
        if b is not None and _lib is not None:
            _lib.c.shoal_batch_free(b)

    def __enter__(self) -> "Batch":
        self._live()
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if et is None:
            self.commit()
        else:
            self.discard()

    def __del__(self) -> None:
        try:
            self.discard()
        except Exception:
            pass


def connect(
    name: Optional[str] = "default",
    socket: Optional[Union[str, "os.PathLike[str]"]] = None,
    rundir: Optional[Union[str, "os.PathLike[str]"]] = None,
    timeout: Optional[float] = None,
    **kwargs: Any,
) -> Client:
    """Connect to the broker of store @name: ``shoal.Client(...)``."""
    return Client(name, socket, rundir, timeout, **kwargs)
