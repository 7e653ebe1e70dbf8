package shoal

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	bg := context.Background()
	v1 := mustPut(t, c, "w", "1")

	// present already: at once
	if ver, err := c.Wait(bg, []byte("w"), 0); err != nil || ver != v1 {
		t.Errorf("Wait(after 0) = %d %v, want %d", ver, err, v1)
	}
	// a deadline: ErrTimeout and context.DeadlineExceeded, on time
	ctx, cancel := context.WithTimeout(bg, 120*time.Millisecond)
	t0 := time.Now()
	ver, err := c.Wait(ctx, []byte("w"), v1)
	d := time.Since(t0)
	cancel()
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || ver != v1 {
		t.Errorf("Wait past the deadline = %d %v", ver, err)
	}
	if d < 110*time.Millisecond || d > 1500*time.Millisecond {
		t.Errorf("Wait with a 120 ms deadline took %v", d)
	}
	// canceled: within a slice
	ctx, cancel = context.WithCancel(bg)
	go func() { time.Sleep(80 * time.Millisecond); cancel() }()
	t0 = time.Now()
	_, err = c.Wait(ctx, []byte("w"), v1)
	if d := time.Since(t0); err != context.Canceled || d > time.Second {
		t.Errorf("canceled Wait = %v after %v", err, d)
	}
	// an expired context still looks once
	if ver, err := c.Wait(ctx, []byte("w"), 0); err != nil || ver != v1 {
		t.Errorf("Wait(canceled ctx, key present) = %d %v", ver, err)
	}

	// woken by a put of another goroutine, and by a delete (version 0)
	done := make(chan uint64, 1)
	go func() {
		ver, err := c.Wait(bg, []byte("w"), v1)
		if err != nil {
			t.Error(err)
		}
		done <- ver
	}()
	time.Sleep(100 * time.Millisecond)
	v2 := mustPut(t, c, "w", "2")
	select {
	case ver := <-done:
		if ver != v2 {
			t.Errorf("woken with version %d, want %d", ver, v2)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait not woken by a put")
	}
	go func() {
		ver, err := c.Wait(bg, []byte("w"), v2)
		if err != nil {
			t.Error(err)
		}
		done <- ver
	}()
	time.Sleep(50 * time.Millisecond)
	if err := c.Delete([]byte("w")); err != nil {
		t.Fatal(err)
	}
	select {
	case ver := <-done:
		if ver != 0 {
			t.Errorf("woken by a delete with version %d, want 0", ver)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait not woken by a delete")
	}
	// many waiters at once, more than the pool of waiter handles
	c2 := b.open(t, WithReaders(2))
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func() { _, err := c2.Wait(bg, []byte("w"), 0); errs <- err }()
	}
	time.Sleep(100 * time.Millisecond)
	v3 := mustPut(t, c, "w", "3")
	for i := 0; i < 8; i++ {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiters not all woken")
		}
	}
	_ = v3
}

// Woken by a put of another process.
func TestWaitOtherProcess(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	v1 := mustPut(t, c, "wake", "0")
	cmd := helper(t, "waker", "SHOAL_GOTEST_SOCKET="+b.sock, "SHOAL_GOTEST_KEY=wake")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	ver, err := c.Wait(ctx, []byte("wake"), v1)
	if err != nil || ver <= v1 {
		t.Errorf("Wait = %d %v", ver, err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("waker: %v\n%s", err, out.String())
	}
	if v, _ := c.Get([]byte("wake")); string(v) != "woken" {
		t.Errorf("wake = %q after %v", v, time.Since(t0))
	}
}
