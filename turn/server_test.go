package turn

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

// udpPeer is a UDP echo peer on 127.0.0.1.
func udpPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	return c
}

// TestAllocateAndRelay allocates over UDP and over TCP with credentials
// from Credentials and relays to a loopback echo peer (AllowLoopback).
func TestAllocateAndRelay(t *testing.T) {
	s, reg := startServer(t, func(c *Config) { c.AllowLoopback = true })
	peer := udpPeer(t)
	cr := creds(testSecret)
	cr.URLs = s.URLs()

	for i, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			user, pass := userPass(t, cr, "client-"+network)
			client := newClient(t, network, serverAddr(s), user, pass)
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			defer relay.Close()
			ra := relay.LocalAddr().(*net.UDPAddr)
			if !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) || ra.Port < 40000 || ra.Port > 49999 {
				t.Fatalf("relay address %v: want 127.0.0.1 and a port in 40000-49999", ra)
			}
			msg := []byte("hello through " + network)
			buf := make([]byte, 1500)
			// The first datagrams may race the permission; retry a few times.
			var got []byte
			for try := 0; try < 10 && got == nil; try++ {
				if _, err := relay.WriteTo(msg, peer.LocalAddr()); err != nil {
					t.Fatalf("WriteTo: %v", err)
				}
				relay.SetReadDeadline(time.Now().Add(time.Second))
				n, from, err := relay.ReadFrom(buf)
				if err == nil {
					if from.String() != peer.LocalAddr().String() {
						t.Fatalf("reply from %v, want %v", from, peer.LocalAddr())
					}
					got = buf[:n]
				}
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo = %q, want %q", got, msg)
			}
			if v := metric(t, reg, "tincan_turn_allocations_created_total"); v != float64(i+1) {
				t.Errorf("allocations_created_total = %v, want %d", v, i+1)
			}
			if v := metric(t, reg, "tincan_turn_allocations_active"); v != 1 {
				t.Errorf("allocations_active = %v, want 1", v)
			}
		})
		// The client's Close releases its allocation without waiting for
		// the server: wait, so that the next transport counts only its own.
		eventually(t, 5*time.Second, network+" allocation released", func() bool {
			return metric(t, reg, "tincan_turn_allocations_active") == 0
		})
	}
	for _, dir := range []string{"to_peer", "from_peer"} {
		if v := metric(t, reg, "tincan_turn_relayed_bytes_total", "direction", dir); v < float64(2*len("hello through udp")) {
			t.Errorf("relayed_bytes_total{direction=%q} = %v, want at least one message each way per transport", dir, v)
		}
	}
}

// TestCredentialsRefused checks that the embedded server refuses expired,
// forged and malformed usernames and a foreign realm, each counted.
func TestCredentialsRefused(t *testing.T) {
	s, reg := startServer(t, nil)
	good := creds(testSecret)
	expired := creds(testSecret)
	expired.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	forged := creds([]byte("some-other-secret"))

	expUser, expPass := userPass(t, expired, "alice")
	forgedUser, forgedPass := userPass(t, forged, "alice")
	goodUser, goodPass := userPass(t, good, "alice")

	cases := []struct {
		name, user, pass, reason string
	}{
		{"expired", expUser, expPass, authExpired},
		{"wrong hmac", forgedUser, forgedPass, authIntegrity},
		{"right username wrong credential", goodUser, forgedPass, authIntegrity},
		{"no expiry", "alice", credentialFor(testSecret, "alice"), authMalformed},
		{"no client id", "99999999999:", credentialFor(testSecret, "99999999999:"), authMalformed},
		{"signed expiry", "+99999999999:alice", credentialFor(testSecret, "+99999999999:alice"), authMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := metric(t, reg, "tincan_turn_auth_failures_total", "reason", tc.reason)
			client := newClient(t, "udp", serverAddr(s), tc.user, tc.pass)
			if relay, err := client.Allocate(); err == nil {
				relay.Close()
				t.Fatalf("Allocate with %s credentials succeeded", tc.name)
			}
			if after := metric(t, reg, "tincan_turn_auth_failures_total", "reason", tc.reason); after <= before {
				t.Errorf("auth_failures_total{reason=%q} = %v, want > %v", tc.reason, after, before)
			}
		})
	}

	t.Run("foreign realm", func(t *testing.T) {
		before := metric(t, reg, "tincan_turn_auth_failures_total", "reason", authRealm)
		conn := rawClient(t, "udp4", serverAddr(s))
		nonce, _ := unauthenticatedAllocate(t, conn)
		res := roundTrip(t, conn, stun.MustBuild(stun.TransactionID,
			stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			requestedUDP, stun.NewUsername(goodUser), stun.NewRealm("elsewhere"), nonce,
			stun.NewLongTermIntegrity(goodUser, "elsewhere", goodPass), stun.Fingerprint))
		if res.Type.Class != stun.ClassErrorResponse {
			t.Fatalf("Allocate in realm %q: %v, want an error response", "elsewhere", res)
		}
		if after := metric(t, reg, "tincan_turn_auth_failures_total", "reason", authRealm); after <= before {
			t.Errorf("auth_failures_total{reason=realm} = %v, want > %v", after, before)
		}
	})

	// The same server still accepts a valid credential.
	client := newClient(t, "udp", serverAddr(s), goodUser, goodPass)
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("Allocate with good credentials: %v", err)
	}
	relay.Close()
}

// TestCredentialTTL checks that a credential stops working once its TTL
// has passed: a new allocation with it is refused.
func TestCredentialTTL(t *testing.T) {
	s, _ := startServer(t, nil)
	cr := creds(testSecret)
	cr.TTL = 4 * time.Second
	user, pass := userPass(t, cr, "bob")
	expiry, _, err := parseUsername(user)
	if err != nil {
		t.Fatal(err)
	}

	client := newClient(t, "udp", serverAddr(s), user, pass)
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("Allocate within TTL: %v", err)
	}
	relay.Close()

	// The username is valid through its expiry second.
	time.Sleep(time.Until(time.Unix(expiry+1, 100e6)))
	client2 := newClient(t, "udp", serverAddr(s), user, pass)
	if relay, err := client2.Allocate(); err == nil {
		relay.Close()
		t.Fatal("Allocate after the TTL succeeded")
	}
}

// TestPeerPolicyOnServer checks CreatePermission against the policy on both
// listeners: loopback and private peers are refused without AllowLoopback,
// including their IPv4-mapped and unspecified forms; a public peer and an
// allow-listed private peer are admitted.
func TestPeerPolicyOnServer(t *testing.T) {
	s, reg := startServer(t, func(c *Config) {
		c.AllowPeers = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}
	})
	user, pass := userPass(t, creds(testSecret), "carol")
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			client := newClient(t, network, serverAddr(s), user, pass)
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			defer relay.Close()
			for _, tc := range []struct {
				ip   string
				want bool
			}{
				{"127.0.0.1", false},
				{"0.0.0.0", false},
				{"10.0.0.1", false},
				{"169.254.169.254", false},
				{"127.0.0.1", false}, // again, after a refusal
				{"10.9.1.2", true},   // allow-listed
				{"8.8.8.8", true},    // public: the permission only, nothing is sent
			} {
				before := metric(t, reg, "tincan_turn_peer_denied_total")
				err := client.CreatePermission(&net.UDPAddr{IP: net.ParseIP(tc.ip), Port: 9})
				if got := err == nil; got != tc.want {
					t.Errorf("CreatePermission(%s) error = %v, want allowed=%v", tc.ip, err, tc.want)
				}
				after := metric(t, reg, "tincan_turn_peer_denied_total")
				if !tc.want && after <= before {
					t.Errorf("peer_denied_total did not grow for %s", tc.ip)
				}
			}
		})
	}
}

// TestMappedPeerAddressRefused sends CreatePermission with peers encoded
// as IPv6 addresses: IPv4-mapped loopback and private addresses (coturn's
// CVE-2026-27624) on an IPv4 relay, and ::1 and :: on an IPv6 relay. Each
// must be refused by the policy (403), not merely by the family check.
func TestMappedPeerAddressRefused(t *testing.T) {
	run := func(t *testing.T, s *Server, reg *prometheus.Registry, network, addr string, peers []string) {
		user, pass := userPass(t, creds(testSecret), "dave")
		sess := authenticatedAllocate(t, rawClient(t, network, addr), user, pass)
		for _, peer := range peers {
			before := metric(t, reg, "tincan_turn_peer_denied_total")
			res := sess.request(t, stun.MethodCreatePermission, xorPeerV6(net.ParseIP(peer), 80))
			var code stun.ErrorCodeAttribute
			if err := code.GetFrom(res); err != nil || code.Code != stun.CodeForbidden {
				t.Errorf("CreatePermission(%s): %v %v, want 403 Forbidden", peer, res, code)
			}
			if after := metric(t, reg, "tincan_turn_peer_denied_total"); after != before+1 {
				t.Errorf("CreatePermission(%s): peer_denied_total %v -> %v, want +1", peer, before, after)
			}
		}
	}
	t.Run("ipv4 relay", func(t *testing.T) {
		s, reg := startServer(t, nil)
		run(t, s, reg, "udp4", serverAddr(s), []string{"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:0.0.0.0", "::ffff:169.254.169.254"})
	})
	t.Run("ipv6 relay", func(t *testing.T) {
		if !hasIPv6Loopback() {
			t.Skip("::1 cannot be bound on this machine")
		}
		s, reg := startServer(t, func(c *Config) {
			c.Addr = "[::1]:0"
			c.PublicIP = "::1"
		})
		run(t, s, reg, "udp6", net.JoinHostPort("::1", strconv.Itoa(s.Port())), []string{"::1", "::", "fe80::1", "fd00::1", "64:ff9b::7f00:1"})
	})
}

// TestQuotas checks the per-user and total allocation limits, and that a
// closed allocation frees its slot.
func TestQuotas(t *testing.T) {
	s, reg := startServer(t, func(c *Config) {
		c.MaxAllocationsPerUser = 2
		c.MaxAllocations = 3
	})
	cr := creds(testSecret)
	alloc := func(clientID string) (net.PacketConn, error) {
		user, pass := userPass(t, cr, clientID)
		return newClient(t, "udp", serverAddr(s), user, pass).Allocate()
	}
	a1, err := alloc("erin")
	if err != nil {
		t.Fatalf("first allocation: %v", err)
	}
	a2, err := alloc("erin")
	if err != nil {
		t.Fatalf("second allocation: %v", err)
	}
	defer a2.Close()
	if r, err := alloc("erin"); err == nil {
		r.Close()
		t.Fatal("third allocation of one user succeeded, want 486")
	} else if !strings.Contains(err.Error(), "486") {
		t.Errorf("third allocation error = %v, want 486 Allocation Quota Reached", err)
	}
	if v := metric(t, reg, "tincan_turn_allocations_refused_total", "reason", refusedUserQuota); v != 1 {
		t.Errorf("refused{user_quota} = %v, want 1", v)
	}
	f1, err := alloc("frank")
	if err != nil {
		t.Fatalf("other user's allocation: %v", err)
	}
	defer f1.Close()
	if r, err := alloc("grace"); err == nil {
		r.Close()
		t.Fatal("fourth allocation on the server succeeded, want 486")
	}
	if v := metric(t, reg, "tincan_turn_allocations_refused_total", "reason", refusedTotalQuota); v != 1 {
		t.Errorf("refused{total_quota} = %v, want 1", v)
	}
	if v := metric(t, reg, "tincan_turn_allocations_active"); v != 3 {
		t.Errorf("allocations_active = %v, want 3", v)
	}

	a1.Close() // frees a slot of erin and of the server
	eventually(t, 5*time.Second, "slot freed", func() bool {
		return metric(t, reg, "tincan_turn_allocations_active") == 2
	})
	a3, err := alloc("erin")
	if err != nil {
		t.Fatalf("allocation after a close: %v", err)
	}
	a3.Close()
}

// TestQuotaTCPConcurrent opens allocations of one user concurrently over
// TCP (one pion goroutine each) and checks the limit is never exceeded.
func TestQuotaTCPConcurrent(t *testing.T) {
	s, reg := startServer(t, func(c *Config) { c.MaxAllocationsPerUser = 2 })
	user, pass := userPass(t, creds(testSecret), "heidi")
	const n = 8
	type result struct {
		relay net.PacketConn
		err   error
	}
	clients := make([]*pionturn.Client, n)
	for i := range clients {
		clients[i] = newClient(t, "tcp", serverAddr(s), user, pass)
	}
	results := make(chan result, n)
	for _, c := range clients {
		go func() {
			r, err := c.Allocate()
			results <- result{r, err}
		}()
	}
	ok := 0
	for range n {
		r := <-results
		if r.err == nil {
			ok++
			defer r.relay.Close()
		}
	}
	if ok != 2 {
		t.Fatalf("%d concurrent allocations succeeded, want exactly 2", ok)
	}
	if v := metric(t, reg, "tincan_turn_allocations_active"); v != 2 {
		t.Errorf("allocations_active = %v, want 2", v)
	}
}

// TestMaxLifetime checks that an allocation is deleted after MaxLifetime
// although the client refreshed it for much longer.
func TestMaxLifetime(t *testing.T) {
	s, reg := startServer(t, func(c *Config) { c.MaxLifetime = 4 * time.Second })
	user, pass := userPass(t, creds(testSecret), "ivan")
	start := time.Now()
	sess := authenticatedAllocate(t, rawClient(t, "udp4", serverAddr(s)), user, pass)
	if v := metric(t, reg, "tincan_turn_allocations_active"); v != 1 {
		t.Fatalf("allocations_active = %v, want 1", v)
	}
	res := sess.request(t, stun.MethodRefresh, setterFunc(func(m *stun.Message) error {
		m.Add(stun.AttrLifetime, []byte{0, 0, 0x0e, 0x0f}) // 3599 s
		return nil
	}))
	if res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("Refresh: %v", res)
	}
	eventually(t, 20*time.Second, "allocation deleted after MaxLifetime", func() bool {
		return metric(t, reg, "tincan_turn_allocations_active") == 0
	})
	if d := time.Since(start); d < 3500*time.Millisecond {
		t.Errorf("allocation deleted after %v, before MaxLifetime", d)
	}
	if n := s.pion.AllocationCount(); n != 0 {
		t.Errorf("pion still counts %d allocations", n)
	}
}

// TestMalformedPeerAddress sends the packets of advisory
// GHSA-34rh-wp3j-6cxc (a CreatePermission with a zero-length, then a
// truncated, XOR-PEER-ADDRESS) from a client holding valid credentials; the
// server must answer with an error and keep serving.
func TestMalformedPeerAddress(t *testing.T) {
	s, _ := startServer(t, nil)
	user, pass := userPass(t, creds(testSecret), "judy")
	conn := rawClient(t, "udp4", serverAddr(s))
	sess := authenticatedAllocate(t, conn, user, pass)
	for _, value := range [][]byte{{}, {0, 1}, {0, 1, 0, 80}, {0, 2, 0, 80, 1, 2, 3, 4}} {
		raw := stun.RawAttribute{Type: stun.AttrXORPeerAddress, Value: value}
		res := sess.request(t, stun.MethodCreatePermission, setterFunc(func(m *stun.Message) error {
			m.Add(raw.Type, raw.Value)
			return nil
		}))
		if res.Type.Class != stun.ClassErrorResponse {
			t.Errorf("CreatePermission with XOR-PEER-ADDRESS %x succeeded", value)
		}
	}
	// Still alive: a binding request is answered.
	res := roundTrip(t, conn, stun.MustBuild(stun.TransactionID, stun.BindingRequest))
	if res.Type != stun.BindingSuccess {
		t.Fatalf("binding after malformed requests: %v", res)
	}
}

// TestCloseReleasesEverything checks that Close ends TCP connections and
// allocations, returns, leaks no goroutine, and may be called again.
func TestCloseReleasesEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{
		Addr: "127.0.0.1:0", PublicIP: "127.0.0.1", Secret: testSecret,
		Registerer: reg, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	user, pass := userPass(t, creds(testSecret), "ken")

	tcp, err := net.Dial("tcp4", serverAddr(s))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	client, err := pionturn.NewClient(&pionturn.ClientConfig{
		TURNServerAddr: serverAddr(s), Username: user, Password: pass,
		Conn: pionturn.NewSTUNConn(tcp), LoggerFactory: quietLogs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := client.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if got := s.pion.AllocationCount(); got != 1 {
		t.Fatalf("AllocationCount = %d, want 1", got)
	}

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The server closed the client's TCP connection.
	tcp.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tcp.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("TCP connection still open after Close: %v", err)
	}
	if n := len(gather(t, reg)); n != 0 {
		t.Errorf("%d metric families still registered after Close", n)
	}
	relay.Close()
	client.Close()
	tcp.Close()
}

// TestStartErrors checks that Start refuses bad configurations.
func TestStartErrors(t *testing.T) {
	base := Config{Addr: "127.0.0.1:0", PublicIP: "127.0.0.1", Secret: testSecret, Logger: testLogger(t)}
	cases := map[string]func(*Config){
		"no secret":          func(c *Config) { c.Secret = nil },
		"inverted ports":     func(c *Config) { c.RelayPortMin, c.RelayPortMax = 50000, 40000 },
		"zero min port":      func(c *Config) { c.RelayPortMin, c.RelayPortMax = 0, 40000 },
		"host name as ip":    func(c *Config) { c.PublicIP = "turn.example.com" },
		"unspecified ip":     func(c *Config) { c.PublicIP = "0.0.0.0" },
		"family mismatch":    func(c *Config) { c.PublicIP = "2001:db8::1" },
		"negative quota":     func(c *Config) { c.MaxAllocations = -1 },
		"bad listen address": func(c *Config) { c.Addr = "127.0.0.1" },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			cfg := base
			mod(&cfg)
			if s, err := Start(context.Background(), cfg); err == nil {
				s.Close()
				t.Fatal("Start succeeded")
			}
		})
	}
	t.Run("metrics registered twice", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		cfg := base
		cfg.Registerer = reg
		s, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if s2, err := Start(context.Background(), cfg); err == nil {
			s2.Close()
			t.Fatal("second Start on the same registry succeeded")
		}
	})
}

// TestStartDefaults checks the defaults Start fills in and the URLs.
func TestStartDefaults(t *testing.T) {
	s, reg := startServer(t, func(c *Config) {
		c.RelayPortMin, c.RelayPortMax = 0, 0
		c.Realm = ""
	})
	if s.portMin != DefaultRelayPortMin || s.portMax != DefaultRelayPortMax {
		t.Errorf("relay ports %d-%d, want %d-%d", s.portMin, s.portMax, DefaultRelayPortMin, DefaultRelayPortMax)
	}
	if s.realm != DefaultRealm || s.lifetime != DefaultMaxLifetime {
		t.Errorf("realm %q lifetime %v", s.realm, s.lifetime)
	}
	if s.Port() == 0 {
		t.Fatal("Port() = 0")
	}
	want := EmbeddedURLs("127.0.0.1", s.Port())
	if got := s.URLs(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("URLs() = %v, want %v", got, want)
	}
	// Both transports listen on Port().
	if c, err := net.Dial("tcp4", serverAddr(s)); err != nil {
		t.Errorf("TCP listener: %v", err)
	} else {
		c.Close()
	}
	conn := rawClient(t, "udp4", serverAddr(s))
	if res := roundTrip(t, conn, stun.MustBuild(stun.TransactionID, stun.BindingRequest)); res.Type != stun.BindingSuccess {
		t.Errorf("STUN binding: %v", res)
	}
	for _, name := range []string{
		"tincan_turn_allocations_active", "tincan_turn_allocations_created_total",
		"tincan_turn_allocations_refused_total", "tincan_turn_relayed_bytes_total",
		"tincan_turn_peer_denied_total", "tincan_turn_auth_failures_total",
		"tincan_turn_malformed_packets_total",
	} {
		if _, ok := metricValue(t, reg, name); !ok {
			t.Errorf("metric %s not registered", name)
		}
	}
}
