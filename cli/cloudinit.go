package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nodeha/nodeha/cloudinit"
	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/systemd"
	"github.com/nodeha/nodeha/trust"
)

const cloudInitUsage = `usage:
  nodeha cloud-init --name NAME --peers A,B,C [settings] BINARY > NAME.user-data
      user-data for one host of a new cluster (every host gets the same
      --peers; a one-host cluster is --peers with its own address only)
  nodeha cloud-init --all DIR --peers A,B,C [--names pg1,pg2,pg3] [settings] BINARY
      one file per host, DIR/NAME.user-data (mode 0600), for all hosts of a
      new cluster booted at once; host i advertises the i-th peer address
  BINARY is --binary-url URL --binary-sha256 HEX, or --embed-binary PATH.
The cluster token is NODEHA_TOKEN (--token); --all makes one when none is
given and writes it to DIR/token. Passwords derive from the token unless the
NODEHA_*_PASSWORD variables (or their flags) set them.

`

func cmdCloudInit(args []string, stdout, stderr io.Writer) error {
	fset := newFlags("cloud-init", stderr)
	fset.Usage = func() {
		fmt.Fprint(fset.Output(), cloudInitUsage)
		fset.PrintDefaults()
	}
	all := fset.String("all", "", "write the user-data of every host of the cluster into this directory")
	names := fset.String("names", "", "with --all: the hosts' member names, in the order of --peers (default pg1, pg2, ...)")
	binaryURL := fset.String("binary-url", "", "https URL the VM downloads the nodeha binary from")
	binarySHA := fset.String("binary-sha256", "", "SHA-256 of the binary at --binary-url (hex), checked with sha256sum before it is installed")
	embed := fset.String("embed-binary", "", "embed this nodeha binary in the user-data (gzip + base64: about half the binary's size, 13.5 MB today; more than most clouds accept, fine for a NoCloud seed)")
	binary := fset.String("binary", systemd.DefaultBinary, "where the VM installs the binary")
	envFile := fset.String("env-file", systemd.DefaultEnvFile, "where the VM keeps its settings file")
	wait := fset.Duration("wait", 10*time.Minute, "how long the user-data waits for the node to become healthy (nodeha status --wait)")
	cfg, err := load(fset, args, false)
	if err != nil {
		return err
	}
	given := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { given[f.Name] = true })

	base := cloudinit.Options{
		EnvFile: *envFile, Binary: *binary, BinaryURL: *binaryURL, BinarySHA: *binarySHA,
		Socket: cfg.Socket, Wait: *wait, OverlayPath: cloudinit.DefaultOverlayPath,
	}
	if *embed != "" {
		b, err := os.ReadFile(*embed)
		if err != nil {
			return &exitError{2, fmt.Errorf("--embed-binary: %w", err)}
		}
		base.Embedded = b
	}
	if err := base.Validate(); err != nil {
		return &exitError{2, err}
	}

	if *all == "" {
		if *names != "" {
			return &exitError{2, errors.New("--names: only with --all")}
		}
		if _, env := os.LookupEnv("NODEHA_NAME"); !env && !given["name"] {
			return &exitError{2, errors.New("NODEHA_NAME (--name): is required: the member name of the host this user-data is for")}
		}
		out, err := hostUserData(*cfg, base, "")
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	}

	if given["name"] {
		return &exitError{2, errors.New("--name: not with --all, which names the hosts pg1, pg2, ... or as --names says")}
	}
	if len(cfg.Peers) == 0 {
		return &exitError{2, errors.New("NODEHA_PEERS (--peers): is required: the address of every host of the cluster")}
	}
	hostNames := make([]string, len(cfg.Peers))
	for i := range hostNames {
		hostNames[i] = fmt.Sprintf("pg%d", i+1)
	}
	if *names != "" {
		hostNames = strings.Split(*names, ",")
		if len(hostNames) != len(cfg.Peers) {
			return &exitError{2, fmt.Errorf("--names: %d names for %d peers: give one per address of --peers, in the same order", len(hostNames), len(cfg.Peers))}
		}
		seen := map[string]bool{}
		for i, n := range hostNames {
			n = strings.TrimSpace(n)
			hostNames[i] = n
			switch {
			case !config.ValidName(n):
				return config.Problem("", "names", "%q is not a valid member name (letters, digits, '-', '_', '.')", n)
			case seen[n]:
				// One file per name: the second would overwrite the first.
				return config.Problem("", "names", "%q is listed twice: every host needs its own name", n)
			}
			seen[n] = true
		}
	}
	generated := cfg.Token == ""
	if generated {
		// Every host of the new cluster gets the same one.
		cfg.Token = trust.GenerateToken()
	}
	files := map[string][]byte{}
	for i, peer := range cfg.Peers {
		hc := *cfg
		hc.Peers = append([]string(nil), cfg.Peers...)
		hc.Name = strings.TrimSpace(hostNames[i])
		out, err := hostUserData(hc, base, peer)
		if err != nil {
			return err
		}
		files[hc.Name] = out
	}
	if err := os.MkdirAll(*all, 0o700); err != nil {
		return fmt.Errorf("--all: %w", err)
	}
	for i := range cfg.Peers {
		name := strings.TrimSpace(hostNames[i])
		path := filepath.Join(*all, name+".user-data")
		if err := writeFile(path, files[name], 0o600, 0o700); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (host %s, %s)\n", path, name, cfg.Peers[i])
	}
	if generated {
		path := filepath.Join(*all, "token")
		if err := writeFile(path, []byte(cfg.Token+"\n"), 0o600, 0o700); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (the new cluster's token: keep it, hosts join with it)\n", path)
	}
	return nil
}

// hostUserData validates one host's settings and renders its user-data.
// advertise, when set, is this host's address (--all).
func hostUserData(hc config.Config, o cloudinit.Options, advertise string) ([]byte, error) {
	if advertise != "" {
		hc.Advertise = advertise
	}
	// Validate here what can be validated here. A go-sockaddr template
	// resolves on the VM, not on this machine: check the rest with a
	// stand-in address from the peer list.
	v := hc
	v.Peers = append([]string(nil), hc.Peers...)
	if _, err := netip.ParseAddr(v.Advertise); err != nil && len(v.Peers) > 0 {
		v.Advertise = v.Peers[0]
	}
	v.MayGenerateToken = true // a one-host new cluster makes its own, on the VM
	if filepath.IsAbs(v.DataDir) {
		v.DataDir = "/nonexistent/nodeha-cloud-init" // this machine's stored token is not the VM's
	}
	if err := v.Check(); err != nil {
		return nil, &exitError{2, err}
	}
	hc.Identity = v.Identity
	hc.Peers = v.Peers // normalised
	if hc.PatroniOverlay != "" {
		b, err := os.ReadFile(hc.PatroniOverlay)
		if err != nil {
			return nil, &exitError{2, fmt.Errorf("NODEHA_PATRONI_OVERLAY (--patroni-overlay): %w", err)}
		}
		o.Overlay = b
		hc.PatroniOverlay = o.OverlayPath
	}
	env, err := systemd.RenderEnv(&hc, false)
	if err != nil {
		return nil, &exitError{2, err}
	}
	o.Env = env
	o.Comment = fmt.Sprintf("nodeha user-data for host %s of cluster %s (peers %s).\n"+
		"It holds this host's passwords: hand it to the VM over a channel only root\n"+
		"can read (the cloud's user-data, a NoCloud seed), never a shared place.",
		hc.Name, hc.Scope, strings.Join(hc.Peers, ","))
	return cloudinit.Render(o)
}
