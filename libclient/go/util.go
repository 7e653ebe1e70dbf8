package shoal

// #include "shoalgo.h"
import "C"

import (
	"encoding/hex"
	"math"
	"os"
	"sort"
	"strconv"
	"unsafe"
)

// The local utility functions: SkyPilot's helpers (UTILITIES.md) that need
// no broker, as package functions over libshoal's shoal_util_* (no socket,
// no Client). Each gives what the upstream Python function gives; where
// Python raises, these return an error (ErrInvalid for a ValueError or an
// AssertionError, a system error for an OSError).

// utilString runs fn, a shoal_util_* call writing into a C buffer of cap
// bytes, growing the buffer while the call answers SHOAL_ETOOBIG.
func utilString(op string, cap int, fn func(out *C.char, cap C.size_t) C.int) (string, error) {
	for {
		buf := (*C.char)(C.malloc(C.size_t(cap)))
		r := fn(buf, C.size_t(cap))
		if r >= 0 {
			s := C.GoStringN(buf, r)
			C.free(unsafe.Pointer(buf))
			return s, nil
		}
		C.free(unsafe.Pointer(buf))
		if r != C.SHOAL_ETOOBIG || cap >= 1<<30 {
			return "", newError(int(r), op, "")
		}
		cap *= 2
	}
}

// cBytes copies s into C memory (not NUL-terminated data may hold NULs);
// free the result.
func cBytes(s string) *C.char {
	return (*C.char)(C.CBytes([]byte(s)))
}

// Base36Encode is base36_encode: the number written in hex by hexStr,
// in base 36 with the digits 0-9a-z ("0" for zero). hexStr may be of any
// length and is read as Python's int(hexStr, 16) reads it: an optional
// "0x", '_' between digits, surrounding whitespace. Anything else:
// ErrInvalid.
func Base36Encode(hexStr string) (string, error) {
	in := cBytes(hexStr)
	defer C.free(unsafe.Pointer(in))
	// base 36 never needs more digits than base 16
	return utilString("base36_encode", len(hexStr)+8, func(out *C.char, cap C.size_t) C.int {
		return C.shoal_util_base36_encode(in, C.size_t(len(hexStr)), out, cap)
	})
}

// FormatFloat is format_float for a float: a whole number prints with no
// decimals ("%.0f"), any other with precision decimals. (Upstream prints
// an int as str(num): strconv.Itoa in Go.) ErrInvalid for a negative
// precision.
func FormatFloat(num float64, precision int) (string, error) {
	if precision < 0 || precision > math.MaxInt32 {
		return "", newError(int(C.SHOAL_EINVAL), "format_float",
			"precision "+strconv.Itoa(precision)+" is negative")
	}
	return utilString("format_float", 64, func(out *C.char, cap C.size_t) C.int {
		return C.shoal_util_format_float(C.double(num), C.int(precision), out, cap)
	})
}

// TruncateLongString is truncate_long_string: s unchanged if it has at
// most maxLength characters (code points, not bytes); otherwise cut at
// the end on a word boundary (truncateMiddle false; the result may be
// maxLength+3 characters long) or in the middle, with "..." marking the
// cut. ErrInvalid if s is not valid UTF-8 or maxLength is negative.
func TruncateLongString(s string, maxLength int, truncateMiddle bool) (string, error) {
	if maxLength < 0 {
		return "", newError(int(C.SHOAL_EINVAL), "truncate_long_string",
			"max_length "+strconv.Itoa(maxLength)+" is negative")
	}
	in := cBytes(s)
	defer C.free(unsafe.Pointer(in))
	mid := C.int(0)
	if truncateMiddle {
		mid = 1
	}
	return utilString("truncate_long_string", len(s)+8, func(out *C.char, cap C.size_t) C.int {
		return C.shoal_util_truncate_long_string(in, C.size_t(len(s)), C.size_t(maxLength),
			mid, out, cap)
	})
}

// CPUCount is get_cpu_count: $SKYPILOT_POD_CPU_CORE_LIMIT if set,
// otherwise the fewest of the logical CPUs, the CPUs of this process's
// affinity mask and the cgroup's CPU limit (v2 cpu.max or v1 CFS quota),
// floored: it may be 0 under a limit below one CPU, as upstream.
// ErrInvalid when the variable is not a number.
func CPUCount() (int, error) {
	r := C.shoal_util_get_cpu_count()
	if r < 0 {
		return 0, newError(int(r), "get_cpu_count",
			"SKYPILOT_POD_CPU_CORE_LIMIT="+strconv.Quote(os.Getenv("SKYPILOT_POD_CPU_CORE_LIMIT")))
	}
	return int(r), nil
}

// MemSizeGB is get_mem_size_gb: $SKYPILOT_POD_MEMORY_GB_LIMIT, else
// $SKYPILOT_POD_MEMORY_BYTES_LIMIT / 2^30, else the smaller of the
// machine's memory and the cgroup's limit, in GiB. ErrInvalid when a
// variable is not a number.
func MemSizeGB() (float64, error) {
	gb := (*C.double)(C.malloc(C.sizeof_double))
	defer C.free(unsafe.Pointer(gb))
	if r := C.shoal_util_get_mem_size_gb(gb); r < 0 {
		return 0, newError(int(r), "get_mem_size_gb",
			"SKYPILOT_POD_MEMORY_GB_LIMIT or SKYPILOT_POD_MEMORY_BYTES_LIMIT is not a number")
	}
	return float64(*gb), nil
}

// cloudArg is cloud as libshoal takes it: NULL for "" (Python's None and
// "" give the same answer).
func cloudArg(cloud string) *C.char {
	if cloud == "" {
		return nil
	}
	return C.CString(cloud)
}

// ParallelThreads is get_parallel_threads: max(4, CPUs - 1), times 4 when
// cloud is "kubernetes" (in any case). cloud "" stands for None.
func ParallelThreads(cloud string) int {
	cc := cloudArg(cloud)
	defer C.free(unsafe.Pointer(cc))
	return int(C.shoal_util_get_parallel_threads(cc))
}

// MaxWorkersForFileMounts is get_max_workers_for_file_mounts: how many
// rsyncs of fileMounts (destination -> source, as upstream's dict) may
// run at once within the soft RLIMIT_NOFILE (5 descriptors each, 5 per
// entry of a source that is a directory), at most ParallelThreads(cloud).
func MaxWorkersForFileMounts(fileMounts map[string]string, cloud string) int {
	// the dict's values, in a stable order (the answer does not depend on it)
	keys := make([]string, 0, len(fileMounts))
	for k := range fileMounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	n := len(keys)
	var srcs **C.char
	if n > 0 {
		srcs = (**C.char)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(uintptr(0)))))
		defer C.free(unsafe.Pointer(srcs))
		arr := unsafe.Slice(srcs, n)
		for i, k := range keys {
			arr[i] = C.CString(fileMounts[k])
			defer C.free(unsafe.Pointer(arr[i]))
		}
	}
	cc := cloudArg(cloud)
	defer C.free(unsafe.Pointer(cc))
	return int(C.shoal_util_get_max_workers_for_file_mounts(srcs, C.size_t(n), cc))
}

// IsProcessAlive is is_process_alive: whether a process with that pid
// exists (kill(pid, 0) succeeds or fails with EPERM) and is not a zombie.
// ErrInvalid for pid <= 0 (that would address a process group).
func IsProcessAlive(pid int) (bool, error) {
	if pid <= 0 {
		return false, newError(int(C.SHOAL_EINVAL), "is_process_alive",
			"pid "+strconv.Itoa(pid)+": expected a positive pid")
	}
	r := C.shoal_util_is_process_alive(C.long(pid))
	if r < 0 {
		return false, newError(int(r), "is_process_alive", "")
	}
	return r == 1, nil
}

// EstimateFDForDirectory is estimate_fd_for_directory: 5 times the number
// of entries directly in path; 0 if path is not a readable directory.
func EstimateFDForDirectory(path string) int {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	return int(C.shoal_util_estimate_fd_for_directory(cp))
}

// FindFreePort is find_free_port: the first port from startPort up to
// 65534 that a TCP socket can bind on all addresses. ErrInvalid for a
// startPort outside 0..65535; none free: a system error matching
// syscall.EADDRINUSE (upstream's OSError('No free ports available.')).
func FindFreePort(startPort int) (int, error) {
	if startPort < 0 || startPort > 65535 {
		return 0, newError(int(C.SHOAL_EINVAL), "find_free_port",
			"start port "+strconv.Itoa(startPort)+": expected 0..65535")
	}
	r := C.shoal_util_find_free_port(C.int(startPort))
	if r < 0 {
		detail := ""
		if r == -C.EADDRINUSE {
			detail = "No free ports available."
		}
		return 0, newError(int(r), "find_free_port", detail)
	}
	return int(r), nil
}

// ReadLastNLines is read_last_n_lines, read locally (no broker): the same
// lines as Client.Tail, decoded the same way. ErrInvalid for n < 0,
// ErrNotRegular, or the system error of open or read (errors.Is(err,
// fs.ErrNotExist) for a missing file; upstream raises AssertionError and
// RuntimeError).
func ReadLastNLines(path string, n int) ([]string, error) {
	if n < 0 {
		return nil, newError(int(C.SHOAL_EINVAL), "read_last_n_lines",
			"n = "+strconv.Itoa(n)+": the number of lines can not be negative")
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	out := (**C.shoal_lines)(C.malloc(C.size_t(unsafe.Sizeof(uintptr(0)))))
	defer C.free(unsafe.Pointer(out))
	*out = nil
	// upstream's default chunk_size; the lines do not depend on it
	r := C.shoal_util_read_last_n_lines(cp, C.size_t(n), 8192, out)
	if r != 0 {
		return nil, newError(int(r), "read_last_n_lines", path)
	}
	lines := decodeLines(*out)
	C.shoal_lines_free(*out)
	return lines, nil
}

// HashFileLocal is hash_file computed in this process (no broker, no
// cache): the hex digest of the file at path, as Client.HashFile's (same
// algorithms, same results).
func HashFileLocal(path, alg string) (string, error) {
	name, dlen, err := hashAlg(alg)
	if err != nil {
		return "", err
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	ca := C.CString(name)
	defer C.free(unsafe.Pointer(ca))
	buf := C.malloc(C.SHOAL_HASH_MAX)
	defer C.free(buf)
	r := C.shoal_util_hash_file(cp, ca, C.size_t(dlen), buf, C.SHOAL_HASH_MAX)
	if r < 0 {
		return "", newError(int(r), "hash_file", path)
	}
	return hex.EncodeToString(C.GoBytes(buf, r)), nil
}
