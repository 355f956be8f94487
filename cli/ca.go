package cli

import (
	"fmt"
	"io"
)

// cmdCA prints the cluster CA's certificate (public): what clients verify
// PostgreSQL's and etcd's certificates against.
func cmdCA(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("ca", stderr)
	cfg, err := load(fs, args, false)
	if err != nil {
		return err
	}
	if err := cfg.ResolveToken(); err != nil {
		return &exitError{2, err}
	}
	fmt.Fprint(stdout, string(cfg.Identity.CAPEM()))
	return nil
}
