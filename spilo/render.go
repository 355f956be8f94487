package spilo

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/nodeha/nodeha/config"
)

//go:embed postgres.seed.yml
var seedYAML []byte

// Paths inside the container. They are the seed's, whatever the host paths.
const (
	ContainerRunDir      = "/run"
	ContainerPostgresDir = "/var/lib/postgresql/data"
	ContainerLogDir      = "/var/log/postgresql"
	ConfigFile           = "postgres.yml"
	// ContainerTLSDir holds Patroni's etcd client certificate, key and the
	// cluster CA (host: SpiloDir/etcd-tls).
	ContainerTLSDir = ContainerRunDir + "/" + tlsDirName
	tlsDirName      = "etcd-tls"
	// ContainerCertDir holds PostgreSQL's and the REST API's server
	// certificate and key (host: SpiloDir/certs), where Spilo looks for
	// PostgreSQL's.
	ContainerCertDir = ContainerRunDir + "/certs"
)

// NoArchive is the archive_command of a cluster with no backup target.
const NoArchive = "/bin/true"

// The archive inside the container: nodeha's own binary (copied to
// SpiloDir/bin) and its settings file (SpiloDir/backup, postgres's alone).
const (
	ContainerBinary   = ContainerRunDir + "/bin/nodeha"
	ContainerSettings = ContainerRunDir + "/backup/settings.json"
)

// renderArchive points PostgreSQL's archive and restore at the backup
// target (README, Backups). Local parameters, which win over the cluster's
// (bootstrap.dcs sets /bin/true for a new cluster).
func renderArchive(pg, params map[string]any) {
	params["archive_command"] = ContainerBinary + " wal-push %p"
	// Every host archives what it has (a replica the WAL it received): the
	// segments a dead primary had not archived yet are pushed by the
	// replica that takes over, so a failover leaves no gap. A segment
	// already there with the same content is a no-op.
	params["archive_mode"] = "always"
	// At most a minute of WAL waits for its segment to fill (the seed's
	// 1800s would be the worst-case loss of a total-loss restore).
	params["archive_timeout"] = "60s"
	rc := path(pg, "recovery_conf")
	rc["restore_command"] = ContainerBinary + " wal-fetch %f %p"
	// A new replica (a join, a rebuilt host) from the newest base backup
	// and the archived WAL, sparing the primary a full copy; Patroni falls
	// back to pg_basebackup from the primary when there is none (the
	// command fails).
	pg["create_replica_method"] = []any{"nodeha_backup", "basebackup"}
	pg["nodeha_backup"] = map[string]any{"command": ContainerBinary + " backup-fetch --latest"}
}

// RestoreMethod is the Patroni custom bootstrap that makes a new cluster
// from a base backup and the archived WAL, up to a point in time (zero:
// the end of the archive).
type RestoreMethod struct {
	Backup string
	Target time.Time
	// Immediate stops the replay at the end of the backup.
	Immediate bool
}

// RenderRestore is Render with bootstrap.method set to restore m: while
// the cluster has no initialize key (its keys were wiped for the restore),
// the host that wins Patroni's race fetches the backup and replays the WAL
// to the target, then promotes; the others make replicas of it.
func RenderRestore(cfg *config.Config, m RestoreMethod) ([]byte, error) {
	doc, err := renderMap(cfg)
	if err != nil {
		return nil, err
	}
	b := path(doc, "bootstrap")
	b["method"] = "nodeha_restore"
	rc := map[string]any{
		"restore_command":          ContainerBinary + " wal-fetch %f %p",
		"recovery_target_action":   "promote",
		"recovery_target_timeline": "latest",
	}
	if m.Immediate {
		rc["recovery_target"] = "immediate"
	} else if !m.Target.IsZero() {
		rc["recovery_target_time"] = m.Target.UTC().Format("2006-01-02 15:04:05.000000+00")
	}
	b["nodeha_restore"] = map[string]any{
		"command":       ContainerBinary + " backup-fetch --backup " + m.Backup,
		"recovery_conf": rc,
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("spilo: render postgres.yml: %w", err)
	}
	return append([]byte("# Written by nodeha for a restore; edits are overwritten.\n"), out...), nil
}

// Render returns this host's postgres.yml: the seed configuration with its
// placeholders filled from cfg, then the overlay file (if any) deep-merged
// over it. cfg must have been validated.
func Render(cfg *config.Config) ([]byte, error) {
	doc, err := renderMap(cfg)
	if err != nil {
		return nil, err
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("spilo: render postgres.yml: %w", err)
	}
	return append([]byte("# Written by nodeha; edits are overwritten. Use NODEHA_PATRONI_OVERLAY.\n"), out...), nil
}

func renderMap(cfg *config.Config) (map[string]any, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(seedYAML, &doc); err != nil {
		return nil, fmt.Errorf("spilo: parse seed config: %w", err)
	}
	ip := cfg.AdvertiseIP.String()
	pg := path(doc, "postgresql")
	auth := path(pg, "authentication")
	path(auth, "superuser")["password"] = cfg.SuperuserPassword
	path(auth, "replication")["password"] = cfg.ReplicationPassword
	path(auth, "rewind")["password"] = cfg.RewindPassword
	pg["connect_address"] = config.HostPort(ip, cfg.PostgresPort)
	pg["listen"] = fmt.Sprintf("*:%d", cfg.PostgresPort)
	pg["name"] = cfg.Name
	params := path(pg, "parameters")
	params["port"] = cfg.PostgresPort
	// Secure by default (README, Security model): no password travels in
	// clear text or as an md5 hash, and nothing trusts the host's loopback.
	// The seed's pg_hba trusted postgres on 127.0.0.1 and ::1, which with
	// network mode host is every local account of the host, and let the
	// replication user in without TLS. Local connections over the socket
	// stay trusted: its directory is reachable only by root and the
	// container (DATA_DIR is 0700, see EnsureDirs).
	params["password_encryption"] = "scram-sha-256"
	pg["pg_hba"] = PgHBA
	// bg_mon (in the published images) serves activity and query text
	// without authentication: loopback only, never the network.
	params["bg_mon.listen_address"] = "127.0.0.1"
	// Spilo derives bin_dir only when it writes the file itself, which it
	// never does with nodeha's file in place: without it, PostgreSQL is
	// whatever major the image's PATH holds.
	pg["bin_dir"] = BinDir(PGVersion(cfg))

	// Replicas by Patroni's own pg_basebackup (-X stream, fast checkpoint)
	// instead of the seed's basebackup_fast_xlog (Spilo's basebackup.sh):
	// that script runs pg_basebackup without a fast checkpoint (a new
	// replica waits for a spread checkpoint, tens of seconds) and leaves a
	// pg_receivewal running until a walreceiver's process title says
	// "streaming", which the seed's update_process_title: off never shows:
	// it runs for ever, holds a walsender on the primary and fills
	// wal_fast/. Streaming the WAL alongside the copy keeps what the seed
	// wanted, a replica that is fast to make and starts consistent.
	pg["create_replica_method"] = []any{"basebackup"}
	pg["basebackup"] = []any{map[string]any{"checkpoint": "fast"}}
	delete(pg, "basebackup_fast_xlog")

	rest := path(doc, "restapi")
	path(rest, "authentication")["password"] = cfg.RestAPIPassword
	rest["connect_address"] = config.HostPort(ip, cfg.RestAPIPort)
	rest["listen"] = fmt.Sprintf(":%d", cfg.RestAPIPort)
	if cfg.Identity != nil {
		// HTTPS with the cluster CA's certificate for the host's addresses,
		// and only clients with a certificate of the CA: the recipe's plain
		// HTTP sent the REST password (which can PATCH /config, e.g.
		// archive_command) in clear text on every member-to-member call.
		// Patroni's own calls to the other members present the same
		// certificate and verify theirs against the CA.
		rest["certfile"] = ContainerCertDir + "/restapi.crt"
		rest["keyfile"] = ContainerCertDir + "/restapi.key"
		rest["cafile"] = ContainerTLSDir + "/ca.crt"
		rest["verify_client"] = "required"
		// The client side, for Patroni's calls to the other members and
		// patronictl: Patroni 4 takes the client certificate from ctl only
		// (3.0 from ctl, else restapi).
		ctl := path(doc, "ctl")
		ctl["certfile"] = ContainerCertDir + "/restapi.crt"
		ctl["keyfile"] = ContainerCertDir + "/restapi.key"
		ctl["cacert"] = ContainerTLSDir + "/ca.crt"
	}

	// Timings and synchronous mode: nodeha's defaults are faster than the
	// seed's (see README, Failover); Patroni applies bootstrap.dcs once,
	// when the cluster is created.
	dcs := path(path(doc, "bootstrap"), "dcs")
	dcs["ttl"] = cfg.TTL
	dcs["loop_wait"] = cfg.LoopWait
	dcs["retry_timeout"] = cfg.RetryTimeout
	if cfg.Synchronous { // Patroni's default is off, the seed's mode
		dcs["synchronous_mode"] = true
	}
	// No WAL archive without a backup target (README, WAL archive). The
	// recipe's archive_command copied every segment into wal_archive/ on
	// the disk PGDATA is on, for ever: no backup (same disk), nothing
	// prunes it, and it fills the disk until the primary stops. What
	// Spilo itself renders with no backup configured: archive_mode stays
	// on (a backup target later is a reload, not a restart) and the
	// command keeps nothing. Only for a new cluster (bootstrap.dcs); an
	// overlay may set its own.
	path(path(dcs, "postgresql"), "parameters")["archive_command"] = NoArchive

	if cfg.Backup != nil {
		renderArchive(pg, params)
	}

	hosts := make([]any, 0, len(cfg.Peers))
	for _, h := range cfg.EtcdHosts() {
		hosts = append(hosts, h)
	}
	etcd3 := path(doc, "etcd3")
	etcd3["hosts"] = hosts
	if cfg.Identity != nil {
		// Mutual TLS with the cluster CA: etcd answers no client without a
		// certificate (see PrepareHost for the files).
		etcd3["protocol"] = "https"
		etcd3["cacert"] = ContainerTLSDir + "/ca.crt"
		etcd3["cert"] = ContainerTLSDir + "/client.crt"
		etcd3["key"] = ContainerTLSDir + "/client.key"
	}
	doc["scope"] = cfg.Scope

	if cfg.PatroniOverlay != "" {
		over, err := readOverlay(cfg.PatroniOverlay, doc)
		if err != nil {
			return nil, err
		}
		Merge(doc, over)
	}
	return doc, nil
}

// PgHBA is the pg_hba nodeha renders in place of the seed's. The
// differences: TCP from the host's loopback asks the password (scram) like
// any other address, and over TLS; replication only over TLS; scram-sha-256
// instead of md5 everywhere.
var PgHBA = []any{
	"local  all  postgres  trust",
	"local  replication  postgres  trust",
	"local  all  all  trust",
	"local  replication  replicator  trust",
	"hostnossl  all  all  all  reject",
	"hostnossl  replication  all  all  reject",
	"hostssl  all  postgres  127.0.0.1/32  scram-sha-256",
	"hostssl  all  postgres  ::1/128  scram-sha-256",
	"hostssl  all  postgres  all  reject",
	"hostssl  replication  replicator  all  scram-sha-256",
	"hostssl  all  +cloud  127.0.0.1/32  pam",
	"hostssl  all  +cloud  ::1/128  pam",
	"hostssl  all  +cloud  all  pam",
	"hostssl  all  all  all  scram-sha-256",
}

// PGVersion is the PostgreSQL major of this host: the one of its data
// directory when it has one (as Spilo's configure_spilo.py decides),
// otherwise NODEHA_PG_VERSION, the major of a new data directory.
func PGVersion(cfg *config.Config) string {
	b, err := os.ReadFile(filepath.Join(cfg.PostgresDir, "pgdata", "PG_VERSION"))
	if err == nil {
		if v := strings.TrimSpace(string(b)); v != "" {
			return v
		}
	}
	return cfg.PGVersion
}

// BinDir is where the Spilo images (and Debian) keep a major's binaries.
func BinDir(major string) string { return "/usr/lib/postgresql/" + major + "/bin" }

// path returns m[key] as a map, creating it when missing.
func path(m map[string]any, key string) map[string]any {
	if v, ok := m[key].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[key] = v
	return v
}

// Merge deep-merges src into dst: maps merge key by key, anything else
// (lists, scalars, null) in src replaces what dst had.
func Merge(dst, src map[string]any) {
	for k, sv := range src {
		sm, sIsMap := sv.(map[string]any)
		dm, dIsMap := dst[k].(map[string]any)
		if sIsMap && dIsMap {
			Merge(dm, sm)
			continue
		}
		dst[k] = sv
	}
}
