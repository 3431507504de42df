package turn

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/pion/logging"
	pionturn "github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testSecret is the shared secret of the tests' servers.
var testSecret = []byte("tincan-test-secret-0123456789abcdef")

// testLogger writes the server's logs into the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// quietLogs is a pion LoggerFactory for clients that logs nothing.
var quietLogs logging.LoggerFactory = newSlogFactory(slog.New(slog.DiscardHandler))

// startServer starts an embedded server on 127.0.0.1 with a fresh
// registry, after applying mod to the config. It is closed at cleanup.
func startServer(t *testing.T, mod func(*Config)) (*Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Addr:         "127.0.0.1:0",
		PublicIP:     "127.0.0.1",
		Secret:       testSecret,
		RelayPortMin: 40000,
		RelayPortMax: 49999,
		Registerer:   reg,
		Logger:       testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, reg
}

// creds returns a Credentials with secret and a TURN URL (userPass only
// needs the credentials, which do not depend on the URL).
func creds(secret []byte) Credentials {
	return Credentials{Secret: secret, TTL: time.Hour, URLs: EmbeddedURLs("127.0.0.1", 3478)}
}

// userPass returns the TURN username and credential that Credentials
// issues for clientID.
func userPass(t *testing.T, c Credentials, clientID string) (string, string) {
	t.Helper()
	for _, s := range c.ICEServers(clientID) {
		if s.Username != "" {
			return s.Username, s.Credential
		}
	}
	t.Fatalf("no TURN entry in %+v", c.ICEServers(clientID))
	return "", ""
}

// newClient returns a listening pion TURN client of the server at addr
// over network "udp" or "tcp", bound to 127.0.0.1. It is closed at cleanup.
func newClient(t *testing.T, network, addr, username, password string) *pionturn.Client {
	t.Helper()
	var conn net.PacketConn
	switch network {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case "tcp":
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}
		c, err := d.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn = pionturn.NewSTUNConn(c)
	default:
		t.Fatalf("network %q", network)
	}
	client, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Username:       username,
		Password:       password,
		Conn:           conn,
		LoggerFactory:  quietLogs,
	})
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	if err := client.Listen(); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		conn.Close()
	})
	return client
}

// serverAddr is the server's address on 127.0.0.1.
func serverAddr(s *Server) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port()))
}

// metricValue returns the value of the metric name with the given labels
// (name=value pairs) gathered from reg, and whether it exists.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !labelsMatch(m, labels) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func labelsMatch(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// metric is metricValue for a metric that must exist.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	v, ok := metricValue(t, reg, name, labels...)
	if !ok {
		t.Fatalf("metric %s%v not registered", name, labels)
	}
	return v
}

// eventually polls cond every 20 ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lookTool finds an external tool from Debian's coturn package. When it is
// absent the test fails under CI=true and is skipped otherwise.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := name + " not found in PATH: install Debian's coturn package (apt-get install -y coturn)"
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI=true, so this test must not be skipped", msg)
	}
	t.Skip(msg)
	return ""
}
