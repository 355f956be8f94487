//go:build e2e

package e2e

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// writer inserts a numbered row every interval through a libpq multi-host
// string, reconnecting after every error, and records which inserts the
// server acknowledged.
type writer struct {
	cfg      *pgx.ConnConfig
	interval time.Duration

	mu    sync.Mutex
	acked []ack
	errs  int
}

type ack struct {
	id   int64
	at   time.Time
	host string
}

func newWriter(dsn, password string, interval time.Duration) (*writer, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.Password = password
	return &writer{cfg: cfg, interval: interval}, nil
}

func (w *writer) run(ctx context.Context) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for id := int64(1); ctx.Err() == nil; id++ {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			c, err := pgx.ConnectConfig(cctx, w.cfg)
			cancel()
			if err == nil {
				conn = c
			}
		}
		if conn != nil {
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := conn.Exec(ictx, "insert into e2e_writes(id) values ($1)", id)
			cancel()
			if err == nil {
				w.mu.Lock()
				w.acked = append(w.acked, ack{id: id, at: time.Now(), host: conn.PgConn().Conn().RemoteAddr().String()})
				w.mu.Unlock()
			} else {
				w.mu.Lock()
				w.errs++
				w.mu.Unlock()
				conn.Close(context.Background())
				conn = nil
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func (w *writer) snapshot() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acked...)
}

// longestPauseAfter is the longest gap between consecutive acknowledged
// writes whose later write came after t: the client's write pause caused
// by a fault at t.
func longestPauseAfter(acks []ack, t time.Time) time.Duration {
	var longest time.Duration
	for i := 1; i < len(acks); i++ {
		if acks[i].at.After(t) {
			longest = max(longest, acks[i].at.Sub(acks[i-1].at))
		}
	}
	return longest
}
