package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/nodeha/nodeha/config"
)

func TestAccountClashes(t *testing.T) {
	none := func(string) (string, error) { return "", errors.New("unknown") }
	users := func(id string) (string, error) {
		if id == "101" {
			return "systemd-network", nil
		}
		return "", errors.New("unknown")
	}
	if got := config.AccountClashes(101, 103, none, none); len(got) != 0 {
		t.Errorf("no host account: %v", got)
	}
	got := config.AccountClashes(101, 103, users, none)
	if len(got) != 1 || !strings.Contains(got[0], `uid 101 is the host account "systemd-network"`) || !strings.Contains(got[0], "usermod") {
		t.Errorf("a clashing uid: %v", got)
	}
	if got := config.AccountClashes(101, 103, none, func(string) (string, error) { return "netdev", nil }); len(got) != 1 || !strings.Contains(got[0], `gid 103 is the host group "netdev"`) {
		t.Errorf("a clashing gid: %v", got)
	}
}
