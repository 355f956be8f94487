package testcluster

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// SpiloStopExitCode is the exit code of a Spilo container stopped cleanly:
// the real launch.sh traps SIGTERM, stops Patroni and every runit service
// (Patroni shuts PostgreSQL down and releases its leader key), and then
// exits with the status of its interrupted `wait`, 128+15.
const SpiloStopExitCode = 143

// CheckCleanStop reports whether h's Spilo container was stopped cleanly:
// it exited with SpiloStopExitCode and PostgreSQL's control file says it
// was shut down (not "in production", which a crash leaves).
func (h *Host) CheckCleanStop(ctx context.Context) error {
	out, err := Docker(ctx, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", h.Spilo)
	if err != nil {
		return err
	}
	if want := fmt.Sprintf("exited %d", SpiloStopExitCode); out != want {
		return fmt.Errorf("spilo container %s: %q, want %q (launch.sh after SIGTERM)", h.Spilo, out, want)
	}
	state, err := h.ClusterState(ctx)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(state, "shut down") {
		return fmt.Errorf("PostgreSQL on %s: cluster state %q, want shut down", h.Name, state)
	}
	return nil
}

// ClusterState is "Database cluster state" of pg_controldata on h's data
// directory, read by a throwaway container of the Spilo image.
func (h *Host) ClusterState(ctx context.Context) (string, error) {
	pgdata := filepath.Join(h.Dir, "postgresql", "pgdata")
	out, err := Docker(ctx, "run", "--rm", "--network", "none", "-u", "101:103", "-v", pgdata+":/pgdata:ro",
		"--label", "io.nodeha.testcluster="+h.c.Opts.Prefix, "--entrypoint", "/bin/sh", h.c.Opts.SpiloImage,
		"-c", `exec "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)/pg_controldata" /pgdata`)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Database cluster state:"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("pg_controldata on %s: no cluster state in %q", h.Name, out)
}

// SpiloLogs is the last n lines of h's Spilo container's output, stdout
// and stderr (Patroni and runit write to stderr).
func (h *Host) SpiloLogs(ctx context.Context, n int) string {
	out, _ := exec.CommandContext(ctx, "docker", "logs", "--tail", strconv.Itoa(n), h.Spilo).CombinedOutput()
	return string(out)
}
