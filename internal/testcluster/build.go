package testcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildNodehaImage builds the static nodeha binary from the module at
// root and a FROM scratch image tag holding only it. It returns the
// binary's path (in dir).
func BuildNodehaImage(ctx context.Context, root, dir, tag string) (string, error) {
	bin := filepath.Join(dir, "nodeha")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	df := "FROM scratch\nCOPY nodeha /nodeha\nENTRYPOINT [\"/nodeha\"]\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return "", err
	}
	if _, err := Docker(ctx, "build", "-q", "-t", tag, dir); err != nil {
		return "", err
	}
	return bin, nil
}

// RequireImage fails when image is not present locally.
func RequireImage(ctx context.Context, image string) error {
	if _, err := Docker(ctx, "image", "inspect", image); err != nil {
		return fmt.Errorf("image %s is missing: build it with `bash testimage/build.sh` (make image)", image)
	}
	return nil
}
