package shoal

// #include "shoalgo.h"
import "C"

import (
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// A handle: one libshoal handle (one reader slot unless opened for writes
// only) and its C scratch memory. It belongs to one goroutine at a time,
// which is all libshoal asks ("a handle is used by one thread at a time").
//
// Goroutines may move between OS threads while they hold a handle, even
// inside a read section: nothing of a section is tied to the thread. The
// section's state is the handle's (client.c: c->nest, c->view) and its
// reader slot's (shm/read.c: shm_read_begin stores the snapshot in
// v->slot, the slot the broker leased to the handle at Hello, and
// shm_read_end clears it); libshoal keeps no thread-local state on the
// read path (its only thread-local is shoal_open's failure text, which
// shoalgo.h's gs_open reads in the same cgo call). So no
// runtime.LockOSThread is needed.
type handle struct {
	h   *C.gs_handle
	u   C.uintptr_t // h as an integer, for the hot calls (shoalgo.h)
	key []byte      // h.key as a Go slice (C memory): keys are copied here
}

// pool hands out handles: idle ones wait in a buffered channel, and
// handles are opened lazily up to max. The first handle is opened by Open;
// when a later one can not be opened (the broker is restarting, all reader
// slots are taken) the caller waits for an idle one instead, so reads keep
// working on the handles already open.
//
// In front of the channel sits one idle handle in an atomic slot: a
// goroutine that takes and returns handles in a loop (View after View)
// then pays two atomic swaps instead of two channel operations. A handle
// is parked there only while nobody waits on the channel (waiters == 0);
// put and get check each other's side in the order store, then load (Go's
// atomics are sequentially consistent), so a waiter never sleeps while a
// handle sits in the slot.
type pool struct {
	c       *Client
	flags   C.unsigned
	ch      chan *handle
	fast    atomic.Pointer[handle]
	waiters atomic.Int32

	mu  sync.Mutex
	n   int // handles opened (idle or in use)
	max int
	all []*handle
}

func newPool(c *Client, max int, flags C.unsigned) *pool {
	return &pool{c: c, flags: flags, ch: make(chan *handle, max), max: max}
}

// open makes one more handle, counted in p.n.
func (p *pool) open() (*handle, error) {
	h, err := p.c.openHandle(p.flags)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.all = append(p.all, h)
	p.mu.Unlock()
	return h, nil
}

// get takes an idle handle, opens one if none is idle and there is room,
// or waits for one. It fails only when no handle is open and none can be
// opened, or the client is closed.
func (p *pool) get() (*handle, error) {
	if h := p.fast.Swap(nil); h != nil {
		return h, nil
	}
	select {
	case h, ok := <-p.ch:
		if !ok {
			return nil, p.c.closedErr()
		}
		return h, nil
	default:
	}
	if p.c.closed.Load() {
		return nil, p.c.closedErr()
	}
	p.mu.Lock()
	if p.n < p.max {
		p.n++
		p.mu.Unlock()
		h, err := p.open()
		if err == nil {
			return h, nil
		}
		p.mu.Lock()
		p.n--
		have := p.n > 0
		p.mu.Unlock()
		if !have {
			return nil, err
		}
	} else {
		p.mu.Unlock()
	}
	return p.wait()
}

// wait waits on the channel for a handle.
func (p *pool) wait() (*handle, error) {
	p.waiters.Add(1)
	defer p.waiters.Add(-1)
	if h := p.fast.Swap(nil); h != nil {
		return h, nil
	}
	h, ok := <-p.ch
	if !ok {
		return nil, p.c.closedErr()
	}
	return h, nil
}

// put returns a handle taken with get.
func (p *pool) put(h *handle) {
	if p.waiters.Load() == 0 && p.fast.CompareAndSwap(nil, h) {
		if p.waiters.Load() == 0 {
			return
		}
		// someone began waiting meanwhile: hand it over on the channel,
		// unless a get took it already
		if h = p.fast.Swap(nil); h == nil {
			return
		}
	}
	p.ch <- h
}

// drain waits until every handle the pool opened is idle, then closes
// them all and the channel (goroutines waiting in get get ErrClosed).
func (p *pool) drain() {
	p.waiters.Add(1) // from now on put uses the channel
	got := 0
	for {
		p.mu.Lock()
		p.max = 0 // open no more
		done := got >= p.n
		p.mu.Unlock()
		if done {
			break
		}
		if h := p.fast.Swap(nil); h != nil {
			got++
			continue
		}
		select {
		case <-p.ch:
			got++
		case <-time.After(10 * time.Millisecond):
			// an open that failed lowered p.n: look again
		}
	}
	close(p.ch)
	p.mu.Lock()
	for _, h := range p.all {
		C.gs_close(h.h)
		h.h = nil
	}
	p.all = nil
	p.mu.Unlock()
}

// openHandle opens one libshoal handle with the client's options.
func (c *Client) openHandle(flags C.unsigned) (*handle, error) {
	var (
		name, sock, rundir *C.char
		ch                 *C.gs_handle
	)
	if c.name != "" {
		name = C.CString(c.name)
		defer C.free(unsafe.Pointer(name))
	}
	if c.opts.socket != "" {
		sock = C.CString(c.opts.socket)
		defer C.free(unsafe.Pointer(sock))
	}
	if c.opts.rundir != "" {
		rundir = C.CString(c.opts.rundir)
		defer C.free(unsafe.Pointer(rundir))
	}
	const errCap = 512
	buf := (*C.char)(C.malloc(errCap))
	defer C.free(unsafe.Pointer(buf))
	r := C.gs_open(&ch, name, sock, rundir, C.int(c.opts.connectTimeoutMS),
		C.int(c.opts.timeoutMS), flags, buf, errCap)
	if r != 0 {
		return nil, newError(int(r), "open", C.GoString(buf))
	}
	return &handle{
		h:   ch,
		u:   C.uintptr_t(uintptr(unsafe.Pointer(ch))),
		key: unsafe.Slice((*byte)(unsafe.Pointer(ch.key)), keyMax),
	}, nil
}

// detail is the handle's last failure text (writes and broker requests).
func (h *handle) detail() string {
	return C.GoString(C.shoal_last_error(h.h.c))
}

// bytesPtr is the address of b's first byte, or nil for an empty b (C may
// not read it then).
func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}
