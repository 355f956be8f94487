// Package endpoint owns the client endpoints every host offers: a
// read-write port that forwards each TCP connection to the current
// primary, and a read-only port that forwards to a healthy replica (the
// primary when there is none). A client that knows one host address only,
// with no target_session_attrs, lands where it should.
//
// A Route is where one endpoint sends new connections; the supervisor sets
// it from etcd (the leader key) and Patroni. When a route changes, every
// open connection to the old target is closed at once, so no client keeps
// writing to a demoted or cut-off primary. Forwarding is io.Copy between
// two TCP connections, which Linux turns into splice(2): no copy through
// user space. Two goroutines per connection, both ending when either side
// closes.
package endpoint

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Target is where a route sends connections: a PostgreSQL address and the
// member it belongs to. The zero Target means none: connections are
// refused (closed at once), and a libpq client tries its next host.
type Target struct {
	Addr   string `json:"addr,omitempty"`   // host:port
	Member string `json:"member,omitempty"` // Patroni member name
}

// Stats is what an endpoint reports in /health.
type Stats struct {
	Name           string    `json:"name"`
	Listen         string    `json:"listen"`
	Target         Target    `json:"target"`
	Open           int       `json:"open"`
	Accepted       int64     `json:"accepted"`
	Refused        int64     `json:"refused"` // no target, or the target did not answer
	BytesToServer  int64     `json:"bytes_to_server"`
	BytesToClient  int64     `json:"bytes_to_client"`
	RoutingChanges int64     `json:"routing_changes"`
	LastChange     time.Time `json:"last_change,omitzero"`
	ClosedOnChange int64     `json:"closed_on_change"` // connections closed because the target changed
}

// Route is where one endpoint sends new connections, and the open ones.
type Route struct {
	name string
	log  *slog.Logger

	mu      sync.Mutex
	target  Target
	changes int64
	last    time.Time
	conns   map[*pair]struct{}

	accepted, refused, toServer, toClient, closedOnChange atomic.Int64
}

// NewRoute is a route with no target.
func NewRoute(name string, log *slog.Logger) *Route {
	return &Route{name: name, log: log.With("endpoint", name), conns: map[*pair]struct{}{}}
}

// Set points the route at t. When t differs from the current target,
// every open connection is closed at once.
func (r *Route) Set(t Target) {
	r.mu.Lock()
	if t == r.target {
		r.mu.Unlock()
		return
	}
	old := r.target
	r.target = t
	r.changes++
	r.last = time.Now().UTC()
	var drop []*pair
	for p := range r.conns {
		drop = append(drop, p)
	}
	r.mu.Unlock()
	for _, p := range drop {
		p.close()
	}
	r.closedOnChange.Add(int64(len(drop)))
	r.log.Info("route changed", "from", old.Member, "to", t.Member, "addr", t.Addr, "closed_connections", len(drop))
}

// Target is the current target.
func (r *Route) Target() Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.target
}

// Stats reads the route's counters.
func (r *Route) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{
		Name: r.name, Target: r.target, Open: len(r.conns),
		Accepted: r.accepted.Load(), Refused: r.refused.Load(),
		BytesToServer: r.toServer.Load(), BytesToClient: r.toClient.Load(),
		RoutingChanges: r.changes, LastChange: r.last, ClosedOnChange: r.closedOnChange.Load(),
	}
}

// register adds p under the target it was dialed for; false when the
// route moved on meanwhile (p is then not kept).
func (r *Route) register(p *pair, t Target) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.target != t {
		return false
	}
	r.conns[p] = struct{}{}
	return true
}

func (r *Route) unregister(p *pair) {
	r.mu.Lock()
	delete(r.conns, p)
	r.mu.Unlock()
}

// pair is one forwarded connection.
type pair struct {
	client, server net.Conn
	once           sync.Once
}

func (p *pair) close() {
	p.once.Do(func() {
		p.client.Close()
		p.server.Close()
	})
}

// Proxy accepts on one address and forwards along a route.
type Proxy struct {
	ln    net.Listener
	route *Route
	dial  time.Duration
	wg    sync.WaitGroup
	done  chan struct{}
}

// Listen starts an endpoint on addr (host:port) forwarding along route.
func Listen(addr string, route *Route) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, route: route, dial: 2 * time.Second, done: make(chan struct{})}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address the endpoint listens on.
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond) // EMFILE and the like: do not spin
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.forward(c)
		}()
	}
}

func (p *Proxy) forward(client net.Conn) {
	r := p.route
	t := r.Target()
	if t.Addr == "" {
		r.refused.Add(1)
		client.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.dial)
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", t.Addr)
	cancel()
	if err != nil {
		r.refused.Add(1)
		client.Close()
		return
	}
	pr := &pair{client: client, server: server}
	if !r.register(pr, t) {
		r.refused.Add(1)
		pr.close()
		return
	}
	r.accepted.Add(1)
	defer r.unregister(pr)
	done := make(chan struct{})
	go func() {
		n, _ := io.Copy(server, client)
		r.toServer.Add(n)
		pr.close()
		close(done)
	}()
	n, _ := io.Copy(client, server)
	r.toClient.Add(n)
	pr.close()
	<-done
}

// Close stops accepting, closes every open connection of the route and
// waits for the forwarding goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.route.Set(Target{})
	p.wg.Wait()
	return err
}
