package shoal

// The conformance runner: tests/conformance/cases.jsonl, run exactly as
// tests/conformance/README.md says, against one fresh broker. The C and
// Python suites run the same file.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// step is one line of cases.jsonl (README.md's tables). Unknown fields
// fail the run: a field added to the format must be added here too.
type step struct {
	Case          string          `json:"case"`
	Op            string          `json:"op"`
	Key           string          `json:"key"`
	KeyRepeat     int             `json:"key_repeat"`
	Value         *string         `json:"value"`
	ValueRepeat   int             `json:"value_repeat"`
	TTLMS         int64           `json:"ttl_ms"`
	ExpectVersion json.RawMessage `json:"expect_version"`
	ExpectDelta   int64           `json:"expect_delta"`
	Prefix        *string         `json:"prefix"`
	Start         *string         `json:"start"`
	End           *string         `json:"end"`
	Limit         int             `json:"limit"`
	Ops           []step          `json:"ops"`
	After         json.RawMessage `json:"after"`
	TimeoutMS     int64           `json:"timeout_ms"`
	MS            int64           `json:"ms"`
	Save          string          `json:"save"`
	Result        string          `json:"result"`
	Keys          *[]string       `json:"keys"`
	VersionOf     string          `json:"version_of"`
	FailedIndex   *int            `json:"failed_index"`
	VersionGT     string          `json:"version_gt"`
}

func repeat(s string, n int) []byte {
	if n <= 0 {
		n = 1
	}
	return bytes.Repeat([]byte(s), n)
}

func (s *step) key() []byte { return repeat(s.Key, s.KeyRepeat) }

func (s *step) value() []byte {
	if s.Value == nil {
		return nil
	}
	return repeat(*s.Value, s.ValueRepeat)
}

func conformancePath(t *testing.T) string {
	if p := os.Getenv("SHOAL_CONFORMANCE"); p != "" {
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			p += "/cases.jsonl"
		}
		return p
	}
	p := "../../tests/conformance/cases.jsonl"
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no conformance cases at %s (set SHOAL_CONFORMANCE): %v", p, err)
	}
	return p
}

func TestConformance(t *testing.T) {
	path := conformancePath(t)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := startBroker(t)
	c := b.open(t)
	r := &runner{t: t, c: c, labels: map[string]uint64{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	line, steps := 0, 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		var s step
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			t.Errorf("%s:%d: %v (a field this runner does not know?)", path, line, err)
			continue
		}
		steps++
		if msg := r.run(&s); msg != "" {
			t.Errorf("%s:%d: case %q, op %s: %s", path, line, s.Case, s.Op, msg)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if steps == 0 {
		t.Fatalf("%s: no steps", path)
	}
	t.Logf("%d steps of %s", steps, path)
}

type runner struct {
	t      *testing.T
	c      *Client
	labels map[string]uint64
}

// version resolves expect_version/after: 0, or a label's version.
func (r *runner) version(raw json.RawMessage, delta int64) (uint64, error) {
	if len(raw) == 0 {
		return 0, errors.New("no version given")
	}
	var n uint64
	if json.Unmarshal(raw, &n) == nil {
		return n + uint64(delta), nil
	}
	var label string
	if err := json.Unmarshal(raw, &label); err != nil {
		return 0, fmt.Errorf("version %s: neither a number nor a label", raw)
	}
	v, ok := r.labels[label]
	if !ok {
		return 0, fmt.Errorf("unknown label %q", label)
	}
	return v + uint64(delta), nil
}

// run performs one step and returns what did not match ("" if all did).
func (r *runner) run(s *step) string {
	var (
		err      error
		ver      uint64
		got      []byte
		keys     []string
		hasVer   bool // the op returns a version (for save and version_gt)
		checkGet bool
	)
	switch s.Op {
	case "put":
		if s.TTLMS > 0 {
			ver, err = r.c.PutTTL(s.key(), s.value(), time.Duration(s.TTLMS)*time.Millisecond)
		} else {
			ver, err = r.c.Put(s.key(), s.value())
		}
		hasVer = true
	case "get":
		err = r.c.View(func(tx *Tx) error {
			v, gv, err := tx.GetVersion(s.key())
			got, ver = append([]byte(nil), v...), gv
			return err
		})
		checkGet = true
	case "del":
		err = r.c.Delete(s.key())
	case "cas":
		expect, verr := r.version(s.ExpectVersion, s.ExpectDelta)
		if verr != nil {
			return verr.Error()
		}
		ver, err = r.c.CAS(s.key(), expect, s.value())
		hasVer = true
	case "scan":
		err = r.c.View(func(tx *Tx) error {
			keys = []string{}
			fn := func(k, v []byte) bool {
				keys = append(keys, string(k))
				return s.Limit == 0 || len(keys) < s.Limit
			}
			if s.Prefix != nil {
				return tx.ScanPrefix([]byte(*s.Prefix), fn)
			}
			var start, end []byte
			if s.Start != nil {
				start = []byte(*s.Start)
			}
			if s.End != nil {
				end = []byte(*s.End)
			}
			return tx.Scan(start, end, fn)
		})
	case "batch":
		var msg string
		ver, err = r.c.Batch(func(b *Batch) error {
			for i := range s.Ops {
				o := &s.Ops[i]
				switch o.Op {
				case "put":
					if o.TTLMS > 0 {
						b.PutTTL(o.key(), o.value(), time.Duration(o.TTLMS)*time.Millisecond)
					} else {
						b.Put(o.key(), o.value())
					}
				case "del":
					b.Delete(o.key())
				case "del_any":
					b.DeleteAny(o.key())
				case "cas":
					expect, verr := r.version(o.ExpectVersion, o.ExpectDelta)
					if verr != nil {
						msg = fmt.Sprintf("ops[%d]: %v", i, verr)
						return verr
					}
					b.CAS(o.key(), expect, o.value())
				default:
					msg = fmt.Sprintf("ops[%d]: unknown op %q", i, o.Op)
					return errors.New(msg)
				}
			}
			return nil
		})
		if msg != "" {
			return msg
		}
		hasVer = true
	case "wait":
		after, verr := r.version(s.After, 0)
		if verr != nil {
			return verr.Error()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.TimeoutMS)*time.Millisecond)
		ver, err = r.c.Wait(ctx, s.key(), after)
		cancel()
		hasVer = true
	case "sleep":
		time.Sleep(time.Duration(s.MS) * time.Millisecond)
		return ""
	default:
		return fmt.Sprintf("unknown op %q", s.Op)
	}

	want := s.Result
	if want == "" {
		want = "OK"
	}
	if name := errNameOf(err); name != want {
		return fmt.Sprintf("result %s (%v), want %s", name, err, want)
	}
	var msgs []string
	if s.FailedIndex != nil {
		var be *BatchError
		if !errors.As(err, &be) || be.Index != *s.FailedIndex {
			msgs = append(msgs, fmt.Sprintf("failed index: %v, want %d", err, *s.FailedIndex))
		}
	}
	if err != nil {
		return strings.Join(msgs, "; ")
	}
	if checkGet && s.Value != nil && !bytes.Equal(got, s.value()) {
		g := string(got)
		if len(g) > 80 {
			g = fmt.Sprintf("%.80s... (%d bytes)", g, len(got))
		}
		msgs = append(msgs, fmt.Sprintf("value %q, want %d bytes %.80q", g, len(s.value()), s.value()))
	}
	if s.VersionOf != "" {
		if lv, ok := r.labels[s.VersionOf]; !ok {
			msgs = append(msgs, fmt.Sprintf("unknown label %q", s.VersionOf))
		} else if ver != lv {
			msgs = append(msgs, fmt.Sprintf("version %d, want %d (label %s)", ver, lv, s.VersionOf))
		}
	}
	if s.VersionGT != "" {
		if lv, ok := r.labels[s.VersionGT]; !ok {
			msgs = append(msgs, fmt.Sprintf("unknown label %q", s.VersionGT))
		} else if !hasVer || ver <= lv {
			msgs = append(msgs, fmt.Sprintf("version %d, want > %d (label %s)", ver, lv, s.VersionGT))
		}
	}
	if s.Keys != nil && strings.Join(keys, "\x00") != strings.Join(*s.Keys, "\x00") {
		msgs = append(msgs, fmt.Sprintf("keys %q, want %q", keys, *s.Keys))
	}
	if s.Save != "" {
		if !hasVer {
			msgs = append(msgs, "save on an op that returns no version")
		}
		r.labels[s.Save] = ver
	}
	return strings.Join(msgs, "; ")
}
