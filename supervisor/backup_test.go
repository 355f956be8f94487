package supervisor_test

import (
	"slices"
	"testing"
	"time"

	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/metrics"
	"github.com/nodeha/nodeha/patroni"
	"github.com/nodeha/nodeha/supervisor"
)

func TestBackupHost(t *testing.T) {
	leader := patroni.Member{Name: "pg1", Role: "leader", State: "running"}
	r := func(name string, lag int64, state string) patroni.Member {
		return patroni.Member{Name: name, Role: "replica", State: state, Lag: patroni.Lag(lag)}
	}
	cases := []struct {
		name string
		ms   []patroni.Member
		want string
	}{
		{"first healthy replica by name", []patroni.Member{leader, r("pg3", 0, "streaming"), r("pg2", 0, "streaming")}, "pg2"},
		{"a lagging replica is skipped", []patroni.Member{leader, r("pg2", 1<<30, "streaming"), r("pg3", 10, "streaming")}, "pg3"},
		{"unknown lag is skipped", []patroni.Member{leader, r("pg2", -1, "streaming")}, "pg1"},
		{"a stopped replica is skipped", []patroni.Member{leader, r("pg2", 0, "stopped")}, "pg1"},
		{"no healthy replica: the primary", []patroni.Member{leader}, "pg1"},
		{"no one", []patroni.Member{{Name: "pg1", Role: "leader", State: "stopped"}}, ""},
	}
	for _, c := range cases {
		if got := supervisor.BackupHost(c.ms, 16<<20); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestArchiveVerdict(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	after := 5 * time.Minute
	cases := []struct {
		name         string
		b            health.Backup
		failingSince time.Time
		code         string
		failing      bool
	}{
		{"never failed", health.Backup{LastArchivedAt: now.Add(-time.Minute)}, time.Time{}, "", false},
		{"failed, then archived", health.Backup{LastFailedAt: now.Add(-2 * time.Minute), LastArchivedAt: now.Add(-time.Minute)}, time.Time{}, "", false},
		{"failing, briefly", health.Backup{LastFailedAt: now.Add(-time.Second), LastArchivedAt: now.Add(-time.Minute)}, now.Add(-time.Minute), "", true},
		{"failing for long", health.Backup{LastFailedAt: now.Add(-time.Second), LastArchivedAt: now.Add(-10 * time.Minute)}, now.Add(-time.Minute), "archive_failing", true},
		{"never archived, seen failing for long", health.Backup{LastFailedAt: now.Add(-time.Second)}, now.Add(-6 * time.Minute), "archive_failing", true},
		{"never archived, just seen failing", health.Backup{LastFailedAt: now.Add(-time.Second)}, now.Add(-time.Second), "", true},
	}
	for _, c := range cases {
		b := c.b
		code, text := supervisor.ArchiveVerdict(now, &b, c.failingSince, after)
		if code != c.code || b.Failing != c.failing || (code != "" && text == "") {
			t.Errorf("%s: code %q failing %v (%q); want %q, %v", c.name, code, b.Failing, text, c.code, c.failing)
		}
		if code != "" && !slices.Contains(metrics.ReasonCodes, code) {
			t.Errorf("%s: code %q is not in metrics.ReasonCodes", c.name, code)
		}
	}
}
