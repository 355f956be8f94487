package dcs_test

import (
	"testing"

	"github.com/nodeha/nodeha/dcs"
)

func TestKeys(t *testing.T) {
	for got, want := range map[string]string{
		dcs.Leader("s"):        "/service/s/leader",
		dcs.Member("s", "pg1"): "/service/s/members/pg1",
		dcs.Config("s"):        "/service/s/config",
		dcs.Sync("s"):          "/service/s/sync",
		dcs.Host("s", "pg1"):   "/nodeha/s/hosts/pg1",
	} {
		if got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
}

func TestParseMember(t *testing.T) {
	// A Patroni 3.0 member value, as stored by its etcd3 backend.
	m, err := dcs.ParseMember([]byte(`{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"replica","version":"3.0.2"}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Host() != "10.0.0.2" || m.APIHost() != "10.0.0.2" || m.Role != "replica" || m.State != "running" {
		t.Errorf("parsed %+v (host %q, api host %q)", m, m.Host(), m.APIHost())
	}
	if _, err := dcs.ParseMember([]byte("not json")); err == nil {
		t.Error("a value that is not JSON parsed")
	}
	if (dcs.MemberValue{}).Host() != "" {
		t.Error("no conn_url, yet a host")
	}
}
