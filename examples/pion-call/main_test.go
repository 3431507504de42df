package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/internal/tincantest"
)

// TestCall runs the example against the real tincan binary on a loopback
// port (without TURN, as tincantest starts it): both peers connect and each
// gets the other's data channel message, and it exits 0.
func TestCall(t *testing.T) {
	srv := tincantest.Start(t, tincantest.Build(t), nil)
	code, stdout, stderr := runExample(t, "-server", srv.URL(), "-room", "test-call", "-timeout", "30s")
	if code != 0 {
		t.Fatalf("exit status %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"alice: joined as", "bob: joined as", "(initiator=true",
		"bob: sending offer to", "alice: got offer from", "alice: sending answer to", "bob: got answer from",
		"alice: sending candidate udp4 host 127.0.0.1:", "bob: sending candidate udp4 host 127.0.0.1:",
		"alice: connection connected", "bob: connection connected",
		`alice: received "hello from bob"`, `bob: received "hello from alice"`,
		"ok: both peers connected",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
}

// TestCallFails: the example exits non-zero and says why when it cannot
// call.
func TestCallFails(t *testing.T) {
	srv := tincantest.Start(t, tincantest.Build(t), nil)
	// Two members take the room's two seats, so alice finds it full.
	ctx := t.Context()
	c, err := client.New(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		m, err := c.Join(ctx, "full", client.JoinOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Leave(context.Background()) })
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"room full", []string{"-server", srv.URL(), "-room", "full"}, 1, "pion-call: FAILED: alice: join:"},
		{"no server", []string{"-server", "http://127.0.0.1:1", "-timeout", "10s"}, 1, "pion-call: FAILED: alice: join:"},
		{"bad flag", []string{"-timeout", "soon"}, 2, "invalid value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runExample(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit status %d, want %d, and stderr should hold %q\nstdout:\n%s\nstderr:\n%s",
					code, tc.code, tc.stderr, stdout, stderr)
			}
		})
	}
}

// runExample runs the example with args and returns its exit status and
// output.
func runExample(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out, errOut lockedBuffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// lockedBuffer is a bytes.Buffer for writers in other goroutines: pion
// reports the last state changes after Close returns.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
