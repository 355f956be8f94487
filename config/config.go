// Package config owns nodeha's settings: the NODEHA_* environment (read with
// envconfig), the equivalent command-line flags (flags win), their defaults,
// the resolution of the advertise address from a go-sockaddr template, and a
// single Validate that reports every problem at once.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-sockaddr/template"
	"github.com/kelseyhightower/envconfig"

	"github.com/nodeha/nodeha/backup"
	"github.com/nodeha/nodeha/trust"
)

// DefaultImage is the Spilo image the seed recipe runs.
const DefaultImage = "ghcr.io/zalando/spilo-15:3.0-p1"

// Config is every setting of a nodeha host. Field tags give the environment
// variable (NODEHA_ + envconfig name), the flag, the default and the help
// text shown by --help and in the README's settings table.
type Config struct {
	Name      string   `envconfig:"NODEHA_NAME" flag:"name" desc:"Patroni member name of this host (default: the hostname)"`
	Peers     []string `envconfig:"NODEHA_PEERS" flag:"peers" desc:"comma-separated addresses of every host of the cluster, this host included"`
	Advertise string   `envconfig:"NODEHA_ADVERTISE" flag:"advertise" default:"{{ GetPrivateIP }}" desc:"this host's address: an IP or a go-sockaddr template resolving to exactly one address"`
	Scope     string   `envconfig:"NODEHA_SCOPE" flag:"scope" default:"postgres-patroni" desc:"Patroni scope (cluster name); the etcd keys live under /service/SCOPE"`
	PGVersion string   `envconfig:"NODEHA_PG_VERSION" flag:"pg-version" default:"15" desc:"PostgreSQL major version the image runs for a new data directory (Spilo's PGVERSION)"`
	Image     string   `envconfig:"NODEHA_IMAGE" flag:"image" default:"ghcr.io/zalando/spilo-15:3.0-p1" desc:"Spilo image to run"`
	Token     string   `envconfig:"NODEHA_TOKEN" flag:"token" secret:"true" desc:"the cluster's join token (nodeha token generate; the same on every host): the cluster CA and the passwords derive from it; stored in DATA_DIR/token (0600) at first start; a one-host new cluster without one generates it"`

	Join bool `envconfig:"NODEHA_JOIN" flag:"join" desc:"join the existing cluster of NODEHA_PEERS (they need not list this host) at first start, as an etcd learner promoted when caught up, instead of bootstrapping a new cluster; set by nodeha join; a host with etcd data restarts from it"`

	SuperuserPassword   string `envconfig:"NODEHA_SUPERUSER_PASSWORD" flag:"superuser-password" secret:"true" desc:"password of the PostgreSQL superuser postgres (default: derived from the token)"`
	ReplicationPassword string `envconfig:"NODEHA_REPLICATION_PASSWORD" flag:"replication-password" secret:"true" desc:"password of the replication user replicator (default: derived from the token)"`
	RewindPassword      string `envconfig:"NODEHA_REWIND_PASSWORD" flag:"rewind-password" secret:"true" desc:"password of the rewind user; the seed's rewind user is the replication user replicator, so it defaults to and must equal the replication password"`
	RestAPIPassword     string `envconfig:"NODEHA_RESTAPI_PASSWORD" flag:"restapi-password" secret:"true" desc:"password of the Patroni REST API user postgres (default: derived from the token)"`

	DataDir        string `envconfig:"NODEHA_DATA_DIR" flag:"data-dir" default:"/var/lib/nodeha" desc:"nodeha's state: etcd/ (the etcd member) and spilo/ (mounted on the container's /run, holds postgres.yml)"`
	PostgresDir    string `envconfig:"NODEHA_POSTGRES_DIR" flag:"postgres-dir" default:"/var/lib/postgresql/data" desc:"host directory mounted on the container's /var/lib/postgresql/data (PGDATA is pgdata/ inside)"`
	LogDir         string `envconfig:"NODEHA_LOG_DIR" flag:"log-dir" default:"/var/log/postgresql" desc:"host directory mounted on the container's /var/log/postgresql"`
	Socket         string `envconfig:"NODEHA_SOCKET" flag:"socket" default:"/run/nodeha/nodeha.sock" desc:"health socket (HTTP over a unix socket, mode 0660)"`
	SocketGroup    string `envconfig:"NODEHA_SOCKET_GROUP" flag:"socket-group" desc:"group (name or gid) whose members may read the health socket's report (nodeha status); the actions that change the cluster answer only root (default: root's group only)"`
	PatroniOverlay string `envconfig:"NODEHA_PATRONI_OVERLAY" flag:"patroni-overlay" desc:"YAML file deep-merged over the rendered postgres.yml (maps merge, lists and scalars replace)"`

	DockerHost    string        `envconfig:"NODEHA_DOCKER_HOST" flag:"docker-host" default:"unix:///var/run/docker.sock" desc:"Docker Engine API address"`
	ContainerName string        `envconfig:"NODEHA_CONTAINER_NAME" flag:"container-name" default:"nodeha-spilo" desc:"name of the Spilo container"`
	NetworkMode   string        `envconfig:"NODEHA_NETWORK_MODE" flag:"network-mode" default:"host" desc:"network mode of the Spilo container (host in production; container:NAME in tests)"`
	StopTimeout   time.Duration `envconfig:"NODEHA_STOP_TIMEOUT" flag:"stop-timeout" default:"120s" desc:"how long Patroni gets to stop PostgreSQL before the container is killed"`
	ShmSizeMB     int           `envconfig:"NODEHA_SHM_SIZE_MB" flag:"shm-size-mb" default:"1024" desc:"size of the container's /dev/shm in MiB"`
	PostgresUID   int           `envconfig:"NODEHA_POSTGRES_UID" flag:"postgres-uid" default:"101" desc:"uid of the postgres user inside the image; owns the host directories"`
	PostgresGID   int           `envconfig:"NODEHA_POSTGRES_GID" flag:"postgres-gid" default:"103" desc:"gid of the postgres group inside the image"`

	PatroniDeadAfter time.Duration `envconfig:"NODEHA_PATRONI_DEAD_AFTER" flag:"patroni-dead-after" default:"60s" desc:"restart the Spilo container (with backoff) when it runs but Patroni's REST API has not answered for this long since the container started or Patroni last answered (a busy Patroni, starting or recovering, still answers); 0 turns it off"`

	EtcdClientPort       int           `envconfig:"NODEHA_ETCD_CLIENT_PORT" flag:"etcd-client-port" default:"2379" desc:"etcd client port (advertise address and 127.0.0.1)"`
	EtcdPeerPort         int           `envconfig:"NODEHA_ETCD_PEER_PORT" flag:"etcd-peer-port" default:"2380" desc:"etcd peer port (advertise address)"`
	EtcdHeartbeat        time.Duration `envconfig:"NODEHA_ETCD_HEARTBEAT" flag:"etcd-heartbeat" default:"200ms" desc:"etcd heartbeat interval"`
	EtcdElection         time.Duration `envconfig:"NODEHA_ETCD_ELECTION_TIMEOUT" flag:"etcd-election-timeout" default:"2s" desc:"etcd election timeout"`
	EtcdCompaction       string        `envconfig:"NODEHA_ETCD_AUTO_COMPACTION" flag:"etcd-auto-compaction" default:"1h" desc:"etcd periodic auto-compaction retention"`
	EtcdSnapshotInterval time.Duration `envconfig:"NODEHA_ETCD_SNAPSHOT_INTERVAL" flag:"etcd-snapshot-interval" default:"6h" desc:"how often the etcd member writes a snapshot to DATA_DIR/snapshots (0 turns it off; nodeha snapshot takes one now)"`
	EtcdSnapshotRetain   int           `envconfig:"NODEHA_ETCD_SNAPSHOT_RETAIN" flag:"etcd-snapshot-retain" default:"5" desc:"how many etcd snapshots to keep (the oldest go first)"`
	PostgresPort         int           `envconfig:"NODEHA_POSTGRES_PORT" flag:"postgres-port" default:"5432" desc:"PostgreSQL port"`
	RWPort               int           `envconfig:"NODEHA_RW_PORT" flag:"rw-port" default:"5433" desc:"the read-write client endpoint: every TCP connection is forwarded to the current primary (0 turns it off)"`
	ROPort               int           `envconfig:"NODEHA_RO_PORT" flag:"ro-port" default:"5434" desc:"the read-only client endpoint: every TCP connection is forwarded to a healthy replica, the primary when there is none (0 turns it off)"`
	EndpointListen       string        `envconfig:"NODEHA_ENDPOINT_LISTEN" flag:"endpoint-listen" desc:"address the client endpoints listen on (default: every address, as PostgreSQL does)"`
	MetricsListen        string        `envconfig:"NODEHA_METRICS_LISTEN" flag:"metrics-listen" default:"127.0.0.1:9272" desc:"host:port of the Prometheus metrics (nodeha's, the etcd member's and Patroni's for this host): plain HTTP on a loopback address; on any other address (an empty host is every address) HTTPS with the host's certificate, and scrapers must show a certificate from nodeha metrics-cert; off turns it off"`
	VIP                  string        `envconfig:"NODEHA_VIP" flag:"vip" desc:"a floating IPv4 address with its prefix length (e.g. 10.0.0.100/24) that nodeha puts on this host while it is the primary, announced with gratuitous ARP, for clients that know one address (L2 networks; needs CAP_NET_ADMIN, which root has); empty: none"`
	VIPInterface         string        `envconfig:"NODEHA_VIP_INTERFACE" flag:"vip-interface" desc:"interface the floating address goes on (default: the one with the advertise address)"`
	BackupTarget         string        `envconfig:"NODEHA_BACKUP_TARGET" flag:"backup-target" desc:"where WAL is archived and base backups go: s3://BUCKET[/PREFIX] (with NODEHA_BACKUP_S3_*) or file:///PATH (a directory, e.g. an NFS mount); empty: no archive (see README: Backups)"`
	BackupS3Endpoint     string        `envconfig:"NODEHA_BACKUP_S3_ENDPOINT" flag:"backup-s3-endpoint" desc:"the S3 server's URL, https://HOST[:PORT] (plain http is refused: credentials and data would cross the network in clear text)"`
	BackupS3Region       string        `envconfig:"NODEHA_BACKUP_S3_REGION" flag:"backup-s3-region" default:"us-east-1" desc:"the S3 region the requests are signed for"`
	BackupS3CAFile       string        `envconfig:"NODEHA_BACKUP_S3_CA_FILE" flag:"backup-s3-ca-file" desc:"PEM file of the CA that signed the S3 server's certificate (default: the system's roots)"`
	BackupS3Credentials  string        `envconfig:"NODEHA_BACKUP_S3_CREDENTIALS_FILE" flag:"backup-s3-credentials-file" desc:"file (mode 0600) with AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines"`
	BackupKeyFile        string        `envconfig:"NODEHA_BACKUP_ENCRYPTION_KEY_FILE" flag:"backup-encryption-key-file" desc:"age identity file (mode 0600; nodeha backup keygen writes one): every archived object is encrypted to it; keep a copy off the cluster, without it nothing restores; empty: not encrypted"`
	BackupSchedule       time.Duration `envconfig:"NODEHA_BACKUP_SCHEDULE" flag:"backup-schedule" default:"24h" desc:"a base backup this often (from a healthy replica when there is one); 0 turns scheduled backups off"`
	BackupRetain         int           `envconfig:"NODEHA_BACKUP_RETAIN" flag:"backup-retain" default:"7" desc:"how many base backups to keep, with the WAL they need (the oldest go first)"`
	BackupRetainAge      time.Duration `envconfig:"NODEHA_BACKUP_RETAIN_AGE" flag:"backup-retain-age" default:"0s" desc:"also keep every base backup younger than this (0: the count alone decides)"`
	ArchiveFailingAfter  time.Duration `envconfig:"NODEHA_ARCHIVE_FAILING_AFTER" flag:"archive-failing-after" default:"5m" desc:"the cluster is reported unhealthy when WAL archiving has failed for this long"`
	ROMaxLagBytes        int           `envconfig:"NODEHA_RO_MAX_LAG" flag:"ro-max-lag" default:"16777216" desc:"the read-only endpoint's replicas are those at most this many bytes behind the primary"`
	RestAPIPort          int           `envconfig:"NODEHA_RESTAPI_PORT" flag:"restapi-port" default:"8008" desc:"Patroni REST API port"`
	TTL                  int           `envconfig:"NODEHA_TTL" flag:"ttl" default:"20" desc:"Patroni leader lease in seconds (seed: 45); applied when the cluster is bootstrapped"`
	LoopWait             int           `envconfig:"NODEHA_LOOP_WAIT" flag:"loop-wait" default:"1" desc:"Patroni loop period in seconds (seed: 15); applied when the cluster is bootstrapped"`
	RetryTimeout         int           `envconfig:"NODEHA_RETRY_TIMEOUT" flag:"retry-timeout" default:"4" desc:"Patroni DCS and PostgreSQL retry timeout in seconds (seed: 15); applied when the cluster is bootstrapped"`
	Synchronous          bool          `envconfig:"NODEHA_SYNCHRONOUS" flag:"synchronous" default:"true" desc:"Patroni synchronous_mode: a commit is acknowledged only once a standby has it, and only such a standby is promoted, so no acknowledged write is lost on a single fault (false: asynchronous, as in the recipe, faster commits but the last ones may be lost in a failover); applied when the cluster is bootstrapped, an existing cluster keeps its mode"`
	FailoverAssist       bool          `envconfig:"NODEHA_FAILOVER_ASSIST" flag:"failover-assist" default:"true" desc:"release the leader lock of a primary that is provably gone instead of waiting for its lease to expire (see README: Failover)"`
	TestHooks            bool          `envconfig:"NODEHA_TEST_HOOKS" flag:"test-hooks" desc:"tests only: serve POST /debug/hang on the health socket, which hangs the reconcile loop (to prove the systemd watchdog)"`
	LogLevel             string        `envconfig:"NODEHA_LOG_LEVEL" flag:"log-level" default:"info" desc:"debug, info, warn or error"`

	// SecretFlags are the secret settings given on the command line; set
	// by Load (commands warn about them).
	SecretFlags []string `ignored:"true"`
	// SocketGID is SocketGroup resolved (-1: none); set by Resolve.
	SocketGID int `ignored:"true"`
	// HostEtcdData and HostPostgresData say what this host holds; set by
	// Resolve.
	HostEtcdData     bool `ignored:"true"`
	HostPostgresData bool `ignored:"true"`
	// Backup is the archive's settings, files read; set by Resolve when
	// BackupTarget is set.
	Backup *backup.Settings `ignored:"true"`
	// AdvertiseIP is Advertise resolved; set by Resolve.
	AdvertiseIP netip.Addr `ignored:"true"`
	// Identity is the cluster's, from Token; set by Resolve.
	Identity *trust.Identity `ignored:"true"`
	// MayGenerateToken lets Validate make up a token for a one-host new
	// cluster (nodeha run); TokenGenerated says it did. Validate writes
	// nothing: the caller stores it.
	MayGenerateToken bool `ignored:"true"`
	TokenGenerated   bool `ignored:"true"`
	// ReplaceIdentity says the stored token and TLS files are another
	// cluster's but bind nothing (no etcd or PostgreSQL data): Start moves
	// them aside and stores the given token.
	ReplaceIdentity bool `ignored:"true"`
}

// TokenFile is where a host keeps its cluster's token.
func (c *Config) TokenFile() string { return filepath.Join(c.DataDir, "token") }

// TLSFiles are this host's certificates and keys.
func (c *Config) TLSFiles() trust.Files { return trust.FilesIn(filepath.Join(c.DataDir, "tls")) }

// Load reads the environment, then parses args with flags for every setting
// registered on fs; a flag given on the command line wins over the
// environment. It does not validate.
func Load(fs *flag.FlagSet, args []string) (*Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if c.Name == "" {
		c.Name, _ = os.Hostname()
	}
	c.Register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	c.Peers = splitList(c.Peers)
	c.SecretFlags = SecretFlagsGiven(fs)
	return &c, nil
}

// SecretFlagsGiven lists the secret settings (the token, the passwords)
// given as flags on fs's command line, where every local user can read
// them (ps, /proc/PID/cmdline).
func SecretFlagsGiven(fs *flag.FlagSet) []string {
	secret := map[string]bool{}
	for _, s := range Settings() {
		if s.Secret {
			secret[strings.TrimPrefix(s.Flag, "--")] = true
		}
	}
	var out []string
	fs.Visit(func(f *flag.Flag) {
		if secret[f.Name] {
			out = append(out, "--"+f.Name)
		}
	})
	return out
}

// Register binds a flag to every field of c, with c's current values as the
// defaults.
func (c *Config) Register(fs *flag.FlagSet) {
	v := reflect.ValueOf(c).Elem()
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("flag")
		if name == "" {
			continue
		}
		usage := f.Tag.Get("desc") + " (" + f.Tag.Get("envconfig") + ")"
		switch p := v.Field(i).Addr().Interface().(type) {
		case *string:
			if f.Tag.Get("secret") == "true" {
				// -h must not print a token or password from the environment.
				fs.Var((*secretString)(p), name, usage)
				continue
			}
			fs.StringVar(p, name, *p, usage)
		case *int:
			fs.IntVar(p, name, *p, usage)
		case *bool:
			fs.BoolVar(p, name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, name, *p, usage)
		case *[]string:
			fs.Func(name, usage, func(s string) error { *p = splitList([]string{s}); return nil })
		}
	}
}

// secretString is a string flag whose value is never shown (flag's
// PrintDefaults prints a default that is not the zero value).
type secretString string

func (s *secretString) String() string     { return "" }
func (s *secretString) Set(v string) error { *s = secretString(v); return nil }

// Setting describes one setting for documentation.
type Setting struct {
	Env, Flag, Default, Desc string
	Secret                   bool
	Type                     string // the Go kind: string, int, int64, bool, slice
}

// Settings lists every setting in declaration order.
func Settings() []Setting {
	t := reflect.TypeOf(Config{})
	var out []Setting
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("flag") == "" {
			continue
		}
		out = append(out, Setting{
			Env: f.Tag.Get("envconfig"), Flag: "--" + f.Tag.Get("flag"),
			Default: f.Tag.Get("default"), Desc: f.Tag.Get("desc"), Secret: f.Tag.Get("secret") == "true",
			Type: f.Type.Kind().String(),
		})
	}
	return out
}

func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// containerName is what Docker accepts as a container name.
var containerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// SettingError is a bad setting (or flag of a command): its one line names
// the variable and the flag and says what is wrong. Commands exit 2 on it.
type SettingError struct {
	Env  string // without NODEHA_
	Flag string // without --
	Err  error
}

func (e *SettingError) Error() string {
	if e.Env == "" {
		return fmt.Sprintf("--%s: %v", e.Flag, e.Err)
	}
	return fmt.Sprintf("NODEHA_%s (--%s): %v", e.Env, e.Flag, e.Err)
}

func (e *SettingError) Unwrap() error { return e.Err }

// Problem is a SettingError; format and args as fmt.Errorf's (%w wraps).
// env is the variable without NODEHA_ ("" for a flag of one command only).
func Problem(env, flagName, format string, args ...any) error {
	return &SettingError{Env: env, Flag: flagName, Err: fmt.Errorf(format, args...)}
}

func problem(env, flagName, format string, args ...any) error {
	return Problem(env, flagName, format, args...)
}

// Check is what commands run on loaded settings: Resolve, then Validate,
// every problem of both joined, one per line. It writes nothing.
func (c *Config) Check() error {
	return errors.Join(c.Resolve(), c.Validate())
}

// Resolve fills in what the settings leave to the host, reading and never
// writing: the advertise address (an IP, or a go-sockaddr template
// resolved against the interfaces), the host's state on disk (etcd data,
// a PostgreSQL data directory, the stored token and TLS identity), the
// token (the setting, the stored one, or a new one for a new one-host
// cluster) and the identity and passwords derived from it.
func (c *Config) Resolve() error {
	var errs []error
	c.readHostState()
	if ip, err := ResolveAddress(c.Advertise); err != nil {
		errs = append(errs, problem("ADVERTISE", "advertise", "%v", err))
	} else {
		c.AdvertiseIP = ip
	}
	errs = append(errs, c.resolveToken()...)
	if c.RewindPassword == "" {
		c.RewindPassword = c.ReplicationPassword
	}
	c.SocketGID = -1
	if c.SocketGroup != "" {
		if gid, err := lookupGroup(c.SocketGroup); err != nil {
			errs = append(errs, problem("SOCKET_GROUP", "socket-group", "%v", err))
		} else {
			c.SocketGID = gid
		}
	}
	if c.PatroniOverlay != "" {
		if st, err := os.Stat(c.PatroniOverlay); err != nil {
			errs = append(errs, problem("PATRONI_OVERLAY", "patroni-overlay", "%v", err))
		} else if st.IsDir() {
			errs = append(errs, problem("PATRONI_OVERLAY", "patroni-overlay", "%q is a directory, want a YAML file", c.PatroniOverlay))
		}
	}
	errs = append(errs, c.resolveBackup()...)
	return errors.Join(errs...)
}

// Validate checks the settings as loaded and resolved, and returns all
// problems joined, one per line. It reads nothing and writes nothing.
func (c *Config) Validate() error {
	var errs []error
	add := func(env, fl, format string, args ...any) { errs = append(errs, problem(env, fl, format, args...)) }

	if !validName(c.Name) {
		add("NAME", "name", "%q is not a valid member name (letters, digits, '-', '_', '.')", c.Name)
	}
	if !validName(c.Scope) {
		add("SCOPE", "scope", "%q is not a valid scope (letters, digits, '-', '_', '.')", c.Scope)
	}
	if n, err := strconv.Atoi(c.PGVersion); err != nil || n < 10 || n > 99 {
		add("PG_VERSION", "pg-version", "%q is not a PostgreSQL major version", c.PGVersion)
	}
	if c.Image == "" {
		add("IMAGE", "image", "is empty")
	}
	// The seed gives rewind and replication the same user (replicator):
	// Patroni would set that role's password twice, and the second one wins.
	if c.RewindPassword != "" && c.RewindPassword != c.ReplicationPassword {
		add("REWIND_PASSWORD", "rewind-password", "differs from NODEHA_REPLICATION_PASSWORD, but the rewind user is the replication user replicator: leave it unset or make them equal")
	}

	if len(c.Peers) == 0 {
		add("PEERS", "peers", "is required: the address of every host of the cluster, this host included")
	} else {
		seen := map[string]bool{}
		for i, p := range c.Peers {
			ip, err := netip.ParseAddr(p)
			if err != nil {
				// etcd members are named by address: every peer must be one.
				add("PEERS", "peers", "%q is not an IP address (give addresses without ports)", p)
				continue
			}
			p = ip.String()
			c.Peers[i] = p
			if seen[p] {
				add("PEERS", "peers", "%q is listed twice", p)
			}
			seen[p] = true
		}
		// A host that joins is given some existing hosts; one with etcd
		// data restarts from it, the list is then only where Patroni starts
		// looking (a host that joined restarts with `nodeha run`).
		if c.AdvertiseIP.IsValid() && !seen[c.AdvertiseIP.String()] && !c.Join && !c.HostEtcdData {
			add("PEERS", "peers", "does not contain this host's address %s (from NODEHA_ADVERTISE/--advertise)", c.AdvertiseIP)
		}
	}

	for _, d := range []struct{ v, env, fl string }{
		{c.DataDir, "DATA_DIR", "data-dir"},
		{c.PostgresDir, "POSTGRES_DIR", "postgres-dir"},
		{c.LogDir, "LOG_DIR", "log-dir"},
		{c.Socket, "SOCKET", "socket"},
	} {
		if !filepath.IsAbs(d.v) {
			add(d.env, d.fl, "%q must be an absolute path", d.v)
		}
	}
	if !containerName.MatchString(c.ContainerName) {
		add("CONTAINER_NAME", "container-name", "%q is not a name Docker accepts (a letter or digit, then letters, digits, '_', '.', '-')", c.ContainerName)
	}
	// PostgreSQL and Patroni must be reachable at the advertise address
	// (host) or share a network namespace that has it (container:NAME).
	if name, ok := strings.CutPrefix(c.NetworkMode, "container:"); !(c.NetworkMode == "host" || ok && containerName.MatchString(name)) {
		add("NETWORK_MODE", "network-mode", "%q: want host, or container:NAME (a container that holds this host's address)", c.NetworkMode)
	}
	// sun_path holds 108 bytes with the terminating NUL.
	if len(c.Socket) > 107 {
		add("SOCKET", "socket", "%q is %d bytes, longer than a unix socket path may be (107)", c.Socket, len(c.Socket))
	}
	if ip := c.AdvertiseIP; ip.IsValid() && (ip.IsUnspecified() || ip.IsMulticast()) {
		add("ADVERTISE", "advertise", "%s cannot be this host's address: give the address the other hosts reach it at", ip)
	}
	if c.StopTimeout < 10*time.Second {
		add("STOP_TIMEOUT", "stop-timeout", "%v is too short for Patroni to stop PostgreSQL cleanly (at least 10s)", c.StopTimeout)
	}
	// Below 10s a poll (every 2s, 2s timeout) or two lost to a loaded host
	// would restart a healthy container.
	if c.PatroniDeadAfter < 0 || (c.PatroniDeadAfter > 0 && c.PatroniDeadAfter < 10*time.Second) {
		add("PATRONI_DEAD_AFTER", "patroni-dead-after", "%v: want 0 (off) or at least 10s", c.PatroniDeadAfter)
	}
	if c.ShmSizeMB < 64 {
		add("SHM_SIZE_MB", "shm-size-mb", "%d is below 64", c.ShmSizeMB)
	}
	ports := map[int]string{}
	for _, p := range []struct {
		v       int
		env, fl string
	}{
		{c.EtcdClientPort, "ETCD_CLIENT_PORT", "etcd-client-port"},
		{c.EtcdPeerPort, "ETCD_PEER_PORT", "etcd-peer-port"},
		{c.PostgresPort, "POSTGRES_PORT", "postgres-port"},
		{c.RestAPIPort, "RESTAPI_PORT", "restapi-port"},
		{c.RWPort, "RW_PORT", "rw-port"},
		{c.ROPort, "RO_PORT", "ro-port"},
		{c.metricsPort(), "METRICS_LISTEN", "metrics-listen"},
	} {
		if p.v == 0 && (p.env == "RW_PORT" || p.env == "RO_PORT") {
			continue // off
		}
		if p.env == "METRICS_LISTEN" && (c.MetricsListen == "off" || p.v < 0) {
			continue // off, or not host:port (said below)
		}
		switch {
		case p.v < 1 || p.v > 65535:
			add(p.env, p.fl, "%d is not a port", p.v)
		case ports[p.v] != "":
			add(p.env, p.fl, "%d is also NODEHA_%s: every port must differ", p.v, ports[p.v])
		default:
			ports[p.v] = p.env
		}
	}
	if c.EndpointListen != "" {
		if _, err := netip.ParseAddr(c.EndpointListen); err != nil {
			add("ENDPOINT_LISTEN", "endpoint-listen", "%q is not an IP address", c.EndpointListen)
		}
	}
	if c.MetricsListen != "off" {
		if _, err := ParseListen(c.MetricsListen); err != nil {
			add("METRICS_LISTEN", "metrics-listen", "%v", err)
		}
	}
	if c.VIP != "" {
		if p, err := netip.ParsePrefix(c.VIP); err != nil {
			add("VIP", "vip", "%q is not an address with a prefix length (e.g. 10.0.0.100/24)", c.VIP)
		} else if !p.Addr().Is4() || p.Addr().IsLoopback() || p.Addr().IsUnspecified() || p.Addr().IsMulticast() || p.Bits() == 0 {
			add("VIP", "vip", "%q: want a unicast IPv4 address and its network's prefix length (IPv6 cannot float: nodeha sends gratuitous ARP, not neighbour advertisements)", c.VIP)
		} else if a := p.Addr().String(); a == c.AdvertiseIP.String() || slices.Contains(c.Peers, a) {
			add("VIP", "vip", "%s is a host's own address: the floating address must be one no host has", a)
		}
	} else if c.VIPInterface != "" {
		add("VIP_INTERFACE", "vip-interface", "is set but NODEHA_VIP is not")
	}
	if c.BackupSchedule < 0 || (c.BackupSchedule > 0 && c.BackupSchedule < time.Minute) {
		add("BACKUP_SCHEDULE", "backup-schedule", "%v: want 0 (off) or at least 1m", c.BackupSchedule)
	}
	if c.BackupRetain < 1 {
		add("BACKUP_RETAIN", "backup-retain", "%d: keep at least 1", c.BackupRetain)
	}
	if c.BackupRetainAge < 0 {
		add("BACKUP_RETAIN_AGE", "backup-retain-age", "%v is negative", c.BackupRetainAge)
	}
	if c.ArchiveFailingAfter < 10*time.Second {
		add("ARCHIVE_FAILING_AFTER", "archive-failing-after", "%v is below 10s", c.ArchiveFailingAfter)
	}
	if c.ROMaxLagBytes < 0 {
		add("RO_MAX_LAG", "ro-max-lag", "%d is negative", c.ROMaxLagBytes)
	}
	if c.PostgresUID < 0 {
		add("POSTGRES_UID", "postgres-uid", "%d is negative", c.PostgresUID)
	}
	if c.PostgresGID < 0 {
		add("POSTGRES_GID", "postgres-gid", "%d is negative", c.PostgresGID)
	}
	// Patroni's own rules: minimums, and loop_wait + 2*retry_timeout <= ttl.
	if c.TTL < 20 {
		add("TTL", "ttl", "%d is below Patroni's minimum of 20", c.TTL)
	}
	if c.LoopWait < 1 {
		add("LOOP_WAIT", "loop-wait", "%d is below Patroni's minimum of 1", c.LoopWait)
	}
	if c.RetryTimeout < 3 {
		add("RETRY_TIMEOUT", "retry-timeout", "%d is below Patroni's minimum of 3", c.RetryTimeout)
	}
	if c.LoopWait+2*c.RetryTimeout > c.TTL {
		add("TTL", "ttl", "%d is less than NODEHA_LOOP_WAIT + 2*NODEHA_RETRY_TIMEOUT (%d): a healthy primary could lose its lock", c.TTL, c.LoopWait+2*c.RetryTimeout)
	}
	if c.EtcdHeartbeat < 10*time.Millisecond {
		add("ETCD_HEARTBEAT", "etcd-heartbeat", "%v is below 10ms", c.EtcdHeartbeat)
	}
	if c.EtcdElection < 5*c.EtcdHeartbeat {
		add("ETCD_ELECTION_TIMEOUT", "etcd-election-timeout", "%v must be at least 5 heartbeats (%v)", c.EtcdElection, 5*c.EtcdHeartbeat)
	}
	if c.EtcdSnapshotInterval < 0 || (c.EtcdSnapshotInterval > 0 && c.EtcdSnapshotInterval < time.Minute) {
		add("ETCD_SNAPSHOT_INTERVAL", "etcd-snapshot-interval", "%v: want 0 (off) or at least 1m", c.EtcdSnapshotInterval)
	}
	if c.EtcdSnapshotRetain < 1 {
		add("ETCD_SNAPSHOT_RETAIN", "etcd-snapshot-retain", "%d: keep at least 1", c.EtcdSnapshotRetain)
	}
	if _, err := time.ParseDuration(c.EtcdCompaction); err != nil {
		add("ETCD_AUTO_COMPACTION", "etcd-auto-compaction", "%q is not a duration", c.EtcdCompaction)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("LOG_LEVEL", "log-level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	return errors.Join(errs...)
}

// ResolveAddress turns an IP literal or a go-sockaddr template into exactly
// one IP address.
func ResolveAddress(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, errors.New("is empty")
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip, nil
	}
	out, err := template.Parse(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("template %q: %v", s, err)
	}
	fields := strings.Fields(out)
	switch len(fields) {
	case 0:
		return netip.Addr{}, fmt.Errorf("template %q resolves to no address", s)
	case 1:
	default:
		sort.Strings(fields)
		return netip.Addr{}, fmt.Errorf("template %q resolves to %d addresses (%s), want exactly one", s, len(fields), strings.Join(fields, " "))
	}
	ip, err := netip.ParseAddr(fields[0])
	if err != nil {
		return netip.Addr{}, fmt.Errorf("template %q resolves to %q, not an IP address", s, fields[0])
	}
	return ip, nil
}

// ValidName tells whether s may be a member name or a scope.
func ValidName(s string) bool { return validName(s) }

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// ParseListen checks a listen address: host:port with an IP address (or
// an empty host, every address) and a port from 1 to 65535.
func ParseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not host:port (or off)", s)
	}
	ip := netip.IPv6Unspecified()
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.AddrPort{}, fmt.Errorf("%q: %q is not an IP address", s, host)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return netip.AddrPort{}, fmt.Errorf("%q: %q is not a port", s, port)
	}
	return netip.AddrPortFrom(ip, uint16(n)), nil
}

// metricsPort is the metrics port, -1 when off or unreadable.
func (c *Config) metricsPort() int {
	ap, err := ParseListen(c.MetricsListen)
	if c.MetricsListen == "off" || err != nil {
		return -1
	}
	return int(ap.Port())
}

// HostPort joins an address and a port, bracketing IPv6.
func HostPort(host string, port int) string {
	return net.JoinHostPort(host, fmt.Sprint(port))
}

// EtcdHosts is the etcd client endpoint of every peer, as Patroni's
// etcd3.hosts wants them.
func (c *Config) EtcdHosts() []string {
	var out []string
	for _, p := range c.AllPeers() {
		out = append(out, HostPort(p, c.EtcdClientPort))
	}
	return out
}

// AllPeers is Peers with this host's address added when it is missing (a
// host that joins is given the existing hosts only).
func (c *Config) AllPeers() []string {
	self := c.AdvertiseIP.String()
	if !c.AdvertiseIP.IsValid() || slices.Contains(c.Peers, self) {
		return c.Peers
	}
	return append(append([]string(nil), c.Peers...), self)
}

// OtherPeers is Peers without this host.
func (c *Config) OtherPeers() []string {
	var out []string
	for _, p := range c.Peers {
		if p != c.AdvertiseIP.String() {
			out = append(out, p)
		}
	}
	return out
}

// EtcdDir, SpiloDir are where nodeha keeps the etcd member and the files
// mounted on the Spilo container's /run.
func (c *Config) EtcdDir() string  { return filepath.Join(c.DataDir, "etcd") }
func (c *Config) SpiloDir() string { return filepath.Join(c.DataDir, "spilo") }

// SnapshotDir is where etcd snapshots are kept.
func (c *Config) SnapshotDir() string { return filepath.Join(c.DataDir, "snapshots") }

// ResolveToken is the token part of Resolve alone: for commands that need
// the cluster's secrets but not the rest of the settings.
func (c *Config) ResolveToken() error {
	c.readHostState()
	return errors.Join(c.resolveToken()...)
}

// readHostState notes whether this host holds etcd member data and a
// PostgreSQL data directory.
func (c *Config) readHostState() {
	c.HostEtcdData = HasEtcdData(c.EtcdDir())
	_, err := os.Stat(filepath.Join(c.PostgresDir, "pgdata", "PG_VERSION"))
	c.HostPostgresData = err == nil
}

// resolveToken finds the cluster token (the setting, else the one this
// host stored), derives the identity and the passwords not set explicitly,
// and checks that this host's stored identity is the token's cluster.
func (c *Config) resolveToken() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, problem("TOKEN", "token", format, args...)) }
	stored, err := trust.ReadToken(c.TokenFile())
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist):
		stored = ""
	case errors.Is(err, syscall.ENOTDIR):
		return []error{problem("DATA_DIR", "data-dir", "%q is not a directory", c.DataDir)}
	case errors.Is(err, os.ErrPermission):
		return []error{problem("DATA_DIR", "data-dir", "cannot read %s: permission denied (nodeha runs as root)", c.TokenFile())}
	default:
		add("cannot read the stored token: %v", err)
	}
	switch {
	case c.Token == "" && stored != "":
		c.Token = stored
	case c.Token != "" && stored != "" && c.Token != stored && !c.HasHostData():
		// A start that failed before this host formed anything (a new
		// one-host cluster with a generated token, say) stored a token
		// that binds nothing: the given one replaces it, and Start moves
		// the old identity aside.
		c.ReplaceIdentity = true
	case c.Token != "" && stored != "" && c.Token != stored:
		add("differs from the token stored in %s, of the cluster this host's etcd and PostgreSQL data belong to; to keep this host in its cluster, unset NODEHA_TOKEN/--token (or give that token: `nodeha token show`); to move it to another cluster, `nodeha leave` it first, then `nodeha join --token ...`", c.TokenFile())
		return errs
	case c.Token == "" && c.MayGenerateToken && !c.Join && len(c.Peers) == 1 && !c.HostEtcdData:
		c.Token, c.TokenGenerated = trust.GenerateToken(), true
	case c.Token == "":
		add("is required: run `nodeha token generate` once and give every host the same token (a new one-host cluster makes its own)")
		return errs
	}
	if err := trust.CheckToken(c.Token); err != nil {
		add("%v", err)
		return errs
	}
	id, err := trust.FromToken(c.Token)
	if err != nil {
		add("%v", err)
		return errs
	}
	if err := id.CheckHost(c.TLSFiles()); err != nil && !c.ReplaceIdentity {
		add("%v", err)
		return errs
	}
	c.Identity = id
	for _, p := range []struct {
		v       *string
		purpose string
	}{
		{&c.SuperuserPassword, "superuser"},
		{&c.ReplicationPassword, "replication"},
		{&c.RestAPIPassword, "restapi"},
	} {
		if *p.v == "" {
			*p.v = id.Password(p.purpose)
		}
	}
	return errs
}

// DerivedPassword reports whether the password of purpose ("superuser",
// "replication", "restapi") is the token's, not set explicitly.
func (c *Config) DerivedPassword(purpose, value string) bool {
	return c.Identity != nil && c.Identity.Password(purpose) == value
}

// lookupGroup resolves a group name or a numeric gid of this host.
func lookupGroup(g string) (int, error) {
	if gid, err := strconv.Atoi(g); err == nil && gid >= 0 {
		return gid, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("%q: no such group on this host", g)
	}
	return strconv.Atoi(grp.Gid)
}

// HasHostData reports whether this host has formed anything a token binds:
// etcd member data or a PostgreSQL data directory (as Resolve found them).
func (c *Config) HasHostData() bool { return c.HostEtcdData || c.HostPostgresData }

// HasEtcdData reports whether dir holds an etcd member's WAL.
func HasEtcdData(dir string) bool {
	ents, err := os.ReadDir(filepath.Join(dir, "member", "wal"))
	return err == nil && len(ents) > 0
}
