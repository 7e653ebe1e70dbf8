"""SkyPilot's own utility functions, verbatim, for utils_bench.py's
"upstream" column (reference only; shoal.utils never imports this).

Sources (function bodies copied unchanged; only the imports SkyPilot's
modules need are replaced by the small stand-ins below):

* skypilot-org/skypilot, sky/utils/common_utils.py, commit
  641d2dcce3d67e7793840a6017f323842608f2d9: read_last_n_lines, hash_file,
  find_free_port, base36_encode, format_float, truncate_long_string,
  get_cpu_count, get_mem_size_gb and their helpers (_cpu_count,
  _mem_size_gb, _get_cgroup_cpu_limit, _get_cgroup_memory_limit,
  _is_cgroup_v2).
* sky/utils/subprocess_utils.py as in the FreCap/skypilot mirror, commit
  4b1476e1fe7d85e49fc35a9103350b8bb6d8d8a7 (the index holds only an old
  skypilot-org copy of that file, from before these functions):
  get_max_workers_for_file_mounts, get_parallel_threads,
  _get_thread_multiplier.
* is_process_alive and estimate_fd_for_directory are not standalone
  functions upstream. estimate_fd_for_directory is the expression
  get_max_workers_for_file_mounts uses per source
  (``len(os.listdir(src)) * 5`` behind ``os.path.isdir``);
  is_process_alive is the ``os.kill(pid, 0)`` probe SkyPilot uses, with
  the zombie check UTILITIES.md requires done by psutil as SkyPilot does
  elsewhere (``proc.status() == psutil.STATUS_ZOMBIE``). Both are marked
  "not verbatim" in the benchmark output.

Stand-ins: ``ux_utils.print_exception_no_traceback()`` is a no-op context
manager (it only changes how SkyPilot prints tracebacks); ``logger`` is a
plain logging logger; ``psutil`` is the real one when installed, else a
shim with psutil's definitions of the two calls used (``cpu_count()`` is
``os.cpu_count()``, ``virtual_memory().total`` is MemTotal of
/proc/meminfo).
"""

# pylint: skip-file
import contextlib
import hashlib
import logging
import os
import resource
import socket
from typing import Dict, List, Optional, Union

logger = logging.getLogger('upstream_utils')


class ux_utils:  # noqa: N801 (stand-in for sky.utils.ux_utils)

    @staticmethod
    def print_exception_no_traceback():
        return contextlib.nullcontext()


try:
    import psutil  # type: ignore
except ImportError:

    class _VM:

        def __init__(self, total: int) -> None:
            self.total = total

    class psutil:  # noqa: N801 (psutil's definitions of the calls used)
        STATUS_ZOMBIE = 'zombie'

        @staticmethod
        def cpu_count():
            return os.cpu_count()

        @staticmethod
        def virtual_memory():
            with open('/proc/meminfo', 'rb') as f:
                for line in f:
                    if line.startswith(b'MemTotal:'):
                        return _VM(int(line.split()[1]) * 1024)
            raise RuntimeError('no MemTotal')

        class NoSuchProcess(Exception):
            pass

        class Process:

            def __init__(self, pid: int) -> None:
                self.pid = pid

            def status(self) -> str:
                try:
                    with open(f'/proc/{self.pid}/stat', 'rb') as f:
                        data = f.read()
                except FileNotFoundError:
                    raise psutil.NoSuchProcess(self.pid)
                state = data[data.rfind(b')') + 2:][:1]
                return 'zombie' if state == b'Z' else 'running'


# ------------------------------------------------ sky/utils/common_utils.py


def read_last_n_lines(file_path: str,
                      n: int,
                      chunk_size: int = 8192,
                      encoding: str = 'utf-8',
                      errors: str = 'replace') -> List[str]:
    """Read the last N lines of a file.

    Args:
        file_path: Path to the file to read.
        n: Number of lines to read from the end of the file.
        chunk_size: Size of chunks in bytes.
        encoding: Encoding to use when decoding binary chunks.
        errors: Error handling for decode errors (e.g., 'replace', 'ignore').

    Returns:
        A list of the last N lines, preserving newlines where applicable.
    """

    assert n >= 0, f'n must be non-negative. Got {n}'
    assert chunk_size > 0, f'chunk_size must be positive. Got {chunk_size}'
    assert os.path.exists(file_path), f'File not found: {file_path}'

    if n == 0:
        return []

    try:
        with open(file_path, 'rb') as f:
            # Start reading from the end of the file
            f.seek(0, os.SEEK_END)
            file_size = f.tell()
            if file_size == 0:
                return []

            pos = file_size
            lines_found = 0
            chunks = []

            # Read backwards in chunks until we've found at least n newlines
            while pos > 0 and lines_found <= n:
                read_size = min(chunk_size, pos)
                pos -= read_size
                f.seek(pos)
                chunk = f.read(read_size)
                chunks.append(chunk)
                lines_found += chunk.count(b'\n')

            # Combine all chunks in reverse order since we read backwards
            full_bytes = b''.join(reversed(chunks))

            # Split by newline byte. Note: this handles '\n' endings.
            all_lines = full_bytes.split(b'\n')

            # Handle edge case: if file ends with a newline, last element is b''
            if all_lines and all_lines[-1] == b'':
                result_bytes = all_lines[-n - 1:-1]
            else:
                result_bytes = all_lines[-n:]

            # Decode each line and normalize CR/LF endings
            decoded_lines = [
                line.decode(encoding, errors=errors).rstrip('\r') + '\n'
                for line in result_bytes[:-1]
            ]

            # Decode the final line — only add newline if it was present
            last_line = result_bytes[-1].decode(encoding,
                                                errors=errors).rstrip('\r')
            decoded_lines.append(last_line)

            return decoded_lines

    except OSError as e:
        with ux_utils.print_exception_no_traceback():
            raise RuntimeError(
                f'Failed to read last {n} lines from {file_path}: {e}') from e


def find_free_port(start_port: int) -> int:
    """Finds first free local port starting with 'start_port'.

    Returns: a free local port.

    Raises:
      OSError: If no free ports are available.
    """
    for port in range(start_port, 65535):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(('', port))
                return port
            except OSError:
                pass
    raise OSError('No free ports available.')


def base36_encode(hex_str: str) -> str:
    """Converts a hex string to a base36 string."""
    int_value = int(hex_str, 16)

    def _base36_encode(num: int) -> str:
        if num == 0:
            return '0'
        alphabet = '0123456789abcdefghijklmnopqrstuvwxyz'
        base36 = ''
        while num != 0:
            num, i = divmod(num, 36)
            base36 = alphabet[i] + base36
        return base36

    return _base36_encode(int_value)


def format_float(num: Union[float, int], precision: int = 1) -> str:
    """Formats a float to not show decimal point if it is a whole number

    If it is not a whole number, it will show upto precision decimal point."""
    if isinstance(num, int):
        return str(num)
    return '{:.0f}'.format(num) if num.is_integer() else f'{num:.{precision}f}'


def truncate_long_string(s: str,
                         max_length: int = 35,
                         truncate_middle: bool = False) -> str:
    """Truncate a string to a maximum length.

    Args:
        s: String to truncate.
        max_length: Maximum length of the truncated string.
        truncate_middle: Whether to truncate in the middle of the string.
            If True, the middle part of the string is replaced with '...'.
            If False, truncation happens at the end preserving whole words.

    Returns:
        Truncated string.
    """
    if len(s) <= max_length:
        return s

    if truncate_middle:
        # Reserve 3 characters for '...'
        if max_length <= 3:
            return '...'

        # Calculate how many characters to keep from beginning and end
        half_length = (max_length - 3) // 2
        remainder = (max_length - 3) % 2

        # Keep one more character at the beginning if max_length - 3 is odd
        start_length = half_length + remainder
        end_length = half_length

        # When end_length is 0, just show the start part and '...'
        if end_length == 0:
            return s[:start_length] + '...'
        return s[:start_length] + '...' + s[-end_length:]

    # Original end-truncation logic
    splits = s.split(' ')
    if len(splits[0]) > max_length:
        return splits[0][:max_length] + '...'  # Use '…'?
    # Truncate on word boundary.
    i = 0
    total = 0
    for i, part in enumerate(splits):
        total += len(part)
        if total >= max_length:
            break
    prefix = ' '.join(splits[:i])
    if len(prefix) < max_length:
        prefix += s[len(prefix):max_length]
    return prefix + '...'


def hash_file(path: str, hash_alg: str) -> 'hashlib._Hash':
    # In python 3.11, hashlib.file_digest is available, but for <3.11 we have to
    # do it manually.
    # This implementation is simplified from the implementation in CPython.
    # TODO(cooperc): Use hashlib.file_digest once we move to 3.11+.
    # Beware of f.read() as some files may be larger than memory.
    with open(path, 'rb') as f:
        file_hash = hashlib.new(hash_alg)
        buf = bytearray(2**18)
        view = memoryview(buf)
        while True:
            size = f.readinto(buf)
            if size == 0:
                # EOF
                break
            file_hash.update(view[:size])
        return file_hash


def get_cpu_count() -> int:
    """Get the number of CPUs, with cgroup awareness."""
    # This env-var is kept since it is still useful for limiting the resource
    # of SkyPilot in non-containerized environments.
    cpu_count = os.getenv('SKYPILOT_POD_CPU_CORE_LIMIT')
    if cpu_count is not None:
        try:
            return int(float(cpu_count))
        except ValueError as e:
            with ux_utils.print_exception_no_traceback():
                raise ValueError(
                    f'Failed to parse the number of CPUs from {cpu_count}'
                ) from e
    return _cpu_count()


def get_mem_size_gb() -> float:
    """Get the memory size in GB, with cgroup awareness."""
    mem_size = os.getenv('SKYPILOT_POD_MEMORY_GB_LIMIT')
    if mem_size is not None:
        try:
            return float(mem_size)
        except ValueError as e:
            with ux_utils.print_exception_no_traceback():
                raise ValueError(
                    f'Failed to parse the memory size from {mem_size} (GB)'
                ) from e
    mem_size = os.getenv('SKYPILOT_POD_MEMORY_BYTES_LIMIT')
    if mem_size is not None:
        try:
            return float(mem_size) / (1024**3)
        except ValueError as e:
            with ux_utils.print_exception_no_traceback():
                raise ValueError(
                    f'Failed to parse the memory size from {mem_size} (bytes)'
                ) from e
    return _mem_size_gb()


def _cpu_count() -> int:
    # host cpu cores (logical)
    cpu = psutil.cpu_count()
    # cpu affinity on Linux
    if hasattr(os, 'sched_getaffinity'):
        # just for safe, length of CPU set should always <= logical cpu cores
        cpu = min(cpu, len(os.sched_getaffinity(0)))
    cgroup_cpu = _get_cgroup_cpu_limit()
    if cgroup_cpu is not None:
        cpu = min(cpu, int(cgroup_cpu))
    return cpu


def _mem_size_gb() -> float:
    # host memory limit
    mem = psutil.virtual_memory().total
    cgroup_mem = _get_cgroup_memory_limit()
    if cgroup_mem is not None:
        mem = min(mem, cgroup_mem)
    return mem / (1024**3)


# Refer to:
# - https://docs.kernel.org/admin-guide/cgroup-v1/index.html
# - https://docs.kernel.org/admin-guide/cgroup-v2.html
# for the standards of handler files in cgroupv1 and v2.
# Since all those paths are well-known standards that are unlikely to change,
# we use string literals instead of defining extra constants.
def _get_cgroup_cpu_limit() -> Optional[float]:
    """Return cpu limit from cgroups in cores.

    Returns:
        The cpu limit in cores as a float (can be fractional), or None if there
        is no limit in cgroups.
    """
    try:
        if _is_cgroup_v2():
            with open('/sys/fs/cgroup/cpu.max', 'r', encoding='utf-8') as f:
                quota_str, period_str = f.read().strip().split()
                if quota_str == 'max':
                    return None
                quota = float(quota_str)
                period = float(period_str)
                return quota / period if quota > 0 else None
        else:
            # cgroup v1
            with open('/sys/fs/cgroup/cpu/cpu.cfs_quota_us',
                      'r',
                      encoding='utf-8') as f:
                quota = float(f.read().strip())
            with open('/sys/fs/cgroup/cpu/cpu.cfs_period_us',
                      'r',
                      encoding='utf-8') as f:
                period = float(f.read().strip())
            # Return unlimited if cpu quota is not set.
            # Note that we do not use cpu.shares since it is a relative weight
            # instead of a hard limit. It is okay to get CPU throttling under
            # high contention. And unlimited enables the server to use as much
            # CPU as available if there is no contention.
            return quota / period if (quota > 0 and period > 0) else None
    except (OSError, ValueError):
        return None


def _get_cgroup_memory_limit() -> Optional[int]:
    """Return memory limit from cgroups in bytes.

    Returns:
        The memory limit in bytes, or None if there is no limit in cgroups.
    """
    try:
        path = ('/sys/fs/cgroup/memory.max' if _is_cgroup_v2() else
                '/sys/fs/cgroup/memory/memory.limit_in_bytes')
        with open(path, 'r', encoding='utf-8') as f:
            value = f.read().strip()
            if value == 'max' or not value:
                return None
            limit = int(value)
            return limit if limit > 0 else None
    except (OSError, ValueError):
        return None


def _is_cgroup_v2() -> bool:
    """Return True if the environment is running cgroup v2."""
    return os.path.isfile('/sys/fs/cgroup/cgroup.controllers')


# -------------------------------------------- sky/utils/subprocess_utils.py

_fd_limit_warning_shown = False


def _get_thread_multiplier(cloud_str: Optional[str] = None) -> int:
    # If using Kubernetes, we use 4x the number of cores.
    if cloud_str and cloud_str.lower() == 'kubernetes':
        return 4
    return 1


def get_max_workers_for_file_mounts(common_file_mounts: Dict[str, str],
                                    cloud_str: Optional[str] = None) -> int:
    global _fd_limit_warning_shown
    fd_limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)

    # Raise warning for low fd_limit (only once)
    if fd_limit < 1024 and not _fd_limit_warning_shown:
        logger.warning(
            f'Open file descriptor limit ({fd_limit}) is low. File sync to '
            'remote clusters may be slow. Consider increasing the limit using '
            '`ulimit -n <number>` or modifying system limits.')
        _fd_limit_warning_shown = True

    fd_per_rsync = 5
    for src in common_file_mounts.values():
        if os.path.isdir(src):
            # Assume that each file/folder under src takes 5 file descriptors
            # on average.
            fd_per_rsync = max(fd_per_rsync, len(os.listdir(src)) * 5)

    # Reserve some file descriptors for the system and other processes
    fd_reserve = 100

    max_workers = (fd_limit - fd_reserve) // fd_per_rsync
    # At least 1 worker, and avoid too many workers overloading the system.
    num_threads = get_parallel_threads(cloud_str)
    max_workers = min(max(max_workers, 1), num_threads)
    logger.debug(f'Using {max_workers} workers for file mounts.')
    return max_workers


def get_parallel_threads(cloud_str: Optional[str] = None) -> int:
    """Returns the number of threads to use for parallel execution.

    Args:
        cloud_str: The cloud
    """
    cpu_count = os.cpu_count()
    if cpu_count is None:
        cpu_count = 1
    return max(4, cpu_count - 1) * _get_thread_multiplier(cloud_str)


# ------------------------------- not verbatim: no standalone upstream function


def estimate_fd_for_directory(path: str) -> int:
    # the per-source estimate of get_max_workers_for_file_mounts
    if os.path.isdir(path):
        return len(os.listdir(path)) * 5
    return 0


def is_process_alive(pid: int) -> bool:
    # os.kill(pid, 0) as SkyPilot probes pids, plus its psutil zombie check
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
