package spilo_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/spilo"
)

func renderSpec(t *testing.T, cfg *config.Config) (*spilo.Spec, []byte) {
	t.Helper()
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return spilo.NewSpec(cfg, file), file
}

func TestSpecContainer(t *testing.T) {
	cfg := testConfig(t, "--data-dir=/srv/nodeha", "--postgres-dir=/srv/pg", "--log-dir=/srv/pglog",
		"--container-name=pg", "--image=example/spilo:test", "--stop-timeout=150s", "--shm-size-mb=512")
	spec, _ := renderSpec(t, cfg)

	if spec.Name != "pg" || spec.Config.Image != "example/spilo:test" {
		t.Errorf("name %q, image %q", spec.Name, spec.Config.Image)
	}
	if spec.HostConfig.NetworkMode != "host" {
		t.Errorf("NetworkMode = %q, want host", spec.HostConfig.NetworkMode)
	}
	// Docker's own restart policy would race the runner's.
	if spec.HostConfig.RestartPolicy.Name != container.RestartPolicyDisabled {
		t.Errorf("RestartPolicy = %q, want no", spec.HostConfig.RestartPolicy.Name)
	}
	wantMounts := []mount.Mount{
		{Type: mount.TypeBind, Source: "/srv/nodeha/spilo", Target: "/run"},
		{Type: mount.TypeBind, Source: "/srv/pg", Target: "/var/lib/postgresql/data"},
		{Type: mount.TypeBind, Source: "/srv/pglog", Target: "/var/log/postgresql"},
	}
	if !slices.EqualFunc(spec.HostConfig.Mounts, wantMounts, func(a, b mount.Mount) bool {
		return a.Type == b.Type && a.Source == b.Source && a.Target == b.Target && !a.ReadOnly
	}) {
		t.Errorf("Mounts = %+v, want %+v", spec.HostConfig.Mounts, wantMounts)
	}
	for _, e := range []string{
		"ETCD3_HOSTS=10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379",
		"SCOPE=orders",
		"SPILO_PROVIDER=local",
		"PGDATA=/var/lib/postgresql/data/pgdata",
		"RW_DIR=/run",
	} {
		if !slices.Contains(spec.Config.Env, e) {
			t.Errorf("Env lacks %s: %q", e, spec.Config.Env)
		}
	}
	if st := spec.Config.StopTimeout; st == nil || *st != 150 {
		t.Errorf("StopTimeout = %v, want 150", st)
	}
	if spec.HostConfig.ShmSize != 512<<20 {
		t.Errorf("ShmSize = %d, want 512 MiB", spec.HostConfig.ShmSize)
	}
	labels := spec.Config.Labels
	if labels[spilo.LabelManaged] != "true" || labels[spilo.LabelScope] != "orders" || labels[spilo.LabelMember] != "pg-node-1" {
		t.Errorf("Labels = %v", labels)
	}
	if spec.Hash == "" || labels[spilo.LabelSpecHash] != spec.Hash {
		t.Errorf("spec-hash label %q, Hash %q: want the hash on the container", labels[spilo.LabelSpecHash], spec.Hash)
	}
}

func TestSpecHoldsNoSecret(t *testing.T) {
	cfg := testConfig(t)
	spec, file := renderSpec(t, cfg)
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range passwords {
		// The file carries the password, so the spec had every chance to.
		if !strings.Contains(string(file), p) {
			t.Fatalf("rendered file lacks %s: the test proves nothing", p)
		}
		if strings.Contains(string(b), p) {
			t.Errorf("container spec contains the password %s:\n%s", p, b)
		}
	}
	for _, e := range spec.Config.Env {
		if strings.Contains(e, "PASSWORD") {
			t.Errorf("container environment has %s", e)
		}
	}
}

func TestSpecHash(t *testing.T) {
	cfg := testConfig(t)
	file, err := spilo.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	base := spilo.NewSpec(cfg, file).Hash
	if again := spilo.NewSpec(cfg, file).Hash; again != base {
		t.Errorf("hash not stable: %s then %s", base, again)
	}
	if again, _ := renderSpec(t, testConfig(t)); again.Hash != base {
		t.Errorf("hash of an equal config rendered again = %s, want %s", again.Hash, base)
	}

	changedFile := append(append([]byte{}, file...), "extra_key: 1\n"...)
	if h := spilo.NewSpec(cfg, changedFile).Hash; h == base {
		t.Error("hash unchanged when postgres.yml changed")
	}
	// nodeha's own comments in the file (say, a reworded header in a new
	// version) must not recreate a running container.
	commented := append([]byte("# another header\n"), file...)
	if h := spilo.NewSpec(cfg, commented).Hash; h != base {
		t.Error("hash changed when only a comment of postgres.yml changed")
	}
	newPassword, _ := renderSpec(t, testConfig(t, "--superuser-password=another-one"))
	if newPassword.Hash == base {
		t.Error("hash unchanged when a password (and so the file) changed")
	}
	newImage, _ := renderSpec(t, testConfig(t, "--image=ghcr.io/zalando/spilo-17:4.0-p3"))
	if newImage.Hash == base {
		t.Error("hash unchanged when the image changed")
	}
	newShm, _ := renderSpec(t, testConfig(t, "--shm-size-mb=2048"))
	if newShm.Hash == base {
		t.Error("hash unchanged when the host config changed")
	}
}
