package shoal

// #include "shoalgo.h"
import "C"

import (
	"time"
)

// Batch collects writes that Client.Batch commits atomically: every
// operation becomes visible in one commit, or none does. Each method
// copies its key and value at once (into libshoal's batch buffer) and
// checks their sizes; its error (ErrTooBig, ErrInvalid) also fails the
// whole batch, even if fn ignores it. A Batch is used by one goroutine and
// only inside the function given to Client.Batch.
type Batch struct {
	b   *C.shoal_batch // nil once Client.Batch returned
	n   int            // operations added
	err error          // the first operation that could not be added
}

func (b *Batch) add(op string, r C.int) error {
	if r == 0 {
		b.n++
		return nil
	}
	err := &BatchError{Index: b.n, Err: newError(int(r), op, "")}
	if b.err == nil {
		b.err = err
	}
	return err
}

func (b *Batch) closed() error {
	return newError(int(C.SHOAL_ECLOSED), "batch", "the Batch was used after Client.Batch returned")
}

// Put adds a put of val under key.
func (b *Batch) Put(key, val []byte) error {
	if b.b == nil {
		return b.closed()
	}
	return b.add("batch put", C.shoal_batch_put(b.b, bytesPtr(key), C.size_t(len(key)),
		bytesPtr(val), C.size_t(len(val)), 0))
}

// PutTTL adds a put with a time to live (see Client.PutTTL).
func (b *Batch) PutTTL(key, val []byte, ttl time.Duration) error {
	if b.b == nil {
		return b.closed()
	}
	ms, err := ttlMS("batch put", ttl)
	if err != nil {
		return b.add("batch put", C.int(err.(*Error).Code))
	}
	return b.add("batch put", C.shoal_batch_put(b.b, bytesPtr(key), C.size_t(len(key)),
		bytesPtr(val), C.size_t(len(val)), ms))
}

// Delete adds a delete of key; if the key is absent when the batch
// commits, the whole batch fails (ErrNotFound, with this op's index).
func (b *Batch) Delete(key []byte) error {
	if b.b == nil {
		return b.closed()
	}
	return b.add("batch delete", C.shoal_batch_del(b.b, bytesPtr(key), C.size_t(len(key))))
}

// DeleteAny adds a delete of key if it is present (no error if absent).
func (b *Batch) DeleteAny(key []byte) error {
	if b.b == nil {
		return b.closed()
	}
	return b.add("batch delete", C.shoal_batch_del_any(b.b, bytesPtr(key), C.size_t(len(key))))
}

// CAS adds a put of val under key if the key's version is expect when the
// batch commits (0: absent); otherwise the whole batch fails (ErrConflict,
// with this op's index).
func (b *Batch) CAS(key []byte, expect uint64, val []byte) error {
	if b.b == nil {
		return b.closed()
	}
	return b.add("batch cas", C.shoal_batch_cas(b.b, bytesPtr(key), C.size_t(len(key)),
		C.uint64_t(expect), bytesPtr(val), C.size_t(len(val))))
}

// Len returns the number of operations added.
func (b *Batch) Len() int { return b.n }

// Batch runs fn to build a batch of writes and, if fn returns nil, commits
// them atomically and returns the commit's version (every key the batch
// wrote carries it). If fn returns an error, or one of its operations
// could not be added, nothing is sent and that error is returned. If the
// broker refuses an operation (a Delete of an absent key, a CAS conflict)
// nothing is applied and the error is a *BatchError naming the operation's
// index; errors.Is sees the cause (ErrNotFound, ErrConflict, ...).
// An empty batch commits nothing and returns 0, nil.
func (c *Client) Batch(fn func(b *Batch) error) (uint64, error) {
	// the builder takes the broker's value limit from a handle
	w, err := c.writers.get()
	if err != nil {
		return 0, err
	}
	var cb *C.shoal_batch
	r := C.shoal_batch_new(w.h.c, &cb)
	c.writers.put(w)
	if r != 0 {
		return 0, newError(int(r), "batch", "")
	}
	b := &Batch{b: cb}
	defer func() {
		b.b = nil
		C.shoal_batch_free(cb)
	}()
	if err := fn(b); err != nil {
		return 0, err
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.n == 0 {
		return 0, nil
	}
	ver, err := c.write("batch", func(h *handle) C.int {
		return C.shoal_batch_commit(h.h.c, cb, &h.h.ver)
	})
	if err != nil {
		return 0, &BatchError{Index: int(C.shoal_batch_failed(cb)), Err: err}
	}
	return ver, nil
}
