package spilo_test

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/nodeha/nodeha/config"
)

// Distinct passwords, so a test can tell which one leaked where. The
// rewind user is the replication user (replicator), so it shares its
// password.
const (
	superuserPassword   = "su-Kq7vTf9x"
	replicationPassword = "repl-Wm3pLs2c"
	restAPIPassword     = "api-Rb6tJx1q"
)

var passwords = []string{superuserPassword, replicationPassword, restAPIPassword}

// clearEnv unsets every NODEHA_* variable and the unprefixed names
// envconfig falls back to, so the machine's environment cannot leak in.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, s := range config.Settings() {
		for _, k := range []string{s.Env, strings.TrimPrefix(s.Env, "NODEHA_")} {
			if _, ok := os.LookupEnv(k); ok {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
		}
	}
}

// testConfig is a validated configuration of the first of three hosts;
// args override it.
// testToken is a cluster token chosen by the operator.
const testToken = "spilo-tests-cluster-token-0123456789"

func testConfig(t *testing.T, args ...string) *config.Config {
	t.Helper()
	clearEnv(t)
	return loadConfig(t, args...)
}

// loadConfig is testConfig without clearing the environment first.
func loadConfig(t *testing.T, args ...string) *config.Config {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	base := []string{
		"--name=pg-node-1",
		"--advertise=10.0.0.1",
		"--peers=10.0.0.1,10.0.0.2,10.0.0.3",
		"--scope=orders",
		"--superuser-password=" + superuserPassword,
		"--replication-password=" + replicationPassword,
		"--restapi-password=" + restAPIPassword,
		"--token=" + testToken,
	}
	c, err := config.Load(fs, append(base, args...))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
	return c
}
