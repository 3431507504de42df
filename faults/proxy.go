package faults

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy forwards TCP connections from a loopback port to one target. It
// can blackhole them: while it does, it stops forwarding in both
// directions without closing anything (it stops reading, so the senders'
// kernel buffers fill and their writes block, as over a link that drops
// every packet), and it accepts new connections but forwards nothing on
// them. Restored, it forwards what was held, intact, as TCP delivers what
// it retransmits once a partition heals.
//
// For etcd's peer links a Proxy can also blackhole only the connections
// that a given member opened: it reads the member id from the
// X-Server-From header of the first request on a connection (etcd's
// rafthttp sends it on every peer request).
type Proxy struct {
	ln     net.Listener
	target string
	peek   bool // read X-Server-From from each connection's first request

	mu      sync.Mutex
	changed *sync.Cond
	all     bool            // every connection blackholed
	from    map[string]bool // connections from these X-Server-From ids blackholed
	conns   map[net.Conn]bool
	closed  bool
	bytes   atomic.Int64 // forwarded, both directions
	wg      sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to target
// (host:port) until the end of the test.
func NewProxy(t testing.TB, target string) *Proxy { t.Helper(); return newProxy(t, target, false) }

func newProxy(t testing.TB, target string, peek bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, peek: peek, from: map[string]bool{}, conns: map[net.Conn]bool{}}
	p.changed = sync.NewCond(&p.mu)
	p.wg.Go(p.serve)
	t.Cleanup(p.Close)
	return p
}

// NewPeerProxy is NewProxy for an etcd member's peer URL: it knows which
// member opened each connection, for BlackholeFrom.
func NewPeerProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return newProxy(t, target, true)
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Bytes is how many bytes the proxy forwarded so far, both directions.
func (p *Proxy) Bytes() int64 { return p.bytes.Load() }

// Blackhole stops forwarding on every connection, old and new.
func (p *Proxy) Blackhole() { p.set(func() { p.all = true }) }

// BlackholeFrom stops forwarding on the connections whose first request
// says X-Server-From: id (hexadecimal, as etcd writes it).
func (p *Proxy) BlackholeFrom(id string) { p.set(func() { p.from[id] = true }) }

// Restore forwards everything again.
func (p *Proxy) Restore() { p.set(func() { p.all = false; clear(p.from) }) }

func (p *Proxy) set(f func()) {
	p.mu.Lock()
	f()
	p.changed.Broadcast()
	p.mu.Unlock()
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.changed.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

// track adds c to the connections Close closes; false when closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

// waitOpen blocks while a connection from src is blackholed; false once
// the proxy is closed.
func (p *Proxy) waitOpen(src string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && (p.all || (src != "" && p.from[src])) {
		p.changed.Wait()
	}
	return !p.closed
}

func (p *Proxy) forward(down net.Conn) {
	if !p.track(down) {
		return
	}
	defer p.untrack(down)
	// The first request's header, read ahead: who opened the connection.
	br := bufio.NewReaderSize(down, 16<<10)
	var head bytes.Buffer
	src := ""
	for p.peek && head.Len() < 16<<10 {
		line, err := br.ReadSlice('\n')
		head.Write(line)
		if err != nil && err != bufio.ErrBufferFull {
			return
		}
		s := strings.TrimSpace(string(line))
		if s == "" {
			break
		}
		if k, v, ok := strings.Cut(s, ":"); ok && strings.EqualFold(k, "X-Server-From") {
			src = strings.TrimSpace(v)
		}
	}
	if !p.waitOpen(src) {
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(up) {
		return
	}
	defer p.untrack(up)
	done := make(chan struct{})
	go func() {
		p.pipe(up, io.MultiReader(&head, br), src)
		up.Close()
		down.Close()
		close(done)
	}()
	p.pipe(down, up, src)
	up.Close()
	down.Close()
	<-done
}

// pipe copies src to dst, holding each chunk while the connection is
// blackholed.
func (p *Proxy) pipe(dst io.Writer, src io.Reader, from string) {
	buf := make([]byte, 32<<10)
	for {
		if !p.waitOpen(from) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitOpen(from) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			p.bytes.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}
