package turn

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	pionturn "github.com/pion/turn/v5"
)

var (
	errTCPRelay    = errors.New("TCP relay allocations (RFC 6062) are not supported")
	errFamily      = errors.New("address family not served by the relay address")
	errNoRelayPort = errors.New("no free port in the relay range")
	errPeerDenied  = errors.New("peer address refused by policy")
	errQuota       = errors.New("allocation quota reached")
)

// relayGenerator is the RelayAddressGenerator of every listener. It binds
// UDP relay sockets in the relay port range, counts them against the
// quotas, bounds their lifetime and wraps them so that every datagram to a
// peer passes the policy. TCP relays (RFC 6062, unused by WebRTC) are
// refused, which removes TCP connects to peers altogether.
type relayGenerator struct{ s *Server }

func (g *relayGenerator) Validate() error { return nil }

func (g *relayGenerator) AllocateListener(pionturn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	g.s.m.refused.WithLabelValues(refusedTCP).Inc()
	return nil, nil, errTCPRelay
}

func (g *relayGenerator) AllocateConn(pionturn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTCPRelay
}

// AllocatePacketConn binds a relay socket. pion calls it with an empty
// UserID to probe for an even port (the socket is closed at once): such
// probes are not counted as allocations.
func (g *relayGenerator) AllocatePacketConn(conf pionturn.AllocateListenerConfig) (pc net.PacketConn, relay net.Addr, err error) {
	s := g.s
	defer func() {
		if v := recover(); v != nil {
			s.recovered("allocate", v)
			if pc != nil {
				pc.Close()
			}
			pc, relay, err = nil, nil, fmt.Errorf("allocate relay: panic: %v", v)
		}
	}()
	if (conf.Network == "udp4") != s.relayIP.Is4() || (conf.Network != "udp4" && conf.Network != "udp6") {
		s.m.refused.WithLabelValues(refusedFamily).Inc()
		return nil, nil, fmt.Errorf("allocate relay %s: %w", conf.Network, errFamily)
	}
	counted := conf.UserID != ""
	if counted {
		s.mu.Lock()
		reason := s.quotaExceeded(conf.UserID)
		if reason == "" && s.closing {
			reason = "closing"
		}
		if reason == "" {
			s.perUser[conf.UserID]++
			s.total++
		}
		s.mu.Unlock()
		if reason != "" {
			if reason != "closing" {
				s.m.refused.WithLabelValues(reason).Inc()
			}
			return nil, nil, fmt.Errorf("allocate relay for %q: %w (%s)", conf.UserID, errQuota, reason)
		}
	}
	udp, err := g.bind(conf.Network, conf.RequestedPort)
	if err != nil {
		if counted {
			s.release(conf.UserID)
			s.m.refused.WithLabelValues(refusedNoPort).Inc()
		}
		s.log.Warn("turn relay allocation failed", "user", conf.UserID, "err", err)
		return nil, nil, err
	}
	port := udp.LocalAddr().(*net.UDPAddr).Port
	rc := &relayConn{UDPConn: udp, s: s, userID: conf.UserID, counted: counted}
	if counted {
		// pion deletes the allocation when a read on its relay fails, so a
		// read deadline is a lifetime no refresh can extend.
		if err := udp.SetReadDeadline(time.Now().Add(s.lifetime)); err != nil {
			udp.Close()
			s.release(conf.UserID)
			return nil, nil, fmt.Errorf("allocate relay: %w", err)
		}
		s.mu.Lock()
		s.relays[rc] = struct{}{}
		s.mu.Unlock()
		s.m.created.Inc()
		s.m.active.Inc()
	}
	return rc, &net.UDPAddr{IP: s.relayIP.AsSlice(), Port: port}, nil
}

// bind opens a UDP socket on a port of the relay range: the requested one
// (EVEN-PORT / RESERVATION-TOKEN), else random ports, then a scan of the
// whole range from a random start, so a nearly full range still succeeds.
func (g *relayGenerator) bind(network string, requested int) (*net.UDPConn, error) {
	s := g.s
	try := func(port int) (*net.UDPConn, error) {
		return net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.bindIP, uint16(port))))
	}
	if requested != 0 {
		if requested < int(s.portMin) || requested > int(s.portMax) {
			return nil, fmt.Errorf("requested relay port %d: %w", requested, errNoRelayPort)
		}
		return try(requested)
	}
	span := int(s.portMax) - int(s.portMin) + 1
	for range min(randomPortTries, span) {
		conn, err := try(int(s.portMin) + rand.IntN(span))
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("bind relay: %w", err)
		}
	}
	start := rand.IntN(span)
	for i := range span {
		conn, err := try(int(s.portMin) + (start+i)%span)
		if err == nil {
			return conn, nil
		}
	}
	return nil, errNoRelayPort
}

// release returns a quota slot of userID.
func (s *Server) release(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser[userID]--; s.perUser[userID] <= 0 {
		delete(s.perUser, userID)
	}
	s.total--
}

// relayConn is an allocation's relay socket: it applies the peer policy to
// every datagram sent (own addresses only on relay-range ports), counts
// relayed bytes, and frees the quota slot when pion closes it.
type relayConn struct {
	*net.UDPConn
	s       *Server
	userID  string
	counted bool
	once    sync.Once
}

func (r *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || !r.s.policy.permitDest(ua.AddrPort()) {
		r.s.m.denied.Inc()
		return 0, fmt.Errorf("relay to %v: %w", addr, errPeerDenied)
	}
	n, err := r.UDPConn.WriteTo(p, addr)
	r.s.m.toPeer.Add(float64(n))
	return n, err
}

func (r *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := r.UDPConn.ReadFrom(p)
	if n > 0 {
		r.s.m.fromPeer.Add(float64(n))
	}
	return n, addr, err
}

// Close closes the socket once and always returns nil: pion's
// AllocationManager.Close stops at the first error.
func (r *relayConn) Close() error {
	r.once.Do(func() {
		r.UDPConn.Close()
		if !r.counted {
			return
		}
		r.s.release(r.userID)
		r.s.m.active.Dec()
		r.s.mu.Lock()
		delete(r.s.relays, r)
		r.s.notify()
		r.s.mu.Unlock()
	})
	return nil
}

// screenConn is the UDP listener handed to pion. It parses each STUN
// message the way pion's server will, under recover, and drops a packet
// whose parsing panics instead of letting it crash the process.
type screenConn struct {
	net.PacketConn
	s    *Server
	once sync.Once
}

func (c *screenConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			c.once.Do(c.s.loopDone) // pion's read loop returns on any error
			return n, addr, err
		}
		if screenPacket(p[:n]) {
			return n, addr, nil
		}
		c.s.m.dropped.Inc()
		c.s.log.Warn("dropped a turn packet whose parsing panicked", "src", addrString(addr), "bytes", n)
	}
}

// tcpListener is the TCP listener handed to pion; it tracks the accepted
// connections so that Close can end them.
type tcpListener struct {
	net.Listener
	s    *Server
	once sync.Once
}

func (l *tcpListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		l.once.Do(l.s.loopDone) // pion's accept loop returns on any error
		return nil, err
	}
	c := &tcpConn{Conn: conn, s: l.s}
	l.s.mu.Lock()
	l.s.tcpConns[c] = struct{}{}
	closing := l.s.closing
	l.s.mu.Unlock()
	if closing {
		conn.Close()
	}
	return c, nil
}

// tcpConn is a TURN-over-TCP client connection. Reads time out after
// tcpIdleTimeout of silence. Close is pion's signal that it is done with
// the connection.
type tcpConn struct {
	net.Conn
	s    *Server
	once sync.Once
}

func (c *tcpConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(tcpIdleTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *tcpConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.tcpConns, c)
		c.s.notify()
		c.s.mu.Unlock()
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
