package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// TestBenchCommand runs `tincan bench` through run, against the real server,
// with a small workload.
func TestBenchCommand(t *testing.T) {
	srv := newTestServer(t, withFlags("-rate-limit", "0", "-max-streams-per-ip", "0"))
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, []string{"tincan", "bench", "-url", srv.URL(), "-rooms", "3", "-k", "10", "-progress", "0", "-timeout", "10s"},
		func(string) string { return "" }, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"messages     60 delivered", "lost 0", "errors 0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench output lacks %q:\n%s", want, out.String())
		}
	}
}
