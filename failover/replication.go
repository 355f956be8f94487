package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodeha/nodeha/dcs"
)

// Replication is what Patroni keeps in etcd that decides whether a replica
// may be promoted without losing an acknowledged commit.
type Replication struct {
	Leader       string           // holder of the leader lock; "" when none
	Lease        clientv3.LeaseID // the lock's lease
	Mode         string           // synchronous_mode: "off", "on" or "quorum"
	SyncLeader   string           // the primary the /sync key was written for
	SyncStandbys []string         // the standbys that have every commit it acknowledged

	leaderRev, configRev, syncRev int64 // mod revisions (0: key absent)
}

// Synchronous reports whether commits wait for a standby.
func (r Replication) Synchronous() bool { return r.Mode == "on" || r.Mode == "quorum" }

// ReadReplication reads the leader lock, the dynamic configuration's
// synchronous_mode and the /sync key in one consistent read.
func ReadReplication(ctx context.Context, kv clientv3.KV, scope string) (Replication, error) {
	resp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(dcs.Leader(scope)),
		clientv3.OpGet(dcs.Config(scope)),
		clientv3.OpGet(dcs.Sync(scope)),
	).Commit()
	if err != nil {
		return Replication{}, fmt.Errorf("failover: read replication state: %w", err)
	}
	var r Replication
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		r.Leader, r.Lease, r.leaderRev = string(kvs[0].Value), clientv3.LeaseID(kvs[0].Lease), kvs[0].ModRevision
	}
	r.Mode = "off"
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		r.configRev = kvs[0].ModRevision
		var c struct {
			SynchronousMode json.RawMessage `json:"synchronous_mode"`
		}
		if json.Unmarshal(kvs[0].Value, &c) == nil {
			r.Mode = syncMode(c.SynchronousMode)
		}
	}
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) > 0 {
		r.syncRev = kvs[0].ModRevision
		var s struct {
			Leader      string  `json:"leader"`
			SyncStandby *string `json:"sync_standby"`
		}
		if json.Unmarshal(kvs[0].Value, &s) == nil {
			r.SyncLeader = s.Leader
			if s.SyncStandby != nil {
				for _, n := range strings.Split(*s.SyncStandby, ",") {
					if n = strings.TrimSpace(n); n != "" {
						r.SyncStandbys = append(r.SyncStandbys, n)
					}
				}
			}
		}
	}
	return r, nil
}

// syncMode reads Patroni's synchronous_mode, a boolean or (Patroni 4)
// "on", "off" or "quorum"; anything else is off, the mode that promises
// nothing.
func syncMode(raw json.RawMessage) string {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		if b {
			return "on"
		}
		return "off"
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch strings.ToLower(s) {
		case "on", "true", "yes":
			return "on"
		case "quorum":
			return "quorum"
		}
	}
	return "off"
}

// ReleaseDecision decides whether nodeha may take the leader lock away from
// member, a primary that can no longer accept writes (its container is dead,
// or its host is cut off and has demoted itself), before the lock's lease
// would have expired. It returns the decision and why, for the log.
//
// Taking the lock early makes Patroni promote a replica now. That loses no
// acknowledged commit only if the replica Patroni will promote has every
// commit the primary acknowledged:
//
//   - synchronous mode with a synchronous standby recorded for member: a
//     commit is acknowledged only once a synchronous standby has flushed
//     it, and Patroni promotes only a standby named in /sync. The lease
//     expiring would promote the same standby, later: release.
//   - synchronous mode with no standby recorded (Patroni, not strict, fell
//     back to asynchronous commits): no replica provably has everything.
//     Keep the lock.
//   - asynchronous mode: a replica may lack the last commits. A dead
//     container is restarted in place and its Patroni, finding its own
//     lock, resumes as primary from the data on the host's disk, as the
//     recipe's restart policy does; a host that comes back within the lease
//     keeps its primary, as in the recipe. Keep the lock: the lease decides,
//     exactly as without nodeha.
func ReleaseDecision(r Replication, member string) (bool, string) {
	switch {
	case r.Leader == "":
		return false, "no leader lock"
	case r.Leader != member:
		return false, "the leader lock is " + r.Leader + "'s"
	case !r.Synchronous():
		return false, "asynchronous replication: a replica may lack acknowledged commits, so the lock stays and the lease decides"
	case r.SyncLeader != member || len(r.SyncStandbys) == 0:
		return false, "synchronous mode but no synchronous standby recorded for " + member + ": the lock stays and the lease decides"
	}
	return true, "synchronous standby " + strings.Join(r.SyncStandbys, ",") + " has every acknowledged commit"
}

// guard is the condition under which a decision on r still holds: the
// lock, the configuration and the /sync key unchanged since r was read.
func (r Replication) guard(scope string) []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(dcs.Leader(scope)), "=", r.leaderRev),
		clientv3.Compare(clientv3.ModRevision(dcs.Config(scope)), "=", r.configRev),
		clientv3.Compare(clientv3.ModRevision(dcs.Sync(scope)), "=", r.syncRev),
	}
}

// ReleaseDeadLock deletes scope's leader lock if member holds it and
// ReleaseDecision allows it, atomically with the state it decided on. Call
// it only when no Patroni of member can be running (its container is
// dead). It reports whether the lock was released, and why (or why not).
func ReleaseDeadLock(ctx context.Context, kv clientv3.KV, scope, member string) (bool, string, error) {
	r, err := ReadReplication(ctx, kv, scope)
	if err != nil {
		return false, "", err
	}
	ok, why := ReleaseDecision(r, member)
	if !ok {
		return false, why, nil
	}
	resp, err := kv.Txn(ctx).If(r.guard(scope)...).Then(clientv3.OpDelete(dcs.Leader(scope))).Commit()
	if err != nil {
		return false, why, fmt.Errorf("failover: release leader lock: %w", err)
	}
	if !resp.Succeeded {
		return false, "the lock or the replication state changed while deciding", nil
	}
	return true, why, nil
}

// SyncMode reads synchronous_mode ("off", "on" or "quorum") from the
// cluster's dynamic configuration as the local member has it (a read that
// answers without a quorum); "" when the cluster has none yet.
func SyncMode(ctx context.Context, kv clientv3.KV, scope string) (string, error) {
	resp, err := kv.Get(ctx, dcs.Config(scope), clientv3.WithSerializable())
	if err != nil {
		return "", fmt.Errorf("failover: read the dynamic configuration: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	var c struct {
		SynchronousMode json.RawMessage `json:"synchronous_mode"`
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
		return "", fmt.Errorf("failover: dynamic configuration: %w", err)
	}
	return syncMode(c.SynchronousMode), nil
}
