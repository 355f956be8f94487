// Package patroni is a small client of Patroni's REST API: the member's own
// status (GET /patroni) and the cluster view (GET /cluster). Role names of
// Patroni 3 ("master") and 4 ("primary") are both understood.
package patroni

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Client talks to one member's REST API.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8008
	HTTP    *http.Client
}

// New returns a client with a short timeout. With tlsConfig (the cluster
// CA, and a certificate of it: Patroni's REST API asks for one) the base URL
// is https.
func New(baseURL string, tlsConfig *tls.Config) *Client {
	hc := &http.Client{Timeout: 2 * time.Second}
	if tlsConfig != nil {
		hc.Transport = &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}
	}
	return &Client{BaseURL: baseURL, HTTP: hc}
}

// URL is the base URL of the REST API at host:port, https when tlsConfig
// is given.
func URL(hostPort string, tlsConfig *tls.Config) string {
	if tlsConfig != nil {
		return "https://" + hostPort
	}
	return "http://" + hostPort
}

// Status is GET /patroni.
type Status struct {
	State    string `json:"state"`
	Role     string `json:"role"`
	Timeline int    `json:"timeline"`
	Server   int    `json:"server_version"`
	Xlog     struct {
		Location         int64 `json:"location"`
		ReceivedLocation int64 `json:"received_location"`
		ReplayedLocation int64 `json:"replayed_location"`
	} `json:"xlog"`
	Patroni struct {
		Version string `json:"version"`
		Scope   string `json:"scope"`
	} `json:"patroni"`
	PostmasterStartTime string `json:"postmaster_start_time"`
}

// Member is one entry of GET /cluster.
type Member struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	State    string `json:"state"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Timeline int    `json:"timeline"`
	// Lag is bytes behind the leader; Patroni reports "unknown" when it
	// cannot tell, which decodes as -1.
	Lag Lag `json:"lag"`
}

// Lag is replication lag in bytes, -1 when unknown.
type Lag int64

// UnmarshalJSON accepts a number or a string such as "unknown".
func (l *Lag) UnmarshalJSON(b []byte) error {
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		*l = -1
		return nil
	}
	*l = Lag(n)
	return nil
}

// Cluster is GET /cluster.
type Cluster struct {
	Members []Member `json:"members"`
}

// IsLeader tells whether a role is the (writable) leader's.
func IsLeader(role string) bool { return role == "master" || role == "primary" || role == "leader" }

// IsReplica tells whether a role is a standby's.
func IsReplica(role string) bool {
	return role == "replica" || role == "sync_standby" || role == "standby_leader"
}

// Status fetches GET /patroni. Patroni answers 503 with a body when
// PostgreSQL is not running; that body is still decoded.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.get(ctx, "/patroni", &s)
	return s, err
}

// Ping asks GET /liveness and returns nil for any HTTP answer, 503
// included: a Patroni that is busy (starting PostgreSQL, recovering,
// creating a replica) still answers; only one that is gone or hung does
// not (refused, or the client's timeout). /liveness reads no PostgreSQL
// state, so a slow database does not delay it. Patroni answers it with a
// bare status line (HTTP/1.0, no headers): the status is the answer, the
// body is not read.
func (c *Client) Ping(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/liveness", nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("patroni: GET /liveness: %w", err)
	}
	resp.Body.Close()
	return nil
}

// Cluster fetches GET /cluster.
func (c *Client) Cluster(ctx context.Context) (Cluster, error) {
	var cl Cluster
	err := c.get(ctx, "/cluster", &cl)
	return cl, err
}

// Metrics fetches GET /metrics (Prometheus's text format) as it comes.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("patroni: GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("patroni: GET /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("patroni: GET /metrics: status %d", resp.StatusCode)
	}
	return b, nil
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("patroni: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("patroni: GET %s: status %d: %w", path, resp.StatusCode, err)
	}
	return nil
}

// Leader returns the cluster's leader member, if any.
func (cl Cluster) Leader() (Member, bool) {
	for _, m := range cl.Members {
		if IsLeader(m.Role) {
			return m, true
		}
	}
	return Member{}, false
}

// Switchover asks Patroni for a planned leader change from leader to
// candidate ("" lets Patroni choose), with the REST API credentials.
func (c *Client) Switchover(ctx context.Context, user, password, leader, candidate string) error {
	body, _ := json.Marshal(map[string]string{"leader": leader, "candidate": candidate})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL+"/switchover", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(user, password)
	req.Header.Set("Content-Type", "application/json")
	hc := *c.HTTP
	hc.Timeout = 60 * time.Second // Patroni answers once the switchover is done
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("patroni: POST /switchover: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("patroni: switchover refused (%d): %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}
