"""SkyPilot's ``sky.utils`` helpers, upstream-compatible (pure Python).

The twelve functions of ``UTILITIES.md`` with the upstream SkyPilot names,
signatures, return values and exceptions::

    read_last_n_lines  hash_file  find_free_port  base36_encode
    format_float  truncate_long_string  get_cpu_count  get_mem_size_gb
    get_parallel_threads  get_max_workers_for_file_mounts
    is_process_alive  estimate_fd_for_directory

This module is the pure-Python implementation. It never loads libshoal, so
it imports and works when the C library is missing. A native path through
libshoal (selected unless ``SHOAL_NATIVE=0``, and only where a ctypes call
is cheaper than the Python it replaces) will be added later; it must give
exactly the same results as the functions here, which are the reference.

Testing hooks (environment, read at each call):

``SHOAL_CGROUP_ROOT``
    the cgroup mount, default ``/sys/fs/cgroup``.
``SHOAL_PROC_ROOT``
    the proc mount, default ``/proc`` (``meminfo``, ``PID/stat``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import socket
from typing import Any, Dict, List, Optional, Union

__all__ = [
    "read_last_n_lines", "hash_file", "find_free_port", "base36_encode",
    "format_float", "truncate_long_string", "get_cpu_count",
    "get_mem_size_gb", "get_parallel_threads",
    "get_max_workers_for_file_mounts", "is_process_alive",
    "estimate_fd_for_directory",
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


def read_last_n_lines(file_path: str,
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


def hash_file(path: str, hash_alg: str) -> Any:
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


def estimate_fd_for_directory(path: str) -> int:
    """``5 *`` the number of entries directly in ``path``; 0 if ``path`` is
    not a readable directory."""
    try:
        with os.scandir(path) as it:
            return 5 * sum(1 for _ in it)
    except OSError:
        return 0


# ------------------------------------------------------------ network


def find_free_port(start_port: int) -> int:
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


def base36_encode(hex_str: str) -> str:
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


def format_float(num: Union[float, int], precision: int = 1) -> str:
    """``str(num)`` for an ``int``; a whole float with no decimals
    (``'{:.0f}'``), any other float with ``precision`` decimals."""
    if isinstance(num, int):
        return str(num)
    if num.is_integer():
        return "{:.0f}".format(num)
    return f"{num:.{precision}f}"


def truncate_long_string(s: str,
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


def get_cpu_count() -> int:
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


def get_mem_size_gb() -> float:
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


def get_parallel_threads(cloud_str: Optional[str] = None) -> int:
    """``max(4, os.cpu_count() - 1)``, times 4 for Kubernetes
    (case-insensitive)."""
    cpus = os.cpu_count()
    if cpus is None:
        cpus = 1
    mult = 4 if cloud_str is not None and cloud_str.lower() == "kubernetes" \
        else 1
    return max(4, cpus - 1) * mult


def get_max_workers_for_file_mounts(common_file_mounts: Dict[str, str],
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


def is_process_alive(pid: int) -> bool:
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
