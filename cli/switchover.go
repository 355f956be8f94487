package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/patroni"
)

// cmdSwitchover makes a planned leader change through the local Patroni's
// REST API and waits until the new primary runs.
func cmdSwitchover(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("switchover", stderr)
	to := fs.String("to", "", "member name of the new primary (default: Patroni chooses a healthy replica)")
	wait := fs.Duration("timeout", 60*time.Second, "how long to wait for the new primary")
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	// The token: the REST password derives from it (unless set), and the
	// REST API is HTTPS that asks for a certificate of the cluster CA (this
	// host's).
	if err := cfg.ResolveToken(); err != nil {
		return &exitError{2, fmt.Errorf("%w\nswitchover: needs this host's token (the REST API asks for a certificate of the cluster)", err)}
	}
	f := cfg.TLSFiles()
	clientTLS, err := cfg.Identity.ClientTLS(f.Cert, f.Key)
	if err != nil {
		return fmt.Errorf("switchover: this host's certificate (has nodeha run here?): %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	pc := patroni.New(patroni.URL(config.HostPort("127.0.0.1", cfg.RestAPIPort), clientTLS), clientTLS)
	cl, err := pc.Cluster(ctx)
	if err != nil {
		return err
	}
	old, ok := cl.Leader()
	if !ok {
		return errors.New("switchover: the cluster has no leader now")
	}
	if *to == old.Name {
		return &exitError{2, fmt.Errorf("--to: %s is already the primary", *to)}
	}
	if *to != "" {
		found := false
		for _, m := range cl.Members {
			found = found || m.Name == *to
		}
		if !found {
			return &exitError{2, fmt.Errorf("--to: no member named %q in the cluster", *to)}
		}
	}
	start := time.Now()
	if err := pc.Switchover(ctx, "postgres", cfg.RestAPIPassword, old.Name, *to); err != nil {
		return err
	}
	for {
		if cl, err := pc.Cluster(ctx); err == nil {
			if m, ok := cl.Leader(); ok && m.Name != old.Name && m.State == "running" {
				np := patroni.New(patroni.URL(config.HostPort(m.Host, cfg.RestAPIPort), clientTLS), clientTLS)
				if st, err := np.Status(ctx); err == nil && patroni.IsLeader(st.Role) && st.State == "running" {
					fmt.Fprintf(stdout, "switched over from %s to %s (%s) in %.1fs\n", old.Name, m.Name, m.Host, time.Since(start).Seconds())
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("switchover: no new primary running after %v", *wait)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
