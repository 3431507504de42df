package etcdtest

import (
	"io"
	"net"
	"sync"
)

// gate is a member's client port as its clients see it: a listener of the
// test's own that forwards each connection to wherever the member listens
// now. It outlives the member's runs, so that clients keep one URL, and it
// lets Stop cut every client connection at once, as the death of the
// member's process would (etcd itself would give them time to go).
type gate struct {
	ln net.Listener

	mu     sync.Mutex
	target string                // the member's own client address; "" while it is stopped
	conns  map[net.Conn]struct{} // both ends of every forwarded connection
}

// openGate listens on a free loopback port and forwards nothing until open.
func openGate() (*gate, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := &gate{ln: ln, conns: map[net.Conn]struct{}{}}
	go g.serve()
	return g, nil
}

func (g *gate) addr() string { return g.ln.Addr().String() }

func (g *gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return // closed
		}
		go g.forward(c)
	}
}

// forward passes c to the member, or closes it at once while the member is
// stopped (as a port where nothing listens would refuse it).
func (g *gate) forward(c net.Conn) {
	g.mu.Lock()
	target := g.target
	g.mu.Unlock()
	if target == "" {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.target != target { // stopped meanwhile
		g.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	g.conns[c], g.conns[up] = struct{}{}, struct{}{}
	g.mu.Unlock()
	var once sync.Once
	done := func() {
		once.Do(func() {
			c.Close()
			up.Close()
			g.mu.Lock()
			delete(g.conns, c)
			delete(g.conns, up)
			g.mu.Unlock()
		})
	}
	go func() { io.Copy(up, c); done() }()
	io.Copy(c, up)
	done()
}

// open forwards new connections to target, the member's own client
// address.
func (g *gate) open(target string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.target = target
}

// cut closes every forwarded connection and refuses new ones until open.
func (g *gate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.target = ""
	for c := range g.conns {
		c.Close()
	}
}

// close cuts and stops listening.
func (g *gate) close() {
	g.ln.Close()
	g.cut()
}
