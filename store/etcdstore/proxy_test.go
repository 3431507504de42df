package etcdstore

import (
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
)

// silentProxy forwards TCP connections to one etcd member until silenced:
// then it forwards nothing more, either way, and closes nothing, as a
// member whose process is stopped or whose packets are dropped looks to
// its clients. New connections are accepted and left waiting. Once
// resumed, what was held back flows again (as TCP retransmits after a
// partition heals). Cut (setCut) is the other fault: every connection is
// dropped and new ones refused, as a partition that resets connections
// would, until restored.
type silentProxy struct {
	ln     net.Listener
	target string
	down   atomic.Int64 // bytes forwarded from the member to clients

	mu      sync.Mutex
	silent  bool
	cut     bool
	resumed chan struct{} // closed by resume
	closed  bool
	conns   map[net.Conn]bool
	wg      sync.WaitGroup
}

func newSilentProxy(t testing.TB, endpoint string) *silentProxy {
	t.Helper()
	u, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln, target: u.Host, conns: map[net.Conn]bool{}, resumed: make(chan struct{})}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

func (p *silentProxy) endpoint() string { return "http://" + p.ln.Addr().String() }

func (p *silentProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

func (p *silentProxy) forward(c net.Conn) {
	if !p.await() {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.closed || p.cut {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	pipe := func(dst, src net.Conn, count *atomic.Int64) {
		defer func() { dst.Close(); src.Close() }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if !p.await() {
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
				if count != nil {
					count.Add(int64(n))
				}
			}
			if err != nil {
				return
			}
		}
	}
	p.wg.Go(func() { pipe(up, c, nil) })
	pipe(c, up, &p.down)
}

// await waits while the proxy is silent; false once it is closed.
func (p *silentProxy) await() bool {
	for {
		p.mu.Lock()
		silent, closed, resumed := p.silent, p.closed, p.resumed
		p.mu.Unlock()
		if closed {
			return false
		}
		if !silent {
			return true
		}
		<-resumed
	}
}

// silence stops all forwarding, closing nothing.
func (p *silentProxy) silence() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.silent {
		p.silent, p.resumed = true, make(chan struct{})
	}
}

// setCut drops every connection and refuses new ones (true), or lets
// them through again (false).
func (p *silentProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// resume forwards again.
func (p *silentProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.silent {
		p.silent = false
		close(p.resumed)
	}
}

func (p *silentProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.resume()
	p.wg.Wait()
}
