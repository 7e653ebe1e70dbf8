"""shoal: a shared-memory key-value store (Python client).

Reads come straight from shared memory (no system call, no broker round
trip, zero-copy inside a read block); writes go through the broker,
``shoald``. A thin layer over libshoal with ctypes::

    import shoal

    with shoal.connect("default") as c:
        v = c.put(b"k", b"v", ttl=60)      # version of the commit
        c.get(b"k")                        # b"v" (a copy), None if absent
        with c.read() as r:                # one snapshot
            view = r.get(b"k")             # memoryview into shared memory
        with c.batch() as b:               # atomic
            b.put(b"a", b"1"); b.delete(b"k")
        c.wait(b"k", after=v, timeout=1.0)
        c.hash_file("big.bin")              # hex digest, cached by the broker
        c.tail("app.log", n=100)            # last lines, read from the end
        for line in c.follow("app.log"):    # tail -F (str lines, FollowEvent)
            ...

Keys and values are bytes-like (``str`` is encoded as UTF-8). Errors are
:class:`shoal.Error` subclasses (:mod:`shoal.errors`), e.g.
:class:`shoal.NotFound` (a ``KeyError``) or :class:`shoal.Conflict`.

libshoal is looked for at ``$SHOAL_LIB``, next to this package, then on the
system loader path (see :mod:`shoal._ffi`); ``import shoal`` itself works
without it.
"""

from __future__ import annotations


from ._ffi import LibraryNotFound
from .client import Batch, Client, Follower, FollowEvent, Reader, connect
from .errors import (
    Error,
    NotFound,
    Conflict,
    NoSpace,
    TooBig,
    Corrupt,
    VersionMismatch,
    Closed,
    Forked,
    Protocol,
    Denied,
    Timeout,
    InvalidArgument,
    Locked,
    NoReaders,
    NoSection,
    Busy,
    BrokerUnavailable,
    NotRegularFile,
    FileChanged,
    OSFailure,
)

__version__ = "0.1.0"

__all__ = [
    "connect", "Client", "Reader", "Batch", "Follower", "FollowEvent",
    "key_max", "value_max", "library_version", "library_path",
    "native_available", "LibraryNotFound",
    "Error", "NotFound", "Conflict", "NoSpace", "TooBig", "Corrupt",
    "VersionMismatch", "Closed", "Forked", "Protocol", "Denied", "Timeout",
    "InvalidArgument", "Locked", "NoReaders", "NoSection", "Busy",
    "BrokerUnavailable", "NotRegularFile", "FileChanged", "OSFailure",
]


def _lib():  # type: ignore[no-untyped-def]
    from .client import _load
    return _load()


def key_max() -> int:
    """The longest key, in bytes (``shoal_key_max()``)."""
    return int(_lib().c.shoal_key_max())


def value_max() -> int:
    """The largest value the format allows (a broker may allow less)."""
    return int(_lib().c.shoal_value_max(None))


def library_version() -> str:
    """libshoal's version, e.g. ``"0.1.0"``."""
    return _lib().c.shoal_version().decode()


def library_path() -> str:
    """The path libshoal was loaded from."""
    return _lib().path


def native_available() -> bool:
    """True if libshoal can be loaded (else shoal.connect raises
    :class:`LibraryNotFound`)."""
    try:
        _lib()
    except LibraryNotFound:
        return False
    return True
