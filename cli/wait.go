package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nodeha/nodeha/health"
)

// DefaultWait is how long `nodeha status --wait` waits when given no
// duration.
const DefaultWait = 5 * time.Minute

// waitFlag is --wait[=DURATION]: a bare --wait means DefaultWait.
type waitFlag struct{ d time.Duration }

// bareWait turns a bare --wait into --wait=DefaultWait: the flag takes a
// duration, and a bare one means the default.
func bareWait(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "-wait" || a == "--wait" {
			a = "--wait=" + DefaultWait.String()
		}
		out[i] = a
	}
	return out
}

func (w *waitFlag) String() string {
	if w == nil || w.d == 0 {
		return ""
	}
	return w.d.String()
}
func (w *waitFlag) Set(s string) error {
	switch s {
	case "true":
		w.d = DefaultWait
		return nil
	case "false":
		w.d = 0
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("want a positive duration such as 5m (or --wait alone: %v)", DefaultWait)
	}
	w.d = d
	return nil
}

// waitHealthy polls socket until the node is healthy or timeout passes. A
// socket that does not exist yet (nodeha still starting) is waited for too.
// Each new reason for waiting is printed once to stderr, so a log (such as
// cloud-init's) shows what the node went through.
func waitHealthy(socket string, timeout time.Duration, stdout, stderr io.Writer, print func(io.Writer, health.Report)) error {
	deadline := time.Now().Add(timeout)
	start := time.Now()
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rep, err := health.Get(ctx, socket)
		cancel()
		var why string
		switch {
		case err != nil:
			why = err.Error()
		case rep.Healthy:
			print(stdout, rep)
			fmt.Fprintf(stderr, "nodeha: healthy after %.0fs\n", time.Since(start).Seconds())
			return nil
		default:
			why = strings.Join(rep.Reasons, "; ")
		}
		if why != last {
			fmt.Fprintf(stderr, "nodeha: waiting (%.0fs): %s\n", time.Since(start).Seconds(), why)
			last = why
		}
		if time.Now().After(deadline) {
			if err == nil {
				print(stdout, rep)
			}
			return &exitError{1, fmt.Errorf("not healthy after %v: %s", timeout, why)}
		}
		time.Sleep(time.Second)
	}
}

func printJSON(w io.Writer, r health.Report) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(r)
}
