package shoal

// #include "shoalgo.h"
import "C"

import (
	"strconv"
	"syscall"
	"unsafe"
)

// Tx is a read-only snapshot of the store, valid inside the function given
// to View. The slices its methods return point into the store's shared
// mapping (no copy): they are valid until the function returns and must
// not be modified (the mapping is read-only: writing faults). Copy what
// must outlive the View; using a slice, or the Tx, after it is undefined.
// A Tx is used by one goroutine.
type Tx struct {
	h     *handle // nil once View returned
	err   error   // the first failure of Get other than not found
	scans int     // Scans in progress (nested in each other's fn)
}

// emptyVal is what a present empty value reads as: non-nil, so that
// GetMany can tell it from an absent key.
var emptyVal = []byte{}

// View runs fn with a snapshot of the store: every read in fn sees the
// store as of one commit, and a write that returned before View was called
// is visible. (The snapshot is pinned by fn's first read, which saves a
// call into libshoal per View.) View returns fn's error, or else the first
// failure of a Tx.Get other than not found (see Tx.Err).
//
// A View holds one reader handle for its duration; at most WithReaders(n)
// Views (and Gets) run at once, the others wait for a handle. So fn must
// not call View or Client.Get: with every handle held by Views doing so,
// it would wait forever (use tx). Writes and Wait are allowed (they use
// other handles), but this Tx does not see the writes. Keep Views short:
// a snapshot keeps the records it may still read from being reclaimed.
func (c *Client) View(fn func(tx *Tx) error) error {
	h, err := c.readers.get()
	if err != nil {
		return err
	}
	// the section begins at the first read (shoalgo.h: gs_ensure)
	tx := &Tx{h: h}
	defer func() {
		// also when fn panics: the handle goes back to the pool unpinned
		tx.h = nil
		C.gs_end(h.u)
		c.readers.put(h)
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.err
}

// Err returns the first failure of a Get in this Tx other than not found
// (ErrTooBig for a key longer than KeyMax(), ErrCorrupt), or nil.
func (tx *Tx) Err() error { return tx.err }

func (tx *Tx) fail(code C.int, op string) error {
	err := newError(int(code), op, "")
	if tx.err == nil {
		tx.err = err
	}
	return err
}

func (tx *Tx) closed() error {
	return newError(int(C.SHOAL_ECLOSED), "tx", "the Tx was used after its View returned")
}

// Get returns key's value and true, or nil and false if the key is absent
// (or expired, or deleted at this snapshot). The slice aliases the shared
// mapping: valid until View's function returns, read-only. Other failures
// also return false and are kept for Err and View's result. One call into
// libshoal, no allocation.
func (tx *Tx) Get(key []byte) ([]byte, bool) {
	h := tx.h
	if h == nil {
		tx.err = tx.closed()
		return nil, false
	}
	if len(key) > len(h.key) {
		tx.fail(C.SHOAL_ETOOBIG, "get")
		return nil, false
	}
	copy(h.key, key)
	if r := C.gs_get(h.u, C.size_t(len(key))); r != 0 {
		if r != C.SHOAL_ENOTFOUND {
			tx.fail(r, "get")
		}
		return nil, false
	}
	n := int(h.h.val.len)
	if n == 0 {
		return emptyVal, true
	}
	return unsafe.Slice((*byte)(h.h.val.data), n), true
}

// GetVersion is Get with the version of the commit that wrote the value
// and an error: ErrNotFound if the key is absent, ErrTooBig for a key
// longer than KeyMax(), ErrCorrupt.
func (tx *Tx) GetVersion(key []byte) ([]byte, uint64, error) {
	h := tx.h
	if h == nil {
		return nil, 0, tx.closed()
	}
	if len(key) > len(h.key) {
		return nil, 0, newError(int(C.SHOAL_ETOOBIG), "get",
			"key of "+strconv.Itoa(len(key))+" bytes: keys are at most "+strconv.Itoa(keyMax)+" bytes")
	}
	copy(h.key, key)
	if r := C.gs_get(h.u, C.size_t(len(key))); r != 0 {
		return nil, 0, newError(int(r), "get", "")
	}
	n := int(h.h.val.len)
	if n == 0 {
		return emptyVal, uint64(h.h.val.version), nil
	}
	return unsafe.Slice((*byte)(h.h.val.data), n), uint64(h.h.val.version), nil
}

// GetMany looks up keys with one call into libshoal (shoal_get_many, which
// prefetches the index and records of the keys ahead of need) and returns
// their values in order: vals[i] is keys[i]'s value, nil if absent (a
// present empty value is a non-nil empty slice); found counts the present
// keys. The slices alias the mapping, as Get's. err is the first failure
// other than not found (e.g. ErrTooBig for an oversized key, whose value
// is then nil); the other keys are still looked up.
func (tx *Tx) GetMany(keys [][]byte) (vals [][]byte, found int, err error) {
	vals = make([][]byte, len(keys))
	found, err = tx.GetManyInto(keys, vals)
	return vals, found, err
}

// GetManyInto is GetMany storing the values into vals, which must be at
// least as long as keys (ErrInvalid otherwise): no allocation once the
// handle's C arrays have grown to the batch size.
func (tx *Tx) GetManyInto(keys [][]byte, vals [][]byte) (found int, err error) {
	h := tx.h
	if h == nil {
		return 0, tx.closed()
	}
	if len(vals) < len(keys) {
		return 0, newError(int(C.SHOAL_EINVAL), "get_many",
			"vals is shorter than keys")
	}
	n := len(keys)
	if n == 0 {
		return 0, nil
	}
	bytes := 0
	for _, k := range keys {
		bytes += len(k)
	}
	if r := C.gs_gm_reserve(h.h, C.size_t(n), C.size_t(bytes)); r != 0 {
		return 0, newError(int(r), "get_many", "out of memory")
	}
	ck := unsafe.Slice(h.h.gm_keys, n)
	arena := unsafe.Slice((*byte)(unsafe.Pointer(h.h.arena)), bytes)
	off := 0
	for i, k := range keys {
		copy(arena[off:], k)
		ck[i].data = unsafe.Add(unsafe.Pointer(h.h.arena), off)
		ck[i].len = C.size_t(len(k))
		off += len(k)
	}
	r := C.gs_get_many(h.u, C.size_t(n))
	if r < 0 {
		return 0, newError(int(r), "get_many", "")
	}
	cv := unsafe.Slice(h.h.gm_vals, n)
	cs := unsafe.Slice(h.h.gm_status, n)
	for i := range keys {
		switch cs[i] {
		case 0:
			if l := int(cv[i].len); l > 0 {
				vals[i] = unsafe.Slice((*byte)(cv[i].data), l)
			} else {
				vals[i] = emptyVal
			}
		case C.SHOAL_ENOTFOUND:
			vals[i] = nil
		default:
			vals[i] = nil
			if err == nil {
				err = newError(int(cs[i]), "get_many",
					"key "+strconv.Itoa(i))
			}
		}
	}
	return int(r), err
}

// Scan calls fn for each key in [start, end) in byte order, with its value
// (both aliasing the mapping, as Get's), until fn returns false. A nil or
// empty start begins at the first key, a nil or empty end goes to the
// last. The keys are read in chunks of 128 per call into libshoal, all at
// the Tx's snapshot. fn may use the Tx (Get, GetMany, even Scan).
func (tx *Tx) Scan(start, end []byte, fn func(k, v []byte) bool) error {
	h := tx.h
	if h == nil {
		return tx.closed()
	}
	// the chunk and the bounds live in C memory: the handle's for the
	// outermost Scan, a Scan of their own for those nested in fn
	s := h.h.scan
	if tx.scans > 0 || s == nil {
		if s = C.gs_scan_new(); s == nil {
			return newError(-int(syscall.ENOMEM), "scan", "out of memory")
		}
		if tx.scans > 0 {
			defer C.gs_scan_free(s)
		} else {
			h.h.scan = s
		}
	}
	tx.scans++
	defer func() { tx.scans-- }()
	// the bounds are copied once; later chunks resume from the last key
	// seen, a pointer into the mapping (valid for the whole section)
	if r := C.gs_bounds_reserve(s, C.size_t(len(start)+len(end))); r != 0 {
		return newError(int(r), "scan", "out of memory")
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(s.bounds)), len(start)+len(end))
	copy(b, start)
	copy(b[len(start):], end)
	var sp, ep unsafe.Pointer
	if len(start) > 0 {
		sp = unsafe.Pointer(s.bounds)
	}
	if len(end) > 0 {
		ep = unsafe.Add(unsafe.Pointer(s.bounds), len(start))
	}
	slen := C.size_t(len(start))
	var skip unsafe.Pointer
	for {
		r := C.gs_scan_chunk(h.u, s, sp, slen, skip, ep, C.size_t(len(end)))
		if r < 0 {
			return newError(int(r), "scan", "")
		}
		ents := s.ents[:s.n]
		for i := range ents {
			e := &ents[i]
			k, v := emptyVal, emptyVal
			if e.klen > 0 {
				k = unsafe.Slice((*byte)(e.k), int(e.klen))
			}
			if e.vlen > 0 {
				v = unsafe.Slice((*byte)(e.v), int(e.vlen))
			}
			if !fn(k, v) {
				return nil
			}
		}
		if r == 0 || s.n == 0 {
			return nil
		}
		last := &s.ents[s.n-1]
		sp, slen, skip = last.k, last.klen, last.k
	}
}

// ScanPrefix is Scan over the keys that start with prefix (all keys for an
// empty prefix). ErrTooBig if prefix is longer than KeyMax().
func (tx *Tx) ScanPrefix(prefix []byte, fn func(k, v []byte) bool) error {
	if len(prefix) > keyMax {
		return newError(int(C.SHOAL_ETOOBIG), "scan", "prefix longer than the longest key")
	}
	return tx.Scan(prefix, prefixEnd(prefix), fn)
}

// prefixEnd is the smallest key greater than every key starting with p
// (p with its trailing 0xff bytes dropped and the last byte incremented),
// or nil if there is none (p is empty or all 0xff): scan to the last key.
func prefixEnd(p []byte) []byte {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			e := make([]byte, i+1)
			copy(e, p)
			e[i]++
			return e
		}
	}
	return nil
}
