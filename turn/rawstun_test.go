package turn

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// rawConn is a UDP socket speaking hand-built STUN to one server, for
// requests the pion client cannot send (malformed ones, foreign realms).
type rawConn struct {
	net.PacketConn
	server net.Addr
}

// rawClient opens a UDP socket on loopback ("udp4" or "udp6") towards the
// server at addr. It is closed at cleanup.
func rawClient(t *testing.T, network, addr string) *rawConn {
	t.Helper()
	server, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	local := "127.0.0.1:0"
	if network == "udp6" {
		local = "[::1]:0"
	}
	conn, err := net.ListenPacket(network, local)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{PacketConn: conn, server: server}
}

// roundTrip sends msg and returns the response with its transaction id,
// retransmitting a few times.
func roundTrip(t *testing.T, c *rawConn, msg *stun.Message) *stun.Message {
	t.Helper()
	buf := make([]byte, 1500)
	for try := 0; try < 5; try++ {
		if _, err := c.WriteTo(msg.Raw, c.server); err != nil {
			t.Fatalf("write: %v", err)
		}
		deadline := time.Now().Add(2 * time.Second)
		c.SetReadDeadline(deadline)
		for {
			n, _, err := c.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() == nil && res.TransactionID == msg.TransactionID {
				return res
			}
		}
	}
	t.Fatalf("no answer to %v", msg)
	return nil
}

// setterFunc adapts a function to stun.Setter.
type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

// requestedUDP is REQUESTED-TRANSPORT: UDP.
var requestedUDP = setterFunc(func(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	return nil
})

// unauthenticatedAllocate sends an Allocate without credentials and
// returns the nonce and realm of the 401 answer.
func unauthenticatedAllocate(t *testing.T, c *rawConn) (stun.Nonce, stun.Realm) {
	t.Helper()
	res := roundTrip(t, c, stun.MustBuild(stun.TransactionID,
		stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP, stun.Fingerprint))
	var code stun.ErrorCodeAttribute
	var nonce stun.Nonce
	var realm stun.Realm
	if err := code.GetFrom(res); err != nil || code.Code != stun.CodeUnauthorized {
		t.Fatalf("unauthenticated Allocate: %v (%v), want 401", res, code)
	}
	if err := nonce.GetFrom(res); err != nil {
		t.Fatal(err)
	}
	if err := realm.GetFrom(res); err != nil {
		t.Fatal(err)
	}
	return nonce, realm
}

// session is an authenticated allocation made with hand-built STUN.
type session struct {
	c          *rawConn
	user, pass string
	realm      stun.Realm
	nonce      stun.Nonce
}

// authenticatedAllocate allocates a UDP relay with the given credentials.
func authenticatedAllocate(t *testing.T, c *rawConn, user, pass string) *session {
	t.Helper()
	nonce, realm := unauthenticatedAllocate(t, c)
	s := &session{c: c, user: user, pass: pass, realm: realm, nonce: nonce}
	res := s.request(t, stun.MethodAllocate, requestedUDP)
	if res.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		code.GetFrom(res)
		t.Fatalf("Allocate: %v %v", res, code)
	}
	return s
}

// request sends an authenticated request of method with attrs.
func (s *session) request(t *testing.T, method stun.Method, attrs ...stun.Setter) *stun.Message {
	t.Helper()
	setters := []stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}
	setters = append(setters, attrs...)
	setters = append(setters, stun.NewUsername(s.user), s.realm, s.nonce,
		stun.NewLongTermIntegrity(s.user, s.realm.String(), s.pass), stun.Fingerprint)
	return roundTrip(t, s.c, stun.MustBuild(setters...))
}

// hasIPv6Loopback reports whether ::1 can be bound.
func hasIPv6Loopback() bool {
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func gather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	f, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// xorPeerV6 is an XOR-PEER-ADDRESS that always uses the IPv6 family, so
// that an IPv4-mapped address travels in its 16-byte form.
func xorPeerV6(ip net.IP, port int) stun.Setter {
	return setterFunc(func(m *stun.Message) error {
		ip16 := ip.To16()
		v := make([]byte, 4+16)
		v[1] = 0x02 // IPv6
		binary.BigEndian.PutUint16(v[2:4], uint16(port)^0x2112)
		var key [16]byte
		binary.BigEndian.PutUint32(key[0:4], 0x2112A442)
		copy(key[4:], m.TransactionID[:])
		for i := range 16 {
			v[4+i] = ip16[i] ^ key[i]
		}
		m.Add(stun.AttrXORPeerAddress, v)
		return nil
	})
}
