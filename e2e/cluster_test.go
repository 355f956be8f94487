//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"sigs.k8s.io/yaml"

	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/internal/faults"
	"github.com/nodeha/nodeha/internal/testcluster"
	"github.com/nodeha/nodeha/trust"
)

const appPassword = "e2e-app-pw"

// The trial number of the writer in GracefulStopUnderWrites.
// Trials of the writer (its rows are numbered per trial).
const (
	gracefulTrial = 1
	killedTrial   = 2
	endpointTrial = 3
)

// TestCluster walks one three-host cluster through its life: formation,
// replication, a killed container, nodeha restarts that must not touch
// PostgreSQL, a graceful stop of the primary host under write load, and a
// restart of the whole cluster. Each step starts from a whole cluster.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	c, err := testcluster.New(clusterOpts("c", 5, testcluster.Options{
		Hosts: 3, BaseDir: t.TempDir(), Scope: "e2e-cluster",
		// Asynchronous, the recipe's mode (nodeha's default is synchronous:
		// TestFaults, TestMembership, TestSystemd run it).
		Env: []string{"NODEHA_PATRONI_DEAD_AFTER=30s", "NODEHA_SYNCHRONOUS=false", "NODEHA_VIP=" + addr(5, 100) + "/24"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	c.Down(ctx, false) // leftovers of an interrupted run
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts {
				t.Logf("=== nodeha log of %s ===\n%s", h.Name, tail(h.Logs(ctx), 60))
				out := h.SpiloLogs(ctx, 40)
				t.Logf("=== spilo log of %s ===\n%s", h.Name, out)
			}
		}
		c.Down(ctx, false)
	})

	start := time.Now()
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	leader := mustWhole(t, c, 4*time.Minute)
	t.Logf("formed: primary %s, 2 streaming replicas after %.1fs", leader.Name, time.Since(start).Seconds())
	if err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}

	t.Run("PatroniRunsRenderedFile", func(t *testing.T) {
		// Values that only nodeha's postgres.yml (the seed's config) sets:
		// Spilo's own generated config would differ.
		want := map[string]string{
			"shared_buffers": "102MB", "max_connections": "200", "wal_keep_size": "1600MB",
			"archive_timeout": "30min", "cluster_name": "e2e-cluster", "ssl": "on",
			"log_filename": "postgresql.log", "max_stack_depth": "7MB",
			// No local WAL archive without a backup target.
			"archive_mode": "on", "archive_command": "/bin/true",
		}
		for _, h := range c.Hosts {
			for k, v := range want {
				if got, err := h.Psql(ctx, "show "+k); err != nil || got != v {
					t.Errorf("%s: show %s = %q (%v), want %q", h.Name, k, got, err, v)
				}
			}
		}
		// The archiver runs and keeps nothing: wal_archive/ stays empty
		// while segments are archived.
		leader := mustWhole(t, c, time.Minute)
		for i := 0; i < 3; i++ {
			mustPsql(t, leader, "select pg_switch_wal() from (select txid_current()) x")
		}
		eventually(t, 30*time.Second, func() error {
			n, err := leader.Psql(ctx, "select archived_count from pg_stat_archiver")
			if err != nil || n == "0" {
				return fmt.Errorf("archived_count %q (%v), want segments archived", n, err)
			}
			return nil
		})
		if files, err := os.ReadDir(filepath.Join(leader.Dir, "postgresql", "wal_archive")); err != nil || len(files) != 0 {
			t.Errorf("wal_archive/ on the primary: %d files (%v), want none", len(files), err)
		}
	})

	// The real Spilo scripts run, and what they would leave behind does not:
	// the image's own launch.sh, the major nodeha asked for, no
	// pg_receivewal left running by a replica's creation (and no wal_fast/
	// growing beside the data), and the directories launch.sh leaves to
	// root owned by postgres.
	t.Run("RealSpiloScripts", func(t *testing.T) {
		for _, h := range c.Hosts {
			if out, err := testcluster.Docker(ctx, "exec", h.Spilo, "pgrep", "-f", "runsvdir -P /etc/service"); err != nil || out == "" {
				t.Errorf("%s: Spilo's runit is not running (%v)", h.Name, err)
			}
			if got, err := h.Psql(ctx, "show server_version_num"); err != nil || !strings.HasPrefix(got, gen.PGVersion) {
				t.Errorf("%s: server_version_num %q (%v), want PostgreSQL %s", h.Name, got, err, gen.PGVersion)
			}
			if out, _ := testcluster.Docker(ctx, "exec", h.Spilo, "pgrep", "-a", "pg_receivewal"); out != "" {
				t.Errorf("%s: pg_receivewal still running: %s", h.Name, out)
			}
			if _, err := os.Stat(filepath.Join(h.Dir, "postgresql", "wal_fast")); err == nil {
				t.Errorf("%s: wal_fast/ exists beside the data directory", h.Name)
			}
			for _, d := range []string{"/var/lib/postgresql/data/pgdata", "/var/run/postgresql", "/var/lib/postgresql/data/pg_log"} {
				if out, err := testcluster.Docker(ctx, "exec", h.Spilo, "stat", "-c", "%U", d); err != nil || out != "postgres" {
					t.Errorf("%s: %s owned by %q (%v), want postgres", h.Name, d, out, err)
				}
			}
		}
		// Replicas stream from the primary with no other walsender (the
		// stray pg_receivewal held one).
		leader := mustWhole(t, c, time.Minute)
		if got, err := leader.Psql(ctx, "select count(*) from pg_stat_replication where application_name not in ("+replicaNames(c, leader)+")"); err != nil || got != "0" {
			t.Errorf("primary %s: %s walsenders besides the replicas' (%v)", leader.Name, got, err)
		}
	})

	// No local superuser, no password in clear text: a local account of a
	// host (any uid but postgres, in the host's network namespace) cannot
	// log in as postgres over loopback without the password; nothing but
	// TLS is accepted over TCP, replication included; the server's
	// certificate is the cluster CA's for the host's addresses (a client
	// with sslmode=verify-full connects); nodeha's data directory, which
	// holds the trusted PostgreSQL socket, is root's alone.
	t.Run("NoLocalSuperuserAndTLSOnly", func(t *testing.T) {
		id, err := trust.FromToken(c.Token)
		if err != nil {
			t.Fatal(err)
		}
		replPW := id.Password("replication")
		psqlAs := func(h *testcluster.Host, user, password, conninfo, sql string) (string, error) {
			args := []string{"exec", "-u", user}
			if password != "" {
				args = append(args, "-e", "PGPASSWORD="+password)
			}
			args = append(args, h.Spilo, "psql", "-w", "-XAtq", "-d", conninfo, "-c", sql)
			return testcluster.Docker(ctx, args...)
		}
		for _, h := range c.Hosts {
			st, err := os.Stat(filepath.Join(h.Dir, "nodeha"))
			if sys, ok := st.Sys().(*syscall.Stat_t); err != nil || st.Mode().Perm() != 0o700 || !ok || sys.Uid != 0 {
				t.Errorf("%s: DATA_DIR %v (%v), want root's, mode 0700", h.Name, st.Mode(), err)
			}
			for _, ci := range []string{
				"host=127.0.0.1 user=postgres dbname=postgres sslmode=require connect_timeout=5",
				"host=127.0.0.1 user=postgres dbname=postgres sslmode=disable connect_timeout=5",
				"host=::1 user=postgres dbname=postgres sslmode=prefer connect_timeout=5",
			} {
				if out, err := psqlAs(h, "nobody", "", ci, "select 1"); err == nil {
					t.Errorf("%s: a local account logged in as postgres without a password (%s): %s", h.Name, ci, out)
				} else if !strings.Contains(ci, "::1") && !strings.Contains(err.Error(), "no password supplied") && !strings.Contains(err.Error(), "rejects connection") {
					t.Errorf("%s: %s refused for another reason than authentication: %v", h.Name, ci, err)
				}
			}
			plain := "host=" + h.IP + " user=replicator dbname=postgres replication=database sslmode=disable connect_timeout=5"
			if out, err := psqlAs(h, "nobody", replPW, plain, "IDENTIFY_SYSTEM"); err == nil || !strings.Contains(err.Error(), "no encryption") {
				t.Errorf("%s: replication without TLS: %s %v, want pg_hba's refusal of no encryption", h.Name, out, err)
			}
			// The control: the same over TLS, the server verified.
			verified := "host=" + h.IP + " user=replicator dbname=postgres replication=database sslmode=verify-full sslrootcert=/run/etcd-tls/ca.crt connect_timeout=5"
			if _, err := psqlAs(h, "postgres", replPW, verified, "IDENTIFY_SYSTEM"); err != nil {
				t.Errorf("%s: replication over verified TLS: %v", h.Name, err)
			}
			loop := "host=127.0.0.1 user=postgres dbname=postgres sslmode=verify-full sslrootcert=/run/etcd-tls/ca.crt connect_timeout=5"
			if got, err := psqlAs(h, "postgres", id.Password("superuser"), loop, "select current_setting('password_encryption')"); err != nil || got != "scram-sha-256" {
				t.Errorf("%s: postgres with its password over verified TLS on loopback: %q %v, want scram-sha-256", h.Name, got, err)
			}
		}
	})

	// The cluster trusts only its own hosts: every etcd port refuses a
	// client without a certificate of the cluster's CA, from another
	// container on the network; with one it answers (the control).
	t.Run("EtcdAdmitsOnlyClusterCertificates", func(t *testing.T) {
		for _, h := range c.Hosts {
			if got, err := h.Psql(ctx, "select 1"); err != nil || got != "1" {
				t.Fatalf("%s: %q %v", h.Name, got, err)
			}
			// Patroni itself runs with TLS: its file says so, and it formed
			// the cluster through that etcd.
			file, err := testcluster.Docker(ctx, "exec", h.Spilo, "cat", "/run/postgres.yml")
			if err != nil || !strings.Contains(file, "protocol: https") || !strings.Contains(file, "cert: /run/etcd-tls/client.crt") {
				t.Errorf("%s: Patroni's postgres.yml does not use etcd over TLS (%v)", h.Name, err)
			}
			if strings.Contains(file, c.Token) || strings.Contains(file, "<password>") {
				t.Errorf("%s: postgres.yml holds the token or a placeholder password", h.Name)
			}
		}
		other := trust.FilesIn(filepath.Join(t.TempDir(), "other"))
		id, err := trust.FromToken(trust.GenerateToken())
		if err != nil {
			t.Fatal(err)
		}
		if err := id.EnsureHost(other, "intruder", []netip.Addr{netip.MustParseAddr("127.0.0.1")}); err != nil {
			t.Fatal(err)
		}
		h := c.Hosts[1]
		tls := filepath.Join(h.Dir, "nodeha", "tls")
		out, err := testcluster.Docker(ctx, "run", "--rm", "--network", c.Network(),
			"-v", tls+":/own:ro", "-v", other.Dir+":/other:ro", spiloImage,
			"python3", "-c", etcdProbe, h.IP)
		t.Logf("etcd and Patroni REST API probes of %s from another container:\n%s", h.IP, out)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"client-port plain-http":             "refused",
			"client-port tls-no-cert":            "refused",
			"client-port tls-other-cluster-cert": "refused",
			"client-port tls-cluster-cert":       "answered",
			"peer-port plain-http":               "refused",
			"peer-port tls-no-cert":              "refused",
			"peer-port tls-other-cluster-cert":   "refused",
			"peer-port tls-cluster-cert":         "answered",
			// Patroni's REST API: HTTPS, a certificate of the cluster asked.
			"patroni-rest-api plain-http":             "refused",
			"patroni-rest-api tls-no-cert":            "refused",
			"patroni-rest-api tls-other-cluster-cert": "refused",
			"patroni-rest-api tls-cluster-cert":       "answered",
		}
		for k, v := range want {
			if !strings.Contains(out, k+": "+v) {
				t.Errorf("%s: want %s", k, v)
			}
		}
	})

	t.Run("ReplicatesRows", func(t *testing.T) {
		if err := faults.Setup(ctx, leader, appPassword); err != nil {
			t.Fatal(err)
		}
		mustPsql(t, leader, "create table e2e_rows (v text)")
		mustPsql(t, leader, "insert into e2e_rows values ('written on the primary')")
		for _, h := range c.Hosts {
			if h == leader {
				continue
			}
			eventually(t, 30*time.Second, func() error {
				got, err := h.Psql(ctx, "select v from e2e_rows")
				if err != nil || got != "written on the primary" {
					return fmt.Errorf("%s reads %q (%v)", h.Name, got, err)
				}
				return nil
			})
		}
	})

	t.Run("StatusCommand", func(t *testing.T) {
		for _, h := range c.Hosts {
			out, err := exec.Command(nodehaBin, "status", "--json", "--socket", h.Socket()).Output()
			if err != nil {
				t.Fatalf("%s: nodeha status: %v\n%s", h.Name, err, out)
			}
			var rep struct {
				Healthy bool
				Etcd    struct {
					Members   []string
					HasQuorum bool `json:"has_quorum"`
				}
				Container struct{ Running bool }
				Patroni   struct{ Role string }
			}
			if err := json.Unmarshal(out, &rep); err != nil {
				t.Fatal(err)
			}
			if !rep.Healthy || len(rep.Etcd.Members) != 3 || !rep.Etcd.HasQuorum || !rep.Container.Running {
				t.Errorf("%s: status %s", h.Name, out)
			}
			wantRole := "replica"
			if h == leader {
				wantRole = "master" // Patroni 3
				if gen.Tag == "4.0-p3" {
					wantRole = "primary" // Patroni 4
				}
			}
			if rep.Patroni.Role != wantRole {
				t.Errorf("%s: patroni role %q, want %q", h.Name, rep.Patroni.Role, wantRole)
			}
		}
		// The summary names the endpoints' targets and the floating address.
		out, err := exec.Command(nodehaBin, "status", "--socket", leader.Socket()).Output()
		if err != nil {
			t.Fatalf("nodeha status: %v\n%s", err, out)
		}
		for _, want := range []string{"endpoint  rw on :5433 -> " + leader.Name, "endpoint  ro on :5434 -> ", "vip       " + addr(5, 100) + "/24 on "} {
			if !strings.Contains(string(out), want) {
				t.Errorf("nodeha status on %s lacks %q:\n%s", leader.Name, want, out)
			}
		}
		// Unhealthy or unreachable exits non-zero.
		if err := exec.Command(nodehaBin, "status", "--socket", "/nonexistent/nodeha.sock").Run(); err == nil {
			t.Error("status against a missing socket exited 0")
		}
	})

	// This cluster runs asynchronous replication (the opt-out): a killed
	// primary container is restarted in place and its Patroni resumes with
	// the lock it kept, as the recipe's restart policy would, instead of a
	// replica that may lack the last commits being promoted. Nothing the
	// writer saw acknowledged is lost, and the primary does not move.
	// One view of the cluster from any host: nodeha status --cluster
	// agrees with patronictl list and etcd's member list.
	t.Run("StatusCluster", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		for _, h := range c.Hosts {
			v := clusterView(t, c, h, true)
			checkClusterView(t, c, h, v, leader)
		}
	})

	// Every host's read-write endpoint lands on the primary and its
	// read-only one on a replica, for a client that knows that one host
	// only; a writer through one host's endpoint, with no
	// target_session_attrs, keeps writing across a switchover, loses
	// nothing and never writes to the old primary after the new one.
	t.Run("ClientEndpoints", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		ca, err := c.CAFile()
		if err != nil {
			t.Fatal(err)
		}
		one := func(h *testcluster.Host, port int) string {
			return fmt.Sprintf("postgresql://bench@%s:%d/postgres?sslmode=verify-full&sslrootcert=%s&connect_timeout=5", h.IP, port, ca)
		}
		for _, h := range c.Hosts {
			for _, e := range []struct {
				port     int
				recovery bool
			}{{5433, false}, {5434, true}} {
				eventually(t, 30*time.Second, func() error {
					rec, addr, err := whereAmI(one(h, e.port))
					switch {
					case err != nil:
						return fmt.Errorf("%s:%d: %v", h.Name, e.port, err)
					case rec != e.recovery:
						return fmt.Errorf("%s:%d lands on %s, in recovery %v", h.Name, e.port, addr, rec)
					case !e.recovery && addr != leader.IP:
						return fmt.Errorf("%s:%d lands on %s, the primary is %s", h.Name, e.port, addr, leader.IP)
					}
					return nil
				})
			}
		}
		via := c.Hosts[0]
		if via == leader {
			via = c.Hosts[1]
		}
		w, stopWriter := startWriter(t, one(via, 5433), endpointTrial)
		start := time.Now()
		if out, err := via.RunOnce(ctx, "switchover"); err != nil {
			t.Fatalf("nodeha switchover: %v\n%s", err, out)
		}
		eventually(t, time.Minute, func() error {
			acks := w.Acks()
			if last := acks[len(acks)-1]; !last.At.After(start) || last.Host == leader.IP {
				return fmt.Errorf("no write through %s's endpoint acknowledged by a new primary yet", via.Name)
			}
			return nil
		})
		time.Sleep(time.Second)
		stopWriter()
		acks := w.Acks()
		t.Logf("switchover through %s's read-write endpoint: write pause %v (%d writes acknowledged, %d errors)", via.Name, faults.LongestGapAfter(acks, start).Round(time.Millisecond), len(acks), w.Errors())
		newLeader := mustWhole(t, c, time.Minute)
		seenNew := false
		for _, a := range acks {
			seenNew = seenNew || a.Host == newLeader.IP
			if seenNew && a.Host != newLeader.IP {
				t.Errorf("a write acknowledged by %s after the new primary %s took writes", a.Host, newLeader.IP)
			}
		}
		if lost, err := faults.Missing(ctx, newLeader, endpointTrial, acks); err != nil || lost > 0 {
			t.Errorf("%d of %d acknowledged rows missing on %s (%v)", lost, len(acks), newLeader.Name, err)
		}
		// Plain psql, knowing that one host: lands on the new primary.
		// (The password from docker's environment, not its arguments.)
		psql := exec.CommandContext(ctx, "docker", "exec", "-e", "PGPASSWORD", "-u", "postgres", via.Spilo, "psql", "-XAtq",
			fmt.Sprintf("host=%s port=5433 user=bench dbname=postgres sslmode=verify-full sslrootcert=/run/etcd-tls/ca.crt", via.IP),
			"-c", "select not pg_is_in_recovery(), host(inet_server_addr())")
		psql.Env = append(os.Environ(), "PGPASSWORD="+appPassword)
		b, err := psql.CombinedOutput()
		if out := strings.TrimSpace(string(b)); err != nil || out != "t|"+newLeader.IP {
			t.Errorf("psql -h %s -p 5433: %q (%v), want the primary %s", via.IP, out, err, newLeader.IP)
		}
		rep, err := via.Health(ctx)
		if err != nil || len(rep.Endpoints) != 2 {
			t.Fatalf("%s: endpoints in the report: %v %+v", via.Name, err, rep.Endpoints)
		}
		// In a switchover the old primary ends its sessions itself as it
		// shuts down, usually before the route moves: the closing of open
		// connections on a change is endpoint.TestRouteForwardsAndClosesOnChange's.
		if rw := rep.Endpoints[0]; rw.Name != "rw" || rw.RoutingChanges < 2 || rw.Target.Member != newLeader.Name || rw.Open != 0 {
			t.Errorf("%s: read-write endpoint %+v: want it routed to %s after the change, no connection open", via.Name, rw, newLeader.Name)
		} else {
			t.Logf("%s's read-write endpoint: %d routing changes, %d connections accepted, %d refused while there was no primary, %d closed by a change", via.Name, rw.RoutingChanges, rw.Accepted, rw.Refused, rw.ClosedOnChange)
		}
	})

	// The floating address (NODEHA_VIP) is on the primary's host and no
	// other; a client that dials it (verify-full: the address is in the
	// certificate) lands on the primary, and after a switchover on the new
	// one, the machine's ARP cache told by gratuitous ARP.
	t.Run("FloatingIP", func(t *testing.T) {
		vipAddr := addr(5, 100)
		ca, err := c.CAFile()
		if err != nil {
			t.Fatal(err)
		}
		dsn := fmt.Sprintf("postgresql://bench@%s:5432/postgres?sslmode=verify-full&sslrootcert=%s&connect_timeout=3", vipAddr, ca)
		holds := func(leader *testcluster.Host) error {
			for _, h := range c.Hosts {
				rep, err := h.Health(ctx)
				if err != nil {
					return err
				}
				if rep.VIP == nil || rep.VIP.Error != "" || rep.VIP.Held != (h == leader) {
					return fmt.Errorf("%s (primary %s): floating address %+v", h.Name, leader.Name, rep.VIP)
				}
			}
			rec, at, err := whereAmI(dsn)
			switch {
			case err != nil:
				return fmt.Errorf("connect to %s: %v", vipAddr, err)
			case rec || at != vipAddr:
				return fmt.Errorf("%s lands on a server in recovery %v at %s", vipAddr, rec, at)
			}
			return nil
		}
		leader := mustWhole(t, c, time.Minute)
		eventually(t, 30*time.Second, func() error { return holds(leader) })
		start := time.Now()
		if out, err := leader.RunOnce(ctx, "switchover"); err != nil {
			t.Fatalf("nodeha switchover: %v\n%s", err, out)
		}
		newLeader := mustWhole(t, c, time.Minute)
		if newLeader == leader {
			t.Fatalf("switchover left %s primary", leader.Name)
		}
		eventually(t, 30*time.Second, func() error { return holds(newLeader) })
		t.Logf("the floating address moved from %s to %s and answers as the primary %.1fs after the switchover began",
			leader.Name, newLeader.Name, time.Since(start).Seconds())
	})

	t.Run("KilledContainerComesBack", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		before := mustHealth(t, leader).Container.Restarts
		ca, err := c.CAFile()
		if err != nil {
			t.Fatal(err)
		}
		dsn, err := exec.Command(nodehaBin, "dsn", "--user", "bench", "--peers", c.Peers(), "--sslrootcert", ca).Output()
		if err != nil {
			t.Fatal(err)
		}
		w, stopWriter := startWriter(t, strings.TrimSpace(string(dsn)), killedTrial)
		time.Sleep(time.Second) // writes in flight when the container dies
		killed := time.Now()
		if _, err := testcluster.Docker(ctx, "kill", leader.Spilo); err != nil {
			t.Fatal(err)
		}
		eventually(t, time.Minute, func() error {
			rep, err := leader.Health(ctx)
			if err != nil {
				return err
			}
			if rep.Container.Restarts <= before || rep.Container.LastExitCode == nil || *rep.Container.LastExitCode != 137 {
				return fmt.Errorf("restarts %d, last exit %v", rep.Container.Restarts, rep.Container.LastExitCode)
			}
			return nil
		})
		after := mustWhole(t, c, 3*time.Minute)
		t.Logf("killed container back, one leader and two streaming replicas after %.1fs", time.Since(killed).Seconds())
		eventually(t, time.Minute, func() error {
			if acks := w.Acks(); len(acks) == 0 || !acks[len(acks)-1].At.After(killed) {
				return fmt.Errorf("no write acknowledged since the kill")
			}
			return nil
		})
		stopWriter()
		acks := w.Acks()
		t.Logf("write pause: %v (%d writes acknowledged)", faults.LongestGapAfter(acks, killed).Round(time.Millisecond), len(acks))
		if after != leader {
			t.Errorf("primary moved from %s to %s: in asynchronous mode the killed primary's container must restart in place with its lock", leader.Name, after.Name)
		}
		if lost, err := faults.Missing(ctx, after, killedTrial, acks); err != nil || lost > 0 {
			t.Errorf("%d of %d acknowledged rows missing on the primary %s (%v)", lost, len(acks), after.Name, err)
		}
		if !strings.Contains(leader.Logs(ctx), "restarting it in place") {
			t.Errorf("nodeha on %s did not log its decision to keep the lock", leader.Name)
		}
	})

	// A running container whose Patroni is gone is a dead node: runit gave
	// up on it (the real finish script stops after 5 failures; `sv stop`
	// leaves it the same way), or it hangs (SIGSTOP). nodeha sees the REST
	// API silent for NODEHA_PATRONI_DEAD_AFTER (30s here), says so in
	// /health, restarts the container, and the host streams again.
	t.Run("PatroniGoneIsRestarted", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		replica := c.Hosts[0]
		if replica == leader {
			replica = c.Hosts[1]
		}
		for _, fault := range []struct{ name, cmd string }{
			// sv waits 7 s by default, and the finish script's own `sv
			// stop .` holds the service in "finish" about that long.
			{"runit gave up", "sv -w 60 stop patroni"},
			// Anchored: the pattern must not match this sh -c itself.
			{"hung", "pkill -STOP -f '^[^ ]*python3[^ ]* /usr/bin/patroni '"},
		} {
			before := mustHealth(t, replica).Container
			pmStart := mustPsql(t, replica, "select pg_postmaster_start_time()")
			gone := time.Now()
			if out, err := testcluster.Docker(ctx, "exec", replica.Spilo, "sh", "-c", fault.cmd); err != nil {
				t.Fatalf("%s: %v %s", fault.name, err, out)
			}
			sawSilent := false
			eventually(t, 2*time.Minute, func() error {
				rep, err := replica.Health(ctx)
				if err != nil {
					return err
				}
				if !rep.Patroni.Reachable && !rep.Patroni.NotAnsweringSince.IsZero() && !rep.Healthy {
					sawSilent = true
				}
				if rep.Container.NodehaRestarts <= before.NodehaRestarts || !rep.Container.Running {
					return fmt.Errorf("nodeha restarts %d, running %v, reasons %v", rep.Container.NodehaRestarts, rep.Container.Running, rep.Reasons)
				}
				return nil
			})
			if !sawSilent {
				t.Errorf("%s: /health never reported Patroni silent before the restart", fault.name)
			}
			if time.Since(gone) < 25*time.Second {
				t.Errorf("%s: container restarted %.1fs after Patroni went away, before NODEHA_PATRONI_DEAD_AFTER (30s)", fault.name, time.Since(gone).Seconds())
			}
			mustWhole(t, c, 3*time.Minute)
			if got := mustPsql(t, replica, "select pg_postmaster_start_time()"); got == pmStart {
				t.Errorf("%s: PostgreSQL on %s was not restarted", fault.name, replica.Name)
			}
			t.Logf("%s: %s streams again %.1fs after Patroni went away", fault.name, replica.Name, time.Since(gone).Seconds())
		}
		// Merely busy is not gone: through all of the above the primary
		// was never restarted by nodeha.
		if n := mustHealth(t, leader).Container.NodehaRestarts; n != 0 {
			t.Errorf("primary %s restarted by nodeha %d times", leader.Name, n)
		}
	})

	t.Run("NodehaRestartKeepsPostgres", func(t *testing.T) {
		mustWhole(t, c, time.Minute)
		h := c.Hosts[1]
		for _, sig := range []string{"USR2", "KILL"} { // upgrade path, then a crash
			pmStart := mustPsql(t, h, "select pg_postmaster_start_time()")
			cid, _ := testcluster.Docker(ctx, "inspect", "-f", "{{.Id}}", h.Spilo)
			if err := h.Signal(ctx, sig, true); err != nil {
				t.Fatal(err)
			}
			if sig == "USR2" {
				if code, _ := h.NodehaExitCode(ctx); code != 0 {
					t.Errorf("nodeha exit code after SIGUSR2: %d, want 0", code)
				}
			}
			if running, _ := testcluster.Docker(ctx, "inspect", "-f", "{{.State.Running}}", h.Spilo); running != "true" {
				t.Fatalf("after SIGUSR2/KILL of nodeha the container is not running")
			}
			if err := h.StartNodeha(ctx); err != nil {
				t.Fatal(err)
			}
			eventually(t, time.Minute, func() error {
				rep, err := h.Health(ctx)
				if err != nil || !rep.Healthy {
					return fmt.Errorf("not healthy: %v %v", err, rep.Reasons)
				}
				return nil
			})
			if got := mustPsql(t, h, "select pg_postmaster_start_time()"); got != pmStart {
				t.Errorf("after SIG%s and restart of nodeha: postmaster start time %s, was %s (PostgreSQL restarted)", sig, got, pmStart)
			}
			if got, _ := testcluster.Docker(ctx, "inspect", "-f", "{{.Id}}", h.Spilo); got != cid {
				t.Errorf("container replaced after SIG%s", sig)
			}
			if !strings.Contains(tail(h.Logs(ctx), 40), "container running") {
				t.Errorf("restarted nodeha did not report adopting the container")
			}
		}
	})

	t.Run("GracefulStopUnderWrites", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		ca, err := c.CAFile()
		if err != nil {
			t.Fatal(err)
		}
		dsn, err := exec.Command(nodehaBin, "dsn", "--user", "bench", "--peers", c.Peers(), "--sslrootcert", ca).Output()
		if err != nil {
			t.Fatal(err)
		}
		w, stopWriter := startWriter(t, strings.TrimSpace(string(dsn)), gracefulTrial)

		stopped := time.Now()
		if err := leader.Signal(ctx, "TERM", true); err != nil {
			t.Fatal(err)
		}
		t.Logf("nodeha on %s stopped (container stopped first) in %.1fs", leader.Name, time.Since(stopped).Seconds())
		if code, _ := leader.NodehaExitCode(ctx); code != 0 {
			t.Errorf("nodeha exit code after SIGTERM: %d, want 0", code)
		}
		if err := leader.CheckCleanStop(ctx); err != nil {
			t.Errorf("after nodeha SIGTERM: %v", err)
		}
		// Writes resume on another host.
		eventually(t, time.Minute, func() error {
			acks := w.Acks()
			last := acks[len(acks)-1]
			if !last.At.After(stopped) || last.Host == leader.IP {
				return fmt.Errorf("no write acknowledged by a new primary yet")
			}
			return nil
		})
		time.Sleep(2 * time.Second)
		stopWriter()
		acks := w.Acks()
		{
			pause := faults.LongestGapAfter(acks, stopped)
			t.Logf("write pause during the graceful stop of the primary host: %v (%d writes acked, %d errors)", pause.Round(time.Millisecond), len(acks), w.Errors())
		}

		// Every acknowledged row is on the new primary.
		st := c.Observe(ctx)
		if len(st.Leaders) != 1 {
			t.Fatalf("%d hosts accept writes", len(st.Leaders))
		}
		newLeader := st.Leaders[0]
		lost, err := faults.Missing(ctx, newLeader, gracefulTrial, acks)
		if err != nil {
			t.Fatal(err)
		}
		if lost > 0 {
			t.Errorf("%d of %d acknowledged rows are missing on the new primary %s", lost, len(acks), newLeader.Name)
		}

		// Any host's view says the cluster is not whole while the old
		// primary's nodeha is down, and records the failover.
		other := c.Hosts[0]
		if other == leader {
			other = c.Hosts[1]
		}
		eventually(t, 30*time.Second, func() error {
			v := clusterView(t, c, other, false)
			if v.Whole {
				return fmt.Errorf("the view is whole with %s's nodeha stopped", leader.Name)
			}
			if f := v.LastFailover; f == nil || f.From != leader.Name || f.To != newLeader.Name {
				return fmt.Errorf("last failover %+v, want %s -> %s", f, leader.Name, newLeader.Name)
			}
			return nil
		})

		// The stopped host comes back as a replica.
		if err := leader.StartNodeha(ctx); err != nil {
			t.Fatal(err)
		}
		mustWhole(t, c, 3*time.Minute)
		eventually(t, 30*time.Second, func() error {
			v := clusterView(t, c, leader, false)
			if !v.Whole {
				return fmt.Errorf("not whole: %v", v.Problems)
			}
			return nil
		})
		v := clusterView(t, c, leader, true)
		checkClusterView(t, c, leader, v, newLeader)
		t.Logf("last failover as %s records it: %+v", leader.Name, *v.LastFailover)
	})

	t.Run("SpecChangeRecreatesContainer", func(t *testing.T) {
		mustWhole(t, c, time.Minute)
		h := c.Hosts[2]
		cid, _ := testcluster.Docker(ctx, "inspect", "-f", "{{.Id}}", h.Spilo)
		overlay := filepath.Join(h.Dir, "overlay.yml")
		b, err := os.ReadFile(overlay)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["postgresql"].(map[string]any)["parameters"].(map[string]any)["work_mem"] = "8MB"
		if b, err = yaml.Marshal(m); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(overlay, b, 0o644); err != nil {
			t.Fatal(err)
		}
		// Restart nodeha with the new overlay (SIGUSR2 keeps the old container
		// running, so the new nodeha must notice the drift by itself).
		if err := h.Signal(ctx, "USR2", true); err != nil {
			t.Fatal(err)
		}
		if err := h.StartNodeha(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, func() error {
			got, err := h.Psql(ctx, "show work_mem")
			if err != nil || got != "8MB" {
				return fmt.Errorf("%s: work_mem %q (%v)", h.Name, got, err)
			}
			return nil
		})
		if got, _ := testcluster.Docker(ctx, "inspect", "-f", "{{.Id}}", h.Spilo); got == cid {
			t.Error("the container was not recreated after its spec changed")
		}
		if !strings.Contains(h.Logs(ctx), "container spec changed; recreating") {
			t.Error("nodeha did not log the spec change")
		}
		mustWhole(t, c, 3*time.Minute)
	})

	t.Run("WholeClusterRestart", func(t *testing.T) {
		leader := mustWhole(t, c, time.Minute)
		sysid := mustPsql(t, leader, "select system_identifier from pg_control_system()")
		rows := mustPsql(t, leader, "select count(*) from bench_writes")
		errs := make(chan error, len(c.Hosts))
		for _, h := range c.Hosts {
			go func() { errs <- h.Signal(ctx, "TERM", true) }()
		}
		for range c.Hosts {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range c.Hosts {
			if st, _ := testcluster.Docker(ctx, "inspect", "-f", "{{.State.Running}}", h.Spilo); st != "false" {
				t.Fatalf("%s: spilo still running after nodeha stopped", h.Name)
			}
		}
		// One host alone first: its etcd restarts from its data dir while
		// the other peers are down, then the rest.
		if err := c.Hosts[2].StartNodeha(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		for _, h := range c.Hosts[:2] {
			if err := h.StartNodeha(ctx); err != nil {
				t.Fatal(err)
			}
		}
		leader = mustWhole(t, c, 4*time.Minute)
		if got := mustPsql(t, leader, "select system_identifier from pg_control_system()"); got != sysid {
			t.Errorf("system identifier %s after restart, was %s: data was not kept", got, sysid)
		}
		if got := mustPsql(t, leader, "select count(*) from bench_writes"); got != rows {
			t.Errorf("%s rows after restart, had %s", got, rows)
		}
		for _, h := range c.Hosts {
			if !strings.Contains(h.Logs(ctx), "restarting from its data dir") {
				t.Errorf("%s: etcd did not restart from its data dir", h.Name)
			}
		}
		if err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
			t.Fatal(err)
		}
	})
}

func mustWhole(t testing.TB, c *testcluster.Cluster, timeout time.Duration) *testcluster.Host {
	t.Helper()
	h, err := c.WaitWhole(context.Background(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustPsql(t testing.TB, h *testcluster.Host, sql string) string {
	t.Helper()
	out, err := h.Psql(context.Background(), sql)
	if err != nil {
		t.Fatalf("%s: %v", h.Name, err)
	}
	return out
}

func mustHealth(t *testing.T, h *testcluster.Host) health.Report {
	t.Helper()
	rep, err := h.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("after %v: %v", timeout, err)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// etcdProbe asks an etcd member's client and peer ports for /version as a
// stranger would: plain HTTP, TLS with no certificate, TLS with another
// cluster's certificate, and (the control) with this cluster's. As root
// in the test image; /own and /other hold the two clusters' files.
const etcdProbe = `
import http.client, ssl, sys
ip = sys.argv[1]
def probe(port, mode):
    try:
        if mode == "plain-http":
            conn = http.client.HTTPConnection(ip, port, timeout=5)
        else:
            ctx = ssl.create_default_context(cafile="/own/ca.crt")
            ctx.check_hostname = False
            if mode == "tls-cluster-cert":
                ctx.load_cert_chain("/own/patroni.crt", "/own/patroni.key")
            if mode == "tls-other-cluster-cert":
                ctx.load_cert_chain("/other/patroni.crt", "/other/patroni.key")
            conn = http.client.HTTPSConnection(ip, port, timeout=5, context=ctx)
        path, marker = ("/patroni", '"patroni"') if port == 8008 else ("/version", "etcdserver")
        conn.request("GET", path)
        body = conn.getresponse().read().decode(errors="replace")
        return "answered" if marker in body else "refused (%s)" % body.strip()[:60]
    except Exception as e:
        return "refused (%s)" % type(e).__name__
for name, port in (("client-port", 2379), ("peer-port", 2380), ("patroni-rest-api", 8008)):
    for mode in ("plain-http", "tls-no-cert", "tls-other-cluster-cert", "tls-cluster-cert"):
        print("%s %s: %s" % (name, mode, probe(port, mode)))
`

// startWriter starts the benchmark's pgx writer (one row every 100 ms,
// through dsn, as the application role) and waits for its first 20
// acknowledged rows; stop ends it and waits for it.
func startWriter(t testing.TB, dsn string, trial int) (w *faults.Writer, stop func()) {
	t.Helper()
	w, err := faults.NewWriter(dsn, appPassword, trial)
	if err != nil {
		t.Fatal(err)
	}
	w.Interval = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 30*time.Second, func() error {
		if n := len(w.Acks()); n < 20 {
			return fmt.Errorf("the writer has %d writes acknowledged", n)
		}
		return nil
	})
	return w, func() { cancel(); <-done }
}

// replicaNames is the SQL list of the names of every host but leader.
func replicaNames(c *testcluster.Cluster, leader *testcluster.Host) string {
	var n []string
	for _, h := range c.Hosts {
		if h != leader {
			n = append(n, "'"+h.Name+"'")
		}
	}
	return strings.Join(n, ",")
}

// clusterView runs `nodeha status --cluster --json` against h's socket;
// whole says whether it must exit 0.
func clusterView(t *testing.T, c *testcluster.Cluster, h *testcluster.Host, whole bool) health.ClusterView {
	t.Helper()
	cmd := exec.Command(nodehaBin, "status", "--cluster", "--json", "--socket", h.Socket())
	out, err := cmd.Output()
	var v health.ClusterView
	if jerr := json.Unmarshal(out, &v); jerr != nil {
		t.Fatalf("%s: nodeha status --cluster --json: %v %v\n%s", h.Name, err, jerr, out)
	}
	if whole && (err != nil || !v.Whole) {
		t.Fatalf("%s: nodeha status --cluster: %v, problems %v", h.Name, err, v.Problems)
	}
	if (err == nil) != v.Whole {
		t.Errorf("%s: exit %v for a view whole=%v", h.Name, err, v.Whole)
	}
	return v
}

// checkClusterView compares a view with patronictl list (inside h's Spilo
// container) and with etcd's member list (h's health report).
func checkClusterView(t *testing.T, c *testcluster.Cluster, h *testcluster.Host, v health.ClusterView, leader *testcluster.Host) {
	t.Helper()
	ctx := context.Background()
	out, err := testcluster.Docker(ctx, "exec", "-u", "postgres", h.Spilo, "patronictl", "-c", "/run/postgres.yml", "list", "-f", "json")
	if err != nil {
		t.Fatalf("%s: patronictl list: %v", h.Name, err)
	}
	var pl []struct {
		Member, Host, Role, State string
		TL                        int
	}
	if err := json.Unmarshal([]byte(out), &pl); err != nil {
		t.Fatalf("patronictl list: %v\n%s", err, out)
	}
	byName := map[string]health.HostView{}
	for _, hv := range v.Hosts {
		byName[hv.Name] = hv
	}
	if len(pl) != len(v.Hosts) || len(v.Hosts) != len(c.Hosts) {
		t.Errorf("%s: %d hosts in the view, %d in patronictl list, %d in the cluster", h.Name, len(v.Hosts), len(pl), len(c.Hosts))
	}
	for _, m := range pl {
		hv, ok := byName[m.Member]
		switch {
		case !ok:
			t.Errorf("%s: patronictl lists %s, the view does not", h.Name, m.Member)
		case hv.State != m.State || hv.Timeline != m.TL || !strings.HasPrefix(m.Host, hv.Address):
			t.Errorf("%s: %s is %s tl %d at %s in the view, %s tl %d at %s in patronictl", h.Name, m.Member, hv.State, hv.Timeline, hv.Address, m.State, m.TL, m.Host)
		case (m.Role == "Leader") != (m.Member == v.Leader):
			t.Errorf("%s: patronictl says %s is %s, the view's leader is %s", h.Name, m.Member, m.Role, v.Leader)
		}
	}
	if v.Leader != leader.Name {
		t.Errorf("%s: the view's leader is %s, want %s", h.Name, v.Leader, leader.Name)
	}
	rep, err := h.Health(ctx)
	if err != nil || rep.Etcd == nil {
		t.Fatalf("%s: health: %v", h.Name, err)
	}
	var inView []string
	for _, hv := range v.Hosts {
		if strings.HasPrefix(hv.Etcd, "voter") {
			inView = append(inView, hv.Address)
		}
	}
	members := append([]string(nil), rep.Etcd.Members...)
	slices.Sort(members)
	slices.Sort(inView)
	if !slices.Equal(members, inView) {
		t.Errorf("%s: etcd voters %v in the view, etcd's members %v", h.Name, inView, members)
	}
}

// whereAmI connects through dsn (as bench) and says whether the server is
// in recovery and its address.
func whereAmI(dsn string) (bool, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return false, "", err
	}
	cfg.Password = appPassword
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, "", err
	}
	defer conn.Close(ctx)
	var rec bool
	var addr string
	err = conn.QueryRow(ctx, "select pg_is_in_recovery(), host(inet_server_addr())").Scan(&rec, &addr)
	return rec, addr, err
}
