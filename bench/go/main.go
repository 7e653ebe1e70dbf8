// Command shoal-go-bench measures the Go client's reads (issue 4, "Must
// show" 3): random Tx.Get inside View (one View per 100 gets, and one per
// get) and Tx.GetMany (100 keys per call), over the whole key set and over
// a hot set that stays in cache. It starts its own shoald in a private
// directory, loads the keys with Batch, and reports the median of --runs
// runs of each measurement, as a table or (--json) one JSON object.
//
//	go run . --shoald ../../build/broker/shoald [--keys 1000000] [--json]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"shoal.dev/shoal"
)

var (
	flagShoald = flag.String("shoald", "", "the shoald binary (default: $SHOAL_TEST_SHOALD, shoald on PATH, ../../build/broker/shoald)")
	flagKeys   = flag.Int("keys", 1000000, "keys loaded (\"key:%012d\", 16 bytes)")
	flagHot    = flag.Int("hot", 10000, "keys of the hot set (the first HOT keys)")
	flagValue  = flag.Int("value", 64, "value bytes")
	flagOps    = flag.Int("ops", 2000000, "gets per run of each measurement (a multiple of 100)")
	flagRuns   = flag.Int("runs", 3, "runs of each measurement; the median is reported")
	flagJSON   = flag.Bool("json", false, "print one JSON object instead of the table")
	flagSize   = flag.String("size", "", "the store's --size (default: enough for the keys)")
	flagG      = flag.Int("goroutines", 1, "goroutines reading at once, sharing one Client (each gets --ops/N)")
)

const perView = 100 // gets per View, and keys per GetMany call

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "shoal-go-bench: "+format+"\n", a...)
	os.Exit(1)
}

func findShoald() string {
	if *flagShoald != "" {
		return *flagShoald
	}
	if p := os.Getenv("SHOAL_TEST_SHOALD"); p != "" {
		return p
	}
	if p, err := exec.LookPath("shoald"); err == nil {
		return p
	}
	p, _ := filepath.Abs("../../build/broker/shoald")
	return p
}

// startBroker runs shoald in dir and returns its socket and process.
func startBroker(dir string, keys int) (string, *exec.Cmd) {
	size := *flagSize
	if size == "" {
		// records, index and slack: 4x the raw bytes, at least 64 MiB
		mb := (keys*(16+*flagValue+64)*4)>>20 + 64
		size = strconv.Itoa(mb) + "M"
	}
	sock := dir + "/bench.sock"
	cmd := exec.Command(findShoald(), "--name", "gobench", "--rundir", dir,
		"--shm-dir", dir, "--socket", sock, "--size", size, "--quiet")
	logf, err := os.Create(dir + "/broker.log")
	if err != nil {
		die("%v", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		die("start shoald (%s): %v; pass --shoald", cmd.Path, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock, cmd
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			log, _ := os.ReadFile(dir + "/broker.log")
			die("shoald did not listen within 10 s:\n%s", log)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// queryStream returns n keys drawn at random from the first m, laid out
// one after the other (16 bytes each), as shoal-bench's C reader reads
// them: the measurement is the lookup, not a cache miss on the key. The
// draw is xorshift64*, the same sequence every run.
func queryStream(n, m int) []byte {
	qs := make([]byte, 0, n*keyLen)
	x := uint64(0x9E3779B97F4A7C15)
	for i := 0; i < n; i++ {
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		qs = appendKey(qs, int((x*2685821657736338717)>>32%uint64(m)))
	}
	return qs
}

const keyLen = 16 // "key:%012d"

func appendKey(b []byte, i int) []byte {
	b = append(b, "key:"...)
	var d [12]byte
	for j := 11; j >= 0; j-- {
		d[j] = '0' + byte(i%10)
		i /= 10
	}
	return append(b, d[:]...)
}

type measure func(c *shoal.Client, qs []byte) (found int)

func getView100(c *shoal.Client, qs []byte) (found int) {
	for len(qs) > 0 {
		c.View(func(tx *shoal.Tx) error {
			for i := 0; i < perView; i++ {
				if _, ok := tx.Get(qs[i*keyLen : (i+1)*keyLen]); ok {
					found++
				}
			}
			return nil
		})
		qs = qs[perView*keyLen:]
	}
	return found
}

func getView1(c *shoal.Client, qs []byte) (found int) {
	for ; len(qs) > 0; qs = qs[keyLen:] {
		c.View(func(tx *shoal.Tx) error {
			if _, ok := tx.Get(qs[:keyLen]); ok {
				found++
			}
			return nil
		})
	}
	return found
}

func getMany(c *shoal.Client, qs []byte) (found int) {
	batch := make([][]byte, perView)
	vals := make([][]byte, perView)
	for len(qs) > 0 {
		for i := range batch {
			batch[i] = qs[i*keyLen : (i+1)*keyLen]
		}
		c.View(func(tx *shoal.Tx) error {
			n, _ := tx.GetManyInto(batch, vals)
			found += n
			return nil
		})
		qs = qs[perView*keyLen:]
	}
	return found
}

// run returns the median rate (gets per second) of --runs runs of m.
func run(name string, m measure, c *shoal.Client, qs []byte) float64 {
	n := len(qs) / keyLen
	m(c, qs[:n/10/perView*perView*keyLen]) // warm up
	rates := make([]float64, *flagRuns)
	g := *flagG
	per := n / g / perView * perView * keyLen
	n = per / keyLen * g
	for r := range rates {
		var wg sync.WaitGroup
		var total atomic.Int64
		t0 := time.Now()
		for i := 0; i < g; i++ {
			wg.Add(1)
			go func(part []byte) {
				defer wg.Done()
				total.Add(int64(m(c, part)))
			}(qs[i*per : (i+1)*per])
		}
		wg.Wait()
		d := time.Since(t0)
		found := int(total.Load())
		if found != n {
			die("%s: found %d of %d keys", name, found, n)
		}
		rates[r] = float64(n) / d.Seconds()
	}
	sort.Float64s(rates)
	return rates[len(rates)/2]
}

func main() {
	flag.Parse()
	if *flagKeys < 1 || *flagHot < 1 || *flagHot > *flagKeys || *flagRuns < 1 ||
		*flagG < 1 || *flagOps < perView**flagG {
		die("need --keys >= --hot >= 1, --runs >= 1, --goroutines >= 1, --ops >= %d x goroutines", perView)
	}
	ops := *flagOps / perView * perView
	root := "/dev/shm"
	if _, err := os.Stat(root); err != nil {
		root = ""
	}
	dir, err := os.MkdirTemp(root, "shoal-gobench-")
	if err != nil {
		die("%v", err)
	}
	defer os.RemoveAll(dir)
	sock, broker := startBroker(dir, *flagKeys)
	defer func() {
		broker.Process.Signal(syscall.SIGTERM)
		broker.Wait()
	}()
	c, err := shoal.Open("gobench", shoal.WithSocket(sock), shoal.WithReaders(max(*flagG, runtime.GOMAXPROCS(0))))
	if err != nil {
		die("%v", err)
	}
	defer c.Close()

	nkeys := *flagKeys
	val := make([]byte, *flagValue)
	for i := range val {
		val[i] = 'a' + byte(i%26)
	}
	t0 := time.Now()
	for i := 0; i < nkeys; {
		_, err := c.Batch(func(b *shoal.Batch) error {
			var key []byte
			for n := 0; n < 1000 && i < nkeys; n++ {
				key = appendKey(key[:0], i)
				if err := b.Put(key, val); err != nil {
					return err
				}
				i++
			}
			return nil
		})
		if err != nil {
			die("load: %v", err)
		}
	}
	load := time.Since(t0)

	full := queryStream(ops, nkeys)
	hot := queryStream(ops, *flagHot)
	res := map[string]any{
		"keys": nkeys, "hot_keys": *flagHot, "value_bytes": *flagValue,
		"ops_per_run": ops, "runs": *flagRuns, "gomaxprocs": runtime.GOMAXPROCS(0), "goroutines": *flagG,
		"go_version": runtime.Version(), "load_keys_per_s": float64(nkeys) / load.Seconds(),
	}
	type row struct {
		label, field string
		m            measure
	}
	rows := []row{
		{"Tx.Get, one View per 100 gets", "go_get", getView100},
		{"Tx.Get, one View per get", "go_get_view1", getView1},
		{"Tx.GetMany, 100 keys per call", "go_get_many", getMany},
	}
	for _, r := range rows {
		unit := "_ops_per_s"
		if r.field == "go_get_many" {
			unit = "_keys_per_s"
		}
		res[r.field+unit] = run(r.label, r.m, c, full)
		res[r.field+"_hot"+unit] = run(r.label+" (hot)", r.m, c, hot)
	}
	if *flagJSON {
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
		return
	}
	fmt.Printf("shoal Go client: %d keys (16-byte keys, %d-byte values), hot set %d keys; "+
		"%d random gets per run, median of %d; %d goroutine(s), GOMAXPROCS %d, %s\n",
		nkeys, *flagValue, *flagHot, ops, *flagRuns, *flagG, runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("loaded with Batch (1000 puts each) at %.2f M keys/s\n\n", res["load_keys_per_s"].(float64)/1e6)
	fmt.Printf("%-32s %22s %22s\n", "", fmt.Sprintf("all %d keys", nkeys), fmt.Sprintf("hot %d keys", *flagHot))
	for _, r := range rows {
		unit := "_ops_per_s"
		if r.field == "go_get_many" {
			unit = "_keys_per_s"
		}
		f, h := res[r.field+unit].(float64), res[r.field+"_hot"+unit].(float64)
		// ns: per get and goroutine
		g := float64(*flagG)
		fmt.Printf("%-32s %9.2f M/s %5.0f ns %9.2f M/s %5.0f ns\n", r.label, f/1e6, g*1e9/f, h/1e6, g*1e9/h)
	}
}
