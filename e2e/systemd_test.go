//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// TestGeneratedFilesPassCheckers runs systemd's and cloud-init's own
// checkers (from Debian's packages, in the host image) over the golden
// files and over what the binary generates.
func TestGeneratedFilesPassCheckers(t *testing.T) {
	ctx := context.Background()
	if err := testcluster.RequireImage(ctx, hostImage); err != nil {
		t.Fatalf("%v (make image)", err)
	}
	dir := t.TempDir()
	gen := func(name string, args ...string) {
		t.Helper()
		out, err := runBin(ctx, []string{"NODEHA_SUPERUSER_PASSWORD=su pw$x'y", "NODEHA_REPLICATION_PASSWORD=r\"e`p\\l",
			"NODEHA_RESTAPI_PASSWORD=api", "NODEHA_TOKEN=checkers-cluster-token-0123456789"}, args...)
		if err != nil {
			t.Fatalf("nodeha %v: %v", args, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gen("url.user-data", "cloud-init", "--name=pg1", "--peers=10.0.0.1,10.0.0.2,10.0.0.3",
		"--patroni-overlay="+filepath.Join(repoRoot, "testimage", "overlay-3.0-p1.yml"), "--binary-url=https://example.com/nodeha", "--binary-sha256="+strings.Repeat("ab", 32))
	gen("join.user-data", "cloud-init", "--name=pg4", "--peers=10.0.0.1,10.0.0.2", "--join",
		"--binary-url=https://example.com/nodeha", "--binary-sha256="+strings.Repeat("ab", 32))
	gen("embedded.user-data", "cloud-init", "--name=pg1", "--peers=10.0.0.1", "--advertise=10.0.0.1",
		"--embed-binary="+filepath.Join(repoRoot, "testimage", "build.sh"))

	// The unit exactly as install writes it: --dry-run prints it between
	// its "# would write" lines.
	dry, err := runBin(ctx, []string{"NODEHA_SUPERUSER_PASSWORD=a", "NODEHA_REPLICATION_PASSWORD=b", "NODEHA_RESTAPI_PASSWORD=c"},
		"install", "--dry-run", "--name=pg1", "--peers=127.0.0.1", "--advertise=127.0.0.1", "--stop-timeout=5m")
	if err != nil {
		t.Fatal(err)
	}
	_, unit, _ := strings.Cut(dry, "(mode 0644)\n")
	unit, _, _ = strings.Cut(unit, "# would write")
	if !strings.Contains(unit, "TimeoutStopSec=360s") {
		t.Fatalf("dry-run unit:\n%s", unit)
	}
	os.WriteFile(filepath.Join(dir, "nodeha.service"), []byte(unit), 0o644)

	script := `set -u
rc=0
for u in /golden-unit/nodeha.service /gen/nodeha.service; do
	out=$(systemd-analyze verify "$u" 2>&1) || rc=1
	# verify exits 0 even on lines it ignores: any output is a failure.
	if [ -n "$out" ]; then echo "$u: $out"; rc=1; else echo "$u: verified"; fi
done
for f in /golden-ud/*.user-data /gen/*.user-data; do
	cloud-init schema --config-file "$f" || rc=1
done
# The shipped alert rules, and their unit tests.
promtool check rules /monitoring/alerts.yml || rc=1
(cd /monitoring && promtool test rules alerts_test.yml) || rc=1
exit $rc`
	out, err := testcluster.Docker(ctx, "run", "--rm",
		"-v", nodehaBin+":/usr/local/bin/nodeha:ro",
		"-v", filepath.Join(repoRoot, "systemd", "testdata")+":/golden-unit:ro",
		"-v", filepath.Join(repoRoot, "cloudinit", "testdata")+":/golden-ud:ro",
		"-v", filepath.Join(repoRoot, "monitoring")+":/monitoring:ro",
		"-v", dir+":/gen:ro", hostImage, "sh", "-c", script)
	t.Logf("checkers:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "rules found") || !strings.Contains(out, "Unit Testing:  alerts_test.yml\n  SUCCESS") {
		t.Errorf("promtool did not pass the alert rules and their tests")
	}
	if n := strings.Count(out, "Valid cloud-config"); n != 5 {
		t.Errorf("%d user-data files valid, want 5 (two golden, three generated)", n)
	}
}

// TestSystemd runs nodeha as a real systemd service (systemd as PID 1 in
// three host containers): install, READY only with etcd's quorum, restart
// after kill -9 and after a watchdog timeout without touching PostgreSQL,
// and a clean stop of the primary's service that hands over to a replica.
func TestSystemd(t *testing.T) {
	ctx := context.Background()
	c := sdCluster(t, ctx)
	dist := filepath.Dir(nodehaBin)
	each(t, c, func(h *testcluster.Host) error {
		// The binary is mounted elsewhere: install copies it to
		// /usr/local/bin, as an operator's `./nodeha install` would.
		return bootHost(ctx, c, h, "-v", dist+":/opt/dist:ro")
	})
	each(t, c, func(h *testcluster.Host) error { return waitBooted(ctx, h, time.Minute) })

	install := func(h *testcluster.Host) error {
		args := []string{"exec"}
		for _, e := range h.Env() {
			args = append(args, "-e", e)
		}
		out, err := testcluster.Docker(ctx, append(args, h.Holder, "/opt/dist/nodeha", "install")...)
		t.Logf("%s: nodeha install:\n%s", h.Name, out)
		return err
	}

	h1 := c.Hosts[0]
	start := time.Now()
	if err := install(h1); err != nil {
		t.Fatal(err)
	}
	t.Run("UnitAndSettingsFile", func(t *testing.T) {
		if out, err := sdExec(ctx, h1, "sh", "-c", "systemd-analyze verify /etc/systemd/system/nodeha.service 2>&1"); err != nil || out != "" {
			t.Errorf("systemd-analyze verify: %v: %s", err, out)
		}
		if out, _ := sdExec(ctx, h1, "stat", "-c", "%a %U", "/etc/nodeha/nodeha.env", "/usr/local/bin/nodeha"); out != "600 root\n755 root" {
			t.Errorf("modes: %q", out)
		}
		if out, _ := sdExec(ctx, h1, "systemctl", "is-enabled", "nodeha"); out != "enabled" {
			t.Errorf("is-enabled: %q", out)
		}
		// systemd read the quoted values of the settings file back exactly.
		p, _ := unitProps(ctx, h1, "MainPID")
		environ, err := sdExec(ctx, h1, "cat", "/proc/"+p["MainPID"]+"/environ")
		if err != nil {
			t.Fatal(err)
		}
		if want := "NODEHA_SUPERUSER_PASSWORD=" + c.Passwords["SUPERUSER"]; !slices.Contains(strings.Split(environ, "\x00"), want) {
			t.Errorf("nodeha's environment lacks %q", want)
		}
	})
	t.Run("NotReadyWithoutQuorum", func(t *testing.T) {
		// Alone, h1's etcd member has no quorum: the health socket answers,
		// but systemd must still see the service starting.
		if _, err := waitUnit(ctx, h1, 30*time.Second, "answering", func(p map[string]string) bool {
			_, err := h1.Health(ctx)
			return p["ActiveState"] == "activating" && err == nil
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		p, _ := unitProps(ctx, h1, "ActiveState", "SubState")
		rep, err := h1.Health(ctx)
		if p["ActiveState"] != "activating" || p["SubState"] != "start" || err != nil || rep.Healthy {
			t.Fatalf("alone: unit %v, healthy %v (%v)", p, rep.Healthy, err)
		}
		t.Logf("alone: unit %v, report: %s", p, strings.Join(rep.Reasons, "; "))
	})
	each(t, c, func(h *testcluster.Host) error {
		if h == h1 {
			return nil
		}
		return install(h)
	})
	each(t, c, func(h *testcluster.Host) error {
		_, err := waitUnit(ctx, h, 2*time.Minute, "active", func(p map[string]string) bool { return p["ActiveState"] == "active" })
		return err
	})
	t.Logf("all three services active %.1fs after the first install", time.Since(start).Seconds())
	leader, err := c.WaitWhole(ctx, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("whole: primary %s, two streaming replicas, %.1fs after the first install", leader.Name, time.Since(start).Seconds())
	if err := c.WaitHealthy(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	var replicas []*testcluster.Host
	for _, h := range c.Hosts {
		if h != leader {
			replicas = append(replicas, h)
		}
	}
	t.Run("StatusLine", func(t *testing.T) {
		if _, err := waitUnit(ctx, leader, 15*time.Second, "reporting healthy", func(p map[string]string) bool {
			return strings.HasPrefix(p["StatusText"], "healthy: ")
		}); err != nil {
			t.Error(err)
		}
	})

	t.Run("RestartAfterKill9", func(t *testing.T) {
		h := replicas[0]
		before, err := pgIdentity(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := unitProps(ctx, h, "MainPID", "NRestarts")
		if _, err := sdExec(ctx, h, "kill", "-9", p["MainPID"]); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		if _, err := waitUnit(ctx, h, time.Minute, "restarted", func(q map[string]string) bool {
			return q["ActiveState"] == "active" && nRestarts(q) == nRestarts(p)+1 && q["MainPID"] != p["MainPID"]
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: active again %.1fs after kill -9", h.Name, time.Since(killed).Seconds())
		if err := c.WaitHealthy(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if after, err := pgIdentity(ctx, h); err != nil || after != before {
			t.Errorf("PostgreSQL restarted: %q -> %q (%v)", before, after, err)
		}
	})

	t.Run("WatchdogRestartsHungLoop", func(t *testing.T) {
		h := replicas[1]
		before, err := pgIdentity(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := unitProps(ctx, h, "MainPID", "NRestarts")
		if out, err := sdExec(ctx, h, "curl", "-fsS", "--unix-socket", h.Socket(), "-X", "POST", "http://nodeha/debug/hang"); err != nil {
			t.Fatalf("hang: %v %s", err, out)
		}
		hung := time.Now()
		if _, err := waitUnit(ctx, h, 2*time.Minute, "restarted by the watchdog", func(q map[string]string) bool {
			return q["ActiveState"] == "active" && nRestarts(q) == nRestarts(p)+1
		}); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: restarted and active %.1fs after the loop hung (WatchdogSec=30s)", h.Name, time.Since(hung).Seconds())
		journal, _ := sdExec(ctx, h, "journalctl", "--no-pager", "-u", "nodeha", "--since", "-5min")
		for _, want := range []string{"nodeha.service: Watchdog timeout", "reconcile loop is not making progress", "nodeha.service: Failed with result 'watchdog'"} {
			if !strings.Contains(journal, want) {
				t.Errorf("journal lacks %q", want)
			}
		}
		if err := c.WaitHealthy(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if after, err := pgIdentity(ctx, h); err != nil || after != before {
			t.Errorf("PostgreSQL restarted: %q -> %q (%v)", before, after, err)
		}
	})

	t.Run("StopPrimaryHandsOver", func(t *testing.T) {
		stopped := time.Now()
		if out, err := sdExec(ctx, leader, "systemctl", "stop", "nodeha"); err != nil {
			t.Fatalf("systemctl stop: %v %s", err, out)
		}
		t.Logf("systemctl stop on primary %s returned after %.1fs", leader.Name, time.Since(stopped).Seconds())
		if err := leader.CheckCleanStop(ctx); err != nil {
			t.Errorf("after systemctl stop: %v", err)
		}
		if p, _ := unitProps(ctx, leader, "ActiveState", "Result"); p["ActiveState"] != "inactive" || p["Result"] != "success" {
			t.Errorf("unit after stop: %v", p)
		}
		var st testcluster.State
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			st = c.Observe(ctx)
			if len(st.Leaders) == 1 && st.Leaders[0] != leader && st.Streaming == 1 {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if len(st.Leaders) != 1 || st.Leaders[0] == leader || st.Streaming != 1 {
			t.Fatalf("no replica took over: %+v", st)
		}
		t.Logf("%s took over and %s streams from it, %.1fs after systemctl stop", st.Leaders[0].Name, otherThan(replicas, st.Leaders[0]).Name, time.Since(stopped).Seconds())

		if _, err := sdExec(ctx, leader, "systemctl", "start", "nodeha"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitWhole(ctx, 3*time.Minute); err != nil {
			t.Fatalf("after restarting the old primary's service: %v", err)
		}
	})

	t.Run("UpgradeKeepsPostgres", func(t *testing.T) {
		// The README's upgrade: SIGUSR2 (nodeha exits 0, the container
		// stays), then a restart that adopts it.
		h := c.Hosts[2]
		before, err := pgIdentity(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := sdExec(ctx, h, "sh", "-c", "systemctl kill -s SIGUSR2 nodeha && systemctl restart nodeha"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		if _, err := waitUnit(ctx, h, time.Minute, "active", func(p map[string]string) bool { return p["ActiveState"] == "active" }); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitHealthy(ctx, time.Minute); err != nil {
			t.Fatal(err)
		}
		if after, err := pgIdentity(ctx, h); err != nil || after != before {
			t.Errorf("PostgreSQL restarted: %q -> %q (%v)", before, after, err)
		}
	})

	t.Run("Uninstall", func(t *testing.T) {
		h := c.Hosts[2]
		out, err := sdExec(ctx, h, "/usr/local/bin/nodeha", "uninstall")
		if err != nil {
			t.Fatalf("uninstall: %v %s", err, out)
		}
		if _, err := sdExec(ctx, h, "test", "-e", "/etc/systemd/system/nodeha.service"); err == nil {
			t.Error("unit still there")
		}
		if _, err := sdExec(ctx, h, "test", "-e", "/etc/nodeha/nodeha.env"); err == nil {
			t.Error("settings file still there")
		}
		if out, _ := sdExec(ctx, h, "systemctl", "show", "nodeha", "-p", "LoadState"); out != "LoadState=not-found" {
			t.Errorf("after uninstall: %s", out)
		}
		for _, d := range []string{"nodeha/etcd", "postgresql/pgdata"} {
			if _, err := os.Stat(filepath.Join(h.Dir, d)); err != nil {
				t.Errorf("uninstall touched data: %v", err)
			}
		}
		if err := h.CheckCleanStop(ctx); err != nil {
			t.Errorf("after uninstall: %v", err)
		}
	})
}

func otherThan(hs []*testcluster.Host, not *testcluster.Host) *testcluster.Host {
	for _, h := range hs {
		if h != not {
			return h
		}
	}
	return nil
}

// each runs f on every host at once and fails the test on any error.
func each(t *testing.T, c *testcluster.Cluster, f func(*testcluster.Host) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(c.Hosts))
	for i, h := range c.Hosts {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f(h) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
