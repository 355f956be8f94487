package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/health"
)

// action asks the running nodeha (through its socket) for an action and
// prints its answer.
func action(socket, path string, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	msg, err := health.Do(ctx, socket, path)
	if msg != "" {
		fmt.Fprintln(stdout, msg)
	}
	return err
}

func cmdLeave(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("leave", stderr)
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	// A switchover, then a clean stop of PostgreSQL (up to the stop timeout).
	return action(cfg.Socket, "/leave", cfg.StopTimeout+3*time.Minute, stdout)
}

func cmdRemove(args []string, stdout, stderr io.Writer) error {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	fs := newFlags("remove", stderr)
	force := fs.Bool("force", false, "remove the host even though it still answers")
	// NAME before or after the flags.
	if name == "" {
		for i := len(args) - 1; i >= 0; i-- {
			if !strings.HasPrefix(args[i], "-") && (i == 0 || !flagTakesValue(fs, args[i-1])) {
				name, args = args[i], append(append([]string{}, args[:i]...), args[i+1:]...)
				break
			}
		}
	}
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	if name == "" {
		return &exitError{2, errors.New("remove: usage: nodeha remove NAME [--force] (NAME: the member name, or the address, of a dead host)")}
	}
	q := url.Values{"name": {name}}
	if *force {
		q.Set("force", "true")
	}
	return action(cfg.Socket, "/remove?"+q.Encode(), time.Minute, stdout)
}

// flagTakesValue tells whether arg is a flag of fs (or a setting) given
// without =, so that the next argument is its value.
func flagTakesValue(fs *flag.FlagSet, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if !strings.HasPrefix(arg, "-") || strings.Contains(name, "=") {
		return false
	}
	if f := fs.Lookup(name); f != nil {
		bf, ok := f.Value.(interface{ IsBoolFlag() bool })
		return !ok || !bf.IsBoolFlag()
	}
	for _, s := range config.Settings() {
		if s.Flag == "--"+name {
			return s.Type != "bool"
		}
	}
	return false
}

func cmdSnapshot(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("snapshot", stderr)
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	return action(cfg.Socket, "/snapshot", 2*time.Minute, stdout)
}

// cmdRecover restarts this host's etcd member from its own data as a
// one-member cluster, after a quorum loss. nodeha must not be running.
func cmdRecover(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("recover", stderr)
	from := fs.String("from-snapshot", "", "restore etcd from this snapshot (nodeha snapshot) instead of this host's own data, which is moved aside (kept)")
	cfg, err := load(fs, args, true)
	if err != nil {
		return err
	}
	if err := health.CheckFree(cfg.Socket); err != nil {
		return &exitError{2, fmt.Errorf("recover: stop nodeha first (systemctl stop nodeha): %w", err)}
	}
	ec := embedetcd.ConfigFrom(cfg)
	switch {
	case *from != "":
		if err := embedetcd.CheckSnapshot(*from); err != nil {
			return config.Problem("", "from-snapshot", "%w", err)
		}
		aside, err := embedetcd.MoveAside(cfg.EtcdDir(), "before-restore")
		if err != nil {
			return err
		}
		if err := embedetcd.Restore(ec, *from); err != nil {
			// Put this host's data back; what the failed restore left is
			// moved aside too, never deleted.
			if aside != "" {
				embedetcd.MoveAside(cfg.EtcdDir(), "failed-restore")
				os.Rename(aside, cfg.EtcdDir())
			}
			return err
		}
		if aside != "" {
			fmt.Fprintf(stdout, "this host's etcd data was moved aside to %s (kept)\n", aside)
		}
	case !embedetcd.HasData(cfg.EtcdDir()):
		return &exitError{2, fmt.Errorf("recover: %s holds no etcd data: there is nothing to recover from on this host (give --from-snapshot FILE)", cfg.EtcdDir())}
	default:
		ec.ForceNewCluster = true
	}
	log := newLogger(cfg, stderr)
	m, err := embedetcd.Start(ec, log)
	if err != nil {
		return err
	}
	defer m.Close()
	select {
	case <-m.Ready():
	case err := <-m.Err():
		return fmt.Errorf("recover: %w", err)
	case <-time.After(2 * time.Minute):
		return errors.New("recover: the member did not become ready in 2m")
	}
	st := m.Status()
	fmt.Fprintf(stdout, "recovered: etcd member %s is now a one-member cluster (%d member, leader %v) with this host's data.\n", st.Name, len(st.Members), st.Leader)
	fmt.Fprintf(stdout, "Start nodeha again (systemctl start nodeha): Patroni resumes with a primary here.\n")
	fmt.Fprintf(stdout, "Bring the other hosts back with: nodeha join --peers %s (their old etcd data is moved aside).\n", cfg.AdvertiseIP)
	return nil
}
