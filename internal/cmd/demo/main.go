// Command demo starts (up) or removes (down) the local three-host nodeha
// demo cluster on this machine's Docker engine. `make demo` and
// `make demo-down` call it.
//
// up is safe to run again on a running demo: it starts what is stopped,
// keeps the cluster token and the application role's password, and proves
// the printed connection string again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
	"github.com/nodeha/nodeha/trust"
)

func main() {
	if err := run(); err != nil {
		// One line per problem, each prefixed, as nodeha prints them.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "demo:", line)
		}
		os.Exit(1)
	}
}

// options are the demo's settings as given on the command line.
type options struct {
	dir     string
	spilo   string // generation tag
	image   string // "" for the test image of the generation
	overlay string // "" for the test image's overlay, "none" for none
}

// validate reports what is wrong with o, one problem per flag.
func (o options) validate() error {
	var errs []error
	if _, err := testcluster.GenerationOf(o.spilo); err != nil {
		errs = append(errs, fmt.Errorf("-spilo: %w", err))
	}
	if o.dir == "" {
		errs = append(errs, errors.New("-dir: is required"))
	}
	return errors.Join(errs...)
}

// clusterOptions derives the cluster from a valid o: the test image,
// overlay and PostgreSQL major of the generation unless overridden.
func (o options) clusterOptions() testcluster.Options {
	g, _ := testcluster.GenerationOf(o.spilo)
	image := o.image
	if image == "" {
		image = g.TestImage()
	}
	overlay := o.overlay
	switch overlay {
	case "":
		overlay = g.Overlay()
	case "none":
		overlay = ""
	}
	return testcluster.Options{
		Prefix: "nodeha-demo", Subnet: "172.28.7.0/24", Hosts: 3, BaseDir: o.dir,
		NodehaImage: "nodeha-demo:latest", SpiloImage: image, Overlay: overlay,
		Env: []string{"NODEHA_PG_VERSION=" + g.PGVersion},
	}
}

func run() error {
	var o options
	flag.StringVar(&o.dir, "dir", "/tmp/nodeha-demo", "host directories of the demo hosts")
	flag.StringVar(&o.spilo, "spilo", "3.0-p1", "Spilo generation: 3.0-p1 (PostgreSQL 15) or 4.0-p3 (PostgreSQL 17)")
	flag.StringVar(&o.image, "image", "", "Spilo-compatible image (default nodeha-spilo-test:<-spilo>), e.g. ghcr.io/zalando/spilo-15:3.0-p1")
	flag.StringVar(&o.overlay, "overlay", "", `Patroni overlay file (default testimage/overlay-<-spilo>.yml; "none" for none, e.g. with a published image)`)
	flag.Parse()
	if err := o.validate(); err != nil {
		return err
	}
	ctx := context.Background()
	c, err := testcluster.New(o.clusterOptions())
	if err != nil {
		return err
	}
	// A demo started before keeps its token (its hosts stored it).
	if tok, err := trust.ReadToken(filepath.Join(o.dir, "h1", "nodeha", "token")); err == nil {
		c.Token = tok
	}
	switch flag.Arg(0) {
	case "up":
		return up(ctx, c)
	case "down":
		return c.Down(ctx, true)
	default:
		return fmt.Errorf("usage: demo [flags] up|down")
	}
}

func up(ctx context.Context, c *testcluster.Cluster) error {
	image := c.Opts.SpiloImage
	if err := testcluster.RequireImage(ctx, image); err != nil {
		return err
	}
	// A running demo of another image would get a second PostgreSQL major
	// on the first one's data.
	if running, err := testcluster.Docker(ctx, "inspect", "-f", "{{.Config.Image}}", c.Hosts[0].Holder); err == nil && running != image {
		return fmt.Errorf("a demo of image %s is running: remove it first (make demo-down)", running)
	}
	tmp, err := os.MkdirTemp("", "nodeha-demo-build")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := testcluster.BuildNodehaImage(ctx, ".", tmp, c.Opts.NodehaImage)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := c.Up(ctx); err != nil {
		return err
	}
	leader, err := c.WaitWhole(ctx, 5*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("writable primary %s (%s) with %d streaming replicas %.1fs after start\n",
		leader.Name, leader.IP, len(c.Hosts)-1, time.Since(start).Seconds())
	if err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
		return err
	}
	fmt.Printf("every host healthy %.1fs after start\n\n", time.Since(start).Seconds())
	for _, h := range c.Hosts {
		fmt.Printf("$ nodeha status --socket %s\n", h.Socket())
		cmd := exec.Command(bin, "status", "--socket", h.Socket())
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.Run()
		fmt.Println()
	}

	// The primary now, not the first one seen: a switchover while the
	// hosts settled would leave the role to be created on a replica.
	if leader, err = c.WaitWhole(ctx, time.Minute); err != nil {
		return err
	}
	app, err := ensureApp(ctx, c, leader)
	if err != nil {
		return err
	}
	fmt.Printf("application role %s, database %s, its password in %s (mode 0600); checked: connected read-write to the primary %s\n",
		appRole, appRole, app.passfile, app.server)
	fmt.Println(app.command())
	fmt.Printf("or through any host's read-write endpoint (clients without target_session_attrs; checked too):\nPGPASSFILE=%s psql %s\n", shellQuote(app.passfile), shellQuote(app.endpoint))
	fmt.Printf("\npsql on the primary as postgres: docker exec -it -u postgres %s psql -h /var/run/postgresql\n", leader.Spilo)
	fmt.Printf("the cluster token (a fourth host joins with it): %s\n", filepath.Join(c.Opts.BaseDir, "h1", "nodeha", "token"))
	fmt.Println("remove it all: make demo-down")
	return nil
}
