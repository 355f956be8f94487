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
