//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/cli"
	"github.com/nodeha/nodeha/internal/faults"
	"github.com/nodeha/nodeha/internal/testcluster"
)

// TestFaults runs one trial of every fault of the benchmark against a
// cluster with nodeha's defaults and synchronous replication, and asserts
// correctness, not timing: writes resume, the cluster converges to one
// leader with every replica streaming, no acknowledged row is lost, and no
// two hosts accept writes at the same moment.
func TestFaults(t *testing.T) {
	ctx := context.Background()
	c, err := testcluster.New(testcluster.Options{
		Prefix: "nodeha-e2e-f", Subnet: "172.28.9.0/24", Hosts: 3, BaseDir: t.TempDir(),
		NodehaImage: "nodeha-e2e:test", SpiloImage: spiloImage, Overlay: overlayYML,
		Scope: "e2e-faults", Env: []string{"NODEHA_SYNCHRONOUS=true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Down(ctx, false)
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts {
				t.Logf("=== nodeha log of %s ===\n%s", h.Name, tail(h.Logs(ctx), 40))
			}
		}
		c.Down(ctx, false)
	})
	if err := c.Up(ctx); err != nil {
		t.Fatal(err)
	}
	leader := mustWhole(t, c, 4*time.Minute)
	if got := mustPsql(t, leader, "show synchronous_standby_names"); got == "" {
		t.Errorf("synchronous_standby_names is empty with NODEHA_SYNCHRONOUS=true")
	}
	const pw = "faults-pw"
	if err := faults.Setup(ctx, leader, pw); err != nil {
		t.Fatal(err)
	}
	dsn := cli.DSN(strings.Split(c.Peers(), ","), 5432, "bench", "postgres", false)
	for i, f := range faults.All {
		t.Run(f.Name, func(t *testing.T) {
			r := faults.Run(ctx, c, f, dsn, pw, "e2e", i+1)
			t.Logf("%s: write pause %dms, resumed after %dms, whole after %dms, %d writes acknowledged",
				f.Name, r.PauseMS, r.ResumeMS, r.WholeMS, r.Acked)
			if r.Error != "" {
				t.Fatal(r.Error)
			}
			if r.Lost != 0 {
				t.Errorf("%d of %d acknowledged rows lost", r.Lost, r.Acked)
			}
			if len(r.Overlaps) != 0 {
				t.Errorf("two hosts accepted writes at the same moment: %+v", r.Overlaps)
			}
			if r.Acked == 0 || r.WholeMS == 0 {
				t.Errorf("trial did not run: %+v", r)
			}
		})
	}

	// A primary cut off from the others stops accepting writes by itself.
	t.Run("PartitionedPrimaryDemotes", func(t *testing.T) {
		old := mustWhole(t, c, 3*time.Minute)
		if _, err := testcluster.Docker(ctx, "network", "disconnect", "-f", c.Network(), old.Holder); err != nil {
			t.Fatal(err)
		}
		defer testcluster.Docker(ctx, "network", "connect", "--ip", old.IP, c.Network(), old.Holder)
		// Patroni demotes it: PostgreSQL comes back read-only (in recovery).
		eventually(t, 90*time.Second, func() error {
			out, err := old.Psql(ctx, "select pg_is_in_recovery()")
			if err != nil || out != "t" {
				return fmt.Errorf("cut-off old primary %s: in recovery = %q (%v)", old.Name, out, err)
			}
			return nil
		})
	})
}
