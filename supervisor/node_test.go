package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/dcs"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/spilo"
)

type nopNotifier struct{}

func (nopNotifier) Ready()                          {}
func (nopNotifier) Stopping()                       {}
func (nopNotifier) Status(string)                   {}
func (nopNotifier) Watchdog()                       {}
func (nopNotifier) WatchdogInterval() time.Duration { return 0 }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// testNode is a Node with a runner that never started (no Docker) and no
// etcd member, for what Wait and the socket actions do on their own.
func testNode(t *testing.T) *Node {
	cfg := &config.Config{Name: "pg1", Scope: "s", ContainerName: "spilo"}
	spec := &spilo.Spec{Name: "spilo"}
	n := &Node{cfg: cfg, log: quiet, notify: nopNotifier{}, leaves: make(chan leaveRequest), mode: spilo.StopContainer}
	n.runner = spilo.NewRunner(nil, spec, quiet)
	return n
}

// A leave goes on when the client that asked for it goes away (a Ctrl-C
// on `nodeha leave` used to abort it halfway, on the request's context),
// and the watchdog is fed while it runs (it closes the reconcile loop on
// purpose; the watchdog used to judge by that loop and kill nodeha
// mid-leave).
func TestLeaveOutlivesItsRequestAndFeedsTheWatchdog(t *testing.T) {
	n := testNode(t)
	started, release := make(chan struct{}), make(chan struct{})
	var leaveCtx context.Context
	var aliveDuring bool
	n.leaveFn = func(ctx context.Context) (string, error) {
		leaveCtx = ctx
		n.runner.Close(spilo.LeaveRunning) // the leave stops the container and the loop
		aliveDuring = n.alive(time.Second)
		close(started)
		<-release
		return "left", nil
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- n.Wait(context.Background(), nil) }()

	reqCtx, cancel := context.WithCancel(context.Background())
	leaveErr := make(chan error, 1)
	go func() { _, err := n.Leave(reqCtx); leaveErr <- err }()
	<-started
	cancel() // the CLI is interrupted
	if err := <-leaveErr; err == nil || !strings.Contains(err.Error(), "the leave goes on") {
		t.Errorf("Leave after its caller left = %v, want 'the leave goes on'", err)
	}
	if leaveCtx.Err() != nil {
		t.Error("the leave's own context was cancelled with the request's")
	}
	if !aliveDuring {
		t.Error("the watchdog would starve during a leave (alive = false)")
	}
	if n.alive(time.Second) != true {
		t.Error("alive = false while the leave still runs")
	}
	close(release)
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("Wait after a successful leave = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the leave")
	}
	if n.mode != spilo.LeaveRunning {
		t.Error("after a leave Close would stop the container again")
	}
	if n.alive(time.Second) {
		t.Error("alive with the loop closed and no leave under way: a hung node would be fed")
	}
}

// A leave that fails after it stopped the container ends Wait with an
// error (nodeha exits, its restart brings PostgreSQL back); it used to
// wait for ever for a "left" that never came.
func TestFailedLeaveAfterStopEndsWait(t *testing.T) {
	n := testNode(t)
	n.leaveFn = func(ctx context.Context) (string, error) {
		n.runner.Close(spilo.LeaveRunning)
		return "", errors.New("remove etcd member: no quorum")
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- n.Wait(context.Background(), nil) }()
	if _, err := n.Leave(context.Background()); err == nil {
		t.Fatal("Leave succeeded, want its error")
	}
	select {
	case err := <-waitErr:
		if err == nil || !strings.Contains(err.Error(), "still a member") {
			t.Fatalf("Wait = %v, want an error saying the host is still a member", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait hangs after a failed leave")
	}
}

// A leave refused before anything was stopped leaves the node running.
func TestRefusedLeaveKeepsRunning(t *testing.T) {
	n := testNode(t)
	n.leaveFn = func(ctx context.Context) (string, error) { return "", errors.New("no quorum") }
	ctx, cancel := context.WithCancel(context.Background())
	waitErr := make(chan error, 1)
	go func() { waitErr <- n.Wait(ctx, nil) }()
	if _, err := n.Leave(context.Background()); err == nil {
		t.Fatal("Leave succeeded, want its error")
	}
	select {
	case err := <-waitErr:
		t.Fatalf("Wait returned %v after a refused leave, want it running", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if err := <-waitErr; err != nil || n.mode != spilo.StopContainer {
		t.Fatalf("Wait after stop = %v (mode %v), want nil and the container stopped by Close", err, n.mode)
	}
}

// A snapshot asked for while nodeha stops used to reach the closed etcd
// backend, and etcd's Fatal ended the process.
func TestSnapshotDuringShutdownIsRefused(t *testing.T) {
	n := testNode(t)
	n.cfg.DataDir = t.TempDir()
	n.member = startMember(t)
	if _, err := n.Snapshot(context.Background()); err != nil {
		t.Fatalf("snapshot while running: %v", err)
	}
	n.Close()
	if _, err := n.Snapshot(context.Background()); !errors.Is(err, errNodeStopping) {
		t.Fatalf("snapshot after Close = %v, want %v", err, errNodeStopping)
	}
	if _, err := n.Remove(context.Background(), "pg2", false); !errors.Is(err, errNodeStopping) {
		t.Fatalf("remove after Close = %v, want %v", err, errNodeStopping)
	}
	if rep := n.Report(context.Background()); rep.Healthy || len(rep.Reasons) != 1 || rep.Reasons[0] != errNodeStopping.Error() {
		t.Fatalf("report after Close = %+v, want unhealthy: stopping", rep)
	}
}

func startMember(t *testing.T) *embedetcd.Member {
	t.Helper()
	const addr = "127.0.0.3"
	c := embedetcd.Config{
		Name: addr, Dir: filepath.Join(t.TempDir(), "etcd"), Advertise: addr, Peers: []string{addr},
		ClientPort: freePort(t, "127.0.0.1"), PeerPort: freePort(t, addr), Token: "nodeha-test",
		Heartbeat: 50 * time.Millisecond, Election: 500 * time.Millisecond, Compaction: "1h",
	}
	m, err := embedetcd.Start(c, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	select {
	case <-m.Ready():
	case err := <-m.Err():
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		t.Fatal("member not ready")
	}
	return m
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestAdvertiseMustBeThisHosts(t *testing.T) {
	if err := checkLocalAddress(netip.MustParseAddr("127.0.0.1")); err != nil {
		t.Fatalf("loopback: %v", err)
	}
	// TEST-NET-3: on no interface of a test machine.
	err := checkLocalAddress(netip.MustParseAddr("203.0.113.77"))
	if err == nil || !strings.HasPrefix(err.Error(), "NODEHA_ADVERTISE (--advertise): 203.0.113.77 is not an address of this host") {
		t.Fatalf("a foreign address = %v", err)
	}
}

// remove used to trust the address recorded under a name: a record that
// points at this host would have it remove its own etcd member.
func TestRemoveRefusesThisHostsAddress(t *testing.T) {
	m := startMember(t)
	cfg := &config.Config{Name: "pg1", Scope: "s", AdvertiseIP: netip.MustParseAddr("127.0.0.3"), RestAPIPort: 8008, EtcdPeerPort: 2380}
	mem := &members{cfg: cfg, member: m, etcd: m.Client(), log: quiet}
	ctx := context.Background()
	if _, err := m.Client().Put(ctx, dcs.Host("s", "pg9"), "127.0.0.3"); err != nil {
		t.Fatal(err)
	}
	_, err := mem.Remove(ctx, "pg9", true)
	if err == nil || !strings.Contains(err.Error(), "this host's own address") {
		t.Fatalf("remove of a name recorded at this host's address = %v", err)
	}
	if st := m.Status(); len(st.Members) != 1 {
		t.Fatalf("members after the refused remove: %v", st.Members)
	}
}

// A leave whose etcd removal fails used to leave DATA_DIR/left behind on a
// host that never left: it then refused to start.
func TestMarkLeftIsTakenBackOnFailure(t *testing.T) {
	cfg := &config.Config{DataDir: t.TempDir()}
	if err := markLeft(cfg, func() error { return errors.New("no quorum") }); err == nil {
		t.Fatal("markLeft hid the failure")
	}
	if err := checkNotLeft(cfg); err != nil {
		t.Fatalf("a host whose leave failed is refused: %v", err)
	}
	if err := markLeft(cfg, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := checkNotLeft(cfg); err == nil {
		t.Fatal("a host that left may run again without joining")
	}
}
