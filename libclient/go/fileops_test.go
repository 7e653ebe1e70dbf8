package shoal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Python's bytes.decode("utf-8", "replace"), cases checked with CPython.
func TestDecodeReplace(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"ok\xe2\x82\xac", "ok€"},
		{"a\xe2\x82b", "a\ufffdb"},                       // truncated sequence: one U+FFFD
		{"\xff\xfe", "\ufffd\ufffd"},                     // invalid bytes: one each
		{"\xed\xa0\x80x", "\ufffd\ufffd\ufffdx"},         // a surrogate
		{"\xf0\x9f\x98", "\ufffd"},                       // truncated at the end
		{"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"}, // above U+10FFFF
		{"\xc0\xaf", "\ufffd\ufffd"},                     // overlong
		{"\xe0\x80\x80", "\ufffd\ufffd\ufffd"},           // overlong three-byte
		{"a\x00b", "a\x00b"},
	} {
		if got := decodeReplace([]byte(c.in)); got != c.want {
			t.Errorf("decodeReplace(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// refTail is read_last_n_lines as UTILITIES.md states it, for the tests.
func refTail(data []byte, n int) []string {
	out := []string{}
	if n == 0 || len(data) == 0 {
		return out
	}
	pieces := bytes.Split(data, []byte("\n"))
	if bytes.HasSuffix(data, []byte("\n")) {
		pieces = pieces[:len(pieces)-1]
	}
	if len(pieces) > n {
		pieces = pieces[len(pieces)-n:]
	}
	for i, p := range pieces {
		s := strings.TrimRight(decodeReplace(p), "\r")
		if i < len(pieces)-1 {
			s += "\n"
		}
		out = append(out, s)
	}
	return out
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHashFile(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB, several reads
	for _, data := range [][]byte{nil, []byte("abc"), big} {
		p := writeFile(t, dir, fmt.Sprintf("f%d", len(data)), data)
		s256 := sha256.Sum256(data)
		s512 := sha512.Sum512(data)
		want := map[string]string{
			"sha256": hex.EncodeToString(s256[:]),
			"sha512": hex.EncodeToString(s512[:]),
		}
		for alg, w := range want {
			for i := 0; i < 2; i++ { // the second from the broker's cache
				got, err := c.HashFile(p, alg)
				if err != nil || got != w {
					t.Errorf("HashFile(%d bytes, %s) #%d = %q, %v; want %q", len(data), alg, i, got, err, w)
				}
			}
			if got, err := HashFileLocal(p, alg); err != nil || got != w {
				t.Errorf("HashFileLocal(%d bytes, %s) = %q, %v; want %q", len(data), alg, got, err, w)
			}
		}
		// blake2b: 256 bits by default, libshoal's length
		def, err := c.HashFile(p, "")
		if err != nil || len(def) != 64 {
			t.Errorf("HashFile(blake2b) = %q, %v", def, err)
		}
		if b2, err := c.HashFile(p, "blake2b"); err != nil || b2 != def {
			t.Errorf("HashFile(blake2b) = %q, %v; want %q", b2, err, def)
		}
		if l, err := HashFileLocal(p, "blake2b"); err != nil || l != def {
			t.Errorf("HashFileLocal(blake2b) = %q, %v; want %q", l, err, def)
		}
		if b256, err := c.HashFile(p, "blake2b-256"); err != nil || b256 != def {
			t.Errorf("HashFile(blake2b-256) = %q, %v; want %q", b256, err, def)
		}
		if long, err := c.HashFile(p, "blake2b-512"); err != nil || len(long) != 128 || long[:64] == def {
			t.Errorf("HashFile(blake2b-512) = %q, %v", long, err)
		}
		if b2sum, err := exec.LookPath("b2sum"); err == nil {
			for _, bits := range []string{"512", "256", "160"} {
				out, err := exec.Command(b2sum, "-l", bits, p).Output()
				if err != nil {
					t.Fatalf("b2sum: %v", err)
				}
				alg := "blake2b-" + bits
				got, err := c.HashFile(p, alg)
				if w := strings.Fields(string(out))[0]; err != nil || got != w {
					t.Errorf("HashFile(%s) = %q, %v; b2sum says %q", alg, got, err, w)
				}
			}
		}
	}
	// blake2b-512 of "abc" (RFC 7693, appendix A)
	const abc512 = "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1" +
		"7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
	if got, err := c.HashFile(filepath.Join(dir, "f3"), "blake2b-512"); err != nil || got != abc512 {
		t.Errorf("blake2b(abc) = %q, %v", got, err)
	}

	// a changed file is hashed again, not served from the cache
	p := writeFile(t, dir, "changing", []byte("one"))
	h1, _ := c.HashFile(p, "sha256")
	time.Sleep(20 * time.Millisecond)
	writeFile(t, dir, "changing", []byte("two"))
	h2, err := c.HashFile(p, "sha256")
	s := sha256.Sum256([]byte("two"))
	if err != nil || h2 != hex.EncodeToString(s[:]) || h2 == h1 {
		t.Errorf("after a rewrite: %q, %v (before %q)", h2, err, h1)
	}

	// errors
	missing := filepath.Join(dir, "missing")
	_, err = c.HashFile(missing, "sha256")
	if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), missing) {
		t.Errorf("HashFile(missing) = %v", err)
	}
	if _, err := HashFileLocal(missing, "sha256"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("HashFileLocal(missing) = %v", err)
	}
	if _, err := c.HashFile(dir, "sha256"); !errors.Is(err, ErrNotRegular) {
		t.Errorf("HashFile(dir) = %v, want ErrNotRegular", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err == nil {
		if _, err := c.HashFile(fifo, "sha256"); !errors.Is(err, ErrNotRegular) {
			t.Errorf("HashFile(fifo) = %v, want ErrNotRegular", err)
		}
	}
	for _, alg := range []string{"md5", "blake2b-100", "blake2b-1024", "SHA256x"} {
		if _, err := c.HashFile(p, alg); !errors.Is(err, ErrInvalid) {
			t.Errorf("HashFile(%s) = %v, want ErrInvalid", alg, err)
		}
	}
	if os.Geteuid() != 0 {
		locked := writeFile(t, dir, "locked", []byte("x"))
		os.Chmod(locked, 0)
		if _, err := c.HashFile(locked, "sha256"); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("HashFile(unreadable) = %v", err)
		}
	}
}

func TestTail(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	dir := t.TempDir()
	var big bytes.Buffer
	for i := 0; i < 100000; i++ {
		fmt.Fprintf(&big, "line %d of a big file\n", i)
	}
	cases := []string{
		"", "\n", "\n\n", "a", "a\n", "a\nb", "a\nb\n", "a\r\nb\r\n", "a\r\r\nb\r",
		"one\ntwo\nthree\nfour\n", "no newline at all but long " + strings.Repeat("x", 20000),
		"bad \xff utf-8\n\xe2\x82 cut\nok €\n", "nul\x00inside\nx\n",
		strings.Repeat("short\n", 5000), big.String(),
	}
	for ci, data := range cases {
		p := writeFile(t, dir, fmt.Sprintf("t%d", ci), []byte(data))
		for _, n := range []int{0, 1, 2, 3, 10, 100000} {
			want := refTail([]byte(data), n)
			got, err := c.Tail(p, n)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("Tail(case %d %.20q, %d) = %q, %v; want %q", ci, data, n, trunc(got), err, trunc(want))
			}
			got, err = ReadLastNLines(p, n)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("ReadLastNLines(case %d %.20q, %d) = %q, %v; want %q", ci, data, n, trunc(got), err, trunc(want))
			}
		}
	}
	p := writeFile(t, dir, "ab", []byte("a\nb\n"))
	if got, _ := c.Tail(p, 2); !reflect.DeepEqual(got, []string{"a\n", "b"}) {
		t.Errorf("Tail(a\\nb\\n, 2) = %q", got)
	}
	if _, err := c.Tail(p, -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Tail(-1) = %v", err)
	}
	if _, err := ReadLastNLines(p, -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReadLastNLines(-1) = %v", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := c.Tail(missing, 3); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Tail(missing) = %v", err)
	}
	if _, err := ReadLastNLines(missing, 3); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadLastNLines(missing) = %v", err)
	}
	if _, err := c.Tail(dir, 3); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Tail(dir) = %v", err)
	}
	if _, err := ReadLastNLines(dir, 3); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadLastNLines(dir) = %v", err)
	}
}

// trunc shortens a long list of lines for a message.
func trunc(l []string) []string {
	if len(l) > 6 {
		return append(append(append([]string{}, l[:3]...), "..."), l[len(l)-3:]...)
	}
	return l
}

// next receives one event, failing the test after 5 s.
func next(t *testing.T, ch <-chan FollowEvent) FollowEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the follow channel was closed")
		}
		if ev.Err != nil {
			t.Fatalf("follow error: %v", ev.Err)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no follow event within 5 s")
	}
	return FollowEvent{}
}

func expectLine(t *testing.T, ch <-chan FollowEvent, want string) FollowEvent {
	t.Helper()
	ev := next(t, ch)
	if ev.Kind != FollowLine || ev.Line != want {
		t.Fatalf("got %v %q (offset %d), want line %q", ev.Kind, ev.Line, ev.Offset, want)
	}
	return ev
}

// expectClosed waits for the channel to close, within d.
func expectClosed(t *testing.T, ch <-chan FollowEvent, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if ev.Err != nil {
				t.Errorf("unexpected error event: %v", ev.Err)
			}
		case <-deadline:
			t.Fatalf("the follow channel was not closed within %v", d)
		}
	}
}

func appendTo(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestFollow(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	dir := t.TempDir()
	log := writeFile(t, dir, "app.log", []byte("one\ntwo\nthree\n"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := c.Follow(ctx, log, 2)
	if err != nil {
		t.Fatal(err)
	}
	expectLine(t, ch, "two\n")
	expectLine(t, ch, "three\n")
	// the client's other calls go on meanwhile
	mustPut(t, c, "k", "v")
	// a line is delivered once its '\n' is written
	appendTo(t, log, "four\nfi")
	ev := expectLine(t, ch, "four\n")
	if ev.Offset != uint64(len("one\ntwo\nthree\n")) {
		t.Errorf("offset of four = %d", ev.Offset)
	}
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event before the '\\n': %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	appendTo(t, log, "ve\r\nbad \xff\n")
	expectLine(t, ch, "five\n")
	expectLine(t, ch, "bad \ufffd\n")

	// copytruncate: the file shrinks, following goes on from its start
	if err := os.Truncate(log, 0); err != nil {
		t.Fatal(err)
	}
	ev = next(t, ch)
	if ev.Kind != FollowTruncated || ev.Offset != 0 {
		t.Fatalf("after truncate: %+v", ev)
	}
	appendTo(t, log, "after truncate\n")
	expectLine(t, ch, "after truncate\n")

	// rotation: a line, at once a rename and a new file. The old file's
	// lines come first (the follower drains it), then the event, then the
	// new file's lines.
	appendTo(t, log, "last of the old file\n")
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, log, "new file\n")
	expectLine(t, ch, "last of the old file\n")
	ev = next(t, ch)
	if ev.Kind != FollowRotated {
		t.Fatalf("after the rename: %+v, want rotated", ev)
	}
	if ev.Path != log {
		t.Errorf("rotated: path %q, want %q", ev.Path, log)
	}
	expectLine(t, ch, "new file\n")

	// a rotation whose new file comes later: still one event, once the
	// new file is open, then its lines
	if err := os.Rename(log, log+".2"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		t.Fatalf("an event before the new file exists: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	appendTo(t, log, "third file\n")
	t0 := time.Now()
	ev = next(t, ch)
	if ev.Kind != FollowRotated || ev.Path != log {
		t.Fatalf("after the late create: %+v, want rotated", ev)
	}
	expectLine(t, ch, "third file\n")
	if d := time.Since(t0); d > 500*time.Millisecond {
		t.Errorf("the new file was picked up after %v", d)
	}

	// cancel: the channel is closed promptly
	t0 = time.Now()
	cancel()
	expectClosed(t, ch, 2*time.Second)
	// at once by design (the stop descriptor wakes the blocked cgo call):
	// the bound is the promise, ~100 ms, with room for a loaded machine
	if d := time.Since(t0); d > 250*time.Millisecond {
		t.Errorf("closed %v after cancel, want within ~100 ms", d)
	}
}

func TestFollowNoReopenAndClose(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	dir := t.TempDir()
	log := writeFile(t, dir, "app.log", nil)
	ch, err := c.Follow(context.Background(), log, 10, WithReopen(false))
	if err != nil {
		t.Fatal(err)
	}
	// an empty file: nothing until a line comes
	appendTo(t, log, "first\n")
	expectLine(t, ch, "first\n")
	// without reopen the follower stays on the renamed file (tail -f)
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Rename(log, log+".1"); err != nil {
		t.Fatal(err)
	}
	ev := next(t, ch)
	if ev.Kind != FollowRotated {
		t.Fatalf("after the rename: %+v", ev)
	}
	appendTo(t, log, "in the new file\n")
	f.WriteString("still the old file\n")
	expectLine(t, ch, "still the old file\n")

	// Close ends every follow: the channel is closed, no error event
	c2 := b.open(t)
	ch2, err := c2.Follow(context.Background(), log+".1", 0)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	expectClosed(t, ch2, 2*time.Second)
	if _, err := c2.Follow(context.Background(), log+".1", 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Follow after Close = %v", err)
	}

	// errors at the start
	if _, err := c.Follow(context.Background(), filepath.Join(dir, "missing"), 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Follow(missing) = %v", err)
	}
	if _, err := c.Follow(context.Background(), dir, 1); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Follow(dir) = %v", err)
	}
	if _, err := c.Follow(context.Background(), log+".1", -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("Follow(-1) = %v", err)
	}
}

// A consumer that stops reading does not keep the follower alive once its
// context ends, and the broker going away ends the follow with an error.
func TestFollowSlowConsumerAndBrokerGone(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	dir := t.TempDir()
	var data strings.Builder
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&data, "line %d\n", i)
	}
	log := writeFile(t, dir, "app.log", []byte(data.String()))
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := c.Follow(ctx, log, 500)
	if err != nil {
		t.Fatal(err)
	}
	expectLine(t, ch, "line 0\n")
	time.Sleep(100 * time.Millisecond) // the buffer fills; the pump waits
	cancel()
	expectClosed(t, ch, 2*time.Second)

	ch, err = c.Follow(context.Background(), log, 1)
	if err != nil {
		t.Fatal(err)
	}
	expectLine(t, ch, "line 499\n")
	b.stop(syscall.SIGKILL)
	select {
	case ev, ok := <-ch:
		if !ok || ev.Err == nil || !errors.Is(ev.Err, ErrUnavailable) {
			t.Errorf("after the broker died: %+v, %v", ev, ok)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no error event within 5 s of the broker's death")
	}
	expectClosed(t, ch, 2*time.Second)
}
