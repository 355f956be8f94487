package systemd

import (
	"bufio"
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/nodeha/nodeha/config"
)

// Defaults of `nodeha install`.
const (
	UnitName       = "nodeha.service"
	DefaultUnitDir = "/etc/systemd/system"
	DefaultEnvFile = "/etc/nodeha/nodeha.env"
	DefaultBinary  = "/usr/local/bin/nodeha"
	// Watchdog is the unit's WatchdogSec. nodeha pings at half of it while
	// its reconcile loop makes progress.
	Watchdog = 30 * time.Second
	// stopMargin is added to the container's stop timeout: systemd must
	// not kill nodeha while Patroni is still stopping PostgreSQL, and nodeha
	// still has etcd to close after the container is gone.
	stopMargin = 60 * time.Second
)

// Unit describes the systemd unit that runs `nodeha run`.
type Unit struct {
	Binary      string        // absolute path of the nodeha binary
	EnvFile     string        // absolute path of the settings file
	StopTimeout time.Duration // the container's stop timeout (NODEHA_STOP_TIMEOUT)
}

var unitTmpl = template.Must(template.New("unit").Parse(`# Written by ` + "`nodeha install`" + `; settings are in {{.EnvFile}}.
# Rewrite both with ` + "`nodeha install`" + `, remove them with ` + "`nodeha uninstall`" + `.
[Unit]
Description=nodeha: etcd member + Patroni/Spilo PostgreSQL container
Documentation=https://github.com/nodeha/nodeha
Requires=docker.service
After=docker.service network-online.target
Wants=network-online.target

[Service]
# READY is sent once the etcd member serves and the health socket answers.
Type=notify
NotifyAccess=main
EnvironmentFile={{.EnvFile}}
ExecStart={{.Binary}} run
Restart=on-failure
RestartSec=2
# The first hosts of a new cluster wait for each other to form etcd's quorum
# for as long as it takes; the watchdog, not a start timeout, catches a hang.
TimeoutStartSec=infinity
# nodeha pings only while its reconcile loop makes progress.
WatchdogSec={{.Watchdog}}
# Longer than the container's stop timeout ({{.StopTimeout}}): Patroni stops
# PostgreSQL cleanly and releases the leader key, then nodeha closes etcd.
TimeoutStopSec={{.TimeoutStop}}
# SIGTERM to nodeha only; it stops the container itself.
KillMode=mixed

[Install]
WantedBy=multi-user.target
`))

// Render returns the unit file.
func (u Unit) Render() []byte {
	var b bytes.Buffer
	err := unitTmpl.Execute(&b, map[string]string{
		"Binary": u.Binary, "EnvFile": u.EnvFile,
		"StopTimeout": seconds(u.StopTimeout),
		"TimeoutStop": seconds(u.StopTimeout + stopMargin),
		"Watchdog":    seconds(Watchdog),
	})
	if err != nil {
		panic(err) // the template is fixed; only a bug gets here
	}
	return b.Bytes()
}

func seconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "s"
}

// Redacted replaces secret values in RenderEnv's output.
const Redacted = "<redacted>"

// RenderEnv returns the settings file for cfg: the settings that differ
// from their defaults, plus the required ones (name, peers, passwords).
// With redact, secret values are replaced by Redacted (for --dry-run).
// The file is readable by systemd's EnvironmentFile= and by a POSIX
// shell (`set -a; . FILE`).
func RenderEnv(cfg *config.Config, redact bool) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# nodeha settings (see `nodeha run -h`); mode 0600: it holds the cluster token.\n")
	v := reflect.ValueOf(cfg).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		env, def := f.Tag.Get("envconfig"), f.Tag.Get("default")
		if env == "" || f.Tag.Get("flag") == "" {
			continue
		}
		val := format(v.Field(i))
		required := env == "NODEHA_NAME" || env == "NODEHA_PEERS" || env == "NODEHA_TOKEN"
		switch {
		case env == "NODEHA_TOKEN" && val == "":
			continue // a one-host new cluster makes its own
		case required:
		case derived(cfg, env, val):
			continue // the token gives it
		case f.Tag.Get("secret") == "true" && env != "NODEHA_REWIND_PASSWORD":
			// an explicit password
		case env == "NODEHA_REWIND_PASSWORD" && (val == "" || val == cfg.ReplicationPassword):
			continue // it follows the replication password
		case isDefault(v.Field(i), val, def):
			continue
		}
		if strings.ContainsAny(val, "\n\r\x00") {
			return nil, fmt.Errorf("%s (--%s): contains a line break, which a settings file cannot hold", env, f.Tag.Get("flag"))
		}
		if redact && f.Tag.Get("secret") == "true" && val != "" {
			val = Redacted
		}
		fmt.Fprintf(&b, "%s=%s\n", env, quote(val))
	}
	return b.Bytes(), nil
}

// derived reports whether a password setting is empty or the one the
// cluster token gives.
func derived(cfg *config.Config, env, val string) bool {
	purpose := map[string]string{
		"NODEHA_SUPERUSER_PASSWORD": "superuser", "NODEHA_REPLICATION_PASSWORD": "replication", "NODEHA_RESTAPI_PASSWORD": "restapi",
	}[env]
	return purpose != "" && (val == "" || cfg.DerivedPassword(purpose, val))
}

func format(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case []string:
		return strings.Join(x, ",")
	case time.Duration:
		return x.String()
	default:
		return fmt.Sprint(x)
	}
}

func isDefault(v reflect.Value, val, def string) bool {
	switch x := v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(def)
		return err == nil && d == x
	case bool:
		d, _ := strconv.ParseBool(def) // "" is false
		return x == d
	default:
		return val == def
	}
}

// quote writes val so that systemd and a POSIX shell read back the same
// string: bare when it is plain, else single quotes (no escapes in either),
// else double quotes with the four escapes both understand.
func quote(val string) string {
	plain := val != ""
	for _, r := range val {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.,:/@+=%", r)) {
			plain = false
			break
		}
	}
	switch {
	case plain:
		return val
	case !strings.Contains(val, "'"):
		return "'" + val + "'"
	default:
		r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`, "`", "\\`")
		return `"` + r.Replace(val) + `"`
	}
}

// ParseEnv reads a settings file written by RenderEnv (or by hand in the
// same syntax): KEY=VALUE lines, # comments, values bare, in single quotes
// or in double quotes with \\ \" \$ \` escapes. Only NODEHA_* keys are
// accepted.
func ParseEnv(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(strings.TrimPrefix(key, "export "))
		if !ok || !strings.HasPrefix(key, "NODEHA_") {
			return nil, fmt.Errorf("line %d: want NODEHA_NAME=VALUE", n)
		}
		val, err := unquote(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): %w", n, key, err)
		}
		out[key] = val
	}
	return out, sc.Err()
}

func unquote(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	switch s[0] {
	case '\'':
		if len(s) < 2 || s[len(s)-1] != '\'' || strings.Contains(s[1:len(s)-1], "'") {
			return "", fmt.Errorf("unbalanced single quote")
		}
		return s[1 : len(s)-1], nil
	case '"':
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			switch c := s[i]; c {
			case '\\':
				if i+1 < len(s)-1 {
					i++
					b.WriteByte(s[i])
				} else {
					return "", fmt.Errorf("dangling backslash")
				}
			case '"':
				if i != len(s)-1 {
					return "", fmt.Errorf("text after the closing double quote")
				}
				return b.String(), nil
			default:
				b.WriteByte(c)
			}
		}
		return "", fmt.Errorf("unbalanced double quote")
	default:
		if strings.ContainsAny(s, `'"\$`+"`") {
			return "", fmt.Errorf("quote values with quotes, backslashes or $ in them")
		}
		return s, nil
	}
}
