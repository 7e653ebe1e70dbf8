package shoal

// #include "shoalgo.h"
import "C"

import (
	"context"
	"time"
)

// waitSlice is how long one shoal_wait call may block. A futex wait can
// not be interrupted from Go, so Wait waits in slices and looks at its
// context between them: this bounds how late a cancellation is noticed,
// at the cost of one futex timeout (and a recheck of the key) per slice.
const waitSlice = 50 * time.Millisecond

// Wait blocks until key's version exceeds after (after 0: until the key
// exists; a delete counts as a change) and returns the key's version then
// (0 if it was deleted; pass that back as after to wait for the key to
// exist again). It waits on a futex in the shared mapping: no socket
// traffic, no polling, woken by the commit of any process.
//
// The key is checked at least once, even if ctx is already done. When ctx
// ends first, Wait returns the key's current version and: if ctx's
// deadline passed, an error matching both ErrTimeout and
// context.DeadlineExceeded; if ctx was canceled, ctx.Err().
// Other errors: ErrTooBig (key longer than KeyMax()).
//
// Waiting holds a waiter handle (see WithReaders), never a reader's.
func (c *Client) Wait(ctx context.Context, key []byte, after uint64) (uint64, error) {
	if len(key) > keyMax {
		return 0, newError(int(C.SHOAL_ETOOBIG), "wait", "key longer than KeyMax()")
	}
	for {
		ms := int(waitSlice / time.Millisecond)
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			if left < waitSlice {
				ms = int((left + time.Millisecond - 1) / time.Millisecond)
				if ms < 0 {
					ms = 0
				}
			}
		}
		if ctx.Err() != nil {
			ms = 0 // one look, no wait
		}
		ver, r, err := c.waitOnce(key, after, ms)
		if err != nil {
			return 0, err
		}
		switch r {
		case 0:
			return ver, nil
		case C.SHOAL_ETIMEOUT, -C.EINTR:
		default:
			return ver, newError(int(r), "wait", "")
		}
		if cerr := ctx.Err(); cerr != nil {
			if cerr == context.DeadlineExceeded {
				e := newError(int(C.SHOAL_ETIMEOUT), "wait", "the context's deadline passed")
				e.cause = cerr
				return ver, e
			}
			return ver, cerr
		}
	}
}

// waitOnce is one slice of Wait on a waiter handle.
func (c *Client) waitOnce(key []byte, after uint64, ms int) (uint64, C.int, error) {
	p := c.waiters
	h, err := p.get()
	if err != nil {
		if c.closed.Load() {
			return 0, 0, err
		}
		// no waiter handle could be opened (the broker is restarting, or
		// no reader slot is free): borrow a reader's for this slice
		if h, err = c.readers.get(); err != nil {
			return 0, 0, err
		}
		p = c.readers
	}
	copy(h.key, key)
	r := C.gs_wait(h.h, C.size_t(len(key)), C.uint64_t(after), C.int(ms))
	ver := uint64(h.h.ver)
	p.put(h)
	return ver, r, nil
}
