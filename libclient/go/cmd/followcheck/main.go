// Command followcheck follows a file through shoal.Client.Follow and
// prints what it receives, one JSON object per line, for the follow
// integration test (tests/integration/follow/test_follow.py). It is a test
// tool, not part of the package's API.
//
//	followcheck [--name NAME] [--socket PATH] [-n N] [--max-lines M] [--no-reopen] FILE
//
// Output, flushed per event:
//
//	{"event":"ready"}                                  Follow has started
//	{"event":"line","line":"...","offset":N}           a line (with its "\n")
//	{"event":"truncated","offset":N,"path":"..."}
//	{"event":"rotated","offset":N,"path":"..."}
//	{"event":"error","error":"..."}                    the follow ended; exit 1
//	{"event":"stopped","lines":N}                      SIGTERM, SIGINT or M lines; exit 0
//
// Exit status: 0 stopped, 1 the follow failed, 2 usage.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"shoal.dev/shoal"
)

type record struct {
	Event  string  `json:"event"`
	Line   *string `json:"line,omitempty"`
	Offset *uint64 `json:"offset,omitempty"`
	Path   string  `json:"path,omitempty"`
	Error  string  `json:"error,omitempty"`
	Lines  *int    `json:"lines,omitempty"`
}

func main() {
	name := flag.String("name", "", "the store (default: the socket's)")
	sock := flag.String("socket", os.Getenv("SHOAL_SOCKET"), "the broker's socket")
	n := flag.Int("n", 0, "start with the file's last N lines")
	maxLines := flag.Int("max-lines", 0, "stop after M lines (0: until SIGTERM)")
	noReopen := flag.Bool("no-reopen", false, "stay on a rotated file (tail -f)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: followcheck [--socket PATH] [-n N] [--max-lines M] [--no-reopen] FILE")
		os.Exit(2)
	}
	path := flag.Arg(0)

	out := json.NewEncoder(os.Stdout) // one write per event: nothing buffered
	emit := func(r record) {
		if err := out.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "followcheck: stdout:", err)
			os.Exit(1)
		}
	}

	var opts []shoal.Option
	if *sock != "" {
		opts = append(opts, shoal.WithSocket(*sock))
	}
	c, err := shoal.Open(*name, opts...)
	if err != nil {
		emit(record{Event: "error", Error: err.Error()})
		os.Exit(1)
	}
	defer c.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ch, err := c.Follow(ctx, path, *n, shoal.WithReopen(!*noReopen))
	if err != nil {
		emit(record{Event: "error", Error: err.Error()})
		os.Exit(1)
	}
	emit(record{Event: "ready"})
	lines := 0
loop:
	for ev := range ch {
		off := ev.Offset
		switch {
		case ev.Err != nil:
			emit(record{Event: "error", Error: ev.Err.Error()})
			os.Exit(1)
		case ev.Kind == shoal.FollowLine:
			line := ev.Line
			emit(record{Event: "line", Line: &line, Offset: &off})
			lines++
			if *maxLines > 0 && lines >= *maxLines {
				break loop // Close (deferred) ends the follow
			}
		default:
			emit(record{Event: ev.Kind.String(), Offset: &off, Path: ev.Path})
		}
	}
	// the channel was closed by a signal, or --max-lines were received
	emit(record{Event: "stopped", Lines: &lines})
}
