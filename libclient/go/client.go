package shoal

// #include "shoalgo.h"
import "C"

import (
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// keyMax is shoal_key_max(): the longest key, in bytes.
var keyMax = int(C.shoal_key_max())

// KeyMax returns the longest key a store takes, in bytes
// (shoal_key_max(); 1024).
func KeyMax() int { return keyMax }

// Version returns libshoal's version ("0.1.0").
func Version() string { return C.GoString(C.shoal_version()) }

// Client is a connection to one store: the broker's socket for writes and
// the store's shared mapping for reads. It is safe for concurrent use by
// any number of goroutines.
//
// Underneath it keeps three pools of libshoal handles (a handle is used by
// one goroutine at a time; see handle.go): readers for View and Get (each
// handle holds one of the store's reader slots), writers for the writes
// and broker requests (no reader slot), and waiters for Wait (so that a
// waiting goroutine never keeps a reader from a handle). Each pool opens
// handles lazily, up to WithReaders(n).
type Client struct {
	name    string
	opts    options
	readers *pool
	writers *pool
	waiters *pool

	closed    atomic.Bool
	closeOnce sync.Once
	valueMax  int

	// the Follows in progress (fileops.go), stopped by Close
	followMu  sync.Mutex
	followers map[*follower]struct{}
	followWG  sync.WaitGroup
}

type options struct {
	socket           string
	rundir           string
	connectTimeoutMS int
	timeoutMS        int
	readers          int
	err              error
}

// Option configures Open.
type Option func(*options)

// WithSocket sets the broker's socket path (default: $SHOAL_SOCKET, else
// RUNDIR/NAME.sock).
func WithSocket(path string) Option { return func(o *options) { o.socket = path } }

// WithRundir sets the directory of the broker's socket (default:
// $SHOAL_RUNDIR, $XDG_RUNTIME_DIR/shoal, /tmp/shoal-UID).
func WithRundir(dir string) Option { return func(o *options) { o.rundir = dir } }

// WithTimeout bounds the wait for the broker's reply to a write or a
// request (default 30 s; a negative d: forever). A write that times out
// returns ErrTimeout.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeoutMS = durationMS(d, o) }
}

// WithConnectTimeout bounds connecting and, for writes, how long they keep
// reconnecting while the broker restarts (default 5 s; a negative d:
// forever).
func WithConnectTimeout(d time.Duration) Option {
	return func(o *options) { o.connectTimeoutMS = durationMS(d, o) }
}

// WithReaders sets the size of each handle pool: how many goroutines may
// be inside View (or Get) at once, and likewise for writes and waits; the
// others wait for a handle. Default runtime.GOMAXPROCS(0). Every reader or
// waiter handle takes one of the store's reader slots (shoald
// --reader-slots, default 1024).
func WithReaders(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.err = newError(int(C.SHOAL_EINVAL), "open",
				"WithReaders("+strconv.Itoa(n)+"): need at least one handle")
		}
		o.readers = n
	}
}

// durationMS converts d for shoal_options: milliseconds rounded up, -1 for
// a negative d (forever). 0 would mean libshoal's default.
func durationMS(d time.Duration, o *options) int {
	if d < 0 {
		return -1
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms == 0 || ms > 1<<31-1 {
		o.err = newError(int(C.SHOAL_EINVAL), "open",
			"timeout "+d.String()+": expected 1 ms to 24 days, or negative for none")
	}
	return int(ms)
}

// Open connects to the broker of store name ("" for whichever store the
// socket serves; the default socket path then uses "default"), maps the
// store and opens the first handles. It fails at once when no broker
// listens (ErrUnavailable); other failures: ErrDenied, ErrInvalid (a bad
// name, or the broker serves another store), ErrNoReaders, ErrVersion,
// ErrTimeout.
func Open(name string, opts ...Option) (*Client, error) {
	c := &Client{name: name}
	c.opts.readers = runtime.GOMAXPROCS(0)
	for _, o := range opts {
		o(&c.opts)
	}
	if c.opts.err != nil {
		return nil, c.opts.err
	}
	n := c.opts.readers
	c.readers = newPool(c, n, 0)
	c.writers = newPool(c, n, C.SHOAL_OPEN_NO_SLOT)
	c.waiters = newPool(c, n, 0)
	// one reader and one writer now: errors show at Open, and reads and
	// writes always have a handle to fall back on (pool.get)
	r, err := c.readers.get()
	if err != nil {
		return nil, err
	}
	w, err := c.writers.get()
	if err != nil {
		c.readers.put(r)
		c.readers.drain()
		return nil, err
	}
	c.valueMax = int(C.shoal_value_max(w.h.c))
	c.readers.put(r)
	c.writers.put(w)
	return c, nil
}

// Close waits for the calls in progress to finish, then closes every
// handle. Later calls return ErrClosed. The channels of Follow are closed
// (with no error event). Close is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.stopFollowers()
		c.readers.drain()
		c.writers.drain()
		c.waiters.drain()
	})
	return nil
}

func (c *Client) closedErr() error {
	return newError(int(C.SHOAL_ECLOSED), "", "the client is closed")
}

// ValueMax returns the largest value a put may carry: the broker's limit
// (its --max-frame minus 4 KiB).
func (c *Client) ValueMax() int { return c.valueMax }

// write runs fn on a writer handle and turns a failure into an *Error
// with the handle's detail.
func (c *Client) write(op string, fn func(h *handle) C.int) (uint64, error) {
	h, err := c.writers.get()
	if err != nil {
		return 0, err
	}
	h.h.ver = 0
	r := fn(h)
	ver := uint64(h.h.ver)
	if r != 0 {
		err = newError(int(r), op, h.detail())
		if r != C.SHOAL_ECONFLICT { // whose version is the current one
			ver = 0
		}
	}
	c.writers.put(h)
	return ver, err
}

// Put stores val under key and returns the version of the commit. It
// returns once the commit is published: a View begun afterwards, in any
// process, sees it.
// Errors: ErrTooBig (checked locally), ErrNoSpace, ErrUnavailable (the
// broker went away with the reply outstanding: the put may or may not
// have been applied), ErrTimeout, ErrDenied.
func (c *Client) Put(key, val []byte) (uint64, error) {
	return c.write("put", func(h *handle) C.int {
		return C.gs_put(h.h, bytesPtr(key), C.size_t(len(key)),
			bytesPtr(val), C.size_t(len(val)), 0)
	})
}

// PutTTL is Put with a time to live: the key reads as absent once ttl has
// passed (rounded up to a millisecond; at most 2^32-1 ms). ttl must be
// positive (ErrInvalid).
func (c *Client) PutTTL(key, val []byte, ttl time.Duration) (uint64, error) {
	ms, err := ttlMS("put", ttl)
	if err != nil {
		return 0, err
	}
	return c.write("put", func(h *handle) C.int {
		return C.gs_put(h.h, bytesPtr(key), C.size_t(len(key)),
			bytesPtr(val), C.size_t(len(val)), ms)
	})
}

func ttlMS(op string, ttl time.Duration) (C.uint32_t, error) {
	ms := (ttl + time.Millisecond - 1) / time.Millisecond
	if ttl <= 0 || ms > 1<<32-1 {
		return 0, newError(int(C.SHOAL_EINVAL), op,
			"ttl "+ttl.String()+": expected 1 ms to 49 days")
	}
	return C.uint32_t(ms), nil
}

// Delete removes key. ErrNotFound if it is absent (nothing is written).
func (c *Client) Delete(key []byte) error {
	_, err := c.write("delete", func(h *handle) C.int {
		return C.shoal_del(h.h.c, bytesPtr(key), C.size_t(len(key)))
	})
	return err
}

// CAS stores val under key if the key's version is expect (0: the key must
// be absent) and returns the new version. Otherwise the error is a
// *ConflictError (errors.Is(err, ErrConflict)) whose Current is the key's
// version (0: absent).
func (c *Client) CAS(key []byte, expect uint64, val []byte) (uint64, error) {
	ver, err := c.write("cas", func(h *handle) C.int {
		return C.gs_cas(h.h, bytesPtr(key), C.size_t(len(key)), C.uint64_t(expect),
			bytesPtr(val), C.size_t(len(val)))
	})
	if e, ok := err.(*Error); ok && e.Code == int(C.SHOAL_ECONFLICT) {
		return 0, &ConflictError{Current: ver, Err: e}
	}
	return ver, err
}

// Ping makes a round trip to the broker.
func (c *Client) Ping() error {
	_, err := c.write("ping", func(h *handle) C.int {
		return C.shoal_ping(h.h.c)
	})
	return err
}

// Get returns a copy of key's value (ErrNotFound if absent). To read
// without copying, or several keys at one snapshot, use View.
func (c *Client) Get(key []byte) ([]byte, error) {
	if len(key) > keyMax {
		return nil, newError(int(C.SHOAL_ETOOBIG), "get", "")
	}
	h, err := c.readers.get()
	if err != nil {
		return nil, err
	}
	copy(h.key, key)
	r := C.gs_get(h.u, C.size_t(len(key)))
	var val []byte
	if r == 0 {
		val = make([]byte, int(h.h.val.len))
		copy(val, unsafe.Slice((*byte)(h.h.val.data), len(val)))
	} else {
		err = newError(int(r), "get", "")
	}
	C.gs_end(h.u)
	c.readers.put(h)
	return val, err
}

// Stats is the broker's account of the store (shoal_stats).
type Stats struct {
	Keys, KeyBytes, ValueBytes            uint64 // live keys and their bytes
	Size, BytesUsed, BytesFree            uint64 // the store's bytes
	CommitSeq, Commits, Records           uint64
	Retired, RetiredBytes                 uint64 // records replaced, not yet freed
	Reclaimed, Expired                    uint64
	IndexCapacity, IndexUsed              uint64
	ReadersClaimed, ReadersBusy           uint64 // reader slots leased, in a section
	OldestSnapshot                        uint64 // the oldest snapshot a reader holds; 0: none
	OldestSnapshotAge                     time.Duration
	Connections, ConnectionsTotal, Denied uint64
	Uptime                                time.Duration
	BytesIn, BytesOut                     uint64
	BrokerPID                             int
	Requests, Errors                      map[string]uint64 // by request type, by error name
}

// Stats asks the broker for its statistics.
func (c *Client) Stats() (Stats, error) {
	var st Stats
	_, err := c.write("stats", func(h *handle) C.int {
		cs := (*C.shoal_stats)(C.malloc(C.sizeof_shoal_stats))
		defer C.free(unsafe.Pointer(cs))
		r := C.shoal_stats_get(h.h.c, cs)
		if r != 0 {
			return r
		}
		st = Stats{
			Keys: uint64(cs.keys), KeyBytes: uint64(cs.key_bytes),
			ValueBytes: uint64(cs.value_bytes), Size: uint64(cs.size),
			BytesUsed: uint64(cs.bytes_used), BytesFree: uint64(cs.bytes_free),
			CommitSeq: uint64(cs.commit_seq), Commits: uint64(cs.commits),
			Records: uint64(cs.records), Retired: uint64(cs.retired),
			RetiredBytes: uint64(cs.retired_bytes), Reclaimed: uint64(cs.reclaimed),
			Expired: uint64(cs.expired), IndexCapacity: uint64(cs.index_capacity),
			IndexUsed: uint64(cs.index_used), ReadersClaimed: uint64(cs.readers_claimed),
			ReadersBusy: uint64(cs.readers_busy), OldestSnapshot: uint64(cs.oldest_snapshot),
			OldestSnapshotAge: time.Duration(cs.oldest_snapshot_age_ms) * time.Millisecond,
			Connections:       uint64(cs.connections), ConnectionsTotal: uint64(cs.connections_total),
			Denied: uint64(cs.denied), Uptime: time.Duration(cs.uptime_ms) * time.Millisecond,
			BytesIn: uint64(cs.bytes_in), BytesOut: uint64(cs.bytes_out),
			BrokerPID: int(cs.broker_pid),
			Requests:  parseCounts(C.GoString(cs.requests)),
			Errors:    parseCounts(C.GoString(cs.errors)),
		}
		return 0
	})
	return st, err
}

// parseCounts reads "name=value" pairs joined by spaces.
func parseCounts(s string) map[string]uint64 {
	m := map[string]uint64{}
	for _, f := range strings.Fields(s) {
		if k, v, ok := strings.Cut(f, "="); ok {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				m[k] = n
			}
		}
	}
	return m
}
