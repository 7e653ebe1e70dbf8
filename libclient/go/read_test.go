package shoal

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestScan(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	// more keys than a chunk (128), so that the scan resumes several times
	const n = 1000
	_, err := c.Batch(func(b *Batch) error {
		for i := 0; i < n; i++ {
			b.Put([]byte(fmt.Sprintf("s/%04d", i)), []byte(fmt.Sprint(i)))
		}
		b.Put([]byte("s0"), []byte("after the prefix"))
		b.Put([]byte("r"), []byte("before the prefix"))
		b.Put([]byte("\xff\xff"), []byte("high"))
		b.Put([]byte("\xff\xff\x00"), []byte("higher"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.View(func(tx *Tx) error {
		var keys []string
		err := tx.ScanPrefix([]byte("s/"), func(k, v []byte) bool {
			keys = append(keys, string(k))
			if want := fmt.Sprint(len(keys) - 1); string(v) != want {
				t.Fatalf("value of %s: %q, want %q", k, v, want)
			}
			return true
		})
		if err != nil || len(keys) != n || keys[0] != "s/0000" || keys[n-1] != fmt.Sprintf("s/%04d", n-1) {
			t.Errorf("ScanPrefix: %d keys, %v", len(keys), err)
		}
		for i := 1; i < len(keys); i++ {
			if keys[i-1] >= keys[i] {
				t.Fatalf("out of order: %q then %q", keys[i-1], keys[i])
			}
		}
		// a range, and stopping early
		keys = nil
		tx.Scan([]byte("s/0100"), []byte("s/0300"), func(k, v []byte) bool {
			keys = append(keys, string(k))
			return len(keys) < 150
		})
		if len(keys) != 150 || keys[0] != "s/0100" || keys[149] != "s/0249" {
			t.Errorf("Scan range with a stop at 150: %d keys, %v..", len(keys), keys[:1])
		}
		keys = nil
		tx.Scan([]byte("s/0100"), []byte("s/0300"), func(k, v []byte) bool {
			keys = append(keys, string(k))
			return true
		})
		if len(keys) != 200 || keys[199] != "s/0299" {
			t.Errorf("Scan [s/0100, s/0300): %d keys", len(keys))
		}
		// open-ended ranges, prefixes ending in 0xff, no match
		var all int
		tx.Scan(nil, nil, func(k, v []byte) bool { all++; return true })
		if all != n+4 {
			t.Errorf("Scan(nil, nil): %d keys, want %d", all, n+4)
		}
		keys = nil
		tx.ScanPrefix([]byte("\xff\xff"), func(k, v []byte) bool { keys = append(keys, string(k)); return true })
		if len(keys) != 2 {
			t.Errorf("ScanPrefix(ff ff): %q", keys)
		}
		keys = nil
		tx.Scan([]byte("s0"), nil, func(k, v []byte) bool { keys = append(keys, string(k)); return true })
		if len(keys) != 3 || keys[0] != "s0" {
			t.Errorf("Scan(s0, nil): %q", keys)
		}
		if err := tx.ScanPrefix([]byte("none/"), func(k, v []byte) bool { t.Error("called"); return true }); err != nil {
			t.Error(err)
		}
		// fn may use the Tx: Get, and a Scan of its own, across chunks
		outer, inner := 0, 0
		err = tx.ScanPrefix([]byte("s/0"), func(k, v []byte) bool {
			outer++
			if g, ok := tx.Get(k); !ok || !bytes.Equal(g, v) {
				t.Fatalf("Get(%s) inside Scan: %q %v", k, g, ok)
			}
			if outer%200 == 1 {
				tx.ScanPrefix([]byte("s/"), func(k2, v2 []byte) bool { inner++; return true })
			}
			return true
		})
		if err != nil || outer != n || inner != 5*n {
			t.Errorf("nested scans: outer %d inner %d (%v), want %d and %d", outer, inner, err, n, 5*n)
		}
		return nil
	})
}

func TestPrefixEnd(t *testing.T) {
	for p, want := range map[string]string{"": "", "a": "b", "a\xff": "b", "\xff\xff": "", "ab\xfe": "ab\xff"} {
		if got := string(prefixEnd([]byte(p))); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", p, got, want)
		}
	}
}

func TestGetMany(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	const n = 300 // more than libshoal's chunk of 128
	keys := make([][]byte, 0, n+3)
	_, err := c.Batch(func(b *Batch) error {
		for i := 0; i < n; i++ {
			k := []byte(fmt.Sprintf("gm/%d", i))
			keys = append(keys, k)
			if i%3 != 0 { // every third is absent
				b.Put(k, bytes.Repeat([]byte{byte(i)}, i%50))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, nil, bytes.Repeat([]byte("x"), KeyMax()+1), []byte("gm/1"))
	c.View(func(tx *Tx) error {
		vals, found, err := tx.GetMany(keys)
		if !errors.Is(err, ErrTooBig) {
			t.Errorf("GetMany with an oversized key: err %v, want ErrTooBig", err)
		}
		want := 0
		for i := 0; i < n; i++ {
			single, ok := tx.Get(keys[i])
			if ok {
				want++
			}
			if (vals[i] != nil) != ok || !bytes.Equal(vals[i], single) {
				t.Fatalf("key %d: GetMany %q, Get %q %v", i, vals[i], single, ok)
			}
			if i%3 != 0 && (vals[i] == nil || len(vals[i]) != i%50) {
				t.Fatalf("key %d: %q", i, vals[i])
			}
		}
		if found != want+1 || vals[n] != nil || vals[n+1] != nil || !bytes.Equal(vals[n+2], vals[1]) {
			t.Errorf("found %d, want %d; tail %q %q %q", found, want+1, vals[n], vals[n+1], vals[n+2])
		}
		// the allocation-free form, reused
		out := make([][]byte, 10)
		for round := 0; round < 3; round++ {
			f, err := tx.GetManyInto(keys[1:3], out)
			if err != nil || f != 2 || !bytes.Equal(out[0], vals[1]) {
				t.Errorf("GetManyInto: %d %v", f, err)
			}
		}
		if f, err := tx.GetManyInto(nil, nil); f != 0 || err != nil {
			t.Errorf("GetManyInto(nil): %d %v", f, err)
		}
		return nil
	})
}

func TestTTL(t *testing.T) {
	b := startBroker(t)
	c := b.open(t)
	if _, err := c.PutTTL([]byte("short"), []byte("soon gone"), 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Batch(func(b *Batch) error {
		return b.PutTTL([]byte("bshort"), []byte("also"), 150*time.Millisecond)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutTTL([]byte("long"), []byte("stays"), time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"short", "bshort", "long"} {
		if _, err := c.Get([]byte(k)); err != nil {
			t.Errorf("Get(%s) before expiry: %v", k, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for k, want := range map[string]error{"short": ErrNotFound, "bshort": ErrNotFound, "long": nil} {
		if _, err := c.Get([]byte(k)); !errors.Is(err, want) && err != want {
			t.Errorf("Get(%s) after 300 ms: %v, want %v", k, err, want)
		}
	}
	var be *BatchError
	_, err := c.Batch(func(b *Batch) error {
		b.Put([]byte("x"), nil)
		b.PutTTL([]byte("y"), nil, -time.Second) // fn ignores the error
		return nil
	})
	if !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, ErrInvalid) {
		t.Errorf("batch with a negative TTL: %v", err)
	}
}
