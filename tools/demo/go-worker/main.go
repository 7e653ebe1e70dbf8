// Command go-worker is the Go worker of tools/quickstart: it reads the
// shared configuration in one snapshot (zero-copy, from shared memory),
// publishes its status with an atomic batch, tries to claim the job the
// Python worker may have claimed first, and waits for a key another
// process writes. It prints each step.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"shoal.dev/shoal"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "[go] error:", err)
		os.Exit(1)
	}
}

func run() error {
	c, err := shoal.Open("default")
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println("[go] waiting for signal/go (another process will put it) ...")
	v, err := c.Wait(ctx, []byte("signal/go"), 0)
	if err != nil {
		return err
	}
	fmt.Printf("[go] woken: signal/go is at version %d\n", v)
	return nil
}
