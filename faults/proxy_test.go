package faults

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echo is a TCP server that writes back every line it reads.
func echo(t *testing.T) string {
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
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes line on c and reads a line back within d; ok false
// when none came.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string, d time.Duration) (string, bool) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(d))
	got, err := r.ReadString('\n')
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return "", false
		}
		t.Fatal(err)
	}
	return strings.TrimSpace(got), true
}

// A blackholed proxy forwards nothing and closes nothing; restored, it
// delivers what it held, in order.
func TestProxyBlackholeHoldsAndRestores(t *testing.T) {
	p := NewProxy(t, echo(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, ok := roundTrip(t, c, r, "one", 5*time.Second); !ok || got != "one" {
		t.Fatalf("before the blackhole: %q %v", got, ok)
	}
	p.Blackhole()
	if got, ok := roundTrip(t, c, r, "two", 300*time.Millisecond); ok {
		t.Fatalf("through the blackhole: %q", got)
	}
	// A new connection is accepted but gets nothing through either.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	r2 := bufio.NewReader(c2)
	if got, ok := roundTrip(t, c2, r2, "new", 300*time.Millisecond); ok {
		t.Fatalf("a new connection through the blackhole: %q", got)
	}
	p.Restore()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || strings.TrimSpace(got) != "two" {
		t.Fatalf("after the restore: %q %v", got, err)
	}
	if got, ok := roundTrip(t, c, r, "three", 5*time.Second); !ok || got != "three" {
		t.Fatalf("after the restore: %q %v", got, ok)
	}
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := r2.ReadString('\n'); err != nil || strings.TrimSpace(got) != "new" {
		t.Fatalf("the new connection after the restore: %q %v", got, err)
	}
}

// A peer proxy blackholes only the connections whose first request came
// from the member named.
func TestPeerProxyBlackholeFrom(t *testing.T) {
	p := NewPeerProxy(t, echo(t))
	open := func(from string) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "GET /raft HTTP/1.1\r\nHost: x\r\nX-Server-From: "+from+"\r\n\r\n")
		r := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for { // the header comes back
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if line == "\r\n" {
				break
			}
		}
		return c, r
	}
	a, ra := open("a1")
	b, rb := open("b2")
	p.BlackholeFrom("a1")
	if got, ok := roundTrip(t, a, ra, "x", 300*time.Millisecond); ok {
		t.Fatalf("from a1 through its blackhole: %q", got)
	}
	if got, ok := roundTrip(t, b, rb, "y", 5*time.Second); !ok || got != "y" {
		t.Fatalf("from b2: %q %v", got, ok)
	}
	p.Restore()
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := ra.ReadString('\n'); err != nil || strings.TrimSpace(got) != "x" {
		t.Fatalf("from a1 after the restore: %q %v", got, err)
	}
}
