package spilo

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
			"PGVERSION=15",
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
	s := &Spec{Name: cfg.ContainerName, Config: c, HostConfig: hc}
	h := sha256.New()
	_ = json.NewEncoder(h).Encode(struct {
		C *container.Config
		H *container.HostConfig
	}{c, hc})
	h.Write(file)
	s.Hash = hex.EncodeToString(h.Sum(nil))[:16]
	c.Labels[LabelSpecHash] = s.Hash
	return s
}
