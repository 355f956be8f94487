package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestBackupSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), mode)
		os.Chmod(p, mode)
		return p
	}
	creds := write("s3.env", "AWS_ACCESS_KEY_ID=AK\nAWS_SECRET_ACCESS_KEY=SK\n", 0o600)
	open := write("open.env", "AWS_ACCESS_KEY_ID=AK\nAWS_SECRET_ACCESS_KEY=SK\n", 0o644)
	half := write("half.env", "AWS_ACCESS_KEY_ID=AK\n", 0o600)
	id, _ := age.GenerateX25519Identity()
	key := write("backup.key", "# created: now\n# public key: x\n"+id.String()+"\n", 0o600)
	badKey := write("bad.key", "AGE-SECRET-KEY-1NOTAKEY\n", 0o600)
	notCA := write("ca.crt", "hello", 0o644)
	s3 := []string{"--backup-target=s3://bucket/prefix", "--backup-s3-endpoint=https://s3.example:9000"}

	good := load(t, append(append(validArgs, s3...), "--backup-s3-credentials-file="+creds, "--backup-encryption-key-file="+key)...)
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	if b := good.Backup; b == nil || b.AccessKeyID != "AK" || b.SecretAccessKey != "SK" || b.Identity != id.String() || b.S3Region != "us-east-1" {
		t.Errorf("resolved settings %+v", b)
	}

	cases := []struct {
		args   []string
		prefix string
		part   string
	}{
		{[]string{"--backup-target=s3://bucket", "--backup-s3-credentials-file=" + creds}, "NODEHA_BACKUP_S3_ENDPOINT (--backup-s3-endpoint): ", "required"},
		{append(s3[:1:1], "--backup-s3-endpoint=http://s3.example", "--backup-s3-credentials-file="+creds), "NODEHA_BACKUP_S3_ENDPOINT (--backup-s3-endpoint): ", "clear text"},
		{append(s3, "--backup-s3-credentials-file="+open), "NODEHA_BACKUP_S3_CREDENTIALS_FILE (--backup-s3-credentials-file): ", "chmod 600"},
		{append(s3, "--backup-s3-credentials-file="+half), "NODEHA_BACKUP_S3_CREDENTIALS_FILE (--backup-s3-credentials-file): ", "AWS_SECRET_ACCESS_KEY"},
		{append(s3, "--backup-s3-credentials-file="+filepath.Join(dir, "missing")), "NODEHA_BACKUP_S3_CREDENTIALS_FILE (--backup-s3-credentials-file): ", "no such file"},
		{append(s3, "--backup-s3-credentials-file="+creds, "--backup-s3-ca-file="+notCA), "NODEHA_BACKUP_S3_CA_FILE (--backup-s3-ca-file): ", "no PEM certificate"},
		{append(s3, "--backup-s3-credentials-file="+creds, "--backup-encryption-key-file="+badKey), "NODEHA_BACKUP_ENCRYPTION_KEY_FILE (--backup-encryption-key-file): ", "not an age identity"},
		{[]string{"--backup-target=ftp://x/y"}, "NODEHA_BACKUP_TARGET (--backup-target): ", "want s3://"},
		{[]string{"--backup-target=file://relative/path"}, "NODEHA_BACKUP_TARGET (--backup-target): ", "file:///ABSOLUTE/PATH"},
		{[]string{"--backup-target=file://" + filepath.Join(dir, "nope")}, "NODEHA_BACKUP_TARGET (--backup-target): ", "no such file"},
		{[]string{"--backup-s3-endpoint=https://s3.example"}, "NODEHA_BACKUP_S3_ENDPOINT (--backup-s3-endpoint): ", "NODEHA_BACKUP_TARGET is not"},
		{[]string{"--backup-target=file://" + dir, "--backup-schedule=10s"}, "NODEHA_BACKUP_SCHEDULE (--backup-schedule): ", "at least 1m"},
		{[]string{"--backup-target=file://" + dir, "--backup-retain=0"}, "NODEHA_BACKUP_RETAIN (--backup-retain): ", "at least 1"},
	}
	for _, c := range cases {
		clearEnv(t)
		cfg := load(t, append(append([]string{}, validArgs...), c.args...)...)
		lines := errLines(cfg.Check())
		if !hasLine(lines, c.prefix, c.part) || len(lines) != 1 {
			t.Errorf("%v: %q, want one line %q...%q", c.args, lines, c.prefix, c.part)
		}
		if cfg.Backup != nil && !strings.Contains(c.prefix, "SCHEDULE") && !strings.Contains(c.prefix, "RETAIN") {
			t.Errorf("%v: settings resolved despite the problem", c.args)
		}
	}
}
