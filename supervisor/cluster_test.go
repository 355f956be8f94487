package supervisor

import (
	"strings"
	"testing"

	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/health"
	"github.com/nodeha/nodeha/patroni"
)

func TestBuildClusterView(t *testing.T) {
	ok := func(name, addr string) health.HostStatus {
		return health.HostStatus{Name: name, Address: addr, Healthy: true, Version: "v1"}
	}
	whole := clusterInput{
		Scope: "s", From: "pg1", Leader: "pg2",
		Etcd: []embedetcd.MemberView{
			{Name: "10.0.0.1", Address: "10.0.0.1"}, {Name: "10.0.0.2", Address: "10.0.0.2", Leader: true}, {Name: "10.0.0.3", Address: "10.0.0.3"},
		},
		Patroni: []patroni.Member{
			{Name: "pg1", Role: "replica", State: "streaming", Host: "10.0.0.1", Timeline: 2, Lag: 0},
			{Name: "pg2", Role: "primary", State: "running", Host: "10.0.0.2", Timeline: 2},
			{Name: "pg3", Role: "sync_standby", State: "streaming", Host: "10.0.0.3", Timeline: 2, Lag: 16},
		},
		Statuses: map[string]health.HostStatus{"pg1": ok("pg1", "10.0.0.1"), "pg2": ok("pg2", "10.0.0.2"), "pg3": ok("pg3", "10.0.0.3")},
	}
	v := BuildClusterView(whole)
	if !v.Whole || len(v.Hosts) != 3 || len(v.Problems) != 0 {
		t.Fatalf("whole cluster: %+v", v)
	}
	if h := v.Hosts[1]; h.Name != "pg2" || h.Etcd != "voter,leader" || h.LagBytes != 0 || !h.Healthy || h.Status == nil {
		t.Errorf("pg2: %+v", h)
	}
	if h := v.Hosts[2]; h.LagBytes != 16 || h.Etcd != "voter" {
		t.Errorf("pg3: %+v", h)
	}

	cases := []struct {
		name    string
		change  func(in *clusterInput)
		problem string
	}{
		{"a host's nodeha is down", func(in *clusterInput) { delete(in.Statuses, "pg3") }, "pg3: no status from its nodeha"},
		{"unhealthy", func(in *clusterInput) {
			s := in.Statuses["pg1"]
			s.Healthy, s.Reasons = false, []string{"container spilo: exited"}
			in.Statuses["pg1"] = s
		}, "pg1: unhealthy: container spilo: exited"},
		{"no primary", func(in *clusterInput) { in.Patroni[1].Role, in.Patroni[1].State = "replica", "stopped" }, "no primary"},
		{"two primaries", func(in *clusterInput) { in.Patroni[0].Role = "master" }, "2 primaries"},
		{"a learner", func(in *clusterInput) { in.Etcd[2].Learner = true }, "pg3: etcd learner"},
		{"an etcd member without Patroni or nodeha", func(in *clusterInput) {
			in.Etcd = append(in.Etcd, embedetcd.MemberView{Name: "10.0.0.4", Address: "10.0.0.4"})
		}, "10.0.0.4: not a Patroni member"},
		{"a Patroni member outside etcd", func(in *clusterInput) { in.Etcd = in.Etcd[:2] }, "pg3: not an etcd member"},
	}
	for _, tc := range cases {
		in := whole
		in.Etcd = append([]embedetcd.MemberView(nil), whole.Etcd...)
		in.Patroni = append([]patroni.Member(nil), whole.Patroni...)
		in.Statuses = map[string]health.HostStatus{}
		for k, s := range whole.Statuses {
			in.Statuses[k] = s
		}
		tc.change(&in)
		v := BuildClusterView(in)
		if v.Whole || !strings.Contains(strings.Join(v.Problems, "\n"), tc.problem) {
			t.Errorf("%s: whole %v, problems %q, want one containing %q", tc.name, v.Whole, v.Problems, tc.problem)
		}
	}
}

func TestROTarget(t *testing.T) {
	members := []patroni.Member{
		{Name: "pg1", Role: "primary", State: "running", Host: "10.0.0.1", Port: 5432},
		{Name: "pg2", Role: "replica", State: "streaming", Host: "10.0.0.2", Port: 5432, Lag: 100},
		{Name: "pg3", Role: "replica", State: "streaming", Host: "10.0.0.3", Port: 5432, Lag: 1 << 30},
	}
	if got := roTarget(members, "pg1", 1<<20); got.Member != "pg2" || got.Addr != "10.0.0.2:5432" {
		t.Errorf("from the primary's host: %+v, want pg2 (pg3 lags)", got)
	}
	if got := roTarget(members, "pg3", 1<<31); got.Member != "pg3" {
		t.Errorf("this host's own replica first: %+v", got)
	}
	members[1].State = "starting"
	if got := roTarget(members, "pg1", 1<<20); got.Member != "pg1" {
		t.Errorf("no healthy replica: %+v, want the primary", got)
	}
	if got := roTarget(nil, "pg1", 1<<20); got.Addr != "" {
		t.Errorf("nothing known: %+v", got)
	}
}
