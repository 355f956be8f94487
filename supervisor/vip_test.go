package supervisor

import "testing"

func TestWantVIP(t *testing.T) {
	for _, tc := range []struct {
		name           string
		leader         string
		quorum, fenced bool
		want           bool
	}{
		{"the leader key is ours", "pg1", true, false, true},
		{"another member leads", "pg2", true, false, false},
		{"no leader", "", true, false, false},
		{"ours, but no quorum (cut off)", "pg1", false, false, false},
		{"ours, but fenced", "pg1", true, true, false},
	} {
		if got := wantVIP(tc.leader, "pg1", tc.quorum, tc.fenced); got != tc.want {
			t.Errorf("%s: hold %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRecipeArchiveIsTold(t *testing.T) {
	recipe := `{"postgresql":{"parameters":{"archive_command":"test ! -f /var/lib/postgresql/data/wal_archive/%f && cp %p /var/lib/postgresql/data/wal_archive/%f","archive_mode":"on"}}}`
	for _, tc := range []struct {
		config string
		want   bool
	}{
		{recipe, true},
		{`{"postgresql":{"parameters":{"archive_command":"/bin/true"}}}`, false},
		{`{"postgresql":{"parameters":{"archive_command":"envdir /run/etc/wal-e.d/env wal-g wal-push \"%p\""}}}`, false},
		{`{"ttl":20}`, false},
		{`not json`, false},
	} {
		if got := recipeArchive(archiveCommand([]byte(tc.config))); got != tc.want {
			t.Errorf("%s: recipe's archive %v, want %v", tc.config, got, tc.want)
		}
	}
}
