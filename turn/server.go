// Package turn runs tincan's embedded STUN/TURN server (pion/turn/v5) and
// issues the time-limited TURN REST API credentials that it, or an external
// coturn sharing the secret, accepts.
//
// The server is safe by default: relaying to loopback, private, CGNAT,
// link-local, unique-local, multicast and reserved addresses, and to the
// host's own addresses, is refused on every listener (see PeerAllowed);
// allocations are bounded per user, in total, and in lifetime.
package turn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	pionturn "github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults applied by Start to zero Config fields.
const (
	DefaultAddr         = ":3478"
	DefaultRealm        = "tincan"
	DefaultRelayPortMin = 49152
	DefaultRelayPortMax = 65535
	DefaultMaxLifetime  = 12 * time.Hour
)

const (
	// tcpIdleTimeout closes a TURN-over-TCP connection that sent nothing
	// for this long (clients refresh allocations every few minutes).
	tcpIdleTimeout = 15 * time.Minute
	// closeWait bounds how long Close waits for pion's goroutines.
	closeWait = 5 * time.Second
	// randomPortTries random relay ports are tried before a full scan.
	randomPortTries = 32
)

// Config configures the embedded STUN/TURN server.
type Config struct {
	// Addr is the UDP and TCP listen address, DefaultAddr when empty. Its
	// port may be 0 (tests): both listeners then share one free port.
	Addr string
	// PublicIP is the relay address handed to peers (an IP, not a name).
	// Empty means FirstNonLoopbackIP(). Allocations are served in its
	// address family only.
	PublicIP string
	// Realm is the TURN realm, DefaultRealm when empty.
	Realm string
	// Secret is the shared secret of the TURN REST credentials. Required.
	Secret []byte
	// RelayPortMin and RelayPortMax bound the relay ports (inclusive);
	// both zero means DefaultRelayPortMin-DefaultRelayPortMax.
	RelayPortMin, RelayPortMax uint16
	// AllowLoopback lets clients relay to loopback peers (local testing only).
	AllowLoopback bool
	// AllowPeers are peer prefixes admitted although the deny list covers them.
	AllowPeers []netip.Prefix
	// MaxAllocationsPerUser bounds the open allocations of one client id
	// (the part of the username after its first colon); 0 is unlimited.
	MaxAllocationsPerUser int
	// MaxAllocations bounds the open allocations of the server; 0 is unlimited.
	MaxAllocations int
	// MaxLifetime bounds the age of an allocation however often it is
	// refreshed; DefaultMaxLifetime when not positive.
	MaxLifetime time.Duration
	// Registerer receives the metrics (tincan_turn_*); nil registers none.
	Registerer prometheus.Registerer
	// Logger receives the server's and pion's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Server is a running embedded STUN/TURN server.
type Server struct {
	log        *slog.Logger
	realm      string
	secret     []byte
	maxPerUser int
	maxTotal   int
	lifetime   time.Duration
	policy     *peerPolicy
	relayIP    netip.Addr
	bindIP     netip.Addr // relay sockets' bind address; unspecified for all
	portMin    uint16
	portMax    uint16
	port       int
	m          *metrics
	reg        prometheus.Registerer
	pion       *pionturn.Server

	mu       sync.Mutex
	perUser  map[string]int
	total    int
	relays   map[*relayConn]struct{}
	tcpConns map[*tcpConn]struct{}
	loops    int  // pion read/accept loops still running
	closing  bool // Close has begun
	changed  chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Start listens on cfg.Addr (UDP and TCP) and returns once both listeners
// are open and the server answers. ctx bounds only the start; call Close to
// stop the server.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	udp, tcp, err := listen(ctx, cfg.Addr)
	if err != nil {
		return nil, err
	}
	s.port = udp.LocalAddr().(*net.UDPAddr).Port
	if err := s.setBindIP(udp.LocalAddr().(*net.UDPAddr)); err != nil {
		udp.Close()
		tcp.Close()
		return nil, err
	}
	if err := s.m.register(s.reg); err != nil {
		udp.Close()
		tcp.Close()
		return nil, err
	}

	s.loops = 2
	gen := &relayGenerator{s: s}
	s.pion, err = pionturn.NewServer(pionturn.ServerConfig{
		Realm:         s.realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.quota,
		EventHandler:  pionturn.EventHandler{OnAuth: s.onAuth},
		LoggerFactory: newSlogFactory(s.log),
		PacketConnConfigs: []pionturn.PacketConnConfig{{
			PacketConn:            &screenConn{PacketConn: udp, s: s},
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permission,
		}},
		ListenerConfigs: []pionturn.ListenerConfig{{
			Listener:              &tcpListener{Listener: tcp, s: s},
			RelayAddressGenerator: gen,
			PermissionHandler:     s.permission,
		}},
	})
	if err != nil {
		udp.Close()
		tcp.Close()
		s.m.unregister(s.reg)
		return nil, fmt.Errorf("start turn server: %w", err)
	}
	s.log.Info("turn server listening", "addr", udp.LocalAddr().String(), "public_ip", s.relayIP.String(),
		"relay_ports", fmt.Sprintf("%d-%d", s.portMin, s.portMax), "realm", s.realm,
		"allow_loopback", s.policy.allowLoopback)
	return s, nil
}

// newServer validates cfg and builds a Server without sockets.
func newServer(cfg Config) (*Server, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("turn: secret is empty")
	}
	if cfg.MaxAllocationsPerUser < 0 || cfg.MaxAllocations < 0 {
		return nil, errors.New("turn: allocation limits must not be negative")
	}
	s := &Server{
		log:        cfg.Logger,
		realm:      cfg.Realm,
		secret:     append([]byte(nil), cfg.Secret...),
		maxPerUser: cfg.MaxAllocationsPerUser,
		maxTotal:   cfg.MaxAllocations,
		lifetime:   cfg.MaxLifetime,
		portMin:    cfg.RelayPortMin,
		portMax:    cfg.RelayPortMax,
		m:          newMetrics(),
		reg:        cfg.Registerer,
		perUser:    make(map[string]int),
		relays:     make(map[*relayConn]struct{}),
		tcpConns:   make(map[*tcpConn]struct{}),
		changed:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "turn")
	if s.realm == "" {
		s.realm = DefaultRealm
	}
	if s.lifetime <= 0 {
		s.lifetime = DefaultMaxLifetime
	}
	if s.portMin == 0 && s.portMax == 0 {
		s.portMin, s.portMax = DefaultRelayPortMin, DefaultRelayPortMax
	}
	if s.portMin == 0 || s.portMin > s.portMax {
		return nil, fmt.Errorf("turn: bad relay port range %d-%d", s.portMin, s.portMax)
	}
	if cfg.PublicIP == "" {
		ip, err := FirstNonLoopbackIP()
		if err != nil {
			return nil, fmt.Errorf("turn: public ip: %w", err)
		}
		s.relayIP = ip
	} else {
		ip, err := netip.ParseAddr(trimBrackets(cfg.PublicIP))
		if err != nil {
			return nil, fmt.Errorf("turn: public ip: %w", err)
		}
		s.relayIP = ip.Unmap()
	}
	if s.relayIP.IsUnspecified() || s.relayIP.IsMulticast() || s.relayIP.Zone() != "" {
		return nil, fmt.Errorf("turn: public ip %s cannot be a relay address", s.relayIP)
	}
	own := hostAddrs()
	own[s.relayIP] = true
	s.policy = &peerPolicy{
		allowLoopback: cfg.AllowLoopback,
		allow:         append([]netip.Prefix(nil), cfg.AllowPeers...),
		relayIP:       s.relayIP,
		own:           own,
		portMin:       s.portMin,
		portMax:       s.portMax,
	}
	if len(s.secret) < 16 {
		s.log.Warn("turn secret is shorter than 16 bytes; use a long random secret")
	}
	return s, nil
}

func trimBrackets(s string) string {
	if len(s) > 1 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

// listen opens the UDP socket and a TCP listener on the same port. When
// the port is 0, a port free for UDP may be taken for TCP: then it retries.
func listen(ctx context.Context, addr string) (net.PacketConn, net.Listener, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("turn: listen address %q: %w", addr, err)
	}
	var lc net.ListenConfig
	for try := 0; ; try++ {
		udp, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("turn: listen udp: %w", err)
		}
		udpPort := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, udpPort))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if port != "0" || try == 10 || ctx.Err() != nil {
			return nil, nil, fmt.Errorf("turn: listen tcp: %w", err)
		}
	}
}

// setBindIP derives the relay sockets' bind address from the UDP listener:
// a specific listen address is reused for relays and must be of the relay
// address's family; a wildcard listener relays from every address.
func (s *Server) setBindIP(local *net.UDPAddr) error {
	ip, ok := netip.AddrFromSlice(local.IP)
	if !ok || ip.IsUnspecified() {
		s.bindIP = netip.IPv4Unspecified()
		if s.relayIP.Is6() {
			s.bindIP = netip.IPv6Unspecified()
		}
		return nil
	}
	ip = ip.Unmap()
	if ip.Is4() != s.relayIP.Is4() {
		return fmt.Errorf("turn: listen address %s and public ip %s are of different families", ip, s.relayIP)
	}
	s.bindIP = ip
	return nil
}

// Port returns the port the server listens on (UDP and TCP).
func (s *Server) Port() int { return s.port }

// URLs returns EmbeddedURLs for the server's public IP and port, the URLs
// to put in Credentials.URLs.
func (s *Server) URLs() []string { return EmbeddedURLs(s.relayIP.String(), s.port) }

// Close stops the server: it closes the listeners, every TURN-over-TCP
// connection and every allocation, and waits (a few seconds at most) until
// the server's goroutines have let go of them. It is safe to call more than
// once; later calls return the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		conns := make([]*tcpConn, 0, len(s.tcpConns))
		for c := range s.tcpConns {
			conns = append(conns, c)
		}
		s.mu.Unlock()

		var errs []error
		if err := s.pion.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close turn listeners: %w", err))
		}
		for _, c := range conns {
			c.Conn.Close() // pion's reader sees the error and releases c
		}
		if !s.waitIdle(closeWait) {
			s.mu.Lock()
			stuck := make([]*relayConn, 0, len(s.relays))
			for r := range s.relays {
				stuck = append(stuck, r)
			}
			s.mu.Unlock()
			for _, r := range stuck {
				r.Close()
			}
			s.log.Warn("turn server goroutines did not finish in time", "wait", closeWait.String())
		}
		s.m.unregister(s.reg)
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// waitIdle waits until no pion loop, TCP connection or relay is left.
func (s *Server) waitIdle(d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		idle := s.loops == 0 && len(s.tcpConns) == 0 && len(s.relays) == 0
		changed := s.changed
		s.mu.Unlock()
		if idle {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// notify wakes waitIdle; s.mu must be held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// loopDone records the end of a pion read or accept loop.
func (s *Server) loopDone() {
	s.mu.Lock()
	s.loops--
	s.notify()
	s.mu.Unlock()
}

// recovered logs a panic caught in one of our callbacks; the callback then
// refuses whatever it was asked.
func (s *Server) recovered(where string, v any) {
	s.log.Error("recovered from panic in turn callback", "callback", where, "panic", fmt.Sprint(v))
}

// authenticate is pion's AuthHandler: it accepts a TURN REST username that
// has not expired, in our realm, and returns the key that the request's
// MESSAGE-INTEGRITY must match (pion refuses a wrong HMAC). The user id
// is the client id, so quotas and refreshes follow the client across
// renewed credentials.
func (s *Server) authenticate(ra *pionturn.RequestAttributes) (userID string, key []byte, ok bool) {
	defer func() {
		if v := recover(); v != nil {
			s.recovered("auth", v)
			userID, key, ok = "", nil, false
		}
	}()
	refuse := func(reason string) (string, []byte, bool) {
		s.m.authFail.WithLabelValues(reason).Inc()
		s.log.Debug("turn auth refused", "reason", reason, "username", ra.Username, "src", addrString(ra.SrcAddr))
		return "", nil, false
	}
	if ra.Realm != s.realm {
		return refuse(authRealm)
	}
	expiry, clientID, err := parseUsername(ra.Username)
	if err != nil {
		return refuse(authMalformed)
	}
	if expiry < time.Now().Unix() {
		return refuse(authExpired)
	}
	password := credentialFor(s.secret, ra.Username)
	return clientID, pionturn.GenerateAuthKey(ra.Username, ra.Realm, password), true
}

// onAuth counts requests whose MESSAGE-INTEGRITY did not match.
func (s *Server) onAuth(src, _ net.Addr, _, username, _, method string, verdict bool) {
	defer func() {
		if v := recover(); v != nil {
			s.recovered("on-auth", v)
		}
	}()
	if !verdict {
		s.m.authFail.WithLabelValues(authIntegrity).Inc()
		s.log.Debug("turn auth refused", "reason", authIntegrity, "username", username, "method", method, "src", addrString(src))
	}
}

// quota is pion's QuotaHandler, asked before an allocation is made: it
// answers 486 (Allocation Quota Reached) beyond the limits. The relay
// generator enforces them again atomically with the allocation.
func (s *Server) quota(userID, _ string, src net.Addr) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			s.recovered("quota", v)
			ok = false
		}
	}()
	s.mu.Lock()
	reason := s.quotaExceeded(userID)
	s.mu.Unlock()
	if reason != "" {
		s.m.refused.WithLabelValues(reason).Inc()
		s.log.Info("turn allocation refused", "reason", reason, "user", userID, "src", addrString(src))
		return false
	}
	return true
}

// quotaExceeded names the limit a new allocation of userID would exceed,
// or returns ""; s.mu must be held.
func (s *Server) quotaExceeded(userID string) string {
	switch {
	case s.maxPerUser > 0 && s.perUser[userID] >= s.maxPerUser:
		return refusedUserQuota
	case s.maxTotal > 0 && s.total >= s.maxTotal:
		return refusedTotalQuota
	}
	return ""
}

// permission is the PermissionHandler of every listener (CreatePermission,
// ChannelBind and TCP Connect all pass through it).
func (s *Server) permission(client net.Addr, peer net.IP) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			s.recovered("permission", v)
			ok = false
		}
	}()
	ip, valid := netip.AddrFromSlice(peer)
	if valid && s.policy.permit(ip) {
		return true
	}
	s.m.denied.Inc()
	s.log.Debug("turn peer refused", "peer", peer.String(), "client", addrString(client))
	return false
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
