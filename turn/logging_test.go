package turn

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

func TestLogLimiter(t *testing.T) {
	var l logLimiter
	t0 := time.Unix(1000, 0)
	for i := range pionLogsPerSecond {
		if ok, _ := l.allow(t0.Add(time.Duration(i) * time.Millisecond)); !ok {
			t.Fatalf("message %d refused within the budget", i)
		}
	}
	for range 5 {
		if ok, _ := l.allow(t0.Add(500 * time.Millisecond)); ok {
			t.Fatal("message beyond the budget admitted")
		}
	}
	ok, suppressed := l.allow(t0.Add(1100 * time.Millisecond))
	if !ok || suppressed != 5 {
		t.Fatalf("next window: ok=%v suppressed=%d, want true 5", ok, suppressed)
	}
	if _, suppressed := l.allow(t0.Add(2200 * time.Millisecond)); suppressed != 0 {
		t.Fatalf("suppressed reported twice: %d", suppressed)
	}
}

// countingHandler counts records at warn level and above.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestUnauthenticatedLogFlood sends many packets that pion logs at error
// level (an unknown comprehension-required attribute) without credentials:
// the server's log must stay bounded.
func TestUnauthenticatedLogFlood(t *testing.T) {
	var n atomic.Int64
	s, _ := startServer(t, func(c *Config) { c.Logger = slog.New(countingHandler{&n}) })
	conn := rawClient(t, "udp4", serverAddr(s))
	const sent = 300
	for range sent {
		m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, setterFunc(func(m *stun.Message) error {
			m.Add(stun.AttrType(0x0031), []byte{1, 2, 3, 4}) // unknown, comprehension-required
			return nil
		}))
		conn.WriteTo(m.Raw, conn.server)
	}
	// The server answers each with 420; wait for the last answers.
	res := roundTrip(t, conn, stun.MustBuild(stun.TransactionID, stun.BindingRequest))
	if res.Type != stun.BindingSuccess {
		t.Fatalf("binding: %v", res)
	}
	t.Logf("%d warn/error records", n.Load())
	if got := n.Load(); got == 0 || got > 3*(pionLogsPerSecond+1) {
		t.Errorf("%d warn/error records for %d bad packets, want between 1 and %d", got, sent, 3*(pionLogsPerSecond+1))
	}
}
