"""shoal's exceptions: one class per ``SHOAL_E*`` code (DESIGN.md section 7).

Every error is a :class:`shoal.Error` carrying ``code`` (the negative C
code), ``name`` (``shoal_errname``: ``"ENOTFOUND"``, ``"ENOMEM"``, ...) and
``detail`` (``shoal_last_error``: the broker's message, the path that could
not be opened). Classes also subclass the builtin they resemble, so code
that knows nothing of shoal still catches them sensibly::

    NotFound(Error, KeyError)            TooBig(Error, ValueError)
    InvalidArgument(Error, ValueError)   Closed(Error, ValueError)
    BrokerUnavailable(Error, ConnectionError)
    Denied(Error, PermissionError)       Timeout(Error, TimeoutError)
    NotRegularFile(Error, OSError)       FileChanged(Error, OSError)

System failures (``-errno`` codes) are :class:`OSFailure` (an
:class:`OSError` with ``errno`` set). The table below mirrors the X-macro of
``shoal/error.h``; :func:`check_library` compares it with the loaded
library, and a code the library knows but this table does not gets a class
made on the fly (a subclass of :class:`Error` named after it).
"""

from __future__ import annotations

import errno as _errno
from typing import Any, Callable, Dict, Optional, Tuple, Type

__all__ = [
    "Error",
    "NotFound",
    "Conflict",
    "NoSpace",
    "TooBig",
    "Corrupt",
    "VersionMismatch",
    "Closed",
    "Forked",
    "Protocol",
    "Denied",
    "Timeout",
    "InvalidArgument",
    "Locked",
    "NoReaders",
    "NoSection",
    "Busy",
    "BrokerUnavailable",
    "NotRegularFile",
    "FileChanged",
    "OSFailure",
    "BASE",
    "CODES",
    "error_class",
    "make_error",
]

#: SHOAL__EBASE: shoal's own codes are BASE - 1, BASE - 2, ...
BASE = -30000


class Error(Exception):
    """Base class of every shoal error.

    Attributes: ``code`` (negative int, as libshoal returns it), ``name``
    (``"ENOTFOUND"``...), ``detail`` (the library's detail for this failure,
    may be empty), ``key`` (the key concerned, when there is one).
    """

    code: int = 0
    name: str = "EUNKNOWN"

    def __init__(
        self,
        message: str,
        code: Optional[int] = None,
        name: Optional[str] = None,
        detail: str = "",
        key: Optional[bytes] = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if name is not None:
            self.name = name
        self.detail = detail
        self.key = key

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else self.name

    def __reduce__(self) -> Tuple[Any, ...]:
        # pickled across processes (multiprocessing results) with attributes
        return (
            _rebuild,
            (type(self), str(self), self.code, self.name, self.detail,
             self.key),
            dict(self.__dict__),
        )


def _rebuild(cls: Type[Error], message: str, code: int, name: str,
             detail: str, key: Optional[bytes]) -> Error:
    return cls(message, code, name, detail, key)


class NotFound(Error, KeyError):
    """SHOAL_ENOTFOUND: the key does not exist (``delete``, ``c[key]``)."""


class Conflict(Error):
    """SHOAL_ECONFLICT: a compare-and-swap found another version.

    ``current_version`` is the key's version now (0: absent).
    """

    current_version: int = 0


class NoSpace(Error):
    """SHOAL_ENOSPC: the store (its --size, or its tmpfs) is full."""


class TooBig(Error, ValueError):
    """SHOAL_ETOOBIG: a key or value over the limits (``shoal.key_max()``)."""


class Corrupt(Error):
    """SHOAL_ECORRUPT: the shared segment is corrupt."""


class VersionMismatch(Error):
    """SHOAL_EVERSION: segment or protocol of an incompatible shoal build."""


class Closed(Error, ValueError):
    """SHOAL_ECLOSED: the client (or the read block) is closed."""


class Forked(Error):
    """SHOAL_EFORKED: a handle used after fork().

    Clients reopen on their own in a child; only a read block that was open
    across the fork (its snapshot belongs to the parent) raises this.
    """


class Protocol(Error):
    """SHOAL_EPROTOCOL: malformed or unexpected message from the broker."""


class Denied(Error, PermissionError):
    """SHOAL_EDENIED: the broker does not allow this uid/gid."""


class Timeout(Error, TimeoutError):
    """SHOAL_ETIMEOUT: the broker did not answer in time."""


class InvalidArgument(Error, ValueError):
    """SHOAL_EINVAL: an invalid argument (store name, TTL, ...)."""


class Locked(Error):
    """SHOAL_ELOCKED: the store already has a writer."""


class NoReaders(Error):
    """SHOAL_ENOREADERS: all reader slots of the store are in use."""


class NoSection(Error):
    """SHOAL_ENOSECTION: a zero-copy read outside a read section."""


class Busy(Error):
    """SHOAL_EBUSY: a reader still holds a snapshot."""


class BrokerUnavailable(Error, ConnectionError):
    """SHOAL_EUNAVAIL: the broker is not running or not reachable.

    Reads from an open client keep working; a write that got this may or
    may not have been applied.
    """


class NotRegularFile(Error, OSError):
    """SHOAL_ENOTREG: hashing and tailing need a regular file, and this is a
    directory, FIFO, socket or device.

    An :class:`OSError` (``errno`` is None), because that is what code
    around file operations already catches: ``open()`` of a directory
    raises ``IsADirectoryError``, an OSError too.
    """


class FileChanged(Error, OSError):
    """SHOAL_ECHANGED: the file kept changing (truncated or rewritten) while
    the broker read it, so no consistent digest exists; retry once it is
    quiet.

    An :class:`OSError` (``errno`` is None): an I/O condition of the file,
    not a bug of the caller.
    """


class OSFailure(Error, OSError):
    """A system failure (a ``-errno`` code); ``errno`` is set."""

    def __init__(self, message: str, code: Optional[int] = None,
                 name: Optional[str] = None, detail: str = "",
                 key: Optional[bytes] = None) -> None:
        super().__init__(message, code, name, detail, key)
        if code is not None:
            self.errno = -code
            self.strerror = message


#: offset below BASE -> (errname, class); mirrors SHOAL_ERRNO_MAP.
_TABLE: Dict[int, Tuple[str, Type[Error]]] = {
    1: ("ENOTFOUND", NotFound),
    2: ("ECONFLICT", Conflict),
    3: ("ENOSPC", NoSpace),
    4: ("ETOOBIG", TooBig),
    5: ("ECORRUPT", Corrupt),
    6: ("EVERSION", VersionMismatch),
    7: ("ECLOSED", Closed),
    8: ("EFORKED", Forked),
    9: ("EPROTOCOL", Protocol),
    10: ("EDENIED", Denied),
    11: ("ETIMEOUT", Timeout),
    12: ("EINVAL", InvalidArgument),
    13: ("ELOCKED", Locked),
    14: ("ENOREADERS", NoReaders),
    15: ("ENOSECTION", NoSection),
    16: ("EBUSY", Busy),
    17: ("EUNAVAIL", BrokerUnavailable),
    18: ("ENOTREG", NotRegularFile),
    19: ("ECHANGED", FileChanged),
}

#: code -> class, for every SHOAL_E* code (filled in from _TABLE, then
#: completed from the library by check_library).
CODES: Dict[int, Type[Error]] = {}
_NAMES: Dict[int, str] = {}
for _off, (_name, _cls) in _TABLE.items():
    _code = BASE - _off
    _cls.code = _code
    _cls.name = _name
    CODES[_code] = _cls
    _NAMES[_code] = _name
del _off, _name, _cls, _code


def _camel(errname: str) -> str:
    return "".join(p.capitalize() for p in errname[1:].lower().split("_")) \
        or "Unknown"


def check_library(errname: Callable[[int], str]) -> None:
    """Compare the table with libshoal's ``shoal_errname`` and add classes
    for codes it does not know. Raises RuntimeError on a disagreement."""
    code = BASE - 1
    while True:
        name = errname(code)
        if name == "EUNKNOWN":
            break
        known = _NAMES.get(code)
        if known is None:
            cls = type(_camel(name), (Error,), {
                "__doc__": "SHOAL_%s (made from libshoal's table)." % name,
                "__module__": __name__,
            })
            cls.code = code
            cls.name = name
            CODES[code] = cls
            _NAMES[code] = name
        elif known != name:
            raise RuntimeError(
                "libshoal calls code %d %s, this package %s: the package and "
                "the library do not match" % (code, name, known))
        code -= 1


def error_class(code: int) -> Type[Error]:
    """The exception class for a negative libshoal code."""
    cls = CODES.get(code)
    if cls is not None:
        return cls
    return OSFailure if -4096 < code < 0 else Error


def _errno_name(code: int) -> str:
    return _errno.errorcode.get(-code, "E%d" % -code)


def make_error(
    code: int,
    strerror: str,
    detail: str = "",
    key: Optional[bytes] = None,
    **attrs: Any,
) -> Error:
    """The exception for @code: ``"<strerror>: <detail>"`` (+ the key)."""
    cls = error_class(code)
    if cls is OSFailure:
        name = _errno_name(code)
    else:
        name = _NAMES.get(code, "EUNKNOWN")
    msg = strerror
    if detail.startswith(strerror):  # the library's detail says it all
        msg = detail
    elif detail:
        msg = "%s: %s" % (strerror, detail)
    if key is not None:
        k = bytes(key)
        shown = k[:80] + (b"..." if len(k) > 80 else b"")
        msg = "%s (key %r%s)" % (
            msg, shown, ", %d bytes" % len(k) if len(k) > 80 else "")
    e = cls(msg, code, name, detail, key)
    for k2, v in attrs.items():
        setattr(e, k2, v)
    return e
