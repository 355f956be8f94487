package spilo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"

	"github.com/nodeha/nodeha/config"
)

// Labels nodeha puts on the container it owns.
const (
	LabelManaged  = "io.nodeha.managed"
	LabelSpecHash = "io.nodeha.spec-hash"
	LabelScope    = "io.nodeha.scope"
	LabelMember   = "io.nodeha.member"
)

// Spec is the container nodeha wants on this host. It holds no secret: the
// passwords reach Patroni only through postgres.yml, never the environment.
type Spec struct {
	Name       string                `json:"name"`
	Config     *container.Config     `json:"config"`
	HostConfig *container.HostConfig `json:"host_config"`
	// Hash covers Config, HostConfig and the rendered postgres.yml: any
	// change recreates the container.
	Hash string `json:"hash"`
}

// NewSpec builds the container spec for cfg and the rendered file.
func NewSpec(cfg *config.Config, file []byte) *Spec {
	stop := int(cfg.StopTimeout.Seconds())
	c := &container.Config{
		Image: cfg.Image,
		Env: []string{
			// The seed's environment.
			"PGDATA=" + ContainerPostgresDir + "/pgdata",
			"PGLOG=" + ContainerPostgresDir + "/pg_log",
			"PGUSER_SUPERUSER=postgres",
			"PGVERSION=" + cfg.PGVersion,
			"PGHOME=/home/postgres",
			"RW_DIR=" + ContainerRunDir,
			"PGROOT=/home/postgres/pgdata/pgroot",
			// Naming a DCS keeps Spilo from starting an etcd of its own.
			"SCOPE=" + cfg.Scope,
			"ETCD3_HOSTS=" + strings.Join(cfg.EtcdHosts(), ","),
			// No cloud metadata probe, no cloud-specific behaviour.
			"SPILO_PROVIDER=local",
		},
		StopTimeout: &stop,
		Labels: map[string]string{
			LabelManaged: "true",
			LabelScope:   cfg.Scope,
			LabelMember:  cfg.Name,
		},
	}
	hc := &container.HostConfig{
		NetworkMode:   container.NetworkMode(cfg.NetworkMode),
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		ShmSize:       int64(cfg.ShmSizeMB) << 20,
		Mounts: []mount.Mount{
			// A directory, not the file: an atomic rename on the host must
			// be seen inside. Spilo reads $RW_DIR/postgres.yml = /run/postgres.yml.
			{Type: mount.TypeBind, Source: cfg.SpiloDir(), Target: ContainerRunDir},
			{Type: mount.TypeBind, Source: cfg.PostgresDir, Target: ContainerPostgresDir},
			{Type: mount.TypeBind, Source: cfg.LogDir, Target: ContainerLogDir},
		},
	}
	if cfg.Backup != nil {
		// A directory target is reached at the same path inside.
		if u, err := url.Parse(cfg.Backup.Target); err == nil && u.Scheme == "file" {
			hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: u.Path, Target: u.Path})
		}
	}
	s := &Spec{Name: cfg.ContainerName, Config: c, HostConfig: hc}
	s.Hash = specHash(c, hc, file)
	c.Labels[LabelSpecHash] = s.Hash
	return s
}

// specHash covers what decides the container's behaviour, in a form of our
// own: a new version of the Docker client types, or of nodeha's comments in
// the file, must not recreate a running container (and restart PostgreSQL).
func specHash(c *container.Config, hc *container.HostConfig, file []byte) string {
	in := struct {
		Image, NetworkMode string
		Env                []string
		Mounts             [][2]string
		ShmSize            int64
		StopTimeout        int
		File               string
	}{Image: c.Image, NetworkMode: string(hc.NetworkMode), Env: c.Env, ShmSize: hc.ShmSize, StopTimeout: *c.StopTimeout}
	for _, m := range hc.Mounts {
		in.Mounts = append(in.Mounts, [2]string{m.Source, m.Target})
	}
	var body []string
	for _, l := range strings.Split(string(file), "\n") {
		if !strings.HasPrefix(l, "#") {
			body = append(body, l)
		}
	}
	in.File = strings.Join(body, "\n")
	b, _ := json.Marshal(in)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}
