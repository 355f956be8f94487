// Command demo starts (up) or removes (down) the local three-host nodeha
// demo cluster on this machine's Docker engine. `make demo` and
// `make demo-down` call it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/internal/testcluster"
	"github.com/nodeha/nodeha/trust"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "/tmp/nodeha-demo", "host directories of the demo hosts")
	spilo := flag.String("image", "nodeha-spilo-test:15", "Spilo-compatible image")
	flag.Parse()
	ctx := context.Background()
	c, err := testcluster.New(testcluster.Options{
		Prefix: "nodeha-demo", Subnet: "172.28.7.0/24", Hosts: 3, BaseDir: *dir,
		NodehaImage: "nodeha-demo:latest", SpiloImage: *spilo, Overlay: "testimage/overlay.yml",
	})
	if err != nil {
		return err
	}
	// A demo started before keeps its token (its hosts stored it).
	if tok, err := trust.ReadToken(filepath.Join(*dir, "h1", "nodeha", "token")); err == nil {
		c.Token = tok
	}
	switch flag.Arg(0) {
	case "up":
	case "down":
		return c.Down(ctx, true)
	default:
		return fmt.Errorf("usage: demo [flags] up|down")
	}
	if err := testcluster.RequireImage(ctx, *spilo); err != nil {
		return err
	}
	bin, err := testcluster.BuildNodehaImage(ctx, ".", mustTemp(), "nodeha-demo:latest")
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
	fmt.Println("connection string (create an application role first; the seed's pg_hba rejects remote postgres):")
	fmt.Println(cli.DSN(splitPeers(c), 5432, "app", "postgres", false))
	fmt.Printf("\npsql on the primary: docker exec -it -u postgres %s psql -h /var/run/postgresql\n", leader.Spilo)
	fmt.Printf("the cluster token (a fourth host joins with it): %s\n", filepath.Join(*dir, "h1", "nodeha", "token"))
	fmt.Println("remove it all: make demo-down")
	return nil
}

func splitPeers(c *testcluster.Cluster) []string {
	var ips []string
	for _, h := range c.Hosts {
		ips = append(ips, h.IP)
	}
	return ips
}

func mustTemp() string {
	d, err := os.MkdirTemp("", "nodeha-demo-build")
	if err != nil {
		panic(err)
	}
	return filepath.Clean(d)
}
