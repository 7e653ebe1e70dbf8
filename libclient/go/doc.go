// Package shoal is the Go client of shoal, a shared-memory key-value store
// for the processes of one host. A broker (shoald) is the single writer;
// clients send it writes over a Unix socket and read the store directly
// from shared memory, without a system call or a copy.
//
// The package wraps libshoal (the C client) with cgo. A *Client is safe for
// concurrent goroutines; reads run in View, as in bbolt:
//
//	c, err := shoal.Open("default") // or Open("", shoal.WithSocket(path))
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer c.Close()
//	ver, err := c.Put([]byte("greeting"), []byte("hello"))
//	err = c.View(func(tx *shoal.Tx) error {
//		v, ok := tx.Get([]byte("greeting")) // v aliases the shared mapping
//		if ok {
//			fmt.Printf("%s\n", v) // valid until this function returns
//		}
//		return nil
//	})
//	_, err = c.CAS([]byte("greeting"), ver, []byte("hi"))
//	if errors.Is(err, shoal.ErrConflict) {
//		// someone else wrote it first: err.(*shoal.ConflictError).Current
//	}
//	ver, err = c.Batch(func(b *shoal.Batch) error { // atomic
//		b.Put([]byte("a"), []byte("1"))
//		return b.Delete([]byte("greeting"))
//	})
//	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
//	defer cancel()
//	ver, err = c.Wait(ctx, []byte("a"), ver) // the next change of "a"
//
// Values returned inside View point into the store's read-only mapping:
// copy what must outlive the View (Client.Get returns a copy).
//
// Errors are *Error values carrying libshoal's code, name and message;
// test them with errors.Is against the sentinels ErrNotFound, ErrConflict,
// ErrTooBig, ... (one per SHOAL_E* code of shoal/error.h).
//
// The broker's file utilities: Client.HashFile (a digest computed and
// cached by the broker), Client.Tail (read_last_n_lines) and Client.Follow
// (tail -F as a channel of FollowEvent, closed when its context ends).
// SkyPilot's local helpers (UTILITIES.md) are package functions that need
// no broker: CPUCount, MemSizeGB, IsProcessAlive, FindFreePort,
// Base36Encode, ReadLastNLines, HashFileLocal and the others.
//
// Building: the package links -lshoal; see README.md for pointing cgo at
// an in-tree build (CGO_CFLAGS, CGO_LDFLAGS) or an installed one
// (pkg-config, -tags shoal_pkgconfig).
package shoal
