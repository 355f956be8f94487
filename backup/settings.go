package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Settings is what the archive needs, in one file that only the postgres
// user of the container (and root) can read: the target, the S3 endpoint
// and credentials, the CA and the encryption key. The credentials never go
// through the container's environment or a command line.
type Settings struct {
	Target          string `json:"target"` // s3://BUCKET[/PREFIX] or file:///PATH
	S3Endpoint      string `json:"s3_endpoint,omitempty"`
	S3Region        string `json:"s3_region,omitempty"`
	S3CA            string `json:"s3_ca,omitempty"` // PEM
	AccessKeyID     string `json:"access_key_id,omitempty"`
	SecretAccessKey string `json:"secret_access_key,omitempty"`
	// Identity is an age X25519 identity (AGE-SECRET-KEY-1...): every
	// object is encrypted to its recipient. Empty: not encrypted.
	Identity string `json:"identity,omitempty"`
	// PGPort and PGSocketDir reach the local PostgreSQL for base backups.
	PGPort      int    `json:"pg_port,omitempty"`
	PGSocketDir string `json:"pg_socket_dir,omitempty"`
	// PartSize is the size of one part of a base backup (default 64 MiB).
	PartSize int `json:"part_size,omitempty"`
}

// ReadSettings reads the settings file at path.
func ReadSettings(path string) (*Settings, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backup: settings: %w", err)
	}
	var s Settings
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("backup: settings %s: %w", path, err)
	}
	return &s, nil
}

// Marshal is the settings file's content.
func (s *Settings) Marshal() ([]byte, error) { return json.MarshalIndent(s, "", "  ") }

// ParseCredentials reads an S3 credentials file: lines KEY=VALUE with
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the names the AWS tools
// use; blank lines and # comments are skipped).
func ParseCredentials(b []byte) (id, secret string, err error) {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return "", "", errors.New("a line is not KEY=VALUE")
		}
		k, v = strings.TrimSpace(strings.TrimPrefix(k, "export ")), strings.Trim(strings.TrimSpace(v), `"'`)
		switch k {
		case "AWS_ACCESS_KEY_ID":
			id = v
		case "AWS_SECRET_ACCESS_KEY":
			secret = v
		}
	}
	if id == "" || secret == "" {
		return "", "", errors.New("it needs the lines AWS_ACCESS_KEY_ID=KEY and AWS_SECRET_ACCESS_KEY=SECRET")
	}
	return id, secret, nil
}
