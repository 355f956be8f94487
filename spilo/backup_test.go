package spilo_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/spilo"
)

func TestRenderArchive(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "s3.env")
	os.WriteFile(creds, []byte("AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=s3-Secret-Value-9\n"), 0o600)
	cfg := testConfig(t, "--backup-target=s3://bucket/prod", "--backup-s3-endpoint=https://s3.example:9000", "--backup-s3-credentials-file="+creds)
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := parseYAML(t, file)
	pg := m["postgresql"].(map[string]any)
	params := pg["parameters"].(map[string]any)
	if params["archive_command"] != spilo.ContainerBinary+" wal-push %p" || params["archive_mode"] != "always" || params["archive_timeout"] != "60s" {
		t.Errorf("archive parameters: %v %v %v", params["archive_command"], params["archive_mode"], params["archive_timeout"])
	}
	if rc := pg["recovery_conf"].(map[string]any); rc["restore_command"] != spilo.ContainerBinary+" wal-fetch %f %p" {
		t.Errorf("restore_command %v", rc["restore_command"])
	}
	if bytes.Contains(file, []byte("s3-Secret-Value-9")) || bytes.Contains(file, []byte("AKIDEXAMPLE")) {
		t.Error("the S3 credentials are in postgres.yml")
	}
	// The container spec carries no secret either.
	spec := spilo.NewSpec(cfg, file)
	for _, e := range spec.Config.Env {
		if strings.Contains(e, "s3-Secret") || strings.Contains(e, "AKIDEXAMPLE") {
			t.Errorf("a credential in the container's environment: %s", e)
		}
	}

	// Without a target: nothing of it.
	bare, err := spilo.Render(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	plain := parseYAML(t, bare)
	if _, ok := plain["postgresql"].(map[string]any)["parameters"].(map[string]any)["archive_command"]; ok {
		t.Error("archive_command rendered without a backup target")
	}
}

func TestRenderRestore(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, "--backup-target=file://"+dir)
	target := time.Date(2026, 12, 3, 14, 5, 6, 789000000, time.UTC)
	file, err := spilo.RenderRestore(cfg, spilo.RestoreMethod{Backup: "base_20261203T140000Z", Target: target})
	if err != nil {
		t.Fatal(err)
	}
	b := parseYAML(t, file)["bootstrap"].(map[string]any)
	if b["method"] != "nodeha_restore" {
		t.Fatalf("bootstrap.method %v", b["method"])
	}
	m := b["nodeha_restore"].(map[string]any)
	if m["command"] != spilo.ContainerBinary+" backup-fetch --backup base_20261203T140000Z" {
		t.Errorf("command %v", m["command"])
	}
	rc := m["recovery_conf"].(map[string]any)
	if rc["recovery_target_time"] != "2026-12-03 14:05:06.789000+00" || rc["recovery_target_action"] != "promote" || rc["restore_command"] == nil {
		t.Errorf("recovery_conf %v", rc)
	}
	file, _ = spilo.RenderRestore(cfg, spilo.RestoreMethod{Backup: "b", Immediate: true})
	rc = parseYAML(t, file)["bootstrap"].(map[string]any)["nodeha_restore"].(map[string]any)["recovery_conf"].(map[string]any)
	if rc["recovery_target"] != "immediate" || rc["recovery_target_time"] != nil {
		t.Errorf("immediate: %v", rc)
	}
	// The file target is mounted at the same path.
	spec := spilo.NewSpec(cfg, file)
	found := false
	for _, mt := range spec.HostConfig.Mounts {
		if mt.Source == dir && mt.Target == dir {
			found = true
		}
	}
	if !found {
		t.Errorf("the directory target is not mounted: %+v", spec.HostConfig.Mounts)
	}
}

func TestBackupSettingsFileComesAndGoes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the file is chowned to the container's postgres")
	}
	dir := t.TempDir()
	cfg := testConfig(t, "--backup-target=file://"+dir, "--data-dir="+filepath.Join(t.TempDir(), "nodeha"),
		"--postgres-dir="+filepath.Join(t.TempDir(), "pg"), "--log-dir="+filepath.Join(t.TempDir(), "log"))
	file, _ := spilo.Render(cfg)
	if err := spilo.PrepareHost(cfg, file); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(cfg.SpiloDir(), "backup", "settings.json")
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("settings.json: %v %v", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(cfg.SpiloDir(), "bin", "nodeha")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("the binary for the container: %v %v", fi, err)
	}
	if err := spilo.RemoveBackupSecrets(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("settings.json is still there: %v", err)
	}
}
