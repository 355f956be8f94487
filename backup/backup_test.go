package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

func walSegment(sysid uint64, fill byte) []byte {
	b := bytes.Repeat([]byte{fill}, 64<<10)
	binary.LittleEndian.PutUint64(b[24:32], sysid)
	return b
}

func newArchive(t *testing.T, identity string) (*Archive, string) {
	t.Helper()
	dir := t.TempDir()
	a, err := New(&Settings{Target: "file://" + dir, Identity: identity, PartSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return a, dir
}

func TestWALRoundTrip(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	for _, key := range []string{"", id.String()} {
		a, dir := newArchive(t, key)
		ctx := context.Background()
		src := t.TempDir()
		p := filepath.Join(src, "000000010000000000000003")
		seg := walSegment(7, 'x')
		os.WriteFile(p, seg, 0o600)
		if err := a.PushWAL(ctx, p); err != nil {
			t.Fatal(err)
		}
		// A retry, or a replica archiving the same segment, succeeds.
		if err := a.PushWAL(ctx, p); err != nil {
			t.Fatalf("second push of the same segment: %v", err)
		}
		stored, _ := os.ReadFile(filepath.Join(dir, "wal", "000000010000000000000003.nha"))
		if bytes.Contains(stored, seg[:100]) || (key != "" && !bytes.HasPrefix(stored, ageMagic)) {
			t.Errorf("stored object is not encoded as asked (key %v)", key != "")
		}
		dest := filepath.Join(src, "RECOVERYXLOG")
		if err := a.FetchWAL(ctx, "000000010000000000000003", dest); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, seg) {
			t.Error("fetched segment differs")
		}
		if err := a.FetchWAL(ctx, "000000010000000000000004", dest); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing segment: %v, want ErrNotFound", err)
		}
		// Other content under the same name is refused.
		os.WriteFile(p, walSegment(7, 'y'), 0o600)
		if err := a.PushWAL(ctx, p); err == nil || !strings.Contains(err.Error(), "other content") {
			t.Errorf("conflicting push: %v", err)
		}
		// Another cluster's WAL is refused.
		q := filepath.Join(src, "000000010000000000000005")
		os.WriteFile(q, walSegment(8, 'z'), 0o600)
		if err := a.PushWAL(ctx, q); err == nil || !strings.Contains(err.Error(), "system identifier 7, this one is 8") {
			t.Errorf("other cluster's segment: %v", err)
		}
		st, _, err := a.WAL(ctx)
		if err != nil || st.Segments != 1 || st.Newest != "000000010000000000000003" {
			t.Errorf("WAL status %+v, %v", st, err)
		}
	}
}

func TestWrongKey(t *testing.T) {
	id1, _ := age.GenerateX25519Identity()
	id2, _ := age.GenerateX25519Identity()
	a, dir := newArchive(t, id1.String())
	p := filepath.Join(t.TempDir(), "000000010000000000000001")
	os.WriteFile(p, walSegment(1, 'a'), 0o600)
	if err := a.PushWAL(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{id2.String(), ""} {
		b, _ := New(&Settings{Target: "file://" + dir, Identity: key})
		if err := b.FetchWAL(context.Background(), "000000010000000000000001", p+".x"); err == nil || !strings.Contains(err.Error(), "NODEHA_BACKUP_ENCRYPTION_KEY_FILE") {
			t.Errorf("fetch with key %q: %v", key[:min(len(key), 10)], err)
		}
	}
}

func baseTar(t *testing.T, sysid uint64) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	ctl := make([]byte, 8192)
	binary.LittleEndian.PutUint64(ctl, sysid)
	files := []struct {
		name string
		body []byte
	}{
		{"backup_label", []byte("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: standby\nSTART TIME: 2026-12-03 14:00:00 UTC\nLABEL: x\nSTART TIMELINE: 1\n")},
		{"PG_VERSION", []byte("17\n")},
		{"global/pg_control", ctl},
		{"base/1/1259", bytes.Repeat([]byte("data"), 3000)},
		{"backup_manifest", []byte(`{"PostgreSQL-Backup-Manifest-Version": 1, "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}]}`)},
	}
	tw.WriteHeader(&tar.Header{Name: "global/", Typeflag: tar.TypeDir, Mode: 0o700})
	tw.WriteHeader(&tar.Header{Name: "base/1/", Typeflag: tar.TypeDir, Mode: 0o700})
	for _, f := range files {
		tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(f.body))})
		tw.Write(f.body)
	}
	tw.WriteHeader(&tar.Header{Name: "pg_wal/", Typeflag: tar.TypeDir, Mode: 0o700})
	tw.Close()
	return buf.Bytes()
}

func TestBaseBackupRoundTrip(t *testing.T) {
	a, _ := newArchive(t, "")
	ctx := context.Background()
	raw := baseTar(t, 42)
	info, err := a.PushBackup(ctx, bytes.NewReader(raw), Info{Name: "base_1", Host: "pg1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.StartLSN != "0/2000028" || info.EndLSN != "0/2000100" || info.StartWAL != "000000010000000000000002" ||
		info.From != "standby" || info.Timeline != 1 || info.SystemID != "42" || info.PGVersion != "17" ||
		info.Size != int64(len(raw)) || info.Parts < 2 {
		t.Errorf("info %+v", info)
	}
	// A stream whose writer failed is no backup.
	if _, err := a.PushBackup(ctx, bytes.NewReader(raw), Info{Name: "base_2"}, func() error { return errors.New("pg_basebackup failed") }); err == nil {
		t.Error("a failed pg_basebackup made a backup")
	}
	bs, err := a.Backups(ctx)
	if err != nil || len(bs) != 1 || bs[0].Name != "base_1" {
		t.Fatalf("backups %+v, %v", bs, err)
	}
	dir := filepath.Join(t.TempDir(), "pgdata")
	if _, err := a.FetchBackup(ctx, "base_1", dir); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "base/1/1259")); len(b) != 12000 {
		t.Errorf("restored file has %d bytes", len(b))
	}
	if fi, err := os.Stat(filepath.Join(dir, "pg_wal")); err != nil || !fi.IsDir() {
		t.Errorf("pg_wal: %v", err)
	}
	// Never over an existing data directory.
	if _, err := a.FetchBackup(ctx, "base_1", dir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("restore over a data directory: %v", err)
	}
}

func TestChoose(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	bs := []Info{{Name: "a", Finish: t0}, {Name: "b", Finish: t0.Add(time.Hour)}}
	cases := []struct {
		name   string
		target time.Time
		want   string
		err    string
	}{
		{"", time.Time{}, "b", ""},
		{"", t0.Add(30 * time.Minute), "a", ""},
		{"", t0.Add(2 * time.Hour), "b", ""},
		{"", t0.Add(-time.Minute), "", "before the oldest point"},
		{"a", time.Time{}, "a", ""},
		{"b", t0.Add(30 * time.Minute), "", "after the restore time"},
		{"c", time.Time{}, "", "no backup called"},
	}
	for _, c := range cases {
		got, err := Choose(bs, c.name, c.target)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Choose(%q, %v): %v, want %q", c.name, c.target, err, c.err)
			}
			continue
		}
		if err != nil || got.Name != c.want {
			t.Errorf("Choose(%q, %v) = %s, %v; want %s", c.name, c.target, got.Name, err, c.want)
		}
	}
	if _, err := Choose(nil, "", time.Time{}); err == nil {
		t.Error("no backups: no error")
	}
}

func TestPrune(t *testing.T) {
	a, _ := newArchive(t, "")
	ctx := context.Background()
	now := time.Now()
	for i, start := range []string{"000000010000000000000002", "000000010000000000000005", "000000010000000000000009"} {
		raw := baseTar(t, 42)
		info, err := a.PushBackup(ctx, bytes.NewReader(raw), Info{Name: NewBackupName(now.Add(time.Duration(i) * time.Second))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		info.StartWAL = start // as if taken later
		info.Finish = now.Add(time.Duration(i-10) * time.Hour)
		b, _ := jsonIndent(info)
		a.Store.Put(ctx, backupDir+info.Name+"/"+infoName, b)
	}
	src := t.TempDir()
	for _, n := range []string{"000000010000000000000001", "000000010000000000000004", "000000010000000000000005", "00000002000000000000000A"} {
		os.WriteFile(filepath.Join(src, n), walSegment(42, 'w'), 0o600)
		if err := a.PushWAL(ctx, filepath.Join(src, n)); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := a.Prune(ctx, 2, 0, now)
	if err != nil || len(gone) != 1 {
		t.Fatalf("prune: %v, %v", gone, err)
	}
	bs, _ := a.Backups(ctx)
	st, _, _ := a.WAL(ctx)
	if len(bs) != 2 || st.Segments != 2 {
		t.Errorf("after prune: %d backups, %d segments; want 2 and 2 (from 000000010000000000000005)", len(bs), st.Segments)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// segment42 is a segment of system 42 whose content names it.
func segment42(name string) []byte {
	b := walSegment(42, 's')
	copy(b[100:], name)
	return b
}
