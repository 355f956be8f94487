//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nodeha/nodeha/internal/testcluster"
)

const spiloImage = "nodeha-spilo-test:15"

var (
	nodehaBin  string // the static binary, also inside nodeha-e2e:test
	repoRoot   string
	overlayYML string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx := context.Background()
	repoRoot, _ = filepath.Abs("..")
	overlayYML = filepath.Join(repoRoot, "testimage", "overlay.yml")
	if err := testcluster.RequireImage(ctx, spiloImage); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "nodeha-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	nodehaBin, err = testcluster.BuildNodehaImage(ctx, repoRoot, dir, "nodeha-e2e:test")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}
