package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nodeha/nodeha/trust"
)

const tokenUsage = `usage:
  nodeha token generate   print a new random cluster token (give it to every host: NODEHA_TOKEN)
  nodeha token show       print this host's token (DATA_DIR/token, root only) and the CA fingerprint
`

func cmdToken(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return &exitError{2, nil}
	}
	switch args[0] {
	case "generate":
		if len(args) > 1 {
			return &exitError{2, fmt.Errorf("token generate: unexpected argument %q", args[1])}
		}
		fmt.Fprintln(stdout, trust.GenerateToken())
		return nil
	case "show":
		fs := newFlags("token show", stderr)
		cfg, err := load(fs, args[1:], false)
		if err != nil {
			return err
		}
		tok, err := trust.ReadToken(cfg.TokenFile())
		if errors.Is(err, os.ErrNotExist) {
			return &exitError{1, fmt.Errorf("token show: %s does not exist: this host has not run a cluster yet", cfg.TokenFile())}
		}
		if err != nil {
			return fmt.Errorf("token show: %w", err)
		}
		id, err := trust.FromToken(tok)
		if err != nil {
			return fmt.Errorf("token show: %s: %w", cfg.TokenFile(), err)
		}
		fmt.Fprintln(stdout, tok)
		fmt.Fprintf(stderr, "cluster CA %s\n", id.Fingerprint())
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, tokenUsage)
		return nil
	}
	return &exitError{2, fmt.Errorf("token: unknown subcommand %q (generate or show)", args[0])}
}
