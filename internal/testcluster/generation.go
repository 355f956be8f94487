package testcluster

import "fmt"

// Generation is one of the Spilo generations nodeha is tested on.
type Generation struct {
	Tag       string // the Spilo tag: 3.0-p1 or 4.0-p3
	PGVersion string // NODEHA_PG_VERSION of a new cluster
	Published string // the published image of that tag
}

// Generations are the Spilo tags the test images are built from
// (testimage/build.sh), the recipe's first.
var Generations = []Generation{
	{Tag: "3.0-p1", PGVersion: "15", Published: "ghcr.io/zalando/spilo-15:3.0-p1"},
	{Tag: "4.0-p3", PGVersion: "17", Published: "ghcr.io/zalando/spilo-17:4.0-p3"},
}

// GenerationOf returns the generation of tag.
func GenerationOf(tag string) (Generation, error) {
	for _, g := range Generations {
		if g.Tag == tag {
			return g, nil
		}
	}
	return Generation{}, fmt.Errorf("spilo tag %q: want 3.0-p1 or 4.0-p3", tag)
}

// TestImage is the local test image of the generation (testimage/build.sh).
func (g Generation) TestImage() string { return "nodeha-spilo-test:" + g.Tag }

// Overlay is the Patroni overlay the test image needs, relative to the
// repository's root.
func (g Generation) Overlay() string { return "testimage/overlay-" + g.Tag + ".yml" }
