package spilo

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/nodeha/nodeha/config"
)

// What an overlay may change. NODEHA_PATRONI_OVERLAY is deep-merged over
// the rendered postgres.yml, and may change anything there except what
// nodeha derives from its own settings or relies on: the cluster's name and
// DCS (etcd3 and its TLS, nodeha's embedded etcd), the addresses and ports,
// the data and binary directories, the credentials, and the timings and
// mode nodeha's failover assist reasons with (they have settings). A value
// keeps the kind it has in the rendered file (a map stays a map, a number a
// number, a list a list), except PostgreSQL parameters, whose scalars may
// be written either way (512MB or 131072); null deletes nothing.
var ownedKeys = []string{
	"scope", "name", "namespace",
	"etcd", "etcd3", "consul", "zookeeper", "exhibitor", "kubernetes", "raft",
	"restapi.listen", "restapi.connect_address", "restapi.authentication",
	"restapi.certfile", "restapi.keyfile", "restapi.cafile", "restapi.verify_client", "ctl",
	"postgresql.name", "postgresql.listen", "postgresql.connect_address",
	"postgresql.data_dir", "postgresql.bin_dir", "postgresql.authentication",
	"postgresql.parameters.port",
	"bootstrap.dcs.ttl", "bootstrap.dcs.loop_wait", "bootstrap.dcs.retry_timeout",
	"bootstrap.dcs.synchronous_mode", "bootstrap.dcs.synchronous_mode_strict",
}

// ownedBy names the setting behind an owned key, for the message.
var ownedBy = map[string]string{
	"scope": "NODEHA_SCOPE", "name": "NODEHA_NAME",
	"restapi.listen": "NODEHA_RESTAPI_PORT", "restapi.connect_address": "NODEHA_ADVERTISE and NODEHA_RESTAPI_PORT",
	"restapi.authentication": "NODEHA_RESTAPI_PASSWORD",
	"postgresql.name":        "NODEHA_NAME", "postgresql.listen": "NODEHA_POSTGRES_PORT",
	"postgresql.connect_address": "NODEHA_ADVERTISE and NODEHA_POSTGRES_PORT",
	"postgresql.data_dir":        "NODEHA_POSTGRES_DIR", "postgresql.bin_dir": "NODEHA_PG_VERSION",
	"postgresql.authentication":  "NODEHA_SUPERUSER_PASSWORD, NODEHA_REPLICATION_PASSWORD",
	"postgresql.parameters.port": "NODEHA_POSTGRES_PORT",
	"bootstrap.dcs.ttl":          "NODEHA_TTL", "bootstrap.dcs.loop_wait": "NODEHA_LOOP_WAIT",
	"bootstrap.dcs.retry_timeout": "NODEHA_RETRY_TIMEOUT", "bootstrap.dcs.synchronous_mode": "NODEHA_SYNCHRONOUS",
	"bootstrap.dcs.synchronous_mode_strict": "NODEHA_SYNCHRONOUS",
}

// readOverlay reads and checks the overlay file against rendered, the
// document it will be merged over. Every problem is a setting error naming
// NODEHA_PATRONI_OVERLAY.
func readOverlay(path string, rendered map[string]any) (map[string]any, error) {
	bad := func(format string, args ...any) error {
		return config.Problem("PATRONI_OVERLAY", "patroni-overlay", "%s: "+format, append([]any{path}, args...)...)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, config.Problem("PATRONI_OVERLAY", "patroni-overlay", "%v", err)
	}
	var raw any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, bad("not valid YAML: %s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	over, ok := raw.(map[string]any)
	if raw != nil && !ok {
		return nil, bad("is a YAML %s, want a map of Patroni settings", kind(raw))
	}
	var problems []string
	checkOverlay("", over, rendered, false, &problems)
	if len(problems) > 0 {
		sort.Strings(problems)
		return nil, bad("%s", strings.Join(problems, "; "))
	}
	return over, nil
}

func checkOverlay(prefix string, over, rendered map[string]any, inParams bool, problems *[]string) {
	for k, v := range over {
		key := prefix + k
		if isOwned(key) {
			msg := key + " is nodeha's"
			if s := ownedBy[key]; s != "" {
				msg += " (set " + s + ")"
			}
			*problems = append(*problems, msg)
			continue
		}
		if key == "postgresql.pg_hba" {
			checkHBA(v, problems)
		}
		have, exists := rendered[k]
		switch {
		case v == nil:
			*problems = append(*problems, key+" is null: an overlay cannot delete a setting (give the value you want instead)")
			continue
		case !exists:
			continue // a new key: Patroni's to judge
		}
		params := inParams || k == "parameters"
		hm, haveMap := have.(map[string]any)
		vm, isMap := v.(map[string]any)
		switch {
		case haveMap && isMap:
			checkOverlay(key+".", vm, hm, params, problems)
		case haveMap || isMap || kind(have) == "list" || kind(v) == "list":
			if kind(have) != kind(v) {
				*problems = append(*problems, fmt.Sprintf("%s is a %s, want a %s", key, kind(v), kind(have)))
			}
		case inParams:
			// a PostgreSQL parameter: any scalar
		case kind(have) != kind(v):
			*problems = append(*problems, fmt.Sprintf("%s is a %s (%v), want a %s", key, kind(v), v, kind(have)))
		}
	}
}

// checkHBA refuses pg_hba lines that would let a password or a superuser
// through unverified over TCP: trust, or password (clear text), on a host
// line.
func checkHBA(v any, problems *[]string) {
	lines, ok := v.([]any)
	if !ok {
		return // the kind check says it
	}
	for _, l := range lines {
		s, _ := l.(string)
		f := strings.Fields(s)
		if len(f) < 4 || f[0] == "local" {
			continue
		}
		switch method := f[len(f)-1]; method {
		case "trust", "password":
			*problems = append(*problems, fmt.Sprintf("postgresql.pg_hba line %q: %s on a TCP line (any local account or the network could use it)", s, method))
		}
	}
}

func isOwned(key string) bool {
	for _, o := range ownedKeys {
		if key == o || strings.HasPrefix(key, o+".") {
			return true
		}
	}
	return false
}

func kind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "map"
	case []any:
		return "list"
	case string:
		return "string"
	case float64, int, int64:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
