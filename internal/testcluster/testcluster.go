// Package testcluster runs simulated nodeha hosts on one machine with the
// real Docker engine, for the end-to-end tests, the demo and the benchmark.
//
// A simulated host is three containers on a private Docker network:
//
//	<prefix>-hN         holds the host's network namespace and address
//	                    (the test image running sleep), like a machine's NIC;
//	<prefix>-hN-nodeha  the real nodeha binary (FROM scratch image) in that
//	                    namespace, with the Docker socket mounted;
//	<prefix>-hN-spilo   the Spilo container nodeha creates, network mode
//	                    container:<prefix>-hN (production uses host).
//
// Holding the namespace in its own container lets nodeha restart, crash or
// be upgraded without taking PostgreSQL's network away, as on a real host.
// Each host has its own directory on the machine, mounted into the nodeha
// container at the same path, so the bind mounts nodeha asks the engine for
// resolve to the same files.
package testcluster

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/trust"
)

// Options describe a cluster.
type Options struct {
	Prefix      string // container and network name prefix, e.g. "nodeha-e2e"
	Subnet      string // e.g. "172.28.5.0/24"; hosts get .11, .12, ...
	Hosts       int
	BaseDir     string // host directories live under BaseDir/hN
	NodehaImage string // FROM scratch image with /nodeha
	SpiloImage  string // Spilo-compatible image
	Overlay     string // Patroni overlay file copied to each host (optional)
	Scope       string
	Env         []string // extra NODEHA_* settings for every host
	// Shared are directories of this machine every host mounts at the same
	// path (an NFS mount on real hosts).
	Shared []string
}

// Cluster is a set of simulated hosts.
type Cluster struct {
	Opts      Options
	Hosts     []*Host
	Token     string // the cluster token every host is given
	base      [4]byte
	next      int
	Passwords map[string]string // explicit NODEHA_<K>_PASSWORD settings
}

// Host is one simulated host.
type Host struct {
	c      *Cluster
	Index  int
	Name   string // Patroni member name, e.g. pg1
	IP     string
	Dir    string
	Holder string
	Nodeha string
	Spilo  string
	// Extra are settings of this host only (NODEHA_JOIN=true, ...).
	Extra []string
}

// New prepares (but does not start) a cluster.
func New(o Options) (*Cluster, error) {
	pfx, err := netip.ParsePrefix(o.Subnet)
	if err != nil {
		return nil, fmt.Errorf("testcluster: subnet: %w", err)
	}
	if o.Scope == "" {
		o.Scope = "postgres-patroni"
	}
	// One token per cluster; the passwords derive from it unless a test
	// sets one in Passwords.
	c := &Cluster{Opts: o, Token: trust.GenerateToken(), Passwords: map[string]string{}}
	c.base = pfx.Masked().Addr().As4()
	for i := 1; i <= o.Hosts; i++ {
		c.Hosts = append(c.Hosts, c.newHost(i))
	}
	c.next = o.Hosts + 1
	return c, nil
}

func (c *Cluster) newHost(i int) *Host {
	ip := c.base
	ip[3] = byte(10 + i)
	name := fmt.Sprintf("%s-h%d", c.Opts.Prefix, i)
	return &Host{
		c: c, Index: i, Name: fmt.Sprintf("pg%d", i), IP: netip.AddrFrom4(ip).String(),
		Dir: filepath.Join(c.Opts.BaseDir, fmt.Sprintf("h%d", i)), Holder: name,
		Nodeha: name + "-nodeha", Spilo: name + "-spilo",
	}
}

// NewHost adds a host (pgN, the next address) to the cluster's list
// without starting it; extra are its own settings.
func (c *Cluster) NewHost(extra ...string) *Host {
	h := c.newHost(c.next)
	c.next++
	h.Extra = extra
	c.Hosts = append(c.Hosts, h)
	return h
}

// Start prepares this host (directories, holder) and starts its nodeha.
func (h *Host) Start(ctx context.Context) error {
	if err := h.prepare(ctx); err != nil {
		return err
	}
	return h.StartNodeha(ctx)
}

// Drop takes h off the cluster's list (a host that left or died for good).
func (c *Cluster) Drop(h *Host) {
	for i, x := range c.Hosts {
		if x == h {
			c.Hosts = append(c.Hosts[:i:i], c.Hosts[i+1:]...)
			return
		}
	}
}

// Add puts h back on the cluster's list.
func (c *Cluster) Add(h *Host) { c.Hosts = append(c.Hosts, h) }

// Kill makes the host die at once: its holder (the network namespace),
// nodeha and Spilo containers are removed; its directories stay.
func (h *Host) Kill(ctx context.Context) error {
	_, err := Docker(ctx, "rm", "-f", h.Nodeha, h.Spilo, h.Holder)
	return err
}

// RecreateNodeha removes this host's nodeha container and starts a new one
// with extra as its own settings (the Spilo container stays).
func (h *Host) RecreateNodeha(ctx context.Context, extra ...string) error {
	Docker(ctx, "rm", "-f", h.Nodeha)
	h.Extra = extra
	return h.StartNodeha(ctx)
}

// RunOnce runs `nodeha args...` once in this host's network namespace with
// its settings and directories, and returns its combined output.
func (h *Host) RunOnce(ctx context.Context, args ...string) (string, error) {
	run := []string{"run", "--rm", "--network", "container:" + h.Holder,
		"-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", h.Dir + ":" + h.Dir}
	for _, d := range h.c.Opts.Shared {
		run = append(run, "-v", d+":"+d)
	}
	for _, e := range h.Env() {
		run = append(run, "-e", e)
	}
	run = append(run, h.c.Opts.NodehaImage)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", append(run, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Docker runs the docker CLI and returns its trimmed stdout.
func Docker(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Network is the Docker network's name.
func (c *Cluster) Network() string { return c.Opts.Prefix }

// Peers is the comma-separated peer list.
func (c *Cluster) Peers() string {
	var ips []string
	for _, h := range c.Hosts {
		ips = append(ips, h.IP)
	}
	return strings.Join(ips, ",")
}

// Up creates the network, the host directories and holders, and starts
// nodeha on every host at once (as three VMs booting together would).
func (c *Cluster) Up(ctx context.Context) error {
	if _, err := Docker(ctx, "network", "inspect", c.Network()); err != nil {
		if _, err := Docker(ctx, "network", "create", "--subnet", c.Opts.Subnet, c.Network()); err != nil {
			return err
		}
	}
	for _, h := range c.Hosts {
		if err := h.prepare(ctx); err != nil {
			return err
		}
	}
	return c.each(func(h *Host) error { return h.StartNodeha(ctx) })
}

func (c *Cluster) each(f func(*Host) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.Hosts))
	for i, h := range c.Hosts {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f(h) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (h *Host) prepare(ctx context.Context) error {
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		return err
	}
	if h.c.Opts.Overlay != "" {
		b, err := os.ReadFile(h.c.Opts.Overlay)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(h.Dir, "overlay.yml"), b, 0o644); err != nil {
			return err
		}
	}
	if _, err := Docker(ctx, "inspect", h.Holder); err == nil {
		return nil
	}
	_, err := Docker(ctx, "run", "-d", "--name", h.Holder, "--hostname", h.Name,
		"--network", h.c.Network(), "--ip", h.IP, "--label", "io.nodeha.testcluster="+h.c.Opts.Prefix,
		"--entrypoint", "/bin/sleep", h.c.Opts.SpiloImage, "infinity")
	return err
}

// Socket is the host's health socket, reachable from the machine.
func (h *Host) Socket() string { return filepath.Join(h.Dir, "run", "nodeha.sock") }

// Env is the nodeha settings of this host.
func (h *Host) Env() []string {
	c := h.c
	env := []string{
		"NODEHA_NAME=" + h.Name,
		"NODEHA_PEERS=" + c.Peers(),
		"NODEHA_ADVERTISE=" + h.IP,
		"NODEHA_SCOPE=" + c.Opts.Scope,
		"NODEHA_IMAGE=" + c.Opts.SpiloImage,
		"NODEHA_DATA_DIR=" + filepath.Join(h.Dir, "nodeha"),
		"NODEHA_POSTGRES_DIR=" + filepath.Join(h.Dir, "postgresql"),
		"NODEHA_LOG_DIR=" + filepath.Join(h.Dir, "log"),
		"NODEHA_SOCKET=" + h.Socket(),
		"NODEHA_CONTAINER_NAME=" + h.Spilo,
		"NODEHA_NETWORK_MODE=container:" + h.Holder,
		"NODEHA_TOKEN=" + c.Token,
	}
	for k, v := range c.Passwords {
		env = append(env, "NODEHA_"+k+"_PASSWORD="+v)
	}
	if c.Opts.Overlay != "" {
		env = append(env, "NODEHA_PATRONI_OVERLAY="+filepath.Join(h.Dir, "overlay.yml"))
	}
	// Later settings win: the cluster's, then this host's own.
	out := map[string]int{}
	var merged []string
	for _, e := range append(append(env, c.Opts.Env...), h.Extra...) {
		k, _, _ := strings.Cut(e, "=")
		if i, ok := out[k]; ok {
			merged[i] = e
			continue
		}
		out[k] = len(merged)
		merged = append(merged, e)
	}
	return merged
}

// StartNodeha starts (or restarts) this host's nodeha container.
func (h *Host) StartNodeha(ctx context.Context, args ...string) error {
	if _, err := Docker(ctx, "inspect", h.Nodeha); err == nil {
		_, err := Docker(ctx, "start", h.Nodeha)
		return err
	}
	// NET_ADMIN: what a floating address (NODEHA_VIP) needs; root on a
	// real host has it.
	run := []string{"run", "-d", "--name", h.Nodeha, "--network", "container:" + h.Holder, "--cap-add", "NET_ADMIN",
		"--label", "io.nodeha.testcluster=" + h.c.Opts.Prefix,
		"-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", h.Dir + ":" + h.Dir}
	for _, d := range h.c.Opts.Shared {
		run = append(run, "-v", d+":"+d)
	}
	for _, e := range h.Env() {
		run = append(run, "-e", e)
	}
	run = append(run, h.c.Opts.NodehaImage, "run")
	_, err := Docker(ctx, append(run, args...)...)
	return err
}

// Signal sends sig to this host's nodeha and, unless it is SIGUSR1/2-like
// and wait is false, waits for the process to exit.
func (h *Host) Signal(ctx context.Context, sig string, wait bool) error {
	if _, err := Docker(ctx, "kill", "-s", sig, h.Nodeha); err != nil {
		return err
	}
	if !wait {
		return nil
	}
	_, err := Docker(ctx, "wait", h.Nodeha)
	return err
}

// NodehaExitCode is the exit code of the stopped nodeha container.
func (h *Host) NodehaExitCode(ctx context.Context) (int, error) {
	out, err := Docker(ctx, "inspect", "-f", "{{.State.ExitCode}}", h.Nodeha)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// Logs returns the nodeha container's log.
func (h *Host) Logs(ctx context.Context) string {
	out, _ := exec.CommandContext(ctx, "docker", "logs", h.Nodeha).CombinedOutput()
	return string(out)
}

// Health reads the host's health report from its socket.
func (h *Host) Health(ctx context.Context) (health.Report, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return health.Get(ctx, h.Socket())
}

// Psql runs SQL as postgres over the local socket inside the Spilo
// container and returns the unaligned output.
func (h *Host) Psql(ctx context.Context, sql string) (string, error) {
	return Docker(ctx, "exec", "-u", "postgres", h.Spilo, "psql", "-h", "/var/run/postgresql", "-U", "postgres",
		"-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql)
}

// Down removes every container and the network of the cluster. Host
// directories stay unless removeData.
func (c *Cluster) Down(ctx context.Context, removeData bool) error {
	// nodeha first: a live nodeha would recreate its Spilo container.
	for _, filter := range []string{"name=^" + c.Opts.Prefix + "-h[0-9]+-nodeha$", "name=^" + c.Opts.Prefix + "-h"} {
		if ids, _ := Docker(ctx, "ps", "-aq", "--filter", filter); ids != "" {
			Docker(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
		}
	}
	Docker(ctx, "network", "rm", c.Network())
	if removeData {
		return os.RemoveAll(c.Opts.BaseDir)
	}
	return nil
}

// State is what the cluster looks like from its PostgreSQL servers.
type State struct {
	Leaders   []*Host
	Streaming int // replicas streaming from the single leader
	Sync      int // of which synchronous
}

// Observe asks every host's PostgreSQL whether it is in recovery and the
// leader how many standbys stream from it.
func (c *Cluster) Observe(ctx context.Context) State {
	var st State
	for _, h := range c.Hosts {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := h.Psql(ctx, "select pg_is_in_recovery()")
		cancel()
		if err == nil && out == "f" {
			st.Leaders = append(st.Leaders, h)
		}
	}
	if len(st.Leaders) == 1 {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := st.Leaders[0].Psql(ctx, "select count(*), count(*) filter (where sync_state = 'sync') from pg_stat_replication where state = 'streaming'")
		cancel()
		if n, s, ok := strings.Cut(out, "|"); err == nil && ok {
			st.Streaming, _ = strconv.Atoi(n)
			st.Sync, _ = strconv.Atoi(s)
		}
	}
	return st
}

// WaitWhole waits until exactly one host accepts writes and every other
// host streams from it (one synchronously, in synchronous mode), and
// returns the leader.
func (c *Cluster) WaitWhole(ctx context.Context, timeout time.Duration) (*Host, error) {
	deadline := time.Now().Add(timeout)
	var st State
	for time.Now().Before(deadline) {
		st = c.Observe(ctx)
		if len(st.Leaders) == 1 && st.Streaming == len(c.Hosts)-1 && (!c.synchronous() || st.Sync > 0 && c.patroniHasSyncStandby(ctx, st.Leaders[0])) {
			return st.Leaders[0], nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	names := []string{}
	for _, h := range st.Leaders {
		names = append(names, h.Name)
	}
	return nil, fmt.Errorf("cluster not whole after %v: leaders %v, streaming replicas %d of %d (%d synchronous)", timeout, names, st.Streaming, len(c.Hosts)-1, st.Sync)
}

// patroniHasSyncStandby reports whether Patroni itself (its /sync key, as
// its REST API shows it) names a synchronous standby. PostgreSQL reports a
// standby as sync a moment before Patroni records it; a primary lost in
// that moment has no standby Patroni may promote.
func (c *Cluster) patroniHasSyncStandby(ctx context.Context, leader *Host) bool {
	rep, err := leader.Health(ctx)
	return err == nil && rep.Patroni != nil && rep.Patroni.SyncStandbys != nil && *rep.Patroni.SyncStandbys > 0
}

// synchronous tells whether the cluster runs in synchronous mode (nodeha's
// default, unless NODEHA_SYNCHRONOUS=false): then it is whole only with a
// synchronous standby, without which Patroni (rightly) promotes no one when
// the primary fails.
func (c *Cluster) synchronous() bool {
	return !slices.Contains(c.Opts.Env, "NODEHA_SYNCHRONOUS=false")
}

// HostByName finds a host by Patroni member name.
func (c *Cluster) HostByName(name string) *Host {
	for _, h := range c.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// WaitHealthy waits until every host's health socket says healthy.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last []string
	for time.Now().Before(deadline) {
		last = last[:0]
		for _, h := range c.Hosts {
			rep, err := h.Health(ctx)
			switch {
			case err != nil:
				last = append(last, fmt.Sprintf("%s: %v", h.Name, err))
			case !rep.Healthy:
				last = append(last, fmt.Sprintf("%s: %s", h.Name, strings.Join(rep.Reasons, "; ")))
			}
		}
		if len(last) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("not healthy after %v: %s", timeout, strings.Join(last, ", "))
}

// CAFile writes the cluster CA's certificate to BaseDir/ca.crt (what
// `nodeha ca` prints) and returns its path, for clients that verify the
// servers (sslmode=verify-full).
func (c *Cluster) CAFile() (string, error) {
	id, err := trust.FromToken(c.Token)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(c.Opts.BaseDir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(c.Opts.BaseDir, "ca.crt")
	return p, os.WriteFile(p, id.CAPEM(), 0o644)
}
