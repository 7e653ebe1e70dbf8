package shoal_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"strings"
	"time"

	"shoal.dev/shoal"
)

// Open a store, write, read at one snapshot without copying, update with
// compare-and-swap and wait for the next change. (Compiled, not run: it
// needs a broker.)
func Example() {
	c, err := shoal.Open("default")
	if err != nil {
		log.Fatal(err) // e.g. ErrUnavailable: start shoald
	}
	defer c.Close()

	ver, err := c.Put([]byte("config/mode"), []byte("fast"))
	if err != nil {
		log.Fatal(err)
	}
	err = c.View(func(tx *shoal.Tx) error {
		if v, ok := tx.Get([]byte("config/mode")); ok {
			fmt.Printf("mode %s\n", v) // v is valid inside this function only
		}
		return tx.ScanPrefix([]byte("config/"), func(k, v []byte) bool {
			fmt.Printf("%s = %s\n", k, v)
			return true
		})
	})
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.CAS([]byte("config/mode"), ver, []byte("safe"))
	var conflict *shoal.ConflictError
	if errors.As(err, &conflict) {
		fmt.Println("changed meanwhile; now at version", conflict.Current)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Wait(ctx, []byte("config/mode"), ver); errors.Is(err, shoal.ErrTimeout) {
		fmt.Println("no change within a second")
	}
}

// Several writes committed atomically: readers see all of them or none.
func ExampleClient_Batch() {
	c, err := shoal.Open("default")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ver, err := c.Batch(func(b *shoal.Batch) error {
		b.Put([]byte("user/1/name"), []byte("ada"))
		b.Put([]byte("user/1/email"), []byte("ada@example.org"))
		return b.DeleteAny([]byte("user/1/pending"))
	})
	var be *shoal.BatchError
	if errors.As(err, &be) {
		log.Fatalf("operation %d failed: %v", be.Index, be.Err)
	}
	fmt.Println("committed at version", ver)
}

// Follow a log as tail -F does, and hash and tail files through the
// broker. (Compiled, not run: it needs a broker.)
func ExampleClient_Follow() {
	c, err := shoal.Open("default")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	sum, err := c.HashFile("/var/lib/app/model.bin", "sha256")
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Println("no model yet")
	} else if err == nil {
		fmt.Println("sha256", sum) // as sha256sum prints it
	}
	last, err := c.Tail("/var/log/app.log", 20) // read_last_n_lines
	if err == nil {
		fmt.Print(strings.Join(last, ""))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	events, err := c.Follow(ctx, "/var/log/app.log", 0) // only new lines
	if err != nil {
		log.Fatal(err)
	}
	for ev := range events { // closed when ctx ends
		switch ev.Kind {
		case shoal.FollowLine:
			fmt.Print(ev.Line) // ends with "\n"
		case shoal.FollowTruncated:
			fmt.Println("-- truncated")
		case shoal.FollowRotated:
			fmt.Println("-- rotated; now following the new", ev.Path)
		default:
			log.Fatal(ev.Err) // the broker went away: follow again
		}
	}
}
