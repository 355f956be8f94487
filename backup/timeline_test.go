package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSegmentFiles(t *testing.T) {
	for _, c := range []struct {
		tl   int
		n    segment
		name string
	}{{1, 0x1FF, "0000000100000001000000FF"}, {2, 5, "000000020000000000000005"}} {
		if got := segmentFile(c.tl, c.n); got != c.name {
			t.Errorf("segmentFile(%d, %d) = %s, want %s", c.tl, c.n, got, c.name)
		}
		if tl, n, ok := parseSegmentFile(c.name); !ok || tl != c.tl || n != c.n {
			t.Errorf("parseSegmentFile(%s) = %d %d %v", c.name, tl, n, ok)
		}
	}
	if l, err := ParseLSN("1/2000028"); err != nil || l != 0x102000028 {
		t.Errorf("ParseLSN = %x, %v", l, err)
	}
}

func TestTimeline(t *testing.T) {
	h, err := ParseHistory([]byte("1\t0/50000A0\tno recovery target specified\n\n2\t0/7123456\tbefore 2026-12-03 14:05:00+00\n"))
	if err != nil || len(h) != 2 || h[1].TL != 2 || h[1].End != 0x7123456 {
		t.Fatalf("history %v, %v", h, err)
	}
	tl := Timeline{TL: 3, History: h}
	for n, want := range map[segment]int{4: 1, 5: 2, 6: 2, 7: 3, 9: 3} {
		if got := tl.timelineOf(n); got != want {
			t.Errorf("timelineOf(%d) = %d, want %d", n, got, want)
		}
	}
	cases := []struct {
		tl   int
		end  LSN
		want bool
	}{{1, 0x400000, true}, {1, 0x6000000, false}, {2, 0x7000000, true}, {2, 0x8000000, false}, {3, 0x9000000, true}, {4, 1, false}}
	for _, c := range cases {
		if got := tl.Contains(c.tl, c.end); got != c.want {
			t.Errorf("Contains(%d, %x) = %v", c.tl, c.end, got)
		}
	}
	bs := []Info{{Name: "a", Timeline: 1, EndLSN: "0/400000"}, {Name: "b", Timeline: 1, EndLSN: "0/6000000"}, {Name: "c", Timeline: 3, StartLSN: "0/9000028"}}
	if u := Usable(bs, tl); len(u) != 2 || u[0].Name != "a" || u[1].Name != "c" {
		t.Errorf("Usable = %v", u)
	}
}

func TestVerify(t *testing.T) {
	a, _ := newArchive(t, "")
	ctx := context.Background()
	src := t.TempDir()
	push := func(name string, body []byte) {
		p := filepath.Join(src, name)
		os.WriteFile(p, body, 0o600)
		if err := a.PushWAL(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	info, err := a.PushBackup(ctx, bytesReader(baseTar(t, 42)), Info{Name: "base_1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = info // starts at 000000010000000000000002
	for _, n := range []string{"000000010000000000000002", "000000010000000000000003", "000000020000000000000004", "000000020000000000000006"} {
		push(n, segment42(n))
	}
	push("00000002.history", []byte("1\t0/4000100\tpromoted\n"))
	g, err := a.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g.From != "000000010000000000000002" || g.To != "000000020000000000000006" || len(g.Missing) != 1 || g.Missing[0] != "000000020000000000000005" {
		t.Errorf("Verify = %+v", g)
	}
	push("000000020000000000000005", segment42("000000020000000000000005"))
	if g, _ := a.Verify(ctx); len(g.Missing) != 0 {
		t.Errorf("after the gap is filled: %+v", g)
	}
}

func TestCanReplay(t *testing.T) {
	a, _ := newArchive(t, "")
	ctx := context.Background()
	src := t.TempDir()
	push := func(name string) {
		p := filepath.Join(src, name)
		os.WriteFile(p, segment42(name), 0o600)
		if err := a.PushWAL(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	tl := Timeline{TL: 2, History: []Switch{{TL: 1, End: 0x51A1090}}}
	b := Info{Name: "b", StartWAL: "000000010000000000000003"}
	push("000000010000000000000005") // the old timeline's, past the switch
	if err := a.CanReplay(ctx, tl, b); err == nil || !strings.Contains(err.Error(), "000000020000000000000005") {
		t.Errorf("CanReplay without the new timeline's first segment: %v", err)
	}
	push("000000020000000000000005")
	if err := a.CanReplay(ctx, tl, b); err != nil {
		t.Errorf("CanReplay: %v", err)
	}
	// A backup after the switch needs nothing of it.
	if err := a.CanReplay(ctx, tl, Info{Name: "c", StartWAL: "000000020000000000000007"}); err != nil {
		t.Errorf("CanReplay of a later backup: %v", err)
	}
}

func TestFetchRefusesASupersededSegment(t *testing.T) {
	a, _ := newArchive(t, "")
	ctx := context.Background()
	src := t.TempDir()
	push := func(name string, body []byte) {
		p := filepath.Join(src, name)
		os.WriteFile(p, body, 0o600)
		if err := a.PushWAL(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"000000010000000000000003", "000000010000000000000004", "000000010000000000000005"} {
		push(n, segment42(n))
	}
	dest := filepath.Join(src, "RECOVERYXLOG")
	// No newer timeline: every segment is served.
	if err := a.FetchWAL(ctx, "000000010000000000000004", dest); err != nil {
		t.Fatal(err)
	}
	// Timeline 2 left timeline 1 inside segment 4: 4 and 5 of timeline 1
	// hold WAL the cluster left; 3 is still on the way.
	push("00000002.history", []byte("1\t0/449F5D8\tno recovery target specified\n"))
	if err := a.FetchWAL(ctx, "000000010000000000000003", dest); err != nil {
		t.Errorf("segment before the switch: %v", err)
	}
	for _, n := range []string{"000000010000000000000004", "000000010000000000000005"} {
		if err := a.FetchWAL(ctx, n, dest); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s past the switch to timeline 2: %v, want ErrNotFound", n, err)
		}
	}
	push("000000020000000000000004", segment42("000000020000000000000004"))
	if err := a.FetchWAL(ctx, "000000020000000000000004", dest); err != nil {
		t.Errorf("the new timeline's copy: %v", err)
	}
}
