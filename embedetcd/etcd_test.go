package embedetcd_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/embedetcd"
)

func freePort(t *testing.T, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// memberConfig is a one-member cluster on a loopback address other than
// 127.0.0.1 (the member also listens on 127.0.0.1 for local clients).
func memberConfig(t *testing.T) embedetcd.Config {
	const addr = "127.0.0.2"
	return embedetcd.Config{
		Name:       addr,
		Dir:        filepath.Join(t.TempDir(), "etcd"),
		Advertise:  addr,
		Peers:      []string{addr},
		ClientPort: freePort(t, "127.0.0.1"),
		PeerPort:   freePort(t, addr),
		Token:      "nodeha-test",
		Heartbeat:  50 * time.Millisecond,
		Election:   500 * time.Millisecond,
		Compaction: "1h",
	}
}

func start(t *testing.T, c embedetcd.Config) *embedetcd.Member {
	t.Helper()
	log := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", log)
		}
	})
	m, err := embedetcd.Start(c, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	select {
	case <-m.Ready():
	case err := <-m.Err():
		t.Fatalf("member failed: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("member not ready")
	}
	return m
}

// gateway calls etcd's HTTP/JSON gateway, the API Patroni's etcd3 backend uses.
func gateway(t *testing.T, url string, req any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(req)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, body)
	}
	var out map[string]any
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("POST %s: %v: %s", url, err, body)
	}
	return out
}

func TestSingleMemberServesPatroniGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := memberConfig(t)
	m := start(t, c)

	st := m.Status()
	if !st.Ready || !st.Leader || !st.HasQuorum || st.Learner || st.Voters != 1 || st.Name != c.Name {
		t.Errorf("status = %+v, want a ready leader with quorum", st)
	}
	if len(st.Members) != 1 || st.Members[0] != c.Name {
		t.Errorf("members = %v, want [%s]", st.Members, c.Name)
	}
	if m.Restarted {
		t.Error("a fresh member says it restarted")
	}

	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	key, val := "/service/orders/leader", "pg-node-1"
	for _, host := range []string{c.Advertise, "127.0.0.1"} {
		base := "http://" + config.HostPort(host, c.ClientPort)
		resp, err := http.Get(base + "/version")
		if err != nil {
			t.Fatalf("GET %s/version: %v", base, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s/version: %d", base, resp.StatusCode)
		}
		gateway(t, base+"/v3/kv/put", map[string]string{"key": enc(key), "value": enc(val + host)})
		got := gateway(t, base+"/v3/kv/range", map[string]string{"key": enc(key)})
		kvs, _ := got["kvs"].([]any)
		if len(kvs) != 1 || kvs[0].(map[string]any)["value"] != enc(val+host) {
			t.Errorf("range via %s = %v", host, got)
		}
	}
	m.Close()
	m.Close() // safe twice
}

func TestRestartFromDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := memberConfig(t)
	if embedetcd.HasData(c.Dir) {
		t.Fatal("HasData on an empty dir")
	}
	m := start(t, c)
	m.Close()
	if !embedetcd.HasData(c.Dir) {
		t.Fatal("HasData false after the member ran")
	}
	if st, err := os.Stat(c.Dir); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("etcd dir %v mode %v: must not be readable by others", err, st.Mode().Perm())
	}

	// The peer list no longer matters: the member restarts from its data.
	c.Peers = []string{c.Advertise, "10.255.255.1", "10.255.255.2"}
	m = start(t, c)
	if !m.Restarted {
		t.Error("Restarted = false with an existing data dir")
	}
	if st := m.Status(); st.Voters != 1 || !st.HasQuorum {
		t.Errorf("status after restart = %+v", st)
	}
}

func TestConfigFrom(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	for _, s := range config.Settings() {
		if v, ok := os.LookupEnv(s.Env); ok {
			t.Setenv(s.Env, v)
			os.Unsetenv(s.Env)
		}
	}
	cfg, err := config.Load(fs, []string{
		"--advertise=10.0.0.2", "--peers=10.0.0.1,10.0.0.2,10.0.0.3", "--scope=orders",
		"--data-dir=/srv/nodeha", "--etcd-client-port=2479", "--etcd-peer-port=2480",
		"--superuser-password=x", "--replication-password=y", "--restapi-password=z", "--name=pg2",
		"--token=embedetcd-tests-cluster-token-0123",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	c := embedetcd.ConfigFrom(cfg)
	// Every host derives the same initial cluster from the same peer list
	// only if members are named by address.
	if c.Name != "10.0.0.2" || c.Advertise != "10.0.0.2" {
		t.Errorf("name %q advertise %q, want the advertise address", c.Name, c.Advertise)
	}
	if c.Dir != "/srv/nodeha/etcd" || c.ClientPort != 2479 || c.PeerPort != 2480 || strings.Join(c.Peers, ",") != "10.0.0.1,10.0.0.2,10.0.0.3" {
		t.Errorf("config = %+v", c)
	}
	if c.Token != "nodeha-orders" {
		t.Errorf("token %q: want it to include the scope, so two clusters never merge", c.Token)
	}
}

func TestSlogCore(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	z := zap.New(embedetcd.NewSlogCore(log, zap.WarnLevel)).With(zap.String("member", "m1"))

	z.Info("chatty")
	z.Warn("slow fdatasync", zap.Duration("took", 2*time.Second))
	z.Error("lost leader", zap.Int("term", 7))

	out := buf.String()
	if strings.Contains(out, "chatty") {
		t.Errorf("an info entry passed a warn-level core:\n%s", out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("want two lines:\n%s", out)
	}
	for i, want := range [][]string{
		{"level=WARN", `msg="slow fdatasync"`, "member=m1", "took=2s"},
		{"level=ERROR", `msg="lost leader"`, "member=m1", "term=7"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %q lacks %s", lines[i], w)
			}
		}
	}
	if !embedetcd.NewSlogCore(log, zapcore.ErrorLevel).Enabled(zapcore.ErrorLevel) {
		t.Error("error level not enabled on an error-level core")
	}
}
