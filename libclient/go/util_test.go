package shoal

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// onlineCPUs is os.cpu_count() (sysconf(_SC_NPROCESSORS_ONLN)): the CPUs
// in /sys/devices/system/cpu/online ("0-3,5"), whatever the affinity.
func onlineCPUs(t *testing.T) int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, found := strings.Cut(r, "-")
		a, err1 := strconv.Atoi(lo)
		z := a
		var err2 error
		if found {
			z, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil {
			t.Fatalf("/sys/devices/system/cpu/online: %q", b)
		}
		n += z - a + 1
	}
	return n
}

// The expected values come from the upstream functions (shoal.utils'
// pure-Python path, SHOAL_NATIVE=0).

func TestBase36Encode(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"ff", "73"}, {"0", "0"}, {"00000", "0"}, {"FF", "73"}, {"0x_f_f ", "73"},
		{"d41d8cd98f00b204e9800998ecf8427e", "ck2u8j60r58fu0sgyxrigm3cu"},
		{"1", "1"}, {"24", "10"},
	} {
		if got, err := Base36Encode(c.in); err != nil || got != c.want {
			t.Errorf("Base36Encode(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	// longer than any integer type: 128 hex digits
	long := ""
	for i := 0; i < 8; i++ {
		long += "0123456789abcdef"
	}
	if got, err := Base36Encode(long); err != nil || len(got) < 90 {
		t.Errorf("Base36Encode(128 digits) = %q, %v", got, err)
	}
	for _, bad := range []string{"", "xyz", "-ff", "f f", "0x"} {
		if got, err := Base36Encode(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Base36Encode(%q) = %q, %v; want ErrInvalid", bad, got, err)
		}
	}
}

func TestFormatFloat(t *testing.T) {
	for _, c := range []struct {
		num  float64
		prec int
		want string
	}{
		{1.0, 1, "1"}, {1.25, 1, "1.2"}, {3.14159, 3, "3.142"}, {2.5, 0, "2"},
		{-0.05, 1, "-0.1"}, {1e6, 1, "1000000"}, {0.5, 2, "0.50"},
	} {
		if got, err := FormatFloat(c.num, c.prec); err != nil || got != c.want {
			t.Errorf("FormatFloat(%v, %d) = %q, %v; want %q", c.num, c.prec, got, err, c.want)
		}
	}
	if _, err := FormatFloat(1.5, -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("FormatFloat(precision -1) = %v", err)
	}
}

func TestTruncateLongString(t *testing.T) {
	for _, c := range []struct {
		s    string
		max  int
		mid  bool
		want string
	}{
		{"hello world this is long", 10, false, "hello worl..."},
		{"hello world this is long", 10, true, "hell...ong"},
		{"héllo wörld ünïcode strings here", 12, false, "héllo wörld ..."},
		{"héllo wörld ünïcode strings here", 12, true, "héllo...here"},
		{"abcdefghijklmnop", 5, false, "abcde..."},
		{"short", 35, false, "short"},
		{"abcdef", 3, true, "..."},
		{"abcdef", 4, true, "a..."},
		{"a b c d e f g h", 6, false, "a b c d e..."},
		{"", 0, false, ""},
	} {
		if got, err := TruncateLongString(c.s, c.max, c.mid); err != nil || got != c.want {
			t.Errorf("TruncateLongString(%q, %d, %v) = %q, %v; want %q", c.s, c.max, c.mid, got, err, c.want)
		}
	}
	if _, err := TruncateLongString("bad \xff", 2, false); !errors.Is(err, ErrInvalid) {
		t.Errorf("TruncateLongString(invalid UTF-8) = %v", err)
	}
	if _, err := TruncateLongString("abc", -1, false); !errors.Is(err, ErrInvalid) {
		t.Errorf("TruncateLongString(-1) = %v", err)
	}
}

func TestCPUAndMemory(t *testing.T) {
	t.Setenv("SKYPILOT_POD_CPU_CORE_LIMIT", "")
	os.Unsetenv("SKYPILOT_POD_CPU_CORE_LIMIT")
	n, err := CPUCount()
	if err != nil || n < 0 || n > runtime.NumCPU() {
		t.Errorf("CPUCount() = %d, %v (NumCPU %d)", n, err, runtime.NumCPU())
	}
	t.Setenv("SKYPILOT_POD_CPU_CORE_LIMIT", "3.7")
	if n, err := CPUCount(); err != nil || n != 3 {
		t.Errorf("CPUCount(limit 3.7) = %d, %v", n, err)
	}
	t.Setenv("SKYPILOT_POD_CPU_CORE_LIMIT", "lots")
	if _, err := CPUCount(); !errors.Is(err, ErrInvalid) {
		t.Errorf("CPUCount(limit lots) = %v", err)
	}

	t.Setenv("SKYPILOT_POD_MEMORY_GB_LIMIT", "")
	t.Setenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT", "")
	os.Unsetenv("SKYPILOT_POD_MEMORY_GB_LIMIT")
	os.Unsetenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT")
	if gb, err := MemSizeGB(); err != nil || gb <= 0 {
		t.Errorf("MemSizeGB() = %v, %v", gb, err)
	}
	t.Setenv("SKYPILOT_POD_MEMORY_BYTES_LIMIT", "2147483648")
	if gb, err := MemSizeGB(); err != nil || gb != 2 {
		t.Errorf("MemSizeGB(2 GiB in bytes) = %v, %v", gb, err)
	}
	t.Setenv("SKYPILOT_POD_MEMORY_GB_LIMIT", "1.5")
	if gb, err := MemSizeGB(); err != nil || gb != 1.5 {
		t.Errorf("MemSizeGB(1.5) = %v, %v", gb, err)
	}
	t.Setenv("SKYPILOT_POD_MEMORY_GB_LIMIT", "much")
	if _, err := MemSizeGB(); !errors.Is(err, ErrInvalid) {
		t.Errorf("MemSizeGB(much) = %v", err)
	}
}

func TestParallelThreadsAndFileMounts(t *testing.T) {
	cpus := onlineCPUs(t) // os.cpu_count(): the machine's, not the affinity's
	want := cpus - 1
	if want < 4 {
		want = 4
	}
	if got := ParallelThreads(""); got != want {
		t.Errorf("ParallelThreads() = %d, want %d", got, want)
	}
	if got := ParallelThreads("Kubernetes"); got != 4*want {
		t.Errorf("ParallelThreads(Kubernetes) = %d, want %d", got, 4*want)
	}
	if got := ParallelThreads("aws"); got != want {
		t.Errorf("ParallelThreads(aws) = %d, want %d", got, want)
	}

	dir := t.TempDir()
	for i := 0; i < 7; i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprint(i)), nil, 0o644)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	expect := func(perRsync int, cloud string) int {
		w := (int(lim.Cur) - 100) / perRsync
		if w < 1 {
			w = 1
		}
		if p := ParallelThreads(cloud); w > p {
			w = p
		}
		return w
	}
	mounts := map[string]string{"/a": dir, "/b": filepath.Join(dir, "0"), "/c": "/nonexistent"}
	if got, w := MaxWorkersForFileMounts(mounts, ""), expect(35, ""); got != w {
		t.Errorf("MaxWorkersForFileMounts = %d, want %d", got, w)
	}
	if got, w := MaxWorkersForFileMounts(nil, "kubernetes"), expect(5, "kubernetes"); got != w {
		t.Errorf("MaxWorkersForFileMounts(none) = %d, want %d", got, w)
	}
	if got := EstimateFDForDirectory(dir); got != 35 {
		t.Errorf("EstimateFDForDirectory(7 entries) = %d", got)
	}
	if got := EstimateFDForDirectory(filepath.Join(dir, "0")); got != 0 {
		t.Errorf("EstimateFDForDirectory(a file) = %d", got)
	}
	if got := EstimateFDForDirectory("/nonexistent"); got != 0 {
		t.Errorf("EstimateFDForDirectory(missing) = %d", got)
	}
}

func TestIsProcessAlive(t *testing.T) {
	if ok, err := IsProcessAlive(os.Getpid()); !ok || err != nil {
		t.Errorf("IsProcessAlive(self) = %v, %v", ok, err)
	}
	if os.Getpid() != 1 {
		if ok, err := IsProcessAlive(1); !ok || err != nil { // EPERM counts as alive
			t.Errorf("IsProcessAlive(1) = %v, %v", ok, err)
		}
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("no true(1):", err)
	}
	if ok, err := IsProcessAlive(cmd.Process.Pid); ok || err != nil {
		t.Errorf("IsProcessAlive(reaped child) = %v, %v", ok, err)
	}
	// a zombie: exited, not yet reaped
	z := exec.Command("sh", "-c", "exit 0")
	if err := z.Start(); err != nil {
		t.Fatal(err)
	}
	// wait until it has exited (state Z), without reaping it
	stat := fmt.Sprintf("/proc/%d/stat", z.Process.Pid)
	for i := 0; ; i++ {
		b, err := os.ReadFile(stat)
		if err == nil && strings.Contains(string(b), ") Z ") {
			break
		}
		if i > 500 {
			t.Fatalf("%s: not a zombie after 5 s: %q %v", stat, b, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ok, err := IsProcessAlive(z.Process.Pid); ok || err != nil {
		t.Errorf("IsProcessAlive(zombie) = %v, %v", ok, err)
	}
	z.Wait()
	for _, bad := range []int{0, -1} {
		if _, err := IsProcessAlive(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("IsProcessAlive(%d) = %v", bad, err)
		}
	}
}

func TestFindFreePort(t *testing.T) {
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Skip("no TCP:", err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	p, err := FindFreePort(busy)
	if err != nil || p <= busy || p >= 65535 {
		t.Errorf("FindFreePort(%d, busy) = %d, %v", busy, p, err)
	}
	for _, bad := range []int{-1, 70000} {
		if _, err := FindFreePort(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("FindFreePort(%d) = %v", bad, err)
		}
	}
}
