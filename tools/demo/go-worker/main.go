// Command go-worker is the Go worker of tools/quickstart: it reads the
// shared configuration in one snapshot (zero-copy, from shared memory),
// publishes its status with an atomic batch, tries to claim the job the
// other workers may have claimed first, then stays attached until another
// process puts the stop key (signal/stop), after putting ready/go. It
// prints each step, prefixed [go].
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"shoal.dev/shoal"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "[go] error:", err)
		os.Exit(1)
	}
}

var (
	name    = flag.String("name", "default", "the store")
	stopKey = flag.String("stop-key", "signal/stop", "wait for this key before exiting")
	timeout = flag.Duration("timeout", 60*time.Second, "give up waiting for the stop key after this long")
)

func run() error {
	flag.Parse()
	c, err := shoal.Open(*name)
	if err != nil {
		return err
	}
	defer c.Close()
	me := fmt.Sprintf("go-worker-%d", os.Getpid())

	err = c.View(func(tx *shoal.Tx) error {
		v, ok := tx.Get([]byte("config/region"))
		fmt.Printf("[go] read config/region = %q (found %v)\n", v, ok)
		return tx.ScanPrefix([]byte("status/"), func(k, v []byte) bool {
			fmt.Printf("[go] saw %s = %s\n", k, v)
			return true
		})
	})
	if err != nil {
		return err
	}
	ver, err := c.Batch(func(b *shoal.Batch) error {
		if err := b.Put([]byte("status/"+me), []byte("running")); err != nil {
			return err
		}
		return b.Put([]byte("heartbeat/"+me), []byte(time.Now().UTC().Format(time.RFC3339)))
	})
	if err != nil {
		return err
	}
	fmt.Printf("[go] wrote status/%s and heartbeat/%s in one batch (version %d)\n", me, me, ver)
	if _, err := c.CAS([]byte("jobs/42/owner"), 0, []byte(me)); errors.Is(err, shoal.ErrConflict) {
		owner, _ := c.Get([]byte("jobs/42/owner"))
		fmt.Printf("[go] jobs/42 is already claimed by %s\n", owner)
	} else if err != nil {
		return err
	} else {
		fmt.Println("[go] claimed jobs/42")
	}
	// Stay attached until another process puts the stop key (quickstart
	// does, after showing shoal-inspect), and say so with ready/go first.
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	fmt.Printf("[go] waiting for %s (another process will put it) ...\n", *stopKey)
	if _, err := c.Put([]byte("ready/go"), []byte(strconv.Itoa(os.Getpid()))); err != nil {
		return err
	}
	v, err := c.Wait(ctx, []byte(*stopKey), 0)
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", *stopKey, err)
	}
	fmt.Printf("[go] woken: %s is at version %d\n", *stopKey, v)
	if _, err := c.Put([]byte("status/"+me), []byte("done")); err != nil {
		return err
	}
	fmt.Printf("[go] set status/%s = done; exiting\n", me)
	return nil
}
