package cli_test

import (
	"os"
	"strings"
	"testing"

	"github.com/nodeha/nodeha/config"
)

// The README's settings table must list every setting with its flag and
// current default, so the documentation cannot drift from the code.
func TestReadmeListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, s := range config.Settings() {
		def := "—"
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		row := "| `" + s.Env + "` | `" + s.Flag + "` | " + def + " |"
		if !strings.Contains(readme, row) {
			t.Errorf("README settings table lacks the row starting %q", row)
		}
	}
}
