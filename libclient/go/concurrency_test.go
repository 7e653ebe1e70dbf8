package shoal

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects a subprocess's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// readSnap reads snap/0..9 in one View and checks they come from one
// batch: the same value and the same version. It returns the generation.
func readSnap(c *Client) (gen string, err error) {
	err = c.View(func(tx *Tx) error {
		var ver0 uint64
		for i := 0; i < snapKeys; i++ {
			v, ver, err := tx.GetVersion(snapKey(i))
			if err != nil {
				return fmt.Errorf("snap/%d: %w", i, err)
			}
			if i == 0 {
				gen, ver0 = string(v), ver
			} else if string(v) != gen || ver != ver0 {
				return fmt.Errorf("torn snapshot: snap/0 = %s@%d, snap/%d = %s@%d", gen, ver0, i, v, ver)
			}
		}
		return nil
	})
	return gen, err
}

// 8 goroutines read while another process commits batches: every View
// sees a whole batch, and the generations a goroutine sees never go back.
func TestReadersWhileProcessWrites(t *testing.T) {
	b := startBroker(t)
	c := b.open(t, WithReaders(8))
	_, err := c.Batch(func(b *Batch) error {
		for i := 0; i < snapKeys; i++ {
			b.Put(snapKey(i), []byte("gen-000000"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const batches = 400
	cmd := helper(t, "writer", "SHOAL_GOTEST_SOCKET="+b.sock, fmt.Sprintf("SHOAL_GOTEST_N=%d", batches))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	writerDone := make(chan error, 1)
	go func() { writerDone <- cmd.Wait() }()

	var stop atomic.Bool
	var views, changes atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := ""
			for !stop.Load() {
				gen, err := readSnap(c)
				if err != nil {
					t.Error(err)
					return
				}
				if gen < last {
					t.Errorf("generation went back: %s after %s", gen, last)
					return
				}
				if gen != last {
					changes.Add(1)
				}
				last = gen
				views.Add(1)
			}
		}()
	}
	select {
	case err := <-writerDone:
		if err != nil {
			t.Errorf("writer: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Error("the writer did not finish within 30 s")
		cmd.Process.Kill()
		<-writerDone
	}
	stop.Store(true)
	wg.Wait()
	if gen, err := readSnap(c); err != nil || gen != fmt.Sprintf("gen-%06d", batches) {
		t.Errorf("final generation %s %v", gen, err)
	}
	t.Logf("%d views, %d generation changes seen", views.Load(), changes.Load())
	if views.Load() < 100 {
		t.Errorf("only %d views", views.Load())
	}
}

// The broker restarts (SIGTERM, then SIGKILL) while 8 goroutines read:
// no read fails, and writes resume after each restart.
func TestBrokerRestart(t *testing.T) {
	b := startBroker(t)
	c := b.open(t, WithReaders(8))
	_, err := c.Batch(func(b *Batch) error {
		for i := 0; i < snapKeys; i++ {
			b.Put(snapKey(i), []byte("gen-000000"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var views, writes, writeErrs atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := readSnap(c); err != nil {
					t.Errorf("read during the restarts: %v", err)
					return
				}
				views.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() { // a writer that keeps going through the restarts
		defer wg.Done()
		for g := 1; !stop.Load(); g++ {
			val := []byte(fmt.Sprintf("gen-%06d", g))
			_, err := c.Batch(func(b *Batch) error {
				for i := 0; i < snapKeys; i++ {
					b.Put(snapKey(i), val)
				}
				return nil
			})
			if err != nil {
				// a batch in flight when the broker died: unknown outcome
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("batch during the restarts: %v", err)
				}
				writeErrs.Add(1)
				continue
			}
			writes.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		time.Sleep(200 * time.Millisecond)
		v0 := views.Load()
		b.stop(sig)
		time.Sleep(200 * time.Millisecond) // reads go on with no broker
		if views.Load() == v0 {
			t.Errorf("no read completed while the broker was down (%v)", sig)
		}
		b.start()
		w0 := writes.Load()
		deadline := time.Now().Add(10 * time.Second)
		for writes.Load() == w0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if writes.Load() == w0 {
			t.Errorf("writes did not resume within 10 s of the restart after %v", sig)
		}
		if _, err := c.Put([]byte("after"), []byte(sig.String())); err != nil {
			t.Errorf("Put after the restart (%v): %v", sig, err)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d views, %d batches, %d batches lost to the restarts", views.Load(), writes.Load(), writeErrs.Load())
}
