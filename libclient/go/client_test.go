package shoal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Every SHOAL_E* code of shoal/error.h's X-macro has its sentinel, with the
// name shoal_errname gives it, and errors.Is matches by code only.
func TestSentinelsCoverErrorMap(t *testing.T) {
	byCode := map[int]*Error{}
	for _, s := range sentinels {
		if byCode[s.Code] != nil {
			t.Errorf("two sentinels for code %d", s.Code)
		}
		byCode[s.Code] = s
	}
	n := 0
	for code := errBase - 1; ; code-- {
		name := errName(code)
		if name == "EUNKNOWN" {
			break
		}
		n++
		s := byCode[code]
		if s == nil {
			t.Errorf("code %d (%s) of shoal/error.h has no sentinel in errors.go", code, name)
			continue
		}
		if s.Name != name {
			t.Errorf("sentinel of code %d is named %s, shoal_errname says %s", code, s.Name, name)
		}
		if s.Message == "" || !strings.HasPrefix(s.Error(), "shoal: ") {
			t.Errorf("sentinel %s: message %q", name, s.Error())
		}
		e := newError(code, "op", "detail")
		for _, o := range sentinels {
			if got := errors.Is(e, o); got != (o == s) {
				t.Errorf("errors.Is(%s, %s) = %v", name, o.Name, got)
			}
		}
		if !strings.Contains(e.Error(), "op: ") || !strings.HasSuffix(e.Error(), ": detail") {
			t.Errorf("%s: %q lacks the op or the detail", name, e.Error())
		}
	}
	if n != len(sentinels) {
		t.Errorf("shoal/error.h has %d codes, errors.go %d sentinels", n, len(sentinels))
	}
	// system errors: named by errno, matched by syscall.Errno
	e := newError(-int(syscall.ENOMEM), "open", "")
	if e.Name != "ENOMEM" || !errors.Is(e, syscall.ENOMEM) || errors.Is(e, syscall.EPERM) || errors.Is(e, ErrNoSpace) {
		t.Errorf("-ENOMEM: %#v", e)
	}
}

func TestPutGetViewStats(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	if err := c.Ping(); err != nil {
		t.Fatal(err)
	}
	v1 := mustPut(t, c, "k", "one")
	v2 := mustPut(t, c, "k", "two")
	if v2 <= v1 {
		t.Errorf("versions %d then %d", v1, v2)
	}
	got, err := c.Get([]byte("k"))
	if err != nil || string(got) != "two" {
		t.Errorf("Get = %q, %v", got, err)
	}
	if _, err := c.Get([]byte("absent")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(absent) = %v", err)
	}
	mustPut(t, c, "empty", "")
	mustPut(t, c, "", "the empty key")
	err = c.View(func(tx *Tx) error {
		v, ok := tx.Get([]byte("k"))
		if !ok || string(v) != "two" {
			t.Errorf("tx.Get = %q, %v", v, ok)
		}
		if v, ok := tx.Get([]byte("absent")); ok || v != nil {
			t.Errorf("tx.Get(absent) = %q, %v", v, ok)
		}
		if v, ok := tx.Get([]byte("empty")); !ok || v == nil || len(v) != 0 {
			t.Errorf("tx.Get(empty) = %#v, %v", v, ok)
		}
		if v, ok := tx.Get(nil); !ok || string(v) != "the empty key" {
			t.Errorf("tx.Get(nil) = %q, %v", v, ok)
		}
		v, ver, err := tx.GetVersion([]byte("k"))
		if err != nil || string(v) != "two" || ver != v2 {
			t.Errorf("GetVersion = %q, %d, %v; want two, %d", v, ver, err, v2)
		}
		if _, _, err := tx.GetVersion([]byte("absent")); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetVersion(absent) = %v", err)
		}
		return tx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	// fn's error comes back as is
	sentinel := errors.New("mine")
	if err := c.View(func(tx *Tx) error { return sentinel }); err != sentinel {
		t.Errorf("View returned %v, want fn's error", err)
	}
	if KeyMax() != 1024 || c.ValueMax() < 1<<20 || Version() == "" {
		t.Errorf("KeyMax %d ValueMax %d Version %q", KeyMax(), c.ValueMax(), Version())
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Keys != 3 || st.BrokerPID != b.cmd.Process.Pid || st.Requests["put"] < 4 ||
		st.CommitSeq < v2 || st.Size == 0 || st.ReadersClaimed < 2 || st.Connections < 2 {
		t.Errorf("Stats: %+v", st)
	}
}

// A write that returned is visible to a View begun afterwards, in the same
// client (the writes use other handles than the reads).
func TestReadYourWrites(t *testing.T) {
	b := startBroker(t)
	c := b.open(t, WithReaders(2))
	for i := 0; i < 200; i++ {
		val := fmt.Sprint(i)
		ver := mustPut(t, c, "ryw", val)
		c.View(func(tx *Tx) error {
			v, gv, err := tx.GetVersion([]byte("ryw"))
			if err != nil || string(v) != val || gv != ver {
				t.Fatalf("after put %d (version %d): %q %d %v", i, ver, v, gv, err)
			}
			return nil
		})
	}
}

func TestErrorsTooBigNotFoundConflictInvalid(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	big := bytes.Repeat([]byte("k"), KeyMax()+1)
	max := bytes.Repeat([]byte("k"), KeyMax())
	mustPut(t, c, string(max), "longest key")
	check := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %s", what, err, want.(*Error).Name)
		}
	}
	// ErrTooBig: keys, values, everywhere
	ver, err := c.Put(big, []byte("v"))
	check("Put(big key)", err, ErrTooBig)
	if ver != 0 {
		t.Errorf("a failed Put returned version %d", ver)
	}
	_, err = c.Put([]byte("v"), make([]byte, c.ValueMax()+1))
	check("Put(big value)", err, ErrTooBig)
	_, err = c.PutTTL(big, []byte("v"), time.Second)
	check("PutTTL(big key)", err, ErrTooBig)
	check("Delete(big key)", c.Delete(big), ErrTooBig)
	_, err = c.CAS(big, 0, []byte("v"))
	check("CAS(big key)", err, ErrTooBig)
	_, err = c.Get(big)
	check("Get(big key)", err, ErrTooBig)
	_, err = c.Wait(context.Background(), big, 0)
	check("Wait(big key)", err, ErrTooBig)
	err = c.View(func(tx *Tx) error {
		if v, ok := tx.Get(max); !ok || string(v) != "longest key" {
			t.Errorf("Get(max key) = %q %v", v, ok)
		}
		if tx.Err() != nil {
			t.Errorf("Err after good gets: %v", tx.Err())
		}
		_, _, err := tx.GetVersion(big)
		check("GetVersion(big key)", err, ErrTooBig)
		check("ScanPrefix(big)", tx.ScanPrefix(big, func(k, v []byte) bool { return true }), ErrTooBig)
		if _, ok := tx.Get(big); ok {
			t.Error("Get(big key) found")
		}
		check("Tx.Err after Get(big key)", tx.Err(), ErrTooBig)
		return nil
	})
	check("View after Get(big key)", err, ErrTooBig)
	// the detail names the cause
	_, err = c.Put(big, nil)
	if e := (*Error)(nil); !errors.As(err, &e) || e.Op != "put" || !strings.Contains(e.Detail, "1025") {
		t.Errorf("Put(big key) error %q: want op put and a detail naming 1025 bytes", err)
	}

	// ErrNotFound
	check("Delete(absent)", c.Delete([]byte("absent")), ErrNotFound)
	mustPut(t, c, "del", "x")
	if err := c.Delete([]byte("del")); err != nil {
		t.Errorf("Delete: %v", err)
	}
	check("Delete(deleted)", c.Delete([]byte("del")), ErrNotFound)

	// ErrConflict, with the current version
	v1, err := c.CAS([]byte("cas"), 0, []byte("first"))
	if err != nil {
		t.Fatalf("CAS(absent, 0): %v", err)
	}
	_, err = c.CAS([]byte("cas"), 0, []byte("again"))
	check("CAS(present, 0)", err, ErrConflict)
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Current != v1 || !strings.Contains(err.Error(), fmt.Sprint(v1)) {
		t.Errorf("CAS conflict: %#v, want Current %d", err, v1)
	}
	_, err = c.CAS([]byte("nothere"), 5, []byte("x"))
	if !errors.As(err, &ce) || ce.Current != 0 {
		t.Errorf("CAS(absent, 5): %v, want a conflict with Current 0", err)
	}
	v2, err := c.CAS([]byte("cas"), v1, []byte("second"))
	if err != nil || v2 <= v1 {
		t.Errorf("CAS(v1) = %d, %v", v2, err)
	}

	// ErrInvalid
	_, err = Open("bad/name", WithSocket(b.sock))
	check("Open(bad/name)", err, ErrInvalid)
	_, err = Open("otherstore", WithSocket(b.sock))
	check("Open(name the broker does not serve)", err, ErrInvalid)
	_, err = Open(storeName, WithSocket(b.sock), WithReaders(0))
	check("Open(WithReaders(0))", err, ErrInvalid)
	_, err = Open(storeName, WithSocket(b.sock), WithTimeout(0))
	check("Open(WithTimeout(0))", err, ErrInvalid)
	_, err = c.PutTTL([]byte("k"), []byte("v"), 0)
	check("PutTTL(0)", err, ErrInvalid)
	err = c.View(func(tx *Tx) error {
		_, err := tx.GetManyInto([][]byte{[]byte("a"), []byte("b")}, make([][]byte, 1))
		return err
	})
	check("GetManyInto(short vals)", err, ErrInvalid)
	// the name may be left out: whichever store the socket serves
	c2, err := Open("", WithSocket(b.sock))
	if err != nil {
		t.Fatalf("Open(\"\"): %v", err)
	}
	if v, err := c2.Get([]byte("cas")); err != nil || string(v) != "second" {
		t.Errorf("Get via Open(\"\"): %q %v", v, err)
	}
	c2.Close()
}

func TestClosed(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	var kept *Tx
	c.View(func(tx *Tx) error { kept = tx; return nil })
	if _, ok := kept.Get([]byte("k")); ok || !errors.Is(kept.Err(), ErrClosed) {
		t.Errorf("Tx used after View: Err %v", kept.Err())
	}
	if err := kept.Scan(nil, nil, func(k, v []byte) bool { return true }); !errors.Is(err, ErrClosed) {
		t.Errorf("Scan after View: %v", err)
	}
	var keptB *Batch
	c.Batch(func(b *Batch) error { keptB = b; return nil })
	if err := keptB.Put([]byte("k"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Batch used after Batch: %v", err)
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err := c.Put([]byte("k"), nil)
	for what, err := range map[string]error{
		"Put":    err,
		"View":   c.View(func(*Tx) error { return nil }),
		"Delete": c.Delete([]byte("k")),
		"Ping":   c.Ping(),
		"Wait":   func() error { _, err := c.Wait(context.Background(), []byte("k"), 0); return err }(),
		"Get":    func() error { _, err := c.Get([]byte("k")); return err }(),
		"Batch":  func() error { _, err := c.Batch(func(*Batch) error { return nil }); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", what, err)
		}
	}
}

// Close waits for the calls in flight; the goroutines still calling get
// ErrClosed, never a crash or a hang.
func TestCloseWhileBusy(t *testing.T) {
	b := startBroker(t)
	c, err := Open(storeName, WithSocket(b.sock), WithReaders(2))
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, "k", "v")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				if g%2 == 0 {
					err = c.View(func(tx *Tx) error {
						if _, ok := tx.Get([]byte("k")); !ok {
							return errors.New("k missing")
						}
						return nil
					})
				} else {
					_, err = c.Put([]byte("k"), []byte("v"))
				}
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						errs <- err
					}
					return
				}
			}
		}(g)
	}
	wg.Add(1)
	go func() { // a Wait in progress ends with ErrClosed
		defer wg.Done()
		if _, err := c.Wait(context.Background(), []byte("never"), 0); !errors.Is(err, ErrClosed) {
			errs <- fmt.Errorf("Wait during Close: %v", err)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	c.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("during Close: %v", err)
	}
}

// A panic in View's function does not leak the handle or its section.
func TestViewPanic(t *testing.T) {
	b := startBroker(t)
	c := b.open(t, WithReaders(1))
	for i := 0; i < 3; i++ {
		func() {
			defer func() { recover() }()
			c.View(func(tx *Tx) error { panic("boom") })
		}()
	}
	done := make(chan error, 1)
	go func() { done <- c.View(func(tx *Tx) error { return nil }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("View after a panic hangs: the handle was not returned")
	}
	st, err := c.Stats()
	if err != nil || st.ReadersBusy != 0 {
		t.Errorf("readers busy after the panics: %d (%v)", st.ReadersBusy, err)
	}
}

func TestUnavailable(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(storeName, WithSocket(dir+"/none.sock"))
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Open with no broker: %v, want ErrUnavailable", err)
	}
	if err != nil && !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("the error %q does not name the socket", err)
	}
	_, err = Open(storeName, WithRundir(dir))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Open(WithRundir) with no broker: %v", err)
	}

	// a broker that goes away: reads keep working, writes fail once the
	// connect timeout passes
	b := startBroker(t)
	c := b.open(t, WithConnectTimeout(200*time.Millisecond))
	mustPut(t, c, "k", "v")
	b.stop(syscall.SIGTERM)
	t0 := time.Now()
	_, err = c.Put([]byte("k"), []byte("w"))
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put with the broker down: %v, want ErrUnavailable", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("Put with the broker down took %v (connect timeout 200 ms)", d)
	}
	if v, err := c.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Errorf("Get with the broker down: %q %v", v, err)
	}
	if err := c.Ping(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Ping with the broker down: %v", err)
	}
	b.start()
	if _, err := c.Put([]byte("k"), []byte("back")); err != nil {
		t.Errorf("Put after the restart: %v", err)
	}
}

func TestNoSpace(t *testing.T) {
	b := startBroker(t, "--size", "4M")
	c := b.open(t)
	val := make([]byte, 64<<10)
	for i := 0; i < 200; i++ {
		_, err := c.Put([]byte(fmt.Sprintf("fill/%d", i)), val)
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("put %d: %v, want ErrNoSpace", i, err)
		}
		t.Logf("store full after %d puts of 64 KiB: %v", i, err)
		// deleting makes room again (once the broker reclaims)
		for j := 0; j < i; j++ {
			if err := c.Delete([]byte(fmt.Sprintf("fill/%d", j))); err != nil {
				t.Fatalf("delete %d: %v", j, err)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err = c.Put([]byte("again"), val); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("put after deleting everything: %v", err)
		}
		return
	}
	t.Fatal("200 puts of 64 KiB fit in a 4 MiB store")
}

func TestNoReaders(t *testing.T) {
	// two slots: the broker's own and one for a client's reader handle
	b := startBroker(t, "--reader-slots", "2")
	c := b.open(t, WithReaders(4))
	mustPut(t, c, "k", "v")
	_, err := Open(storeName, WithSocket(b.sock))
	if !errors.Is(err, ErrNoReaders) {
		t.Errorf("Open with every reader slot taken: %v, want ErrNoReaders", err)
	}
	// the client still reads, waits (borrowing its reader handle) and writes
	// with several goroutines, although no second reader handle opens
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if err := c.View(func(tx *Tx) error {
					if _, ok := tx.Get([]byte("k")); !ok {
						return errors.New("k missing")
					}
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	ver, err := c.Wait(context.Background(), []byte("k"), 0)
	if err != nil || ver == 0 {
		t.Errorf("Wait with no free slot: %d %v", ver, err)
	}
}

// Needs root: a helper running as uid 65534 (nobody) is refused by a
// broker that allows only its own uid.
func TestDenied(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: runs a helper as uid 65534")
	}
	b := startBroker(t)
	for _, d := range []string{b.dir, b.rundir, b.shmdir} {
		os.Chmod(d, 0o777)
	}
	// the test binary lives in go's private work directory: copy it where
	// nobody can execute it
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	copyExe := b.dir + "/shoal.test"
	if err := os.WriteFile(copyExe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	// also through a socket anyone may connect to: SO_PEERCRED refuses
	for _, mode := range []os.FileMode{0o660, 0o666} {
		os.Chmod(b.sock, mode)
		cmd := helper(t, "denied", "SHOAL_GOTEST_SOCKET="+b.sock)
		cmd.Path, cmd.Args = copyExe, []string{copyExe}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
		cmd.Dir = "/"
		out, err := cmd.CombinedOutput()
		t.Logf("socket mode %o: %s", mode, bytes.TrimSpace(out))
		if err != nil {
			if strings.Contains(err.Error(), "permission denied") ||
				strings.Contains(string(out), "error while loading shared libraries") {
				t.Skipf("uid 65534 can not run the test binary (%v: %s): is libshoal's directory readable by others?", err, out)
			}
			t.Errorf("socket mode %o: helper: %v\n%s", mode, err, out)
		}
	}
}
