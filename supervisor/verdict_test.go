package supervisor_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/metrics"
	"github.com/nodeha/nodeha/spilo"
	"github.com/nodeha/nodeha/supervisor"
)

func TestVerdict(t *testing.T) {
	zero, one := 0, 1
	etcdOK := embedetcd.Status{HasQuorum: true, Members: []string{"pg1", "pg2", "pg3"}}
	alone := embedetcd.Status{HasQuorum: true, Members: []string{"pg1"}}
	running := spilo.ContainerStatus{Name: "spilo", State: "running", Running: true}
	leader := &health.Patroni{Reachable: true, Role: "master", State: "running", SyncStandbys: &one}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	restarted := running
	restarted.NodehaRestarts = 2
	cases := []struct {
		name   string
		sync   bool
		es     embedetcd.Status
		c      spilo.ContainerStatus
		p      *health.Patroni
		reason string // "" = healthy
	}{
		{"healthy leader", false, etcdOK, running, leader, ""},
		{"healthy replica (Patroni 4 names)", false, etcdOK, running, &health.Patroni{Reachable: true, Role: "replica", State: "streaming"}, ""},
		{"healthy replica", false, etcdOK, running, &health.Patroni{Reachable: true, Role: "replica", State: "running"}, ""},
		{"primary (Patroni 4)", false, etcdOK, running, &health.Patroni{Reachable: true, Role: "primary", State: "running"}, ""},
		{"no quorum", false, embedetcd.Status{}, running, leader, "etcd: no quorum"},
		{"learner", false, embedetcd.Status{HasQuorum: true, Learner: true}, running, leader, "etcd: member is still a learner"},
		{"container exited", false, etcdOK, spilo.ContainerStatus{Name: "spilo", State: "exited"}, leader, "container spilo: exited"},
		{"fenced", false, embedetcd.Status{}, spilo.ContainerStatus{Name: "spilo", State: "fenced", Fenced: "primary cut off"}, &health.Patroni{}, "container spilo fenced: primary cut off"},
		{"patroni down", false, etcdOK, running, &health.Patroni{}, "patroni: REST API not answering"},
		{"patroni down for a while", false, etcdOK, running, &health.Patroni{NotAnsweringSince: now.Add(-75 * time.Second)}, "patroni: REST API not answering for 1m15s"},
		{"patroni down, restarted by nodeha", false, etcdOK, restarted, &health.Patroni{NotAnsweringSince: now.Add(-5 * time.Second)}, "patroni: REST API not answering for 5s, container restarted by nodeha 2 times"},
		{"postgres starting", false, etcdOK, running, &health.Patroni{Reachable: true, Role: "replica", State: "starting"}, "patroni: PostgreSQL is starting"},
		{"uninitialized", false, etcdOK, running, &health.Patroni{Reachable: true, Role: "uninitialized", State: "running"}, "patroni: role uninitialized"},
		{"sync leader without standby", true, etcdOK, running, &health.Patroni{Reachable: true, Role: "master", State: "running", SyncStandbys: &zero}, "no synchronous standby"},
		{"async leader without standby", false, etcdOK, running, &health.Patroni{Reachable: true, Role: "master", State: "running", SyncStandbys: &zero}, ""},
		{"sync leader with standby", true, etcdOK, running, leader, ""},
		{"sync leader of a one-host cluster", true, alone, running, &health.Patroni{Reachable: true, Role: "primary", State: "running", SyncStandbys: &zero}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(supervisor.Verdict(now, tc.sync, tc.es, tc.c, tc.p), "; ")
			if tc.reason == "" && got != "" {
				t.Errorf("unhealthy (%s), want healthy", got)
			}
			if tc.reason != "" && !strings.Contains(got, tc.reason) {
				t.Errorf("reasons %q, want one containing %q", got, tc.reason)
			}
			// Each reason has a code that metrics export.
			codes := supervisor.VerdictCodes(now, tc.sync, tc.es, tc.c, tc.p)
			if n := len(supervisor.Verdict(now, tc.sync, tc.es, tc.c, tc.p)); len(codes) != n {
				t.Errorf("%d codes for %d reasons", len(codes), n)
			}
			for _, c := range codes {
				if !slices.Contains(metrics.ReasonCodes, c) {
					t.Errorf("reason code %q is not in metrics.ReasonCodes", c)
				}
			}
		})
	}
}
