package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nodeha/nodeha/internal/atomicfile"
	"github.com/nodeha/nodeha/systemd"
)

// installFlags are the flags install and uninstall share.
type installFlags struct {
	unitDir, envFile, binary, systemctl string
	withBinary                          bool
}

func (f *installFlags) register(fs *flag.FlagSet, withBinary bool) {
	fs.StringVar(&f.unitDir, "unit-dir", systemd.DefaultUnitDir, "directory of the systemd unit "+systemd.UnitName)
	fs.StringVar(&f.envFile, "env-file", systemd.DefaultEnvFile, "the settings file the unit reads (mode 0600); install reads it first when it exists")
	f.withBinary = withBinary
	if withBinary {
		fs.StringVar(&f.binary, "binary", systemd.DefaultBinary, "where the nodeha binary is installed; the running binary is copied there when it is elsewhere")
	}
	fs.StringVar(&f.systemctl, "systemctl", "systemctl", "the systemctl command (tests use a fake)")
}

func (f *installFlags) check() error {
	var errs []error
	for _, p := range []struct{ v, fl string }{{f.unitDir, "unit-dir"}, {f.envFile, "env-file"}, {f.binary, "binary"}} {
		if p.fl == "binary" && !f.withBinary {
			continue
		}
		if !filepath.IsAbs(p.v) {
			errs = append(errs, fmt.Errorf("--%s: %q must be an absolute path", p.fl, p.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &exitError{2, err}
	}
	return nil
}

// checkSystemd fails when the real systemctl would: systemd is not this
// host's init (a fake systemctl, in tests, is taken as it is).
func (f *installFlags) checkSystemd() error {
	if f.systemctl == "systemctl" {
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			return errors.New("systemd is not running on this host (no /run/systemd/system); nothing was written: `nodeha install --dry-run` shows what would be installed")
		}
	}
	return nil
}

// systemctl runs the systemctl command. The real one needs a running
// systemd; say so in one line instead of systemctl's own message.
func (f *installFlags) run(stdout io.Writer, args ...string) error {
	if err := f.checkSystemd(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "+ systemctl %s\n", strings.Join(args, " "))
	cmd := exec.Command(f.systemctl, args...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return nil
}

// flagArg finds the value of --name in args before the flags are parsed
// (install must read the settings file before the settings are loaded).
func flagArg(args []string, name, def string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"-" + name, "--" + name} {
			if a == p && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, p+"="); ok {
				return v
			}
		}
	}
	return def
}

// loadEnvFile sets every NODEHA_* variable of the settings file at path that
// the environment does not already set: the precedence is flags, then the
// environment, then the file. A missing file is no error.
func loadEnvFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return &exitError{2, fmt.Errorf("--env-file: %w", err)}
	}
	vars, err := systemd.ParseEnv(b)
	if err != nil {
		return &exitError{2, fmt.Errorf("--env-file %s: %w", path, err)}
	}
	for k, v := range vars {
		if _, set := os.LookupEnv(k); !set {
			os.Setenv(k, v)
		}
	}
	return nil
}

func cmdInstall(args []string, stdout, stderr io.Writer) error {
	fset := newFlags("install", stderr)
	var f installFlags
	f.register(fset, true)
	dryRun := fset.Bool("dry-run", false, "print what would be written and run (passwords redacted); change nothing")
	if err := loadEnvFile(flagArg(args, "env-file", systemd.DefaultEnvFile)); err != nil {
		return err
	}
	cfg, err := loadWith(fset, args, true, true)
	if err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	env, err := systemd.RenderEnv(cfg, false)
	if err != nil {
		return &exitError{2, err}
	}
	unit := systemd.Unit{Binary: f.binary, EnvFile: f.envFile, StopTimeout: cfg.StopTimeout}.Render()
	unitPath := filepath.Join(f.unitDir, systemd.UnitName)

	self, err := os.Executable()
	if err == nil {
		self, err = filepath.EvalSymlinks(self)
	}
	if err != nil {
		return fmt.Errorf("install: find the running binary: %w", err)
	}
	target, err := filepath.EvalSymlinks(f.binary)
	if err != nil {
		target = f.binary
	}
	copyBinary := self != target

	if err := f.checkSystemd(); err != nil && !*dryRun {
		return err // before anything is written
	}
	if *dryRun {
		redacted, _ := systemd.RenderEnv(cfg, true)
		if copyBinary {
			fmt.Fprintf(stdout, "# would copy %s to %s (mode 0755)\n", self, f.binary)
		}
		fmt.Fprintf(stdout, "# would write %s (mode 0644)\n%s", unitPath, unit)
		fmt.Fprintf(stdout, "# would write %s (mode 0600)\n%s", f.envFile, redacted)
		fmt.Fprintf(stdout, "# would run: systemctl daemon-reload; systemctl enable %s; systemctl start --no-block %s (restart when an installed service's files change)\n", systemd.UnitName, systemd.UnitName)
		return nil
	}

	if copyBinary {
		b, err := os.ReadFile(self)
		if err != nil {
			return fmt.Errorf("install: %w", err)
		}
		if err := writeFile(f.binary, b, 0o755, 0o755); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "installed %s\n", f.binary)
	}
	_, err = os.Stat(unitPath)
	reinstall := err == nil
	changed := false
	for _, w := range []struct {
		path       string
		data       []byte
		mode, dirm fs.FileMode
	}{{f.envFile, env, 0o600, 0o700}, {unitPath, unit, 0o644, 0o755}} {
		if old, err := os.ReadFile(w.path); err == nil && bytes.Equal(old, w.data) {
			// Same content; still make sure of the mode (a hand-made file).
			if err := os.Chmod(w.path, w.mode); err != nil {
				return fmt.Errorf("install: %w", err)
			}
			continue
		}
		if err := writeFile(w.path, w.data, w.mode, w.dirm); err != nil {
			return err
		}
		changed = true
		fmt.Fprintf(stdout, "wrote %s\n", w.path)
	}
	if err := f.run(stdout, "daemon-reload"); err != nil {
		return err
	}
	if err := f.run(stdout, "enable", systemd.UnitName); err != nil {
		return err
	}
	// --no-block: a new cluster's first host is READY only once its peers
	// are up; `nodeha status --wait` is the bounded wait for scripts. A
	// changed unit or settings file of an installed service needs a restart
	// to apply (it stops PostgreSQL on this host cleanly); anything else
	// only a start (a no-op when it runs).
	verb := "start"
	if changed && reinstall {
		verb = "restart"
	}
	if err := f.run(stdout, verb, "--no-block", systemd.UnitName); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s; `nodeha status --wait` waits until this node is healthy\n", systemd.UnitName, verb+"ing")
	if copyBinary && reinstall && !changed {
		fmt.Fprintf(stdout, "a running nodeha keeps the old binary: to switch without restarting PostgreSQL, `systemctl kill -s SIGUSR2 %s && systemctl restart %s`\n", systemd.UnitName, systemd.UnitName)
	}
	return nil
}

func cmdUninstall(args []string, stdout, stderr io.Writer) error {
	fset := newFlags("uninstall", stderr)
	var f installFlags
	f.register(fset, false)
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{2, err}
	}
	if fset.NArg() > 0 {
		return &exitError{2, fmt.Errorf("unexpected argument %q", fset.Arg(0))}
	}
	if err := f.check(); err != nil {
		return err
	}
	unitPath := filepath.Join(f.unitDir, systemd.UnitName)
	if _, err := os.Stat(unitPath); err == nil {
		// Blocks until nodeha has stopped PostgreSQL cleanly and closed etcd.
		if err := f.run(stdout, "disable", "--now", systemd.UnitName); err != nil {
			return err
		}
	}
	for _, p := range []string{unitPath, f.envFile} {
		switch err := os.Remove(p); {
		case err == nil:
			fmt.Fprintf(stdout, "removed %s\n", p)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("uninstall: %w", err)
		}
	}
	if err := f.run(stdout, "daemon-reload"); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "left in place: the nodeha binary, the etcd and PostgreSQL data directories, the Spilo image")
	return nil
}

// writeFile writes data to path atomically with mode, creating the
// directory (with dirMode) when missing. The temporary file has mode from
// its creation, so a secret is never readable by others.
func writeFile(path string, data []byte, mode, dirMode fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := atomicfile.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}
