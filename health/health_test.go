package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/spilo"
)

func listen(t *testing.T, path string, report func(context.Context) health.Report) *health.Server {
	t.Helper()
	s, err := health.Listen(path, report, health.Actions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func fixed(r health.Report) func(context.Context) health.Report {
	return func(context.Context) health.Report { return r }
}

// rawGet asks for /health over the unix socket with a plain HTTP client.
func rawGet(t *testing.T, socket string) (*http.Response, []byte) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	resp, err := hc.Get("http://nodeha/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("body is not JSON: %v", err)
	}
	return resp, body
}

func healthyReport() health.Report {
	code := 143
	return health.Report{
		Healthy: true, Name: "pg-node-1", Scope: "orders", Address: "10.0.0.1", Version: "v1.2.3",
		Time:      time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Container: spilo.ContainerStatus{Name: "nodeha-spilo", State: "running", Running: true, Restarts: 2, LastExitCode: &code},
		Patroni:   &health.Patroni{Reachable: true, Role: "primary", State: "running", Timeline: 3, LagBytes: 0},
	}
}

func TestSocketMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "nodeha.sock")
	listen(t, path, fixed(healthyReport()))
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is %v, want a socket", path, st.Mode())
	}
	if st.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", st.Mode().Perm())
	}
}

func TestGetReturnsReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	want := healthyReport()
	listen(t, path, fixed(want))

	got, err := health.Get(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Healthy || got.Name != want.Name || got.Scope != want.Scope || got.Address != want.Address ||
		got.Version != want.Version || !got.Time.Equal(want.Time) {
		t.Errorf("Get = %+v, want %+v", got, want)
	}
	if c := got.Container; c.Name != "nodeha-spilo" || !c.Running || c.Restarts != 2 || c.LastExitCode == nil || *c.LastExitCode != 143 {
		t.Errorf("container = %+v", c)
	}
	if p := got.Patroni; p == nil || p.Role != "primary" || p.Timeline != 3 {
		t.Errorf("patroni = %+v", p)
	}
}

func TestStatusCodes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	var healthy atomic.Bool
	listen(t, path, func(context.Context) health.Report {
		r := healthyReport()
		r.Healthy = healthy.Load()
		if !r.Healthy {
			r.Reasons = []string{"patroni: REST API not answering"}
		}
		return r
	})

	resp, body := rawGet(t, path)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("unhealthy: status %d, want 503", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if !strings.Contains(string(body), "patroni: REST API not answering") {
		t.Errorf("unhealthy body lacks the reason: %s", body)
	}
	// Get still returns the report of an unhealthy node.
	rep, err := health.Get(context.Background(), path)
	if err != nil || rep.Healthy || len(rep.Reasons) != 1 {
		t.Errorf("Get on an unhealthy node = %+v, %v", rep, err)
	}

	healthy.Store(true)
	if resp, _ := rawGet(t, path); resp.StatusCode != http.StatusOK {
		t.Errorf("healthy: status %d, want 200", resp.StatusCode)
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	listen(t, path, fixed(healthyReport()))

	if s, err := health.Listen(path, fixed(health.Report{}), health.Actions{}); err == nil {
		s.Close()
		t.Fatal("a second Listen on a live socket succeeded")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error %q does not say the socket is in use", err)
	}
	// The first server still answers.
	if rep, err := health.Get(context.Background(), path); err != nil || rep.Name != "pg-node-1" {
		t.Errorf("first server after a refused Listen: %+v, %v", rep, err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	// A socket file left behind by a nodeha that was killed.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	listen(t, path, fixed(healthyReport()))
	if rep, err := health.Get(context.Background(), path); err != nil || rep.Name != "pg-node-1" {
		t.Errorf("Get after replacing a stale socket = %+v, %v", rep, err)
	}
}

func TestListenRefusesRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := health.Listen(path, fixed(healthyReport()), health.Actions{})
	if err == nil {
		s.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if !strings.Contains(err.Error(), "not a socket") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q should name %s and say it is not a socket", err, path)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Errorf("the file was touched: %q, %v", b, err)
	}
}

func TestCloseRemovesSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	s, err := health.Listen(path, fixed(healthyReport()), health.Actions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket still there after Close: %v", err)
	}
}

func TestGetWithoutServerNamesSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	_, err := health.Get(context.Background(), path)
	if err == nil {
		t.Fatal("Get with nobody listening succeeded")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "NODEHA_SOCKET") {
		t.Errorf("error %q should name the socket and NODEHA_SOCKET", err)
	}
}

// TestCallsDoNotLeak: every Get and Do used to leave a keep-alive
// connection open in both client and server (a transport per call, no idle
// timeout): 100 calls left ~300 goroutines and 200 file descriptors.
func TestCallsDoNotLeak(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nodeha.sock")
	s, err := health.Listen(path, fixed(healthyReport()), health.Actions{
		Snapshot: func(context.Context) (string, error) { return "ok", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	health.Get(ctx, path) // warm up what stays (the accept loop)
	time.Sleep(50 * time.Millisecond)
	before := runtime.NumGoroutine()
	for i := 0; i < 100; i++ {
		if _, err := health.Get(ctx, path); err != nil {
			t.Fatal(err)
		}
		if _, err := health.Do(ctx, path, "/snapshot"); err != nil {
			t.Fatal(err)
		}
	}
	var after int
	for i := 0; i < 40; i++ { // a closed connection's goroutines end promptly
		if after = runtime.NumGoroutine(); after <= before+2 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("goroutines: %d before 200 calls, %d after: connections are kept open", before, after)
}

// The socket is readable by a group (0660): such a user may read the
// report but not change the cluster (leave, remove, snapshot, ...): the
// daemon asks the kernel who is calling (SO_PEERCRED).
func TestActionsOnlyForRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a client as another uid")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir's parent is 0700
	path := filepath.Join(dir, "nodeha.sock")
	called := 0
	s, err := health.Listen(path, fixed(healthyReport()), health.Actions{
		Snapshot: func(context.Context) (string, error) { called++; return "snapshot written", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	os.Chmod(path, 0o666) // as if nobody were in the socket's group
	// The test binary, where another uid may run it.
	bin := filepath.Join(dir, "health.test")
	if b, err := os.ReadFile(os.Args[0]); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copy the test binary: %v", err)
	}
	as := func(uid uint32, what string) (string, error) {
		cmd := exec.Command(bin, "-test.run=^TestHelperClient$")
		cmd.Env = append(os.Environ(), "NODEHA_HELPER_SOCKET="+path, "NODEHA_HELPER_WHAT="+what)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := as(65534, "report"); err != nil || !strings.Contains(out, "HELPER healthy=true") {
		t.Errorf("nobody reading the report: %v\n%s", err, out)
	}
	if out, err := as(65534, "snapshot"); err != nil || !strings.Contains(out, "HELPER error=uid 65534 may read the health report but not change the cluster") {
		t.Errorf("nobody asking for a snapshot: %v\n%s", err, out)
	}
	if called != 0 {
		t.Fatal("the action ran for nobody")
	}
	if msg, err := health.Do(context.Background(), path, "/snapshot"); err != nil || msg != "snapshot written" || called != 1 {
		t.Errorf("root asking for a snapshot: %q %v", msg, err)
	}
}

// TestHelperClient is the client TestActionsOnlyForRoot runs as another
// uid; it does nothing in a normal run.
func TestHelperClient(t *testing.T) {
	socket := os.Getenv("NODEHA_HELPER_SOCKET")
	if socket == "" {
		return
	}
	ctx := context.Background()
	switch os.Getenv("NODEHA_HELPER_WHAT") {
	case "report":
		rep, err := health.Get(ctx, socket)
		fmt.Printf("HELPER healthy=%v err=%v\n", rep.Healthy, err)
	default:
		_, err := health.Do(ctx, socket, "/snapshot")
		fmt.Printf("HELPER error=%v\n", err)
	}
}

// NODEHA_SOCKET_GROUP: the socket and nodeha's own directory get the
// group, whose members can then read the report (and only that).
func TestListenGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: sets a group")
	}
	root := t.TempDir()
	os.Chmod(root, 0o755)
	os.Chmod(filepath.Dir(root), 0o755)
	path := filepath.Join(root, "nodeha", "nodeha.sock")
	s, err := health.ListenGroup(path, 65534, fixed(healthyReport()), health.Actions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range []string{path, filepath.Dir(path)} {
		st, err := os.Stat(p)
		if sys, ok := st.Sys().(*syscall.Stat_t); err != nil || !ok || sys.Gid != 65534 {
			t.Errorf("%s: group %v (%v), want 65534", p, st.Sys(), err)
		}
	}
	// Another directory that keeps the group out is not changed, and the
	// start is refused naming the setting.
	closed := filepath.Join(root, "closed")
	os.Mkdir(closed, 0o700)
	if _, err := health.ListenGroup(filepath.Join(closed, "s.sock"), 65534, fixed(healthyReport()), health.Actions{}); err == nil || !strings.HasPrefix(err.Error(), "NODEHA_SOCKET_GROUP (--socket-group): ") {
		t.Errorf("a directory that keeps the group out: %v", err)
	}
	if st, _ := os.Stat(closed); st.Mode().Perm() != 0o700 {
		t.Errorf("%s changed to %v", closed, st.Mode().Perm())
	}
}
