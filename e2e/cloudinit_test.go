//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// TestCloudInit boots three fresh systemd machines at once, each with the
// user-data `nodeha cloud-init` generated for it in a NoCloud seed
// directory, and lets Debian's real cloud-init do the rest: the settings
// file, the binary (downloaded from a web server on the private network and
// checked against its SHA-256), `nodeha install`, `nodeha status --wait`.
// Nothing is done by hand after boot. The web server stands in for a
// release URL so that the test needs no internet; Docker is "present"
// because the machine's engine socket is mounted, so the user-data skips
// `apt-get install docker.io`.
func TestCloudInit(t *testing.T) {
	ctx := context.Background()
	c := sdCluster(t, ctx)

	bin, err := os.ReadFile(nodehaBin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	webIP := addr(sdNet, 5)
	if _, err := testcluster.Docker(ctx, "run", "-d", "--name", c.Opts.Prefix+"-http", "--network", c.Network(), "--ip", webIP,
		"--label", "io.nodeha.testcluster="+c.Opts.Prefix, "-v", filepath.Dir(nodehaBin)+":/srv:ro",
		spiloImage, "python3", "-m", "http.server", "8080", "--bind", webIP, "--directory", "/srv"); err != nil {
		t.Fatal(err)
	}
	url := "http://" + webIP + ":8080/" + filepath.Base(nodehaBin)

	for _, h := range c.Hosts {
		ud, err := runBin(ctx, h.Env(), "cloud-init", "--binary-url="+url, "--binary-sha256="+hex.EncodeToString(sum[:]), "--wait=5m")
		if err != nil {
			t.Fatal(err)
		}
		seed := filepath.Join(h.Dir, "seed")
		os.MkdirAll(seed, 0o700)
		meta := fmt.Sprintf("instance-id: %s-%s\nlocal-hostname: %s\n", c.Opts.Prefix, h.Name, h.Name)
		if err := os.WriteFile(filepath.Join(seed, "user-data"), []byte(ud), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(seed, "meta-data"), []byte(meta), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// First boot of all three machines, as a cloud would start them.
	boot := time.Now()
	each(t, c, func(h *testcluster.Host) error {
		return bootHost(ctx, c, h, "-v", filepath.Join(h.Dir, "seed")+":/var/lib/cloud/seed/nocloud:ro")
	})
	leader, err := c.WaitWhole(ctx, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	whole := time.Since(boot)
	t.Logf("first boot to a primary (%s) and two streaming replicas: %.1fs", leader.Name, whole.Seconds())

	each(t, c, func(h *testcluster.Host) error {
		// cloud-init is done only once `nodeha status --wait` said healthy.
		out, err := sdExec(ctx, h, "cloud-init", "status", "--wait", "--long")
		if err != nil || !strings.Contains(out, "status: done") {
			log, _ := sdExec(ctx, h, "tail", "-n", "40", "/var/log/cloud-init-output.log")
			return fmt.Errorf("%s: cloud-init status: %v\n%s\n%s", h.Name, err, out, log)
		}
		if !strings.Contains(out, "DataSourceNoCloud") {
			return fmt.Errorf("%s: cloud-init did not use the NoCloud seed:\n%s", h.Name, out)
		}
		log, _ := sdExec(ctx, h, "cat", "/var/log/cloud-init-output.log")
		if h == c.Hosts[0] {
			t.Logf("%s: cloud-init status:\n%s\n/var/log/cloud-init-output.log:\n%s", h.Name, out, log)
		}
		// cloud-init checks the merged cloud-config against its schema at
		// boot and warns here when anything is off.
		if strings.Contains(log, "Invalid cloud-config") {
			return fmt.Errorf("%s: cloud-init found the cloud-config invalid:\n%s", h.Name, log)
		}
		for _, want := range []string{"/usr/local/bin/nodeha.download: OK", "wrote /etc/systemd/system/nodeha.service", "nodeha: healthy after"} {
			if !strings.Contains(log, want) {
				return fmt.Errorf("%s: cloud-init output lacks %q:\n%s", h.Name, want, log)
			}
		}
		// install found the settings file cloud-init wrote and left it as
		// it was (no "wrote /etc/nodeha/nodeha.env").
		if strings.Contains(log, "wrote /etc/nodeha/nodeha.env") {
			return fmt.Errorf("%s: install rewrote the settings file from the user-data:\n%s", h.Name, log)
		}
		if out, _ := sdExec(ctx, h, "stat", "-c", "%a", "/etc/nodeha/nodeha.env", "/etc/nodeha/patroni-overlay.yml"); out != "600\n600" {
			return fmt.Errorf("%s: settings file modes %q", h.Name, out)
		}
		if p, err := unitProps(ctx, h, "ActiveState", "UnitFileState"); err != nil || p["ActiveState"] != "active" || p["UnitFileState"] != "enabled" {
			return fmt.Errorf("%s: nodeha.service %v %v", h.Name, p, err)
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "healthy after") {
				t.Logf("%s: %s", h.Name, l)
			}
		}
		return nil
	})
	if err := c.WaitHealthy(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	// The overlay traveled in the user-data: the test image's preload list.
	if got, err := leader.Psql(ctx, "show shared_preload_libraries"); err != nil || strings.Contains(got, "bg_mon") {
		t.Errorf("shared_preload_libraries = %q (%v): the overlay from the user-data is not applied", got, err)
	}

	// A fourth VM joins the running cluster from its user-data alone
	// (`nodeha cloud-init --join`, the cluster's token in the environment).
	h4 := c.NewHost("NODEHA_JOIN=true")
	if err := os.MkdirAll(h4.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(overlayYML); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(filepath.Join(h4.Dir, "overlay.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ud, err := runBin(ctx, h4.Env(), "cloud-init", "--binary-url="+url, "--binary-sha256="+hex.EncodeToString(sum[:]), "--wait=5m")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ud, "NODEHA_JOIN=true") || !strings.Contains(ud, "NODEHA_TOKEN="+c.Token) {
		t.Fatalf("join user-data lacks NODEHA_JOIN or the token:\n%s", ud)
	}
	seed := filepath.Join(h4.Dir, "seed")
	os.MkdirAll(seed, 0o700)
	os.WriteFile(filepath.Join(seed, "user-data"), []byte(ud), 0o600)
	os.WriteFile(filepath.Join(seed, "meta-data"), []byte(fmt.Sprintf("instance-id: %s-%s\nlocal-hostname: %s\n", c.Opts.Prefix, h4.Name, h4.Name)), 0o600)
	boot = time.Now()
	if err := bootHost(ctx, c, h4, "-v", seed+":/var/lib/cloud/seed/nocloud:ro"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitWhole(ctx, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("first boot of %s (user-data with --join) to a streaming replica of the running cluster: %.1fs", h4.Name, time.Since(boot).Seconds())
	if out, err := sdExec(ctx, h4, "cloud-init", "status", "--wait"); err != nil || !strings.Contains(out, "status: done") {
		log, _ := sdExec(ctx, h4, "tail", "-n", "30", "/var/log/cloud-init-output.log")
		t.Fatalf("%s: cloud-init status: %v %s\n%s", h4.Name, err, out, log)
	}
	eventually(t, time.Minute, func() error {
		rep, err := h4.Health(ctx)
		if err != nil {
			return err
		}
		if e := rep.Etcd; !rep.Healthy || e == nil || e.Voters != 4 || e.Learner {
			return fmt.Errorf("%s: healthy %v, etcd %+v, want a voter of four", h4.Name, rep.Healthy, rep.Etcd)
		}
		return nil
	})
}

// TestCloudInitEmbedded boots one machine whose user-data carries the
// nodeha binary itself (--embed-binary: gzip + base64, no download) and
// is a one-host cluster (--peers with its own address only).
func TestCloudInitEmbedded(t *testing.T) {
	ctx := context.Background()
	c := sdCluster(t, ctx)
	h := c.Hosts[0]
	ud, err := runBin(ctx, h.Env(), "cloud-init", "--peers="+h.IP, "--embed-binary="+nodehaBin, "--wait=5m")
	if err != nil {
		t.Fatal(err)
	}
	seed := filepath.Join(h.Dir, "seed")
	os.MkdirAll(seed, 0o700)
	os.WriteFile(filepath.Join(seed, "user-data"), []byte(ud), 0o600)
	os.WriteFile(filepath.Join(seed, "meta-data"), []byte("instance-id: "+c.Opts.Prefix+"-embedded\nlocal-hostname: "+h.Name+"\n"), 0o600)
	t.Logf("user-data with the embedded binary: %.1f MB", float64(len(ud))/1e6)

	boot := time.Now()
	if err := bootHost(ctx, c, h, "-v", seed+":/var/lib/cloud/seed/nocloud:ro"); err != nil {
		t.Fatal(err)
	}
	if err := waitBooted(ctx, h, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err := sdExec(ctx, h, "cloud-init", "status", "--wait")
	log, _ := sdExec(ctx, h, "tail", "-n", "15", "/var/log/cloud-init-output.log")
	if err != nil || !strings.Contains(out, "status: done") || !strings.Contains(log, "nodeha: healthy after") || strings.Contains(log, "Invalid cloud-config") {
		t.Fatalf("cloud-init: %v %s\n%s", err, out, log)
	}
	t.Logf("first boot to healthy one-host cluster: %.1fs", time.Since(boot).Seconds())
	if got, err := h.Psql(ctx, "select pg_is_in_recovery()"); err != nil || got != "f" {
		t.Errorf("pg_is_in_recovery() = %q (%v), want a primary", got, err)
	}
	if got, _ := sdExec(ctx, h, "sha256sum", "/usr/local/bin/nodeha"); !strings.HasPrefix(got, fileSHA(t, nodehaBin)) {
		t.Errorf("installed binary differs from the embedded one: %s", got)
	}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
