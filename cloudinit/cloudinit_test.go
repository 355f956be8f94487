package cloudinit

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cloudinit -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("output differs from %s (run with -update if intended):\n--- got\n%s", path, got)
	}
}

const env = `# nodeha settings
NODEHA_NAME=pg1
NODEHA_PEERS=10.0.0.1,10.0.0.2,10.0.0.3
NODEHA_SUPERUSER_PASSWORD="su pw'\$x"
NODEHA_PATRONI_OVERLAY=/etc/nodeha/patroni-overlay.yml
`

func opts() Options {
	return Options{
		Comment: "host pg1\nsecond line", Env: []byte(env), EnvFile: "/etc/nodeha/nodeha.env",
		Overlay:     []byte("postgresql:\n  parameters:\n    shared_preload_libraries: pg_stat_statements\n"),
		OverlayPath: DefaultOverlayPath, Binary: "/usr/local/bin/nodeha",
		BinaryURL: "https://releases.example.com/nodeha/v1/nodeha-linux-amd64",
		BinarySHA: strings.Repeat("ab", 32), Socket: "/run/nodeha/nodeha.sock", Wait: 10 * time.Minute,
	}
}

type userData struct {
	WriteFiles []struct {
		Path, Owner, Permissions, Encoding, Content string
	} `json:"write_files"`
	Runcmd []string `json:"runcmd"`
}

func parse(t *testing.T, b []byte) userData {
	t.Helper()
	if !bytes.HasPrefix(b, []byte("#cloud-config\n")) {
		t.Fatalf("no #cloud-config header:\n%s", b)
	}
	var ud userData
	if err := yaml.UnmarshalStrict(b, &ud); err != nil {
		t.Fatalf("not YAML of the expected shape: %v\n%s", err, b)
	}
	return ud
}

func TestURLGolden(t *testing.T) {
	got, err := Render(opts())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "url.user-data", got)
	ud := parse(t, got)
	if len(ud.WriteFiles) != 2 || ud.WriteFiles[0].Content != env || ud.WriteFiles[0].Permissions != "0600" ||
		ud.WriteFiles[1].Path != DefaultOverlayPath || ud.WriteFiles[1].Content != string(opts().Overlay) {
		t.Errorf("write_files do not carry the files unchanged: %+v", ud.WriteFiles)
	}
	script := strings.Join(ud.Runcmd, "\n")
	for _, want := range []string{"set -e", "sha256sum -c", "nodeha install --env-file /etc/nodeha/nodeha.env", "status --socket /run/nodeha/nodeha.sock --wait=10m0s"} {
		if !strings.Contains(script, want) {
			t.Errorf("runcmd lacks %q:\n%s", want, script)
		}
	}
	if strings.Index(script, "sha256sum") > strings.Index(script, "install -m 0755") {
		t.Errorf("binary installed before its checksum is checked:\n%s", script)
	}
}

func TestEmbeddedGolden(t *testing.T) {
	o := opts()
	o.BinaryURL, o.BinarySHA, o.Overlay = "", "", nil
	o.Embedded = []byte("#!/bin/sh\necho a stand-in for the nodeha binary\n")
	got, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "embedded.user-data", got)
	ud := parse(t, got)
	f := ud.WriteFiles[len(ud.WriteFiles)-1]
	if f.Path != "/usr/local/bin/nodeha" || f.Encoding != "gz+b64" || f.Permissions != "0755" {
		t.Fatalf("binary entry %+v", f)
	}
	z, err := base64.StdEncoding.DecodeString(f.Content)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(zr)
	if !bytes.Equal(b, o.Embedded) {
		t.Errorf("embedded binary does not decode to the original")
	}
	if strings.Contains(string(got), "curl") {
		t.Errorf("embedded user-data downloads anyway")
	}
}

// Text that a literal block would change goes in quotes instead.
func TestAwkwardContent(t *testing.T) {
	for _, content := range []string{"  leading: space\n", "no newline", "trailing \nspace\n", "tab\there\n", "two\n\n", "crlf\r\n", "a\n\nb\n"} {
		o := opts()
		o.Overlay = []byte(content)
		got, err := Render(o)
		if err != nil {
			t.Fatal(err)
		}
		if ud := parse(t, got); ud.WriteFiles[1].Content != content {
			t.Errorf("%q came back as %q", content, ud.WriteFiles[1].Content)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.BinaryURL, o.BinarySHA = "", "" }, "--binary-url (with --binary-sha256) or --embed-binary: one is required"},
		{func(o *Options) { o.Embedded = []byte("x") }, "--binary-url and --embed-binary: give one, not both"},
		{func(o *Options) { o.BinaryURL = "ftp://x/y" }, `--binary-url: "ftp://x/y" is not an http(s) URL`},
		{func(o *Options) { o.BinarySHA = "abc" }, `--binary-sha256: "abc" is not a SHA-256`},
		{func(o *Options) { o.Binary = "nodeha" }, `--binary: "nodeha" must be an absolute path`},
		{func(o *Options) { o.Wait = 0 }, "--wait: 0s must be positive"},
	} {
		o := opts()
		c.change(&o)
		_, err := Render(o)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("err = %v, want one line with %q", err, c.want)
		}
	}
}
