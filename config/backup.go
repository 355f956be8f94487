package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/nodeha/nodeha/backup"
)

// ContainerSocketDir is where PostgreSQL's unix socket is inside the
// container (host: SpiloDir/postgresql).
const ContainerSocketDir = "/run/postgresql"

// resolveBackup reads the archive's files (credentials, CA, key) into
// c.Backup. Every problem names its setting.
func (c *Config) resolveBackup() []error {
	var errs []error
	add := func(env, fl, format string, args ...any) { errs = append(errs, problem(env, fl, format, args...)) }
	if c.BackupTarget == "" {
		for _, s := range []struct{ env, fl, v string }{
			{"BACKUP_S3_ENDPOINT", "backup-s3-endpoint", c.BackupS3Endpoint},
			{"BACKUP_S3_CA_FILE", "backup-s3-ca-file", c.BackupS3CAFile},
			{"BACKUP_S3_CREDENTIALS_FILE", "backup-s3-credentials-file", c.BackupS3Credentials},
			{"BACKUP_ENCRYPTION_KEY_FILE", "backup-encryption-key-file", c.BackupKeyFile},
		} {
			if s.v != "" {
				add(s.env, s.fl, "is set but NODEHA_BACKUP_TARGET is not")
			}
		}
		return errs
	}
	s := &backup.Settings{Target: c.BackupTarget, S3Region: c.BackupS3Region, PGPort: c.PostgresPort, PGSocketDir: ContainerSocketDir}
	u, err := url.Parse(c.BackupTarget)
	switch {
	case err != nil:
		add("BACKUP_TARGET", "backup-target", "%q is not a URL", c.BackupTarget)
	case u.Scheme == "file":
		if u.Host != "" || !filepath.IsAbs(u.Path) {
			add("BACKUP_TARGET", "backup-target", "%q: want file:///ABSOLUTE/PATH", c.BackupTarget)
		} else if fi, err := os.Stat(u.Path); err != nil {
			add("BACKUP_TARGET", "backup-target", "%v", err)
		} else if !fi.IsDir() {
			add("BACKUP_TARGET", "backup-target", "%s is not a directory", u.Path)
		}
		if c.BackupS3Endpoint != "" || c.BackupS3Credentials != "" || c.BackupS3CAFile != "" {
			add("BACKUP_TARGET", "backup-target", "is a directory, but NODEHA_BACKUP_S3_* settings are set")
		}
	case u.Scheme == "s3":
		if u.Host == "" {
			add("BACKUP_TARGET", "backup-target", "%q names no bucket: want s3://BUCKET[/PREFIX]", c.BackupTarget)
		}
		if ep, err := url.Parse(c.BackupS3Endpoint); c.BackupS3Endpoint == "" {
			add("BACKUP_S3_ENDPOINT", "backup-s3-endpoint", "is required with an s3:// target")
		} else if err != nil || ep.Host == "" || ep.Scheme != "https" {
			add("BACKUP_S3_ENDPOINT", "backup-s3-endpoint", "%q: want https://HOST[:PORT] (plain http would send the credentials in clear text)", c.BackupS3Endpoint)
		} else {
			s.S3Endpoint = c.BackupS3Endpoint
		}
		if c.BackupS3Credentials == "" {
			add("BACKUP_S3_CREDENTIALS_FILE", "backup-s3-credentials-file", "is required with an s3:// target")
		} else if b, err := readSecretFile(c.BackupS3Credentials); err != nil {
			add("BACKUP_S3_CREDENTIALS_FILE", "backup-s3-credentials-file", "%v", err)
		} else if s.AccessKeyID, s.SecretAccessKey, err = backup.ParseCredentials(b); err != nil {
			add("BACKUP_S3_CREDENTIALS_FILE", "backup-s3-credentials-file", "%s: %v", c.BackupS3Credentials, err)
		}
		if c.BackupS3CAFile != "" {
			if b, err := os.ReadFile(c.BackupS3CAFile); err != nil {
				add("BACKUP_S3_CA_FILE", "backup-s3-ca-file", "%v", err)
			} else if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
				add("BACKUP_S3_CA_FILE", "backup-s3-ca-file", "%s holds no PEM certificate", c.BackupS3CAFile)
			} else {
				s.S3CA = string(b)
			}
		}
	default:
		add("BACKUP_TARGET", "backup-target", "%q: want s3://BUCKET[/PREFIX] or file:///PATH", c.BackupTarget)
	}
	if c.BackupKeyFile != "" {
		if b, err := readSecretFile(c.BackupKeyFile); err != nil {
			add("BACKUP_ENCRYPTION_KEY_FILE", "backup-encryption-key-file", "%v", err)
		} else if id, err := parseIdentity(b); err != nil {
			add("BACKUP_ENCRYPTION_KEY_FILE", "backup-encryption-key-file", "%s: %v", c.BackupKeyFile, err)
		} else {
			s.Identity = id
		}
	}
	if len(errs) == 0 {
		c.Backup = s
	}
	return errs
}

// readSecretFile reads a file that holds a secret, refusing one that other
// users may read.
func readSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is mode %04o: a secret must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	return os.ReadFile(path)
}

// parseIdentity takes the AGE-SECRET-KEY line of an age identity file
// (comments, as age-keygen writes them, are skipped).
func parseIdentity(b []byte) (string, error) {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if _, err := age.ParseX25519Identity(line); err != nil {
			return "", fmt.Errorf("not an age identity (AGE-SECRET-KEY-1...): %v", err)
		}
		return line, nil
	}
	return "", fmt.Errorf("holds no age identity")
}
