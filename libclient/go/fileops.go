package shoal

// #include "shoalgo.h"
import "C"

import (
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"
)

// The broker's file utilities (DESIGN.md section 6, the HashFile and
// TailLog requests; UTILITIES.md): the client opens the file and passes
// the descriptor, so the broker reads only what this process could read,
// and every client on the host shares the broker's hash cache.

// hashAlg parses a HashFile algorithm: "blake2b" (also ""), "blake2b-BITS"
// (b2sum's tag, BITS a multiple of 8 from 128 to 512), "sha256" or
// "sha512". It returns libshoal's name and the digest length in bytes.
//
// blake2b's default length is libshoal's (shoal_hash_file): 32 bytes, as
// Python's Client.hash_file and the CLI give it. hashlib.blake2b() and
// b2sum default to 64: "blake2b-512".
func hashAlg(alg string) (string, int, error) {
	switch alg {
	case "", "blake2b":
		return "blake2b", 32, nil
	case "sha256":
		return "sha256", 32, nil
	case "sha512":
		return "sha512", 64, nil
	}
	if strings.HasPrefix(alg, "blake2b-") {
		s := strings.TrimPrefix(alg, "blake2b-")
		if bits, err := strconv.Atoi(s); err == nil && bits%8 == 0 && bits >= 128 && bits <= 512 {
			return "blake2b", bits / 8, nil
		}
	}
	return "", 0, newError(int(C.SHOAL_EINVAL), "hash",
		"unknown algorithm "+strconv.Quote(alg)+
			": expected blake2b, blake2b-BITS (128..512, a multiple of 8), sha256 or sha512")
}

// pathDetail is the detail of a failure on path: libshoal's text, led by
// the path when the text does not name it already.
func pathDetail(path, detail string) string {
	if strings.Contains(detail, path) {
		return detail
	}
	if detail == "" {
		return path
	}
	return path + ": " + detail
}

// HashFile returns the lowercase hex digest of the whole file at path,
// computed by the broker (which caches it by inode, size and times: a
// second request for an unchanged file costs no read).
//
// alg is "blake2b" (or ""; BLAKE2b-256, libshoal's default length, as
// Python's Client.hash_file and `shoal hash` give it), "blake2b-BITS" for
// another length (BITS a multiple of 8 from 128 to 512, as b2sum -l BITS;
// "blake2b-512" is hashlib.blake2b()'s and b2sum's default), "sha256" or
// "sha512". The digest equals sha256sum's, sha512sum's or b2sum -l BITS's,
// and hashlib's for the same algorithm and length.
//
// Errors: ErrInvalid (an unknown algorithm), ErrNotRegular (a directory,
// FIFO, socket or device), ErrChanged (the file kept changing while it
// was read), a system error of open or read (errors.Is(err,
// fs.ErrNotExist), fs.ErrPermission, syscall.EIO), and those of a write
// (ErrUnavailable, ErrTimeout). Error details name the path.
func (c *Client) HashFile(path, alg string) (string, error) {
	name, dlen, err := hashAlg(alg)
	if err != nil {
		return "", err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	calg := C.CString(name)
	defer C.free(unsafe.Pointer(calg))
	buf := (*C.uchar)(C.malloc(C.SHOAL_HASH_MAX))
	defer C.free(unsafe.Pointer(buf))
	var sum string
	_, err = c.write("hash", func(h *handle) C.int {
		r := C.gs_hash_path(h.h, cpath, calg, C.size_t(dlen), unsafe.Pointer(buf),
			C.SHOAL_HASH_MAX)
		if r < 0 {
			return r
		}
		sum = hex.EncodeToString(C.GoBytes(unsafe.Pointer(buf), r))
		return 0
	})
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Detail = pathDetail(path, e.Detail)
		}
		return "", err
	}
	return sum, nil
}

// Tail returns the last n lines of the file at path, read from its end by
// the broker (the cost does not grow with the file's size), exactly as
// UTILITIES.md's read_last_n_lines: each line decoded as UTF-8 with
// invalid bytes replaced by U+FFFD (Python's errors="replace"), trailing
// '\r's removed, and '\n' appended to every line but the last. So "a\nb\n"
// with n 2 gives ["a\n", "b"], and "\n" with n 1 gives [""]. n 0 or an
// empty file: an empty slice.
//
// Errors: ErrInvalid (n < 0), ErrNotRegular, ErrTooBig (the lines would
// not fit in one reply of the broker: ask for fewer), a system error of
// open or read (errors.Is(err, fs.ErrNotExist)), and those of a write.
func (c *Client) Tail(path string, n int) ([]string, error) {
	if n < 0 {
		return nil, newError(int(C.SHOAL_EINVAL), "tail",
			"n = "+strconv.Itoa(n)+": the number of lines can not be negative")
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	out := (**C.shoal_lines)(C.malloc(C.size_t(unsafe.Sizeof(uintptr(0)))))
	defer C.free(unsafe.Pointer(out))
	var lines []string
	_, err := c.write("tail", func(h *handle) C.int {
		*out = nil
		r := C.shoal_tail(h.h.c, cpath, C.size_t(n), out)
		if r != 0 {
			return r
		}
		lines = decodeLines(*out)
		C.shoal_lines_free(*out)
		return 0
	})
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Detail = pathDetail(path, e.Detail)
		}
		return nil, err
	}
	return lines, nil
}

// decodeLines turns libshoal's raw lines into read_last_n_lines' strings.
func decodeLines(l *C.shoal_lines) []string {
	n := int(l.n)
	lines := make([]string, n)
	for i := 0; i < n; i++ {
		s := decodeLine(lineBytes(l, i))
		if i < n-1 {
			s += "\n"
		}
		lines[i] = s
	}
	return lines
}

// lineBytes is line i of l, aliasing C memory (copy before freeing l).
func lineBytes(l *C.shoal_lines, i int) []byte {
	var ln C.size_t
	p := C.gs_line(l, C.size_t(i), &ln)
	if ln == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(ln))
}

// decodeLine is bytes.decode("utf-8", "replace").rstrip("\r"): a copy.
func decodeLine(b []byte) string {
	return strings.TrimRight(decodeReplace(b), "\r")
}

// decodeReplace decodes b as UTF-8 the way Python's
// bytes.decode("utf-8", "replace") does: every maximal subpart of an
// ill-formed sequence becomes one U+FFFD (the Unicode Standard's
// recommended practice, section 3.9), so "\xe2\x82" (a truncated
// three-byte sequence) is one U+FFFD, not two as utf8.DecodeRune would
// count. The result is always a new string.
func decodeReplace(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for i := 0; i < len(b); {
		c := b[i]
		if c < 0x80 {
			sb.WriteByte(c)
			i++
			continue
		}
		// the sequence's length and the range of its second byte
		var need int
		lo, hi := byte(0x80), byte(0xbf)
		switch {
		case c >= 0xc2 && c <= 0xdf:
			need = 1
		case c == 0xe0:
			need, lo = 2, 0xa0
		case c >= 0xe1 && c <= 0xec, c == 0xee, c == 0xef:
			need = 2
		case c == 0xed:
			need, hi = 2, 0x9f // no surrogates
		case c == 0xf0:
			need, lo = 3, 0x90
		case c >= 0xf1 && c <= 0xf3:
			need = 3
		case c == 0xf4:
			need, hi = 3, 0x8f // nothing above U+10FFFF
		default: // a continuation byte, or 0xc0, 0xc1, 0xf5..0xff
			sb.WriteRune(utf8.RuneError)
			i++
			continue
		}
		j := i + 1
		ok := true
		for k := 0; k < need; k++ {
			if j >= len(b) {
				ok = false
				break
			}
			d := b[j]
			if k == 0 && (d < lo || d > hi) || k > 0 && (d < 0x80 || d > 0xbf) {
				ok = false
				break
			}
			j++
		}
		if ok {
			sb.Write(b[i:j])
		} else {
			sb.WriteRune(utf8.RuneError) // b[i:j], the maximal subpart
		}
		i = j
	}
	return sb.String()
}

// FollowKind is the kind of a FollowEvent.
type FollowKind int

// The kinds of FollowEvent. The zero value is no kind: the event of an
// error (FollowEvent.Err set).
const (
	// FollowLine is a line of the file (FollowEvent.Line).
	FollowLine FollowKind = iota + 1
	// FollowTruncated means the file shrank below what had been read
	// (Offset: its new size); following goes on from its start, as a
	// copytruncate rotation needs.
	FollowTruncated
	// FollowRotated means the file was renamed or unlinked. With
	// WithReopen(true) (the default) the follower then opens the path
	// again and follows the new file from its start, as tail -F does: the
	// event comes once the new file is open (if the path stays absent,
	// when it reappears), and the lines after it are the new file's. With
	// WithReopen(false) the event comes at once and the follower stays on
	// the old file, as tail -f.
	FollowRotated
)

// String is the kind's name: "line", "truncated", "rotated" ("error" for
// the zero value).
func (k FollowKind) String() string {
	switch k {
	case FollowLine:
		return "line"
	case FollowTruncated:
		return "truncated"
	case FollowRotated:
		return "rotated"
	case 0:
		return "error"
	}
	return "FollowKind(" + strconv.Itoa(int(k)) + ")"
}

// FollowEvent is one event of Follow.
type FollowEvent struct {
	// Kind says what happened; 0 when Err is set.
	Kind FollowKind
	// Line is the line of a FollowLine event, decoded as Tail decodes (U+FFFD
	// for invalid UTF-8, trailing '\r's removed) and ending with '\n', as
	// Python's Client.follow gives it. A line is delivered once its '\n'
	// is written.
	Line string
	// Offset is where the line starts in the file; for FollowTruncated the
	// file's new size.
	Offset uint64
	// Path is the file followed (FollowTruncated, FollowRotated): for a
	// rotation followed by a reopen, the path opened again.
	Path string
	// Err, in the last event before the channel is closed, is the error
	// that ended the follow: ErrUnavailable when the broker went away
	// (lines may have been missed: follow again), or what the broker
	// reported.
	Err error
}

// FollowOption configures Follow.
type FollowOption func(*followOptions)

type followOptions struct {
	reopen bool
}

// WithReopen sets whether a rotation (the file renamed or unlinked) makes
// the follower open the path again and follow the new file, as tail -F
// does (true, the default), or stay on the old file, as tail -f.
func WithReopen(reopen bool) FollowOption {
	return func(o *followOptions) { o.reopen = reopen }
}

// followBuffer is how many events Follow's channel holds, so that the
// goroutine reading the broker is not held up by every line's receiver.
const followBuffer = 64

// follower is one Follow in progress, known to its Client so that Close
// stops it.
type follower struct {
	g    *C.gs_follow
	stop chan struct{} // closed by Client.Close
	once sync.Once
}

func (f *follower) halt() { f.once.Do(func() { close(f.stop) }) }

// Follow streams the file at path as tail -F does: its last n lines, then
// every line appended after them, pushed by the broker as it is written
// (inotify, no polling), with FollowTruncated and FollowRotated events in
// between. Nothing is lost or repeated across a rotation: the lines of the
// old file come first, then the FollowRotated event, then those of the new
// file.
//
// The follower has its own connection to the broker and one goroutine;
// both end when ctx is done or c is closed (the channel is then closed
// within milliseconds, with no error event), or when an error ends the
// follow: its last event carries Err and the channel is closed. Receive
// until the channel is closed; a receiver that stops early must cancel
// ctx.
//
// Errors at the start: ErrInvalid (n < 0), those of Tail for path, and
// ErrClosed.
func (c *Client) Follow(ctx context.Context, path string, n int, opts ...FollowOption) (<-chan FollowEvent, error) {
	o := followOptions{reopen: true}
	for _, opt := range opts {
		opt(&o)
	}
	if n < 0 {
		return nil, newError(int(C.SHOAL_EINVAL), "follow",
			"n = "+strconv.Itoa(n)+": the number of lines can not be negative")
	}
	var flags C.unsigned
	if o.reopen {
		flags |= C.SHOAL_FOLLOW_REOPEN
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	out := (**C.gs_follow)(C.malloc(C.size_t(unsafe.Sizeof(uintptr(0)))))
	defer C.free(unsafe.Pointer(out))
	_, err := c.write("follow", func(h *handle) C.int {
		return C.gs_follow_open(h.h, cpath, C.size_t(n), flags, out)
	})
	if err != nil {
		if e, ok := err.(*Error); ok {
			e.Detail = pathDetail(path, e.Detail)
		}
		return nil, err
	}
	f := &follower{g: *out, stop: make(chan struct{})}
	if !c.addFollower(f) { // Close ran meanwhile
		C.gs_follow_close(f.g)
		return nil, c.closedErr()
	}
	ch := make(chan FollowEvent, followBuffer)
	go c.pump(ctx, f, path, ch)
	return ch, nil
}

// addFollower registers f with c; false if c is closed.
func (c *Client) addFollower(f *follower) bool {
	c.followMu.Lock()
	defer c.followMu.Unlock()
	if c.closed.Load() {
		return false
	}
	if c.followers == nil {
		c.followers = map[*follower]struct{}{}
	}
	c.followers[f] = struct{}{}
	c.followWG.Add(1) // under followMu: Close's Wait sees it
	return true
}

// stopFollowers stops every follower of c and waits until they are
// closed (Close).
func (c *Client) stopFollowers() {
	c.followMu.Lock()
	for f := range c.followers {
		f.halt()
	}
	c.followMu.Unlock()
	c.followWG.Wait()
}

// pump is the goroutine of a Follow: it reads the follower's events into
// ch until ctx is done, c is closed or an error ends the follow. A
// watcher goroutine turns ctx's end (or Close) into a write to the
// follower's stop descriptor, which wakes the blocking cgo call at once.
func (c *Client) pump(ctx context.Context, f *follower, path string, ch chan<- FollowEvent) {
	defer c.followWG.Done()
	watchDone := make(chan struct{})
	watchExited := make(chan struct{})
	go func() {
		defer close(watchExited)
		select {
		case <-ctx.Done():
		case <-f.stop:
		case <-watchDone:
			return
		}
		C.gs_follow_stop(f.g)
	}()
	defer func() {
		close(watchDone)
		<-watchExited // no write to the stop descriptor after it is closed
		C.gs_follow_close(f.g)
		c.followMu.Lock()
		delete(c.followers, f)
		c.followMu.Unlock()
		close(ch)
	}()
	// send delivers ev unless the follow is being stopped
	send := func(ev FollowEvent) bool {
		select {
		case ch <- ev:
			return true
		case <-ctx.Done():
		case <-f.stop:
		}
		return false
	}
	for {
		r := C.gs_follow_next(f.g)
		if r == 1 {
			return
		}
		if r != 0 {
			if ctx.Err() != nil {
				return
			}
			e := newError(int(r), "follow", path)
			send(FollowEvent{Err: e})
			return
		}
		ev := &f.g.ev
		var fe FollowEvent
		switch ev.kind {
		case C.SHOAL_FOLLOW_LINE:
			var b []byte
			if ev.len > 0 {
				b = unsafe.Slice((*byte)(unsafe.Pointer(ev.data)), int(ev.len))
			}
			fe = FollowEvent{Kind: FollowLine, Line: decodeLine(b) + "\n", Offset: uint64(ev.offset)}
		case C.SHOAL_FOLLOW_TRUNCATED:
			fe = FollowEvent{Kind: FollowTruncated, Offset: uint64(ev.offset), Path: path}
		case C.SHOAL_FOLLOW_ROTATED:
			// With reopen libshoal reports a rotation once, when the new
			// file is followed (ev.data: the path).
			p := path
			if ev.len > 0 {
				p = C.GoStringN(ev.data, C.int(ev.len))
			}
			fe = FollowEvent{Kind: FollowRotated, Offset: uint64(ev.offset), Path: p}
		default: // SHOAL_FOLLOW_IDLE belongs to the callback form
			continue
		}
		if !send(fe) {
			return
		}
	}
}
