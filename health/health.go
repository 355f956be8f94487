// Package health owns the node's health report and the local API that
// serves it: HTTP over a unix socket (mode 0660), GET /health answering 200
// when the node is healthy and 503 otherwise, and the client that
// `nodeha status` uses.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nodeha/nodeha/config"
	"github.com/nodeha/nodeha/embedetcd"
	"github.com/nodeha/nodeha/endpoint"
	"github.com/nodeha/nodeha/spilo"
)

// Report is the body of GET /health.
type Report struct {
	Healthy bool     `json:"healthy"`
	Reasons []string `json:"reasons,omitempty"`
	// ReasonCodes name the reasons, one code each, in the same order
	// (metrics.ReasonCodes lists them).
	ReasonCodes []string              `json:"reason_codes,omitempty"`
	Name        string                `json:"name"`
	Scope       string                `json:"scope"`
	Address     string                `json:"address"`
	Version     string                `json:"version"`
	Time        time.Time             `json:"time"`
	Etcd        *embedetcd.Status     `json:"etcd,omitempty"`
	Container   spilo.ContainerStatus `json:"container"`
	Patroni     *Patroni              `json:"patroni,omitempty"`
	// Endpoints are the client endpoints' routes and counters.
	Endpoints []endpoint.Stats `json:"endpoints,omitempty"`
	// VIP is the floating address (NODEHA_VIP), when there is one.
	VIP *VIP `json:"vip,omitempty"`
	// Backup is the archive (NODEHA_BACKUP_TARGET), when there is one.
	Backup *Backup `json:"backup,omitempty"`
}

// Backup is the archive as this host sees it: PostgreSQL's archiver here
// (pg_stat_archiver; every host archives) and the newest base backup.
type Backup struct {
	Target               string    `json:"target"`
	Archived             int64     `json:"archived"`
	Failed               int64     `json:"failed"`
	LastArchivedAt       time.Time `json:"last_archived_at,omitzero"`
	LastFailedAt         time.Time `json:"last_failed_at,omitzero"`
	Failing              bool      `json:"failing"`
	ArchiverError        string    `json:"archiver_error,omitempty"`
	LastBackup           string    `json:"last_backup,omitempty"`
	LastBackupAt         time.Time `json:"last_backup_at,omitzero"`
	LastBackupAgeSeconds float64   `json:"last_backup_age_seconds,omitempty"`
	Error                string    `json:"error,omitempty"` // listing the archive failed
}

// VIP is the floating address's state on this host.
type VIP struct {
	Address   string `json:"address"`
	Interface string `json:"interface"`
	Held      bool   `json:"held"`
	Changes   int64  `json:"changes"` // holds and releases since nodeha started
	Error     string `json:"error,omitempty"`
}

// Patroni is what the report says about the local Patroni.
type Patroni struct {
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	Role      string `json:"role,omitempty"`
	State     string `json:"state,omitempty"`
	Timeline  int    `json:"timeline,omitempty"`
	// LagBytes is this member's replication lag as the cluster sees it
	// (0 on the leader, -1 unknown).
	LagBytes            int64  `json:"lag_bytes"`
	PostmasterStartTime string `json:"postmaster_start_time,omitempty"`
	Version             string `json:"version,omitempty"`
	// SyncStandbys counts the cluster's synchronous standbys.
	SyncStandbys *int `json:"sync_standbys,omitempty"`
	// NotAnsweringSince is when the REST API stopped answering (the
	// container's start if it never did since), while it does not answer;
	// nodeha restarts the container after NODEHA_PATRONI_DEAD_AFTER.
	NotAnsweringSince time.Time `json:"not_answering_since,omitzero"`
}

// Server serves the report on a unix socket.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string
	errc chan error
}

// CheckFree fails when path is in use by a live server (another nodeha on
// this host) or is something other than a socket. It changes nothing.
func CheckFree(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return nil
	}
	if st.Mode()&os.ModeSocket == 0 {
		return &config.SettingError{Env: "SOCKET", Flag: "socket", Err: fmt.Errorf("%s exists and is not a socket", path)}
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("NODEHA_SOCKET (--socket): %s is in use: another nodeha is running on this host", path)
	}
	return nil
}

// Actions are the operations the socket offers besides the report; a nil
// one is not served.
type Actions struct {
	// Hang is POST /debug/hang (a test hook).
	Hang func()
	// Leave is POST /leave: this host leaves the cluster.
	Leave func(ctx context.Context) (string, error)
	// Remove is POST /remove?name=NAME[&force=true]: remove a dead host.
	Remove func(ctx context.Context, name string, force bool) (string, error)
	// Snapshot is POST /snapshot: an etcd snapshot now.
	Snapshot func(ctx context.Context) (string, error)
	// Cluster is GET /cluster: the view of every host.
	Cluster func(ctx context.Context) (ClusterView, error)
	// Backup is POST /backup: a base backup now, from this host.
	Backup func(ctx context.Context) (string, error)
	// Restore is POST /restore?backup=NAME&to=RFC3339&latest=true: the
	// whole cluster back to a backup and a point in time.
	Restore func(ctx context.Context, backup, to string, latest bool) (string, error)
}

// Result is the body of every action's answer.
type Result struct {
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"`
}

func serveAction(w http.ResponseWriter, msg string, err error) {
	w.Header().Set("Content-Type", "application/json")
	res := Result{Message: msg}
	if err != nil {
		res.Error = err.Error()
		w.WriteHeader(http.StatusConflict)
	}
	json.NewEncoder(w).Encode(res)
}

// Listen creates the socket (replacing a stale one), mode 0660, and
// serves report and the actions on it.
func Listen(path string, report func(context.Context) Report, act Actions) (*Server, error) {
	return ListenGroup(path, -1, report, act)
}

// ListenGroup is Listen with the socket's group set to gid (-1: left as
// created, root's), whose members may then read the report.
func ListenGroup(path string, gid int, report func(context.Context) Report, act Actions) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("health: %w", err)
	}
	if err := CheckFree(path); err != nil {
		return nil, err
	}
	os.Remove(path) // stale socket of a nodeha that died
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("health: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("health: chmod %s: %w", path, err)
	}
	if gid >= 0 {
		if err := groupMayReach(filepath.Dir(path), gid); err != nil {
			ln.Close()
			return nil, err
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("health: chgrp %s: %w", path, err)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		rep := report(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if !rep.Healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	})
	// The actions change the cluster: only root (or the daemon's own user)
	// may ask for them, whatever group can read the socket. The report
	// stays open to that group.
	post := func(pattern string, h http.HandlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := mayAct(r.Context()); err != nil {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				json.NewEncoder(w).Encode(Result{Error: err.Error()})
				return
			}
			h(w, r)
		})
	}
	if act.Cluster != nil {
		mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, r *http.Request) {
			v, err := act.Cluster(r.Context())
			w.Header().Set("Content-Type", "application/json")
			if err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				json.NewEncoder(w).Encode(Result{Error: err.Error()})
				return
			}
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.Encode(v)
		})
	}
	if act.Hang != nil {
		post("POST /debug/hang", func(w http.ResponseWriter, r *http.Request) {
			act.Hang()
			w.WriteHeader(http.StatusNoContent)
		})
	}
	if act.Leave != nil {
		post("POST /leave", func(w http.ResponseWriter, r *http.Request) {
			msg, err := act.Leave(r.Context())
			serveAction(w, msg, err)
		})
	}
	if act.Remove != nil {
		post("POST /remove", func(w http.ResponseWriter, r *http.Request) {
			msg, err := act.Remove(r.Context(), r.URL.Query().Get("name"), r.URL.Query().Get("force") == "true")
			serveAction(w, msg, err)
		})
	}
	if act.Snapshot != nil {
		post("POST /snapshot", func(w http.ResponseWriter, r *http.Request) {
			msg, err := act.Snapshot(r.Context())
			serveAction(w, msg, err)
		})
	}
	if act.Backup != nil {
		post("POST /backup", func(w http.ResponseWriter, r *http.Request) {
			msg, err := act.Backup(r.Context())
			serveAction(w, msg, err)
		})
	}
	if act.Restore != nil {
		post("POST /restore", func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			msg, err := act.Restore(r.Context(), q.Get("backup"), q.Get("to"), q.Get("latest") == "true")
			serveAction(w, msg, err)
		})
	}
	s := &Server{srv: &http.Server{
		Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second,
		ConnContext: withPeer,
	}, ln: ln, path: path, errc: make(chan error, 1)}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("health: serve: %w", err)
		}
	}()
	return s, nil
}

type peerKey struct{}

// withPeer records the connecting process's credentials (SO_PEERCRED).
func withPeer(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *syscall.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, cred)
}

// mayAct allows root and the daemon's own user.
func mayAct(ctx context.Context) error {
	cred, ok := ctx.Value(peerKey{}).(*syscall.Ucred)
	switch {
	case !ok:
		return errors.New("the caller's identity is unknown; only root may ask for this")
	case cred.Uid != 0 && int(cred.Uid) != os.Geteuid():
		return fmt.Errorf("uid %d may read the health report but not change the cluster: run it as root", cred.Uid)
	}
	return nil
}

// groupMayReach makes sure gid's members can reach a socket in dir: nodeha's
// own directory (named nodeha, root's) gets that group; any other must
// already let it in (nodeha changes no directory it does not own).
func groupMayReach(dir string, gid int) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	switch {
	case st.Mode().Perm()&0o001 != 0:
		return nil // anyone may pass
	case sys != nil && int(sys.Gid) == gid && st.Mode().Perm()&0o010 != 0:
		return nil
	case sys != nil && sys.Uid == 0 && filepath.Base(dir) == "nodeha":
		if err := os.Lchown(dir, -1, gid); err != nil {
			return fmt.Errorf("health: chgrp %s: %w", dir, err)
		}
		return os.Chmod(dir, 0o750)
	}
	return &config.SettingError{Env: "SOCKET_GROUP", Flag: "socket-group", Err: fmt.Errorf("the socket's directory %s does not let group %d in; give the socket a directory of its own (NODEHA_SOCKET)", dir, gid)}
}

// Err reports a fatal serving error.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

// Do asks the daemon behind socket for an action (path, e.g. "/leave") and
// returns its message, or its refusal as the error.
func Do(ctx context.Context, socket, path string) (string, error) {
	hc := socketClient(socket)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://nodeha"+path, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("cannot reach nodeha at %s (NODEHA_SOCKET/--socket): %w", socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	var res Result
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &res); err != nil {
		return "", fmt.Errorf("nodeha %s: %d %s", path, resp.StatusCode, b)
	}
	if res.Error != "" {
		return res.Message, errors.New(res.Error)
	}
	return res.Message, nil
}

// Get asks the daemon behind socket for its report. The report is returned
// whether the node is healthy or not; err is set only when there is no
// report at all.
func Get(ctx context.Context, socket string) (Report, error) {
	hc := socketClient(socket)
	var rep Report
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://nodeha/health", nil)
	resp, err := hc.Do(req)
	if err != nil {
		return rep, fmt.Errorf("cannot reach nodeha at %s (NODEHA_SOCKET/--socket): %w", socket, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return rep, fmt.Errorf("health: read: %w", err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return rep, fmt.Errorf("health: decode (status %d): %w", resp.StatusCode, err)
	}
	return rep, nil
}

// socketClient is an HTTP client whose every request goes to socket. Each
// call makes one, so it keeps no connection: a kept-alive one would outlive
// the call in both processes.
func socketClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}
