package endpoint_test

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nodeha/nodeha/endpoint"
)

// echo is a server that answers each line with its name and the line.
func echo(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					io.WriteString(c, name+":"+s.Text()+"\n")
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func ask(t *testing.T, c net.Conn, line string) (string, error) {
	t.Helper()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(got), err
}

func TestRouteForwardsAndClosesOnChange(t *testing.T) {
	a, b := echo(t, "a"), echo(t, "b")
	r := endpoint.NewRoute("rw", slog.New(slog.NewTextHandler(io.Discard, nil)))
	p, err := endpoint.Listen("127.0.0.1:0", r)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// No target: the connection is closed at once (libpq tries the next host).
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ask(t, c, "x"); err == nil {
		t.Fatal("a connection with no target was served")
	}
	c.Close()

	r.Set(endpoint.Target{Addr: a, Member: "pg1"})
	c, err = net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := ask(t, c, "hello"); err != nil || got != "a:hello" {
		t.Fatalf("through the endpoint: %q %v, want a:hello", got, err)
	}

	// The primary changes: the open connection to the old one is closed.
	r.Set(endpoint.Target{Addr: b, Member: "pg2"})
	if got, err := ask(t, c, "still there?"); err == nil {
		t.Fatalf("a connection to the old target survived the change: %q", got)
	}
	c2, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := ask(t, c2, "again"); err != nil || got != "b:again" {
		t.Fatalf("after the change: %q %v, want b:again", got, err)
	}
	st := r.Stats()
	if st.RoutingChanges != 2 || st.ClosedOnChange != 1 || st.Accepted != 2 || st.Refused != 1 || st.Open != 1 || st.Target.Member != "pg2" || st.BytesToClient == 0 {
		t.Errorf("stats %+v", st)
	}
}

// Many short connections leave no goroutine behind.
func TestNoGoroutineLeak(t *testing.T) {
	a := echo(t, "a")
	r := endpoint.NewRoute("ro", slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.Set(endpoint.Target{Addr: a, Member: "pg1"})
	p, err := endpoint.Listen("127.0.0.1:0", r)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	before := runtime.NumGoroutine()
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ask(t, c, "x"); err != nil || got != "a:x" {
			t.Fatalf("%q %v", got, err)
		}
		c.Close()
	}
	for i := 0; i < 40; i++ {
		if n := runtime.NumGoroutine(); n <= before+2 && r.Stats().Open == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("goroutines %d before, %d after 200 connections; open %d", before, runtime.NumGoroutine(), r.Stats().Open)
}
