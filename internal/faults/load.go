package faults

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/nodeha/nodeha/internal/testcluster"
)

// Writer inserts numbered rows as fast as it can through a libpq
// multi-host string, reconnecting after every error, and records which
// inserts the server acknowledged and where.
type Writer struct {
	cfg   *pgx.ConnConfig
	trial int
	// Interval between inserts; 0 writes as fast as the server answers.
	Interval time.Duration

	mu    sync.Mutex
	acked []Ack
	errs  int
}

// Ack is one acknowledged insert.
type Ack struct {
	Seq  int64
	At   time.Time
	Host string // the server's address
}

// NewWriter parses dsn; password is the application role's.
func NewWriter(dsn, password string, trial int) (*Writer, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.Password = password
	return &Writer{cfg: cfg, trial: trial}, nil
}

// Run writes until ctx is done.
func (w *Writer) Run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for seq := int64(1); ctx.Err() == nil; seq++ {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := pgx.ConnectConfig(cctx, w.cfg)
			cancel()
			if err != nil {
				w.fail()
				sleep(ctx, 50*time.Millisecond)
				continue
			}
			conn = c
		}
		// The server's own address, not the connection's: through a
		// client endpoint the connection goes to the endpoint's host.
		var host string
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := conn.QueryRow(ictx, "insert into bench_writes(trial, seq) values ($1, $2) returning host(inet_server_addr())", w.trial, seq).Scan(&host)
		cancel()
		if err != nil {
			w.fail()
			conn.Close(context.Background())
			conn = nil
			continue
		}
		w.mu.Lock()
		w.acked = append(w.acked, Ack{Seq: seq, At: time.Now(), Host: host})
		w.mu.Unlock()
		if w.Interval > 0 {
			sleep(ctx, w.Interval)
		}
	}
}

func (w *Writer) fail() {
	w.mu.Lock()
	w.errs++
	w.mu.Unlock()
}

// Acks returns a copy of the acknowledged inserts so far.
func (w *Writer) Acks() []Ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Ack(nil), w.acked...)
}

// LongestGapAfter is the longest gap between consecutive acknowledged
// writes whose later write came after t: the pause a fault at t caused.
func LongestGapAfter(acks []Ack, t time.Time) time.Duration {
	var longest time.Duration
	for i := 1; i < len(acks); i++ {
		if acks[i].At.After(t) {
			longest = max(longest, acks[i].At.Sub(acks[i-1].At))
		}
	}
	return longest
}

// Missing counts the acknowledged writes of trial that h does not have.
func Missing(ctx context.Context, h *testcluster.Host, trial int, acks []Ack) (int, error) {
	out, err := h.Psql(ctx, fmt.Sprintf("select seq from bench_writes where trial = %d", trial))
	if err != nil {
		return 0, err
	}
	have := map[string]bool{}
	for _, f := range strings.Fields(out) {
		have[f] = true
	}
	lost := 0
	for _, a := range acks {
		if !have[fmt.Sprint(a.Seq)] {
			lost++
		}
	}
	return lost, nil
}

// Errors is the number of failed attempts.
func (w *Writer) Errors() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Probe asks every host's PostgreSQL, over a psql session inside its Spilo
// container (so a host cut off from the network is still seen), whether it
// accepts writes, every Interval, and records the moments when two or
// more did.
type Probe struct {
	Cluster  *testcluster.Cluster
	Interval time.Duration

	mu       sync.Mutex
	overlaps []Overlap
	rounds   int
}

// Overlap is a probe round in which more than one host was writable.
type Overlap struct {
	At    time.Time `json:"at"`
	Hosts []string  `json:"hosts"`
}

type session struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// Run probes until ctx is done.
func (p *Probe) Run(ctx context.Context) {
	sessions := make([]*session, len(p.Cluster.Hosts))
	defer func() {
		for _, s := range sessions {
			if s != nil {
				s.in.Close()
				s.cmd.Process.Kill()
				s.cmd.Wait()
			}
		}
	}()
	for ctx.Err() == nil {
		var wg sync.WaitGroup
		writable := make([]bool, len(p.Cluster.Hosts))
		for i, h := range p.Cluster.Hosts {
			if sessions[i] == nil {
				sessions[i] = open(ctx, h)
			}
			if sessions[i] == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, alive := sessions[i].ask(p.Interval * 3)
				writable[i] = ok
				if !alive {
					sessions[i].cmd.Process.Kill()
					sessions[i].cmd.Wait()
					sessions[i] = nil
				}
			}()
		}
		wg.Wait()
		var hosts []string
		for i, w := range writable {
			if w {
				hosts = append(hosts, p.Cluster.Hosts[i].Name)
			}
		}
		p.mu.Lock()
		p.rounds++
		if len(hosts) > 1 {
			p.overlaps = append(p.overlaps, Overlap{At: time.Now(), Hosts: hosts})
		}
		p.mu.Unlock()
		sleep(ctx, p.Interval)
	}
}

// Overlaps returns the rounds with more than one writable host.
func (p *Probe) Overlaps() []Overlap {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Overlap(nil), p.overlaps...)
}

func open(ctx context.Context, h *testcluster.Host) *session {
	cmd := exec.CommandContext(ctx, "docker", "exec", "-i", "-u", "postgres", h.Spilo,
		"psql", "-XAtq", "-h", "/var/run/postgresql", "-U", "postgres", "-d", "postgres")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil
	}
	if err := cmd.Start(); err != nil {
		return nil
	}
	return &session{cmd: cmd, in: in, out: bufio.NewScanner(out)}
}

// ask reports whether the server is writable (not in recovery, not
// read-only) and whether the session is still usable.
func (s *session) ask(timeout time.Duration) (writable, alive bool) {
	if _, err := io.WriteString(s.in, "select not pg_is_in_recovery() and current_setting('transaction_read_only') = 'off';\n"); err != nil {
		return false, false
	}
	got := make(chan string, 1)
	go func() {
		if s.out.Scan() {
			got <- s.out.Text()
		} else {
			got <- "\x00"
		}
	}()
	select {
	case line := <-got:
		if line == "\x00" {
			return false, false
		}
		return line == "t", true
	case <-time.After(timeout):
		return false, false // a stuck session is replaced
	}
}
