package shoal

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func TestBatch(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	old := mustPut(t, c, "b/old", "old")
	mustPut(t, c, "b/gone", "x")

	// atomic: one commit, one version for every key
	var n int
	ver, err := c.Batch(func(b *Batch) error {
		for i := 0; i < 5; i++ {
			if err := b.Put([]byte(fmt.Sprintf("b/%d", i)), []byte("v")); err != nil {
				return err
			}
		}
		b.Delete([]byte("b/gone"))
		b.DeleteAny([]byte("b/never"))
		b.CAS([]byte("b/old"), old, []byte("new"))
		n = b.Len()
		return nil
	})
	if err != nil || ver <= old || n != 8 {
		t.Fatalf("Batch = %d, %v (len %d)", ver, err, n)
	}
	c.View(func(tx *Tx) error {
		for i := 0; i < 5; i++ {
			_, v, err := tx.GetVersion([]byte(fmt.Sprintf("b/%d", i)))
			if err != nil || v != ver {
				t.Errorf("b/%d: version %d %v, want the batch's %d", i, v, err, ver)
			}
		}
		if _, ok := tx.Get([]byte("b/gone")); ok {
			t.Error("b/gone survived the batch")
		}
		if v, _ := tx.Get([]byte("b/old")); string(v) != "new" {
			t.Errorf("b/old = %q", v)
		}
		return nil
	})

	// discarded when fn fails: nothing is sent
	mine := errors.New("changed my mind")
	st0, _ := c.Stats()
	_, err = c.Batch(func(b *Batch) error {
		b.Put([]byte("b/discarded"), []byte("x"))
		return mine
	})
	if err != mine {
		t.Errorf("Batch returned %v, want fn's error", err)
	}
	if _, err := c.Get([]byte("b/discarded")); !errors.Is(err, ErrNotFound) {
		t.Errorf("a discarded batch wrote: %v", err)
	}
	st1, _ := c.Stats()
	if st1.CommitSeq != st0.CommitSeq {
		t.Errorf("a discarded batch committed (%d -> %d)", st0.CommitSeq, st1.CommitSeq)
	}

	// an op that can not be added fails the batch, even if fn ignores it
	var be *BatchError
	_, err = c.Batch(func(b *Batch) error {
		b.Put([]byte("b/z"), []byte("z"))
		if err := b.Put(bytes.Repeat([]byte("k"), KeyMax()+1), nil); !errors.Is(err, ErrTooBig) {
			t.Errorf("Batch.Put(big key) = %v", err)
		}
		return nil
	})
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, ErrTooBig) {
		t.Errorf("batch with a big key: %v", err)
	}

	// the broker refuses one op: nothing applied, the op's index reported
	for name, tc := range map[string]struct {
		fn   func(b *Batch)
		want error
	}{
		"delete absent": {func(b *Batch) { b.Put([]byte("b/z"), nil); b.Delete([]byte("b/absent")) }, ErrNotFound},
		"cas conflict":  {func(b *Batch) { b.Put([]byte("b/z"), nil); b.CAS([]byte("b/old"), old, nil) }, ErrConflict},
	} {
		_, err := c.Batch(func(b *Batch) error { tc.fn(b); return nil })
		if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %s at index 1", name, err, tc.want.(*Error).Name)
		}
		if _, err := c.Get([]byte("b/z")); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: the batch's put was applied", name)
		}
	}

	// empty
	if ver, err := c.Batch(func(b *Batch) error { return nil }); ver != 0 || err != nil {
		t.Errorf("empty batch: %d %v", ver, err)
	}
}
