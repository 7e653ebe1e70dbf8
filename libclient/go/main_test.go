package shoal

// The test harness: TestMain, a real shoald per test, and the helper
// subprocesses (the test binary re-executed with SHOAL_GOTEST_ROLE set).
//
// Environment:
//   SHOAL_TEST_SHOALD    the shoald binary (else shoald on PATH, else
//                        ../../build/broker/shoald); tests that need a
//                        broker are skipped, saying so, if none is found
//   SHOAL_TEST_SHM_DIR   parent of the per-run directory (default /dev/shm)
//   SHOAL_CONFORMANCE    the conformance cases (conformance_test.go)

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

var (
	shoaldPath string // "" if none was found
	baseDir    string // this run's directory, removed at exit
)

const storeName = "gotest"

func TestMain(m *testing.M) {
	if role := os.Getenv("SHOAL_GOTEST_ROLE"); role != "" {
		os.Exit(runRole(role))
	}
	shoaldPath = findShoald()
	root := os.Getenv("SHOAL_TEST_SHM_DIR")
	if root == "" {
		root = "/dev/shm"
	}
	var err error
	if baseDir, err = os.MkdirTemp(root, "shoal-gotest-"); err != nil {
		if baseDir, err = os.MkdirTemp("", "shoal-gotest-"); err != nil {
			fmt.Fprintln(os.Stderr, "mkdtemp:", err)
			os.Exit(1)
		}
	}
	// the uid-65534 helper must reach the test directories
	os.Chmod(baseDir, 0o755)
	code := m.Run()
	os.RemoveAll(baseDir)
	os.Exit(code)
}

func findShoald() string {
	if p := os.Getenv("SHOAL_TEST_SHOALD"); p != "" {
		return p
	}
	if p, err := exec.LookPath("shoald"); err == nil {
		return p
	}
	if p, err := filepath.Abs("../../build/broker/shoald"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// broker is one shoald run by a test, in a private directory (socket,
// lock and shared objects), killed and removed when the test ends.
type broker struct {
	t                         testing.TB
	dir, rundir, shmdir, sock string
	log                       string
	args                      []string
	cmd                       *exec.Cmd
	waitc                     chan error // cmd.Wait's result
}

// startBroker starts shoald with extra args and waits until it accepts.
func startBroker(t testing.TB, args ...string) *broker {
	t.Helper()
	if shoaldPath == "" {
		t.Skip("no shoald: set SHOAL_TEST_SHOALD to the broker binary")
	}
	dir, err := os.MkdirTemp(baseDir, "t-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	b := &broker{t: t, dir: dir, rundir: dir + "/run", shmdir: dir + "/shm",
		sock: dir + "/run/" + storeName + ".sock", log: dir + "/broker.log", args: args}
	for _, d := range []string{b.rundir, b.shmdir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if b.cmd != nil {
			b.cmd.Process.Kill()
			<-b.waitc
			b.cmd = nil
		}
		if t.Failed() {
			b.dumpLog()
		}
		os.RemoveAll(dir)
	})
	b.start()
	return b
}

func (b *broker) dumpLog() {
	data, _ := os.ReadFile(b.log)
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	b.t.Logf("broker log %s (tail):\n%s", b.log, data)
}

// start (re)starts the broker on the same store.
func (b *broker) start() {
	b.t.Helper()
	args := append([]string{"--name", storeName, "--rundir", b.rundir,
		"--shm-dir", b.shmdir, "--socket", b.sock}, b.args...)
	cmd := exec.Command(shoaldPath, args...)
	logf, err := os.OpenFile(b.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(filteredEnv("NOTIFY_SOCKET", "SHOAL_SOCKET", "SHOAL_RUNDIR"),
		"SHOAL_SHM_DIR="+b.shmdir)
	// the broker dies with the test process, even a killed one
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("start %s: %v", shoaldPath, err)
	}
	b.cmd = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if conn, err := net.Dial("unix", b.sock); err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-exited:
			b.cmd = nil
			b.dumpLog()
			b.t.Fatalf("shoald exited before listening: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			b.dumpLog()
			b.t.Fatalf("shoald did not accept on %s within 10 s", b.sock)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// from now on cmd.Wait is the goroutine's; stop waits on exited
	b.waitc = exited
}

// stop sends sig and waits for the broker to exit (SIGKILL after 10 s).
func (b *broker) stop(sig syscall.Signal) {
	b.t.Helper()
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(sig)
	select {
	case <-b.waitc:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-b.waitc
		b.t.Errorf("shoald did not exit within 10 s of %v", sig)
	}
	b.cmd = nil
}

// open opens a client of this broker.
func (b *broker) open(t testing.TB, opts ...Option) *Client {
	t.Helper()
	c, err := Open(storeName, append([]Option{WithSocket(b.sock)}, opts...)...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func filteredEnv(drop ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, d := range drop {
			if len(kv) > len(d) && kv[:len(d)+1] == d+"=" {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// helper prepares the test binary as a subprocess in role with env
// (KEY=VALUE).
func helper(t testing.TB, role string, env ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), "SHOAL_GOTEST_ROLE="+role), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// ------------------------------------------------------------- roles ---

// runRole is main() of a helper subprocess: 0 on success.
func runRole(role string) int {
	sock := os.Getenv("SHOAL_GOTEST_SOCKET")
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "helper %s: %s\n", role, fmt.Sprintf(format, a...))
		return 1
	}
	switch role {
	case "writer":
		// SHOAL_GOTEST_N batches, each writing snap/0..snap/9 with one
		// value "gen-N"; the readers check they never see a mix
		n, _ := strconv.Atoi(os.Getenv("SHOAL_GOTEST_N"))
		c, err := Open(storeName, WithSocket(sock))
		if err != nil {
			return fail("open: %v", err)
		}
		defer c.Close()
		for g := 1; g <= n; g++ {
			val := []byte(fmt.Sprintf("gen-%06d", g))
			_, err := c.Batch(func(b *Batch) error {
				for i := 0; i < snapKeys; i++ {
					b.Put(snapKey(i), val)
				}
				return nil
			})
			if err != nil {
				return fail("batch %d: %v", g, err)
			}
		}
		if _, err := c.Put([]byte("snap/done"), []byte("yes")); err != nil {
			return fail("put done: %v", err)
		}
		return 0
	case "waker":
		// sleep, then put the key the parent waits for
		c, err := Open(storeName, WithSocket(sock))
		if err != nil {
			return fail("open: %v", err)
		}
		defer c.Close()
		time.Sleep(200 * time.Millisecond)
		if _, err := c.Put([]byte(os.Getenv("SHOAL_GOTEST_KEY")), []byte("woken")); err != nil {
			return fail("put: %v", err)
		}
		return 0
	case "denied":
		// run as another uid: the broker must refuse it
		c, err := Open(storeName, WithSocket(sock))
		if err == nil {
			c.Close()
			return fail("uid %d: Open succeeded, expected ErrDenied", os.Getuid())
		}
		if !errors.Is(err, ErrDenied) {
			return fail("uid %d: Open: %v, expected ErrDenied", os.Getuid(), err)
		}
		fmt.Fprintf(os.Stderr, "helper denied: uid %d got: %v\n", os.Getuid(), err)
		return 0
	}
	return fail("unknown role")
}

const snapKeys = 10

func snapKey(i int) []byte { return []byte(fmt.Sprintf("snap/%d", i)) }

// mustPut is Put that fails the test on error.
func mustPut(t testing.TB, c *Client, key, val string) uint64 {
	t.Helper()
	v, err := c.Put([]byte(key), []byte(val))
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return v
}

// errNameOf is the shoal_errname of err ("OK" for nil).
func errNameOf(err error) string {
	if err == nil {
		return "OK"
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Name
	}
	return "not a shoal error: " + err.Error()
}
