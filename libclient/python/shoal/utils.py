"""SkyPilot's ``sky.utils`` helpers, upstream-compatible, native where it pays.

The twelve functions of ``UTILITIES.md`` with the upstream SkyPilot names,
signatures, return values and exceptions::

    read_last_n_lines  hash_file  find_free_port  base36_encode
    format_float  truncate_long_string  get_cpu_count  get_mem_size_gb
    get_parallel_threads  get_max_workers_for_file_mounts
    is_process_alive  estimate_fd_for_directory

Two implementations of each: the pure-Python one (``_py_*``, the
reference) and a native one (``_nat_*``: libshoal's ``shoal_util_*``, and
for hash_file the broker's shared hash cache). The native one is used only
for the functions where it was measured to pay (``_NATIVE``; the figures
are in libclient/python/README.md), unless ``SHOAL_NATIVE=0``; libshoal is
loaded at the first native call, and when it can not be loaded everything
stays pure Python. Both give identical results: the native wrappers take
the C path only for the argument types and ranges it handles, and hand
anything else, and any failure, to the Python function, which then raises
upstream's own exception.

Testing hooks (environment, read at each call):

``SHOAL_CGROUP_ROOT``
    the cgroup mount, default ``/sys/fs/cgroup``.
``SHOAL_PROC_ROOT``
    the proc mount, default ``/proc`` (``meminfo``, ``PID/stat``).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import resource
import socket
import stat
import threading
import time
from typing import Any, Dict, List, Optional, Union

# Neither loads libshoal (that happens at the first native call).
from . import _ffi
from . import client as _client
from . import errors as _e

__all__ = [
    "read_last_n_lines", "hash_file", "find_free_port", "base36_encode",
    "format_float", "truncate_long_string", "get_cpu_count",
    "get_mem_size_gb", "get_parallel_threads",
    "get_max_workers_for_file_mounts", "is_process_alive",
    "estimate_fd_for_directory", "native_enabled",
]

logger = logging.getLogger(__name__)

_HASH_BUF = 2 ** 18
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_GIB = 1024 ** 3
_FD_WARN_BELOW = 1024
_fd_warned = False


def _cgroup_root() -> str:
    return os.environ.get("SHOAL_CGROUP_ROOT") or "/sys/fs/cgroup"


def _proc_root() -> str:
    return os.environ.get("SHOAL_PROC_ROOT") or "/proc"


# --------------------------------------------------------------- files


def _py_read_last_n_lines(file_path: str,
                      n: int,
                      chunk_size: int = 8192,
                      encoding: str = "utf-8",
                      errors: str = "replace") -> List[str]:
    """The last ``n`` lines of ``file_path``, read from the end.

    The file is read backwards in ``chunk_size`` pieces until enough
    newlines are seen, so the cost depends on ``n`` and the line lengths,
    not on the file's size. The tail is split on ``b'\\n'`` (a final empty
    piece after a trailing newline is dropped); every returned line but the
    last is ``rstrip('\\r')``-ed and ends with ``'\\n'``, the last has no
    ``'\\n'``: ``b"a\\nb\\n"``, n=2 -> ``['a\\n', 'b']``.

    Raises:
        AssertionError: ``n < 0``, ``chunk_size <= 0`` or a missing file.
        RuntimeError: an ``OSError`` while reading.
        UnicodeDecodeError: undecodable bytes with ``errors='strict'``.
    """
    assert n >= 0, f"n must be non-negative. Got {n}"
    assert chunk_size > 0, f"chunk_size must be positive. Got {chunk_size}"
    assert os.path.exists(file_path), f"File not found: {file_path}"
    if n == 0:
        return []
    return _py_tail(file_path, n, chunk_size, encoding, errors)


def _py_tail(file_path: Any, n: int, chunk_size: int, encoding: str,
             errors: str) -> List[str]:
    """read_last_n_lines after its argument checks (n > 0)."""
    try:
        with open(file_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            pos = f.tell()
            if pos == 0:
                return []
            chunks: List[bytes] = []
            newlines = 0
            # n + 1 newlines guarantee the first wanted line is complete
            # even when the data ends with a newline.
            while pos > 0 and newlines <= n:
                size = min(chunk_size, pos)
                pos -= size
                f.seek(pos)
                chunk = f.read(size)
                chunks.append(chunk)
                newlines += chunk.count(b"\n")
    except OSError as e:
        raise RuntimeError(
            f"Failed to read last {n} lines from {file_path}: {e}") from e
    data = b"".join(reversed(chunks))
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        wanted = pieces[-n - 1:-1]
    else:
        wanted = pieces[-n:]
    out = [p.decode(encoding, errors=errors).rstrip("\r") + "\n"
           for p in wanted[:-1]]
    if wanted:
        out.append(wanted[-1].decode(encoding, errors=errors).rstrip("\r"))
    return out


def _py_hash_file(path: str, hash_alg: str) -> Any:
    """``hashlib.new(hash_alg)`` fed the whole file at ``path``.

    Reads in 256 KiB chunks (constant memory). Returns the hashlib object
    (``hexdigest()``, ``digest()``, ``name``, ``digest_size``).

    Raises:
        OSError: the file can not be opened or read.
        ValueError: an algorithm hashlib does not know.
    """
    with open(path, "rb") as f:
        h = hashlib.new(hash_alg)
        buf = bytearray(_HASH_BUF)
        view = memoryview(buf)
        while True:
            size = f.readinto(buf)
            if not size:
                break
            h.update(view[:size])
        return h


def _py_estimate_fd_for_directory(path: str) -> int:
    """``5 *`` the number of entries directly in ``path``; 0 if ``path`` is
    not a readable directory."""
    try:
        with os.scandir(path) as it:
            return 5 * sum(1 for _ in it)
    except OSError:
        return 0


# ------------------------------------------------------------ network


def _py_find_free_port(start_port: int) -> int:
    """The first port in ``[start_port, 65535)`` a TCP socket can bind
    (``bind(('', port))``).

    Raises:
        OSError: ``'No free ports available.'``
    """
    for port in range(start_port, 65535):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("", port))
                return port
            except OSError:
                pass
    raise OSError("No free ports available.")


# ------------------------------------------------------------ strings


def _py_base36_encode(hex_str: str) -> str:
    """``int(hex_str, 16)`` written in base 36 (``0-9a-z``); zero is
    ``'0'``. Any length.

    Raises:
        ValueError: ``hex_str`` is not hexadecimal (as ``int()`` raises), or
            is negative (upstream loops forever on a negative value).
    """
    num = int(hex_str, 16)
    if num < 0:
        raise ValueError(f"base36_encode: negative value {hex_str!r}")
    if num == 0:
        return "0"
    digits: List[str] = []
    while num:
        num, i = divmod(num, 36)
        digits.append(_B36[i])
    return "".join(reversed(digits))


def _py_format_float(num: Union[float, int], precision: int = 1) -> str:
    """``str(num)`` for an ``int``; a whole float with no decimals
    (``'{:.0f}'``), any other float with ``precision`` decimals."""
    if isinstance(num, int):
        return str(num)
    if num.is_integer():
        return "{:.0f}".format(num)
    return f"{num:.{precision}f}"


def _py_truncate_long_string(s: str,
                         max_length: int = 35,
                         truncate_middle: bool = False) -> str:
    """``s`` cut to about ``max_length`` characters with ``'...'``.

    Unchanged when ``len(s) <= max_length``. Middle mode: ``'...'`` when
    ``max_length <= 3``, else ``ceil((max_length-3)/2)`` leading and
    ``floor((max_length-3)/2)`` trailing characters around ``'...'``. End
    mode: a first word longer than ``max_length`` is cut to ``max_length``;
    otherwise whole words are kept while the running total of their lengths
    stays below ``max_length``, padded from ``s`` up to ``max_length``
    characters; then ``'...'`` (up to ``max_length + 3`` characters).
    Lengths are in characters (code points), never bytes.
    """
    if len(s) <= max_length:
        return s
    if truncate_middle:
        if max_length <= 3:
            return "..."
        each = (max_length - 3) // 2
        start = each + (max_length - 3) % 2
        end = each
        if end == 0:
            return s[:start] + "..."
        return s[:start] + "..." + s[-end:]
    words = s.split(" ")
    if len(words[0]) > max_length:
        return words[0][:max_length] + "..."
    i = 0
    total = 0
    for i, word in enumerate(words):
        total += len(word)
        if total >= max_length:
            break
    prefix = " ".join(words[:i])
    if len(prefix) < max_length:
        prefix += s[len(prefix):max_length]
    return prefix + "..."


# ----------------------------------------------------------- resources


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "r") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_v2(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "cgroup.controllers"))


def _cgroup_cpu_limit() -> Optional[float]:
    """The cgroup CPU limit in CPUs (may be fractional), None if none."""
    root = _cgroup_root()
    try:
        if _cgroup_v2(root):
            text = _read_text(os.path.join(root, "cpu.max"))
            if not text:
                return None
            parts = text.split()
            if parts[0] == "max" or len(parts) != 2:
                return None
            quota, period = float(parts[0]), float(parts[1])
        else:
            q = _read_text(os.path.join(root, "cpu", "cpu.cfs_quota_us"))
            p = _read_text(os.path.join(root, "cpu", "cpu.cfs_period_us"))
            if q is None or p is None:
                return None
            quota, period = float(q), float(p)
    except ValueError:
        return None
    if quota > 0 and period > 0:
        return quota / period
    return None


def _cgroup_memory_limit() -> Optional[int]:
    """The cgroup memory limit in bytes, None if none (``max``, empty,
    unreadable, unparsable or not positive)."""
    root = _cgroup_root()
    if _cgroup_v2(root):
        text = _read_text(os.path.join(root, "memory.max"))
    else:
        text = _read_text(os.path.join(root, "memory",
                                       "memory.limit_in_bytes"))
    if not text or text == "max":
        return None
    try:
        limit = int(text)
    except ValueError:
        return None
    return limit if limit > 0 else None


def _total_ram() -> int:
    """Total RAM in bytes: ``MemTotal`` of /proc/meminfo (what psutil
    reports), else sysconf."""
    text = _read_text(os.path.join(_proc_root(), "meminfo"))
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                fields = line.split()
                try:
                    kb = int(fields[1])
                except (IndexError, ValueError):
                    break
                return kb * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _py_get_cpu_count() -> int:
    """CPUs usable by this process, cgroup-aware.

    ``SKYPILOT_POD_CPU_CORE_LIMIT`` wins when set (``int(float(v))``).
    Otherwise ``min(os.cpu_count(), len(sched_getaffinity(0)),
    int(cgroup limit))``; a fractional limit is floored (0.5 -> 0).

    Raises:
        ValueError: the environment variable can not be parsed.
    """
    env = os.getenv("SKYPILOT_POD_CPU_CORE_LIMIT")
    if env is not None:
        try:
            return int(float(env))
        except ValueError as e:
            raise ValueError(
                f"Failed to parse the number of CPUs from {env}") from e
    count = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        count = min(count, len(os.sched_getaffinity(0)) or count)
    limit = _cgroup_cpu_limit()
    if limit is not None:
        count = min(count, int(limit))
    return count


def _py_get_mem_size_gb() -> float:
    """Memory usable by this process in GiB, cgroup-aware.

    ``SKYPILOT_POD_MEMORY_GB_LIMIT`` (GiB) wins, then
    ``SKYPILOT_POD_MEMORY_BYTES_LIMIT`` (bytes). Otherwise ``min(total RAM,
    cgroup limit) / 1024**3``.

    Raises:
        ValueError: an environment variable can not be parsed.
    """
    env = os.getenv("SKYPILOT_POD_MEMORY_GB_LIMIT")
    if env is not None:
        try:
            return float(env)
        except ValueError as e:
            raise ValueError(
                f"Failed to parse the memory size from {env}") from e
    env = os.getenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT")
    if env is not None:
        try:
            return float(env) / _GIB
        except ValueError as e:
            raise ValueError(
                f"Failed to parse the memory size from {env}") from e
    size = _total_ram()
    limit = _cgroup_memory_limit()
    if limit is not None:
        size = min(size, limit)
    return size / _GIB


def _py_get_parallel_threads(cloud_str: Optional[str] = None) -> int:
    """``max(4, os.cpu_count() - 1)``, times 4 for Kubernetes
    (case-insensitive)."""
    cpus = os.cpu_count()
    if cpus is None:
        cpus = 1
    mult = 4 if cloud_str is not None and cloud_str.lower() == "kubernetes" \
        else 1
    return max(4, cpus - 1) * mult


def _py_get_max_workers_for_file_mounts(common_file_mounts: Dict[str, str],
                                    cloud_str: Optional[str] = None) -> int:
    """Workers for syncing file mounts without running out of descriptors.

    ``fd_limit`` is the soft ``RLIMIT_NOFILE`` (a one-time warning is
    logged when it is below 1024; an unlimited soft limit counts as no
    constraint). ``fd_per_rsync`` is 5, raised to ``5 *`` the number of
    entries of each source (the values of ``common_file_mounts``) that is a
    directory. Returns ``min(max((fd_limit - 100) // fd_per_rsync, 1),
    get_parallel_threads(cloud_str))``.
    """
    global _fd_warned
    fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    threads = get_parallel_threads(cloud_str)
    if fd_limit == resource.RLIM_INFINITY:
        fd_limit = 2 ** 62
    elif fd_limit < _FD_WARN_BELOW and not _fd_warned:
        _fd_warned = True
        logger.warning(
            "The open file limit (RLIMIT_NOFILE) is %d, below %d: file "
            "mounts will be synced with few workers. Raise it with "
            "`ulimit -n`.", fd_limit, _FD_WARN_BELOW)
    fd_per_rsync = 5
    for src in common_file_mounts.values():
        if os.path.isdir(src):
            fd_per_rsync = max(fd_per_rsync, len(os.listdir(src)) * 5)
    workers = (fd_limit - 100) // fd_per_rsync
    return min(max(workers, 1), threads)


# ----------------------------------------------------------- processes


def _py_is_process_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie.

    ``kill(pid, 0)`` succeeding or failing with ``EPERM`` means it exists,
    ``ESRCH`` that it does not; a process whose ``/proc/PID/stat`` state is
    ``Z`` has exited and is not alive.

    Raises:
        ValueError: ``pid <= 0`` (it would address a process group).
    """
    if pid <= 0:
        raise ValueError(f"pid must be positive, got {pid}")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(os.path.join(_proc_root(), str(pid), "stat"), "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        # reaped between kill() and open(), or no /proc: ask kill() again
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    except OSError:
        return True
    # "pid (comm) S ...": comm may hold spaces and parentheses.
    rest = stat[stat.rfind(b")") + 1:].split()
    return not (rest and rest[0] == b"Z")


# ================================================================ native
#
# The native path: libshoal's shoal_util_* (no socket) and, for hash_file,
# the broker's HashFile request (one hash cache for every process on the
# host). Every native wrapper below gives exactly the results of the
# _py_* function it stands for: it takes the native path only for the
# argument types and ranges the C function was written for, and hands any
# other call (an int path, a non-ASCII hex string, a pid beyond pid_t), and
# any failure of the C side, to the Python function, which then produces
# upstream's own result or exception (message included).

_NATIVE_ALGS = {"sha256": 32, "sha512": 64, "blake2b": 64}
_BLOCK_SIZE = {"sha256": 64, "sha512": 128, "blake2b": 128}
# Seconds a failed broker connection is remembered: hash_file then hashes
# locally without trying to connect on every call.
_BROKER_RETRY_S = 5.0
# Waiting for the broker's digest: a cold hash of a large file takes as
# long as reading it. After this the digest is computed locally.
_BROKER_TIMEOUT_MS = 600000
_BROKER_CONNECT_MS = 250
_MAX_SIZE = 1 << 62  # size_t arguments beyond this go to Python

_lib: Any = None  # the loaded _ffi.Lib; False: not loadable
_tls = threading.local()


def _load() -> Any:
    """libshoal with the shoal_util_* functions, or False (then everything
    stays pure Python for the life of the process)."""
    global _lib
    lib = _lib
    if lib is None:
        try:
            from . import client as _client
            lib = _client._load()
            if not lib.has("shoal_util_read_last_n_lines",
                           "shoal_util_hash_file", "shoal_lines_free"):
                lib = False
        except Exception:  # LibraryNotFound, free-threaded CPython, ...
            lib = False
        _lib = lib
    return lib


def _buf(size: int) -> Any:
    """This thread's output buffer, at least @size bytes (PyDLL calls keep
    the GIL, but another thread may run between the call and the read of
    its result: one buffer per thread)."""
    b = getattr(_tls, "buf", None)
    if b is None or len(b) < size:
        b = ctypes.create_string_buffer(max(size, 256))
        _tls.buf = b
    return b


class _Digest:
    """A finished digest in hashlib's shape: ``name``, ``digest_size``,
    ``block_size``, ``digest()``, ``hexdigest()``, ``copy()``. It can not
    be fed more data (``update()`` raises TypeError): hash_file's result
    is the digest of the whole file."""

    __slots__ = ("name", "digest_size", "block_size", "_d")

    def __init__(self, name: str, digest: bytes) -> None:
        self.name = name
        self.digest_size = len(digest)
        self.block_size = _BLOCK_SIZE[name]
        self._d = digest

    def digest(self) -> bytes:
        return self._d

    def hexdigest(self) -> str:
        return self._d.hex()

    def copy(self) -> "_Digest":
        return _Digest(self.name, self._d)

    def update(self, data: Any) -> None:
        raise TypeError("hash_file() returned the finished digest of a file "
                        "(computed natively); it can not be updated")

    def __repr__(self) -> str:
        return "<%s _Digest object @ %#x>" % (self.name, id(self))


class _Broker:
    """Request handles on the broker (no reader slot), shared by the
    threads of this process; opened lazily from $SHOAL_NAME /
    $SHOAL_SOCKET / $SHOAL_RUNDIR as shoal.connect() would. When the
    broker can not be reached, that is remembered for _BROKER_RETRY_S."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: List[Any] = []
        self.down_until = 0.0
        self.pid = os.getpid()

    def after_fork(self) -> None:
        # the parent's handles: freed without touching its connection
        # (shoal_close in a child), the lock made anew
        self.lock = threading.Lock()
        idle, self.idle = self.idle, []
        for h in idle:
            h.close()
        self.pid = os.getpid()

    def borrow(self, lib: Any) -> Any:
        if self.down_until and time.monotonic() < self.down_until:
            return None
        if self.pid != os.getpid():  # no at-fork hook ran (os.fork only)
            self.after_fork()
        with self.lock:
            if self.idle:
                return self.idle.pop()
        from . import client as _client
        opts = _ffi.Options()
        opts.flags = _ffi.OPEN_NO_SLOT
        opts.connect_timeout_ms = _BROKER_CONNECT_MS
        opts.timeout_ms = _BROKER_TIMEOUT_MS
        opts.client = b"python:shoal.utils"
        name = os.environ.get("SHOAL_NAME") or None
        if name is None and not os.environ.get("SHOAL_SOCKET"):
            name = "default"
        out = ctypes.c_void_p()
        code = lib.c.shoal_open(ctypes.byref(out),
                                name.encode() if name else None,
                                ctypes.byref(opts))
        if code:
            self.down_until = time.monotonic() + _BROKER_RETRY_S
            return None
        self.down_until = 0.0
        return _client._Handle(out.value or 0, False)

    def give_back(self, h: Any) -> None:
        if h.pid == os.getpid():
            with self.lock:
                if len(self.idle) < 4:
                    self.idle.append(h)
                    return
        h.close()

    def broken(self, h: Any) -> None:
        h.close()
        self.down_until = time.monotonic() + _BROKER_RETRY_S


_broker = _Broker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _broker.after_fork())

# Broker answers after which the next hash goes local for a while: the
# broker is away, or this handle is unusable.
_BROKER_DOWN = frozenset(
    _e.BASE - i for i in (6, 7, 9, 10, 11, 17))  # EVERSION ECLOSED
#                                    EPROTOCOL EDENIED ETIMEOUT EUNAVAIL
_PY = object()  # "let Python do it" (it reproduces upstream's error)


def _hash_broker(lib: Any, p: bytes, alg: bytes, size: int) -> Any:
    """The digest from the broker; None: no broker (hash locally); _PY:
    the file is a problem (Python raises what upstream raises)."""
    for _ in range(2):
        h = _broker.borrow(lib)
        if h is None:
            return None
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            _broker.give_back(h)
            return _PY
        buf = _buf(_ffi.HASH_MAX)
        try:
            code = lib.c.shoal_hash_fd(h.ptr, fd, alg, size, buf,
                                       _ffi.HASH_MAX)
            if code > 0:
                d = buf.raw[:code]
                _broker.give_back(h)
                return d
        finally:
            os.close(fd)
        if code == _e.Forked.code:
            h.close()
            continue
        if code in _BROKER_DOWN:
            _broker.broken(h)
            return None
        _broker.give_back(h)
        return _PY
    return None


def _nat_hash_file(path: str, hash_alg: str) -> Any:
    size = _NATIVE_ALGS.get(hash_alg) if type(hash_alg) is str else None
    if size is None or not isinstance(path, (str, bytes)):
        return _py_hash_file(path, hash_alg)
    lib = _lib if _lib is not None else _load()
    if not lib:
        return _py_hash_file(path, hash_alg)
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return _py_hash_file(path, hash_alg)  # raises upstream's error
    if st.st_size < _HASH_BROKER_MIN or not stat.S_ISREG(st.st_mode):
        return _py_hash_file(path, hash_alg)
    p = os.fsencode(path)
    alg = hash_alg.encode()
    d = _hash_broker(lib, p, alg, size)
    if d is None:
        if hash_alg not in _HASH_LOCAL_NATIVE:
            return _py_hash_file(path, hash_alg)
        buf = _buf(_ffi.HASH_MAX)
        code = lib.c.shoal_util_hash_file(p, alg, size, buf, _ffi.HASH_MAX)
        if code <= 0:
            return _py_hash_file(path, hash_alg)
        d = buf.raw[:code]
    elif d is _PY:
        return _py_hash_file(path, hash_alg)
    return _Digest(hash_alg, d)


def _nat_read_last_n_lines(file_path: str,
                           n: int,
                           chunk_size: int = 8192,
                           encoding: str = "utf-8",
                           errors: str = "replace") -> List[str]:
    assert n >= 0, f"n must be non-negative. Got {n}"
    assert chunk_size > 0, f"chunk_size must be positive. Got {chunk_size}"
    assert os.path.exists(file_path), f"File not found: {file_path}"
    if n == 0:
        return []
    lib = _lib if _lib is not None else _load()
    if (not lib or type(n) is not int or type(chunk_size) is not int
            or n > _MAX_SIZE or chunk_size > _MAX_SIZE
            or not isinstance(file_path, (str, bytes))):
        return _py_tail(file_path, n, chunk_size, encoding, errors)
    p = os.fsencode(file_path)
    out = ctypes.POINTER(_ffi.Lines)()
    code = lib.c.shoal_util_read_last_n_lines(p, n, chunk_size,
                                              ctypes.byref(out))
    if code:
        # not a regular file, unreadable, vanished: Python says what
        # upstream says (RuntimeError from the OSError), or reads it
        return _py_tail(file_path, n, chunk_size, encoding, errors)
    try:
        return _client.decode_lines(out, encoding, errors)
    finally:
        lib.c.shoal_lines_free(out)


def _nat_base36_encode(hex_str: str) -> str:
    lib = _lib if _lib is not None else _load()
    if not lib or type(hex_str) is not str or not hex_str.isascii():
        return _py_base36_encode(hex_str)
    b = hex_str.encode()
    cap = len(b) + 2  # base 36 never has more digits than base 16
    buf = _buf(cap)
    n = lib.py.shoal_util_base36_encode(b, len(b), buf, cap)
    if n < 0:  # a sign, or not hexadecimal: Python's answer and message
        return _py_base36_encode(hex_str)
    return buf.value.decode()


def _nat_truncate_long_string(s: str,
                              max_length: int = 35,
                              truncate_middle: bool = False) -> str:
    if type(s) is not str or type(max_length) is not int or max_length < 0:
        return _py_truncate_long_string(s, max_length, truncate_middle)
    if len(s) <= max_length:
        return s
    lib = _lib if _lib is not None else _load()
    if not lib or max_length > _MAX_SIZE:
        return _py_truncate_long_string(s, max_length, truncate_middle)
    try:
        b = s.encode()
    except UnicodeEncodeError:  # lone surrogates: not UTF-8
        return _py_truncate_long_string(s, max_length, truncate_middle)
    cap = len(b) + 4  # pieces of s, plus '...'
    buf = _buf(cap)
    n = lib.py.shoal_util_truncate_long_string(
        b, len(b), max_length, 1 if truncate_middle else 0, buf, cap)
    if n < 0:
        return _py_truncate_long_string(s, max_length, truncate_middle)
    return buf.raw[:n].decode()


def _nat_format_float(num: Union[float, int], precision: int = 1) -> str:
    if type(num) is not float or type(precision) is not int \
            or not 0 <= precision <= 100:
        return _py_format_float(num, precision)
    lib = _lib if _lib is not None else _load()
    if not lib:
        return _py_format_float(num, precision)
    buf = _buf(512)
    n = lib.py.shoal_util_format_float(num, precision, buf, 512)
    if n < 0:
        return _py_format_float(num, precision)
    return buf.value.decode()


def _nat_get_cpu_count() -> int:
    lib = _lib if _lib is not None else _load()
    if not lib or os.environ.get("SKYPILOT_POD_CPU_CORE_LIMIT") is not None:
        # the override is parsed by Python's int(float(v)) rules
        return _py_get_cpu_count()
    n = lib.c.shoal_util_get_cpu_count()
    return n if n >= 0 else _py_get_cpu_count()


def _nat_get_mem_size_gb() -> float:
    lib = _lib if _lib is not None else _load()
    env = os.environ
    if (not lib or env.get("SKYPILOT_POD_MEMORY_GB_LIMIT") is not None
            or env.get("SKYPILOT_POD_MEMORY_BYTES_LIMIT") is not None):
        return _py_get_mem_size_gb()
    gb = ctypes.c_double()
    if lib.c.shoal_util_get_mem_size_gb(ctypes.byref(gb)):
        return _py_get_mem_size_gb()
    return gb.value


def _nat_get_parallel_threads(cloud_str: Optional[str] = None) -> int:
    lib = _lib if _lib is not None else _load()
    if not lib or (cloud_str is not None and type(cloud_str) is not str):
        return _py_get_parallel_threads(cloud_str)
    c = None
    if cloud_str is not None:
        try:
            c = cloud_str.encode()
        except UnicodeEncodeError:
            return _py_get_parallel_threads(cloud_str)
        if b"\0" in c:
            return _py_get_parallel_threads(cloud_str)
    return int(lib.py.shoal_util_get_parallel_threads(c))


def _nat_is_process_alive(pid: int) -> bool:
    if type(pid) is not int or not 0 < pid <= 0x7FFFFFFF:
        return _py_is_process_alive(pid)  # ValueError, or kill()'s error
    lib = _lib if _lib is not None else _load()
    if not lib:
        return _py_is_process_alive(pid)
    r = lib.py.shoal_util_is_process_alive(pid)
    if r < 0:
        return _py_is_process_alive(pid)
    return r == 1


def _nat_estimate_fd_for_directory(path: str) -> int:
    lib = _lib if _lib is not None else _load()
    if not lib or not isinstance(path, (str, bytes)):
        return _py_estimate_fd_for_directory(path)
    p = os.fsencode(path)
    if b"\0" in p:
        return _py_estimate_fd_for_directory(path)
    r = lib.c.shoal_util_estimate_fd_for_directory(p)
    return int(r) if r >= 0 else _py_estimate_fd_for_directory(path)


def _nat_find_free_port(start_port: int) -> int:
    if type(start_port) is not int or not 0 < start_port < 65535:
        return _py_find_free_port(start_port)
    lib = _lib if _lib is not None else _load()
    if not lib:
        return _py_find_free_port(start_port)
    r = lib.c.shoal_util_find_free_port(start_port)
    if r >= 0:
        return int(r)
    if r == -errno.EADDRINUSE:
        raise OSError("No free ports available.")
    return _py_find_free_port(start_port)


def _nat_get_max_workers_for_file_mounts(
        common_file_mounts: Dict[str, str],
        cloud_str: Optional[str] = None) -> int:
    # not native (see _NATIVE): kept for the benchmark's measurement
    lib = _lib if _lib is not None else _load()
    if not lib:
        return _py_get_max_workers_for_file_mounts(common_file_mounts,
                                                   cloud_str)
    srcs = [os.fsencode(v) for v in common_file_mounts.values()]
    arr = (ctypes.c_char_p * max(len(srcs), 1))(*srcs)
    return int(lib.c.shoal_util_get_max_workers_for_file_mounts(
        arr, len(srcs), cloud_str.encode() if cloud_str else None))


_NAMES = ("read_last_n_lines", "hash_file", "find_free_port",
          "base36_encode", "format_float", "truncate_long_string",
          "get_cpu_count", "get_mem_size_gb", "get_parallel_threads",
          "get_max_workers_for_file_mounts", "is_process_alive",
          "estimate_fd_for_directory")

#: The functions served natively, decided by measurement (bench/py/
#: utils_bench.py; figures in libclient/python/README.md). The others stay
#: pure Python in both modes, because their ctypes call costs more than
#: the Python it would replace (format_float, truncate_long_string,
#: get_parallel_threads), or saves too little to pay for losing Python's
#: own once-only warning and mockable resource.getrlimit
#: (get_max_workers_for_file_mounts: 7 %).
_NATIVE = frozenset((
    "read_last_n_lines", "hash_file", "find_free_port", "base36_encode",
    "get_cpu_count", "get_mem_size_gb", "is_process_alive",
    "estimate_fd_for_directory"))
#: hash_file goes to the broker for the files it pays for: a digest from
#: its cache costs one round trip (~35 us), which hashlib beats below about
#: 64 KiB. Smaller files, and every file when no broker is reachable, are
#: hashed by hashlib: its SHA-2 is OpenSSL's, the same code
#: shoal_util_hash_file runs, and its BLAKE2b is about 15 % slower than
#: ours on 1 GiB (a gap only files hashed while no broker answers see), so
#: no algorithm is hashed natively without the broker.
_HASH_BROKER_MIN = 64 << 10
_HASH_LOCAL_NATIVE: frozenset = frozenset()

_IMPLS = {
    "python": {n: globals()["_py_" + n] for n in _NAMES},
    "native": {n: globals()["_nat_" + n] for n in _NAMES},
}
for _n in _NAMES:  # help() and tracebacks name the public function
    for _f in (_IMPLS["python"][_n], _IMPLS["native"][_n]):
        _f.__doc__ = _IMPLS["python"][_n].__doc__
        _f.__name__ = _f.__qualname__ = _n
del _n, _f

# The public names (rebound by _select below; spelled out for readers and
# static checkers).
read_last_n_lines = _py_read_last_n_lines
hash_file = _py_hash_file
find_free_port = _py_find_free_port
base36_encode = _py_base36_encode
format_float = _py_format_float
truncate_long_string = _py_truncate_long_string
get_cpu_count = _py_get_cpu_count
get_mem_size_gb = _py_get_mem_size_gb
get_parallel_threads = _py_get_parallel_threads
get_max_workers_for_file_mounts = _py_get_max_workers_for_file_mounts
is_process_alive = _py_is_process_alive
estimate_fd_for_directory = _py_estimate_fd_for_directory


def _select(mode: str) -> None:
    """Bind the public names: "python" (all pure Python) or "native" (the
    _NATIVE ones native). Tests switch between the two."""
    g = globals()
    for n in _NAMES:
        impl = "native" if mode == "native" and n in _NATIVE else "python"
        g[n] = _IMPLS[impl][n]


def native_enabled() -> bool:
    """True if this process uses the native path (``SHOAL_NATIVE`` is not
    ``0`` and libshoal, with its utility functions, can be loaded). Loads
    libshoal to find out."""
    return _MODE == "native" and bool(_lib if _lib is not None else _load())


_MODE = "python" if os.environ.get("SHOAL_NATIVE", "1") == "0" else "native"
_select(_MODE)
