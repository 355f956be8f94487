package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HostStatus is what each host's nodeha publishes of itself in etcd, for
// the cluster view any host can give.
type HostStatus struct {
	Name      string    `json:"name"`
	Address   string    `json:"address"`
	Version   string    `json:"version"`
	Time      time.Time `json:"time"`
	Healthy   bool      `json:"healthy"`
	Reasons   []string  `json:"reasons,omitempty"`
	Container struct {
		State          string `json:"state"`
		Restarts       int    `json:"restarts"`
		NodehaRestarts int    `json:"nodeha_restarts,omitempty"`
		LastExitCode   *int   `json:"last_exit_code,omitempty"`
		Fenced         string `json:"fenced,omitempty"`
	} `json:"container"`
}

// Failover is a change of primary.
type Failover struct {
	At   time.Time `json:"at"`
	From string    `json:"from"`
	To   string    `json:"to"`
	Why  string    `json:"why"`
}

// HostView is one host in the cluster view.
type HostView struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Role     string `json:"role,omitempty"`  // Patroni's
	State    string `json:"state,omitempty"` // Patroni's
	Timeline int    `json:"timeline,omitempty"`
	LagBytes int64  `json:"lag_bytes"` // -1 unknown
	// Etcd is voter or learner, and leader when it leads etcd ("" when
	// not a member).
	Etcd    string      `json:"etcd"`
	Status  *HostStatus `json:"status,omitempty"` // what its nodeha published (nil: none)
	Healthy bool        `json:"healthy"`
}

// ClusterView is GET /cluster: every host as one nodeha sees the cluster.
type ClusterView struct {
	Scope        string     `json:"scope"`
	From         string     `json:"from"` // the host that answered
	Leader       string     `json:"leader,omitempty"`
	Hosts        []HostView `json:"hosts"`
	LastFailover *Failover  `json:"last_failover,omitempty"`
	// Whole: one primary, every host in etcd a voter, Patroni running or
	// streaming on each, and every nodeha healthy. Problems say what is
	// not.
	Whole    bool     `json:"whole"`
	Problems []string `json:"problems,omitempty"`
}

// GetCluster asks the daemon behind socket for the cluster view.
func GetCluster(ctx context.Context, socket string) (ClusterView, error) {
	var v ClusterView
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://nodeha/cluster", nil)
	resp, err := socketClient(socket).Do(req)
	if err != nil {
		return v, fmt.Errorf("cannot reach nodeha at %s (NODEHA_SOCKET/--socket): %w", socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return v, fmt.Errorf("health: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var r Result
		if json.Unmarshal(b, &r) == nil && r.Error != "" {
			return v, errors.New(r.Error)
		}
		return v, fmt.Errorf("nodeha /cluster: %d %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("health: decode /cluster: %w", err)
	}
	return v, nil
}
