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

// The Spilo generation under test: NODEHA_E2E_SPILO names the tag (3.0-p1,
// the recipe's, by default; or 4.0-p3), NODEHA_E2E_IMAGE the image (the
// local test image of that tag by default; a published Spilo image where a
// registry is reachable), NODEHA_E2E_OVERLAY the Patroni overlay (the test
// image's by default; "none" for none, e.g. with a published image).
// `make e2e` runs one `go test` per generation, at the same time: each has
// its own container names, networks and addresses.
type generation struct {
	testcluster.Generation
	net   int // second octet of every test network: 172.<net>.x.0/24
	short string
}

// Networks and names of each generation, so that both run at once.
var layout = map[string]generation{
	"3.0-p1": {net: 28, short: "s3"},
	"4.0-p3": {net: 29, short: "s4"},
}

var (
	gen        generation
	spiloImage string
	overlayYML string // "" for none
	nodehaBin  string // the static binary, also inside nodehaImage
	nodehaImg  string
	repoRoot   string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx := context.Background()
	repoRoot, _ = filepath.Abs("..")
	tag := os.Getenv("NODEHA_E2E_SPILO")
	if tag == "" {
		tag = "3.0-p1"
	}
	g, err := testcluster.GenerationOf(tag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: NODEHA_E2E_SPILO:", err)
		return 2
	}
	gen = layout[tag]
	gen.Generation = g
	spiloImage = envOr("NODEHA_E2E_IMAGE", g.TestImage())
	switch o := envOr("NODEHA_E2E_OVERLAY", filepath.Join(repoRoot, g.Overlay())); o {
	case "none":
	default:
		overlayYML = o
	}
	fmt.Fprintf(os.Stderr, "e2e: Spilo %s, image %s, overlay %q, PostgreSQL %s\n", gen.Tag, spiloImage, overlayYML, gen.PGVersion)
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
	nodehaImg = "nodeha-e2e:" + gen.short
	nodehaBin, err = testcluster.BuildNodehaImage(ctx, repoRoot, dir, nodehaImg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// prefix is the container name prefix of one suite in this generation.
func prefix(suite string) string { return "nodeha-e2e-" + gen.short + "-" + suite }

// subnet is the network of one suite (third octet n) in this generation.
func subnet(n int) string { return fmt.Sprintf("172.%d.%d.0/24", gen.net, n) }

// addr is address .host of subnet n.
func addr(n, host int) string { return fmt.Sprintf("172.%d.%d.%d", gen.net, n, host) }

// clusterOpts are the options of a suite's cluster in this generation:
// o's own settings plus the image, the overlay and the PostgreSQL major.
func clusterOpts(suite string, n int, o testcluster.Options) testcluster.Options {
	o.Prefix, o.Subnet = prefix(suite), subnet(n)
	if o.NodehaImage == "" {
		o.NodehaImage = nodehaImg
	}
	o.SpiloImage, o.Overlay = spiloImage, overlayYML
	o.Env = append([]string{"NODEHA_PG_VERSION=" + gen.PGVersion}, o.Env...)
	return o
}
