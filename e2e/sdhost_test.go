//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// The systemd test hosts (testimage/build-host.sh): Debian bookworm with
// systemd as PID 1 and Debian's cloud-init. There is no dockerd in them: the
// machine's engine is reached through the mounted socket, and the image's
// docker.service is a stub (active when /var/run/docker.sock exists) so
// that the unit's Requires=docker.service means what it means on a VM.
const (
	hostImage = "nodeha-host-test:bookworm"
	sdNet     = 6 // third octet of the systemd hosts' network
)

// sdCluster is a testcluster whose hosts are systemd machines: the host
// container (name = Holder) runs /sbin/init, owns the network namespace,
// and is where nodeha runs as a systemd service; the Spilo container joins
// its namespace. A restart of nodeha under systemd leaves the namespace
// (the host container) alone, as on a VM.
func sdCluster(t *testing.T, ctx context.Context) *testcluster.Cluster {
	t.Helper()
	for _, img := range []string{hostImage, spiloImage} {
		if err := testcluster.RequireImage(ctx, img); err != nil {
			t.Fatalf("%v (make image)", err)
		}
	}
	c, err := testcluster.New(clusterOpts("sd", sdNet, testcluster.Options{
		Hosts: 3, BaseDir: t.TempDir(), Scope: "e2e-sd",
		Env: []string{"NODEHA_TEST_HOOKS=true"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	// Quoting through the settings file, systemd's EnvironmentFile= and
	// cloud-init's YAML: a space, a dollar sign, a single quote.
	c.Passwords["SUPERUSER"] = "su pw$x'y"
	for _, h := range c.Hosts { // leftovers of an interrupted run
		testcluster.Docker(ctx, "rm", "-f", h.Holder)
	}
	c.Down(ctx, true)
	os.MkdirAll(c.Opts.BaseDir, 0o755)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts {
				out, _ := testcluster.Docker(ctx, "exec", h.Holder, "journalctl", "--no-pager", "-n", "80", "-u", "nodeha", "-u", "cloud-final")
				t.Logf("=== journal of %s ===\n%s", h.Name, out)
				out = h.SpiloLogs(ctx, 30)
				t.Logf("=== spilo log of %s ===\n%s", h.Name, out)
			}
		}
		// Machines first: a nodeha still running would recreate its Spilo
		// container as soon as Down removed it.
		for _, h := range c.Hosts {
			testcluster.Docker(ctx, "rm", "-f", h.Holder)
		}
		c.Down(ctx, false)
	})
	if _, err := testcluster.Docker(ctx, "network", "create", "--subnet", c.Opts.Subnet, c.Network()); err != nil {
		t.Fatal(err)
	}
	for _, h := range c.Hosts {
		if err := os.MkdirAll(h.Dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(overlayYML)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.Dir, "overlay.yml"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// bootHost starts h's systemd machine. Unprivileged: --privileged is
// refused by this engine, and systemd does not need it with cgroup v1
// mounted read-only and /run, /run/lock on tmpfs. extra are more docker run
// arguments (mounts).
func bootHost(ctx context.Context, c *testcluster.Cluster, h *testcluster.Host, extra ...string) error {
	args := []string{"run", "-d", "--name", h.Holder, "--hostname", h.Name,
		"--network", c.Network(), "--ip", h.IP, "--label", "io.nodeha.testcluster=" + c.Opts.Prefix,
		"--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
		"-e", "container=docker",
		"-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", h.Dir + ":" + h.Dir}
	args = append(append(args, extra...), hostImage, "/sbin/init")
	_, err := testcluster.Docker(ctx, args...)
	return err
}

// sdExec runs a command in h's machine.
func sdExec(ctx context.Context, h *testcluster.Host, args ...string) (string, error) {
	return testcluster.Docker(ctx, append([]string{"exec", h.Holder}, args...)...)
}

// waitBooted waits until systemd in h has finished booting.
func waitBooted(ctx context.Context, h *testcluster.Host, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out string
	for ctx.Err() == nil {
		out, _ = sdExec(ctx, h, "systemctl", "is-system-running", "--wait")
		if out == "running" || out == "degraded" {
			return nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	return fmt.Errorf("%s: systemd not booted after %v: %q", h.Name, timeout, out)
}

// unitProps reads properties of nodeha.service.
func unitProps(ctx context.Context, h *testcluster.Host, props ...string) (map[string]string, error) {
	out, err := sdExec(ctx, h, "systemctl", "show", "nodeha.service", "-p", strings.Join(props, ","))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// waitUnit waits until cond holds for nodeha.service's properties.
func waitUnit(ctx context.Context, h *testcluster.Host, timeout time.Duration, what string, cond func(map[string]string) bool) (map[string]string, error) {
	deadline := time.Now().Add(timeout)
	var p map[string]string
	var err error
	for time.Now().Before(deadline) {
		p, err = unitProps(ctx, h, "ActiveState", "SubState", "NRestarts", "MainPID", "Result", "StatusText")
		if err == nil && cond(p) {
			return p, nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return p, fmt.Errorf("%s: nodeha.service not %s after %v: %v %v", h.Name, what, timeout, p, err)
}

func nRestarts(p map[string]string) int {
	n, _ := strconv.Atoi(p["NRestarts"])
	return n
}

// pgIdentity is what changes when PostgreSQL or its container restarts.
func pgIdentity(ctx context.Context, h *testcluster.Host) (string, error) {
	id, err := testcluster.Docker(ctx, "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", h.Spilo)
	if err != nil {
		return "", err
	}
	st, err := h.Psql(ctx, "select pg_postmaster_start_time()")
	return id + " " + st, err
}

// runBin runs the nodeha binary with only env (and PATH) in its
// environment and returns its stdout.
func runBin(ctx context.Context, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, nodehaBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("nodeha %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
