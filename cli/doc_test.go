package cli_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs fails when a package of the module has no doc comment
// saying what it owns (STYLE.md, convention 10), as tailscale's
// TestPackageDocs does.
func TestPackageDocs(t *testing.T) {
	root := moduleRoot(t)
	pkgs := map[string][]string{} // dir -> non-test .go files
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			pkgs[filepath.Dir(path)] = append(pkgs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 5 {
		t.Fatalf("found only %d packages under %s: the walk is broken", len(pkgs), root)
	}
	for dir, files := range pkgs {
		rel, _ := filepath.Rel(root, dir)
		var pkgName, doc string
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			pkgName = af.Name.Name
			if af.Doc != nil {
				doc = af.Doc.Text()
				break
			}
		}
		switch {
		case doc == "":
			t.Errorf("package %s (%s) has no doc comment", pkgName, rel)
		case pkgName == "main":
			if !strings.HasPrefix(doc, "Command ") && !strings.HasPrefix(doc, "Program ") {
				t.Errorf("%s: the doc of a command should start \"Command NAME\": %q", rel, firstLine(doc))
			}
		case !strings.HasPrefix(doc, "Package "+pkgName+" "):
			t.Errorf("%s: doc comment should start \"Package %s\": %q", rel, pkgName, firstLine(doc))
		}
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
