//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/internal/faults"
	"github.com/nodeha/nodeha/internal/testcluster"
)

// BenchmarkBackup measures the archive on real parts (README: Measured):
// base backup throughput against pg_basebackup on the same data, the time
// to restore that data, and the archive's lag under the fault benchmark's
// writer. Once per run:
//
//	NODEHA_E2E_SPILO=3.0-p1 go test -tags e2e -run '^$' -bench Backup -benchtime 1x -timeout 60m ./e2e
//
// NODEHA_BENCH_DATA_MB sets the data size (default 1024).
func BenchmarkBackup(b *testing.B) {
	ctx := context.Background()
	dataMB := 1024
	if v, err := strconv.Atoi(os.Getenv("NODEHA_BENCH_DATA_MB")); err == nil && v > 0 {
		dataMB = v
	}
	c, err := testcluster.New(clusterOpts("bb", 13, testcluster.Options{
		Hosts: 3, BaseDir: b.TempDir(), Scope: "bench-backup", Env: []string{"NODEHA_BACKUP_SCHEDULE=0"},
	}))
	if err != nil {
		b.Fatal(err)
	}
	c.Down(ctx, false)
	b.Cleanup(func() { c.Down(ctx, false) })
	if _, err := testcluster.Docker(ctx, "network", "create", "--subnet", c.Opts.Subnet, c.Network()); err != nil {
		b.Fatal(err)
	}
	s3 := startS3(b, c, addr(13, 90))
	s3.makeBucket(b, "bench")
	key := filepath.Join(b.TempDir(), "k")
	if _, err := runBin(ctx, nil, "backup", "keygen", "--out", key); err != nil {
		b.Fatal(err)
	}
	keyPEM, _ := os.ReadFile(key)
	caPEM, _ := os.ReadFile(s3.CAFile)
	for _, h := range c.Hosts {
		dir := filepath.Join(h.Dir, "secrets")
		os.MkdirAll(dir, 0o700)
		os.WriteFile(filepath.Join(dir, "s3.env"), fmt.Appendf(nil, "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", s3.AccessKey, s3.SecretKey), 0o600)
		os.WriteFile(filepath.Join(dir, "k"), keyPEM, 0o600)
		os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o644)
		h.Extra = append(h.Extra, "NODEHA_BACKUP_TARGET=s3://bench/b", "NODEHA_BACKUP_S3_ENDPOINT="+s3.Endpoint,
			"NODEHA_BACKUP_S3_CA_FILE="+filepath.Join(dir, "ca.crt"), "NODEHA_BACKUP_S3_CREDENTIALS_FILE="+filepath.Join(dir, "s3.env"),
			"NODEHA_BACKUP_ENCRYPTION_KEY_FILE="+filepath.Join(dir, "k"))
	}
	if err := c.Up(ctx); err != nil {
		b.Fatal(err)
	}
	leader := mustWhole(b, c, 4*time.Minute)
	var replica *testcluster.Host
	for _, h := range c.Hosts {
		if h != leader {
			replica = h
			break
		}
	}
	// About dataMB of table: 350-byte rows of hex text (compresses about 2:1).
	rows := dataMB << 20 / 350
	start := time.Now()
	mustPsql(b, leader, fmt.Sprintf("CREATE TABLE big AS SELECT g, repeat(md5(g::text), 10) AS pad FROM generate_series(1, %d) g; CHECKPOINT", rows))
	dbBytes, _ := strconv.ParseInt(mustPsql(b, leader, "SELECT pg_database_size('postgres')"), 10, 64)
	b.Logf("loaded %d rows, database %.0f MiB, in %s", rows, float64(dbBytes)/(1<<20), time.Since(start).Round(time.Second))
	mustWhole(b, c, 5*time.Minute)
	mustPsql(b, replica, "CHECKPOINT")

	median := func(xs []float64) float64 { sort.Float64s(xs); return xs[len(xs)/2] }
	// pg_basebackup by hand on the replica: the same options, a tar to the
	// data disk, no compression.
	var pgbb []float64
	var size float64
	for i := 0; i < 3; i++ {
		start := time.Now()
		if _, err := testcluster.Docker(ctx, "exec", "-u", "postgres", replica.Spilo, "sh", "-c",
			"rm -rf /var/lib/postgresql/data/bb && pg_basebackup -D /var/lib/postgresql/data/bb -Ft -X fetch -c fast -h /run/postgresql -U postgres && du -sb /var/lib/postgresql/data/bb"); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start).Seconds()
		out, _ := testcluster.Docker(ctx, "exec", "-u", "postgres", replica.Spilo, "du", "-sb", "/var/lib/postgresql/data/bb")
		size, _ = strconv.ParseFloat(strings.Fields(out)[0], 64)
		pgbb = append(pgbb, size/1e6/took)
	}
	testcluster.Docker(ctx, "exec", "-u", "postgres", replica.Spilo, "rm", "-rf", "/var/lib/postgresql/data/bb")
	var nb []float64
	var stored float64
	re := regexp.MustCompile(`: ([0-9.]+) MiB \(([0-9.]+) MiB stored\) .* in ([0-9.]+)(m?s), ([0-9.]+) MB/s`)
	for i := 0; i < 3; i++ {
		out, err := replica.RunOnce(ctx, "backup")
		m := re.FindStringSubmatch(out)
		if err != nil || m == nil {
			b.Fatalf("nodeha backup: %v\n%s", err, out)
		}
		v, _ := strconv.ParseFloat(m[5], 64)
		nb = append(nb, v)
		stored, _ = strconv.ParseFloat(m[2], 64)
		time.Sleep(time.Second) // backup names are unique to the second
	}
	b.Logf("base backup of %.0f MB: pg_basebackup to a local tar %.1f MB/s (median of 3: %v); nodeha backup to S3, zstd + age, %.1f MB/s (median of 3: %v), %.0f MiB stored; ratio %.2f",
		size/1e6, median(pgbb), pgbb, median(nb), nb, stored, median(nb)/median(pgbb))
	b.ReportMetric(median(pgbb), "pg_basebackup-MB/s")
	b.ReportMetric(median(nb), "nodeha-backup-MB/s")

	// The archive's lag under the fault benchmark's writer (one connection
	// inserting as fast as it is answered): WAL written but not archived
	// yet, and the time since the newest archived segment, each second.
	const pw = "bench-pw"
	if err := faults.Setup(ctx, leader, pw); err != nil {
		b.Fatal(err)
	}
	ca, _ := c.CAFile()
	w, err := faults.NewWriter(cli.DSN(strings.Split(c.Peers(), ","), 5432, "bench", "postgres", false, ca), pw, 1)
	if err != nil {
		b.Fatal(err)
	}
	wctx, stopW := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.Run(wctx); close(done) }()
	var lagBytes, lagSecs []float64
	for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); time.Sleep(time.Second) {
		// The position written, the newest segment archived (its end is
		// what is safe), and the time since.
		out, err := leader.Psql(ctx, "SELECT pg_current_wal_lsn() - '0/0', coalesce(last_archived_wal, ''), extract(epoch from now() - last_archived_time) FROM pg_stat_archiver")
		f := strings.Split(out, "|")
		if err != nil || len(f) != 3 || len(f[1]) < 24 {
			continue
		}
		written, _ := strconv.ParseFloat(f[0], 64)
		log, _ := strconv.ParseUint(f[1][8:16], 16, 32)
		seg, _ := strconv.ParseUint(f[1][16:24], 16, 32)
		safe := float64((log*256 + seg + 1) * 16 << 20)
		y, _ := strconv.ParseFloat(f[2], 64)
		lagBytes, lagSecs = append(lagBytes, max(written-safe, 0)), append(lagSecs, y)
	}
	stopW()
	<-done
	if len(lagBytes) > 0 {
		maxOf := func(xs []float64) float64 { sort.Float64s(xs); return xs[len(xs)-1] }
		mb, xb := median(append([]float64{}, lagBytes...)), maxOf(append([]float64{}, lagBytes...))
		ms, xs := median(append([]float64{}, lagSecs...)), maxOf(append([]float64{}, lagSecs...))
		b.Logf("archive lag under the writer (%d acknowledged writes in 3 min, %d samples): WAL not yet archived median %.1f MiB, max %.1f MiB; since the last archived segment median %.0f s, max %.0f s",
			len(w.Acks()), len(lagBytes), mb/(1<<20), xb/(1<<20), ms, xs)
		b.ReportMetric(xs, "archive-lag-max-s")
	}

	// Restore that data: the whole cluster from the newest backup and the
	// archive.
	start = time.Now()
	out, err := replica.RunOnce(ctx, "restore", "--latest")
	if err != nil {
		b.Fatalf("restore: %v\n%s", err, out)
	}
	primary := time.Since(start)
	mustWhole(b, c, 20*time.Minute)
	whole := time.Since(start)
	b.Logf("restore --latest of %.0f MB: a primary after %s, the cluster whole (two streaming replicas) after %s", size/1e6, primary.Round(time.Second), whole.Round(time.Second))
	b.ReportMetric(primary.Seconds(), "restore-primary-s")
	b.ReportMetric(whole.Seconds(), "restore-whole-s")
}
