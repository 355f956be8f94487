package config_test

import (
	"flag"
	"io"
	"slices"
	"testing"

	"github.com/nodeha/nodeha/config"
)

func TestSecretFlagsGiven(t *testing.T) {
	clearEnv(t)
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c, err := config.Load(fs, []string{"--token=t0123456789012345678901234", "--superuser-password=p", "--name=pg1"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.SecretFlags, []string{"--superuser-password", "--token"}) {
		t.Errorf("SecretFlags = %v", c.SecretFlags)
	}
	clearEnv(t)
	t.Setenv("NODEHA_TOKEN", "t0123456789012345678901234")
	c, _ = config.Load(flag.NewFlagSet("y", flag.ContinueOnError), []string{"--name=pg1"})
	if len(c.SecretFlags) != 0 {
		t.Errorf("from the environment: SecretFlags = %v", c.SecretFlags)
	}
}
