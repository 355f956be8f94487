package embedetcd_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/trust"
)

// tlsMember is a member on addr with the cluster's certificates.
func tlsMember(t *testing.T, id *trust.Identity, addr string) embedetcd.Config {
	t.Helper()
	dir := t.TempDir()
	f := trust.FilesIn(filepath.Join(dir, "tls"))
	if err := id.EnsureHost(f, addr, []netip.Addr{netip.MustParseAddr(addr), netip.MustParseAddr("127.0.0.1")}); err != nil {
		t.Fatal(err)
	}
	return embedetcd.Config{
		Name: addr, Dir: filepath.Join(dir, "etcd"), Advertise: addr, Peers: []string{addr},
		ClientPort: freePort(t, "127.0.0.1"), PeerPort: freePort(t, addr), Token: "nodeha-test",
		Heartbeat: 50 * time.Millisecond, Election: 500 * time.Millisecond, Compaction: "1h", TLS: &f,
	}
}

func TestJoinAsLearnerThenPromote(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd members")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, _ := trust.FromToken(trust.GenerateToken())
	a := tlsMember(t, id, "127.0.0.2")
	ma := start(t, a)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	b := tlsMember(t, id, "127.0.0.3")
	clientTLS, err := id.ClientTLS(b.TLS.Cert, b.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	peer := net.JoinHostPort(a.Advertise, strconv.Itoa(a.ClientPort))
	res, err := embedetcd.Join(ctx, b, []string{peer}, clientTLS, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if res.InitialCluster == "" || res.MovedAside != "" {
		t.Fatalf("join = %+v", res)
	}
	b.InitialCluster = res.InitialCluster
	mb := start(t, b)
	if err := mb.Promote(ctx, clientTLS, log); err != nil {
		t.Fatal(err)
	}
	waitStatus := func(m *embedetcd.Member, what string, ok func(embedetcd.Status) bool) {
		t.Helper()
		for !ok(m.Status()) {
			if ctx.Err() != nil {
				t.Fatalf("%s: status %+v", what, m.Status())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitStatus(ma, "two voters seen by the first member", func(s embedetcd.Status) bool { return s.Voters == 2 && len(s.Members) == 2 })
	waitStatus(mb, "the joiner a voter", func(s embedetcd.Status) bool { return !s.Learner && s.Voters == 2 && s.HasQuorum })

	// Joining again with the data in place: nothing to add, restart as is.
	again, err := embedetcd.Join(ctx, b, []string{peer}, clientTLS, nil, log)
	if err != nil || again.MovedAside != "" {
		t.Fatalf("second join = %+v, %v", again, err)
	}
	if st := ma.Status(); len(st.Members) != 2 {
		t.Fatalf("a second join changed the membership: %v", st.Members)
	}

	// A cluster of another token: refused before anything is sent.
	other, _ := trust.FromToken(trust.GenerateToken())
	c := tlsMember(t, other, "127.0.0.4")
	otherTLS, _ := other.ClientTLS(c.TLS.Cert, c.TLS.Key)
	if _, err := embedetcd.Join(ctx, c, []string{peer}, otherTLS, nil, log); !errors.Is(err, embedetcd.ErrForeignPeer) {
		t.Fatalf("join with another cluster's token = %v, want ErrForeignPeer", err)
	}
	if st := ma.Status(); len(st.Members) != 2 {
		t.Fatalf("a refused join changed the membership: %v", st.Members)
	}

	// Removed from the membership (as a leave does), the member still
	// answers Status and says so: etcd's own IsLearner panics there, and
	// nodeha's helpers ask while a leave runs.
	bid, err := strconv.ParseUint(mb.Status().ID, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	// (etcd refuses while the new voter has not been active long enough.)
	for _, err := ma.Client().MemberRemove(ctx, bid); err != nil; _, err = ma.Client().MemberRemove(ctx, bid) {
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	waitStatus(mb, "the removed member says so", func(s embedetcd.Status) bool { return s.Removed && !s.HasQuorum && !s.Leader })
}

func TestSnapshotKeepsTheNewest(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member")
	}
	c := memberConfig(t)
	m := start(t, c)
	cli := m.Client()
	defer cli.Close()
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/service/s/config", "{}"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "snapshots")
	var paths []string
	for range 3 {
		p, err := m.Snapshot(ctx, dir, 2)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		time.Sleep(5 * time.Millisecond)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 || ents[0].Name() != filepath.Base(paths[1]) || ents[1].Name() != filepath.Base(paths[2]) {
		t.Fatalf("kept %v, want the newest two of %v", ents, paths)
	}
	st, _ := os.Stat(paths[2])
	if st.Size() < 4096 || st.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot %s: %d bytes, mode %v", paths[2], st.Size(), st.Mode().Perm())
	}
}

// A snapshot restores into a one-member cluster that has the keys.
func TestRestoreFromSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd members")
	}
	c := memberConfig(t)
	m := start(t, c)
	cli := m.Client()
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/service/s/initialize", "7240118372"); err != nil {
		t.Fatal(err)
	}
	path, err := m.Snapshot(ctx, filepath.Join(t.TempDir(), "snapshots"), 5)
	if err != nil {
		t.Fatal(err)
	}
	cli.Close()
	m.Close()

	// A damaged snapshot is refused (its SHA-256 does not match).
	b, _ := os.ReadFile(path)
	bad := filepath.Join(t.TempDir(), "bad.db")
	b[100] ^= 0xff
	os.WriteFile(bad, b, 0o600)
	r := memberConfig(t)
	if err := embedetcd.Restore(r, bad); err == nil {
		t.Fatal("a damaged snapshot was restored")
	}
	// And found before anything is moved: CheckSnapshot.
	garbage := filepath.Join(t.TempDir(), "garbage.db")
	os.WriteFile(garbage, bytes.Repeat([]byte("not a snapshot "), 100), 0o600)
	for _, p := range []string{bad, garbage, filepath.Dir(garbage)} {
		if err := embedetcd.CheckSnapshot(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("CheckSnapshot(%s) = %v, want a refusal naming it", p, err)
		}
	}
	if err := embedetcd.CheckSnapshot(path); err != nil {
		t.Errorf("CheckSnapshot of a good snapshot: %v", err)
	}

	r = memberConfig(t)
	if err := embedetcd.Restore(r, path); err != nil {
		t.Fatal(err)
	}
	m2 := start(t, r)
	cli2 := m2.Client()
	defer cli2.Close()
	resp, err := cli2.Get(ctx, "/service/s/initialize")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "7240118372" {
		t.Fatalf("restored key: %v %v", resp, err)
	}
	if st := m2.Status(); len(st.Members) != 1 || !st.Leader {
		t.Fatalf("restored member: %+v", st)
	}
	if err := embedetcd.Restore(r, path); err == nil {
		t.Fatal("restore over a data dir in use was accepted")
	}
}

// A fresh host that gives a live member's address as its own used to
// remove that member from the cluster when it joined; and a join whose
// member then fails to start used to leave its learner behind, blocking
// every later join.
func TestJoinNeverRemovesALiveMemberAndAbandonsItsLearner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd members")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, _ := trust.FromToken(trust.GenerateToken())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := tlsMember(t, id, "127.0.0.2")
	ma := start(t, a)
	peer := net.JoinHostPort(a.Advertise, strconv.Itoa(a.ClientPort))

	impostor := tlsMember(t, id, "127.0.0.2") // a's address and ports, no data
	impostor.PeerPort, impostor.ClientPort = a.PeerPort, a.ClientPort
	impTLS, _ := id.ClientTLS(impostor.TLS.Cert, impostor.TLS.Key)
	if _, err := embedetcd.Join(ctx, impostor, []string{peer}, impTLS, nil, log); !errors.Is(err, embedetcd.ErrAddressTaken) {
		t.Fatalf("join under a live member's address = %v, want ErrAddressTaken", err)
	}
	if st := ma.Status(); len(st.Members) != 1 || !st.HasQuorum {
		t.Fatalf("the refused join changed the membership: %+v", st)
	}

	b := tlsMember(t, id, "127.0.0.3")
	bTLS, _ := id.ClientTLS(b.TLS.Cert, b.TLS.Key)
	res, err := embedetcd.Join(ctx, b, []string{peer}, bTLS, nil, log)
	if err != nil || res.Added == 0 {
		t.Fatalf("join = %+v, %v; want a learner added", res, err)
	}
	if n := len(ma.Status().Members); n != 2 {
		t.Fatalf("%d members after the add, want 2", n)
	}
	// b never starts (its start failed): the learner goes.
	if err := res.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	for len(ma.Status().Members) != 1 {
		if ctx.Err() != nil {
			t.Fatalf("the abandoned learner is still listed: %v", ma.Status().Members)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And another host can join now.
	c := tlsMember(t, id, "127.0.0.4")
	cTLS, _ := id.ClientTLS(c.TLS.Cert, c.TLS.Key)
	if res, err := embedetcd.Join(ctx, c, []string{peer}, cTLS, nil, log); err != nil || res.Added == 0 {
		t.Fatalf("a later join = %+v, %v", res, err)
	}
}
