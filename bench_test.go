package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // only in this test harness, never in the server
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestBenchCommand runs `tincan bench` through run, against the real server,
// with a small workload.
func TestBenchCommand(t *testing.T) {
	url := startServer(t, "-rate-limit", "0", "-max-streams-per-ip", "0")
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := run(ctx, []string{"tincan", "bench", "-url", url, "-rooms", "3", "-k", "10", "-progress", "0", "-timeout", "10s"},
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

// TestProfileServer is the harness for profiling the server under load (see
// BENCHMARKS.md); it is skipped unless TINCAN_PROFILE_ADDR is set:
//
//	TINCAN_PROFILE_ADDR=127.0.0.1:8080 TINCAN_PROFILE_FOR=5m \
//	TINCAN_PROFILE_ARGS="-rate-limit 0 -max-streams-per-ip 0" \
//	go test -run TestProfileServer -timeout 0 .
//
// It serves tincan (run, as the binary does) on TINCAN_PROFILE_ADDR with the
// bbolt file TINCAN_PROFILE_DB (default: in a temp dir), and net/http/pprof on
// TINCAN_PROFILE_PPROF (default 127.0.0.1:6060), for TINCAN_PROFILE_FOR
// (default 5m); then `go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=10`
// while `tincan bench` drives it from another process.
func TestProfileServer(t *testing.T) {
	addr := os.Getenv("TINCAN_PROFILE_ADDR")
	if addr == "" {
		t.Skip("set TINCAN_PROFILE_ADDR to serve tincan with pprof for profiling")
	}
	life := 5 * time.Minute
	if v := os.Getenv("TINCAN_PROFILE_FOR"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		life = min(d, time.Hour)
	}
	db := os.Getenv("TINCAN_PROFILE_DB")
	if db == "" {
		db = filepath.Join(t.TempDir(), "tincan.db")
	}
	pprofAddr := os.Getenv("TINCAN_PROFILE_PPROF")
	if pprofAddr == "" {
		pprofAddr = "127.0.0.1:6060"
	}
	if os.Getenv("TINCAN_PROFILE_BLOCK") != "" { // costs CPU: only when asked
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(100_000) // one sample per 100 µs blocked
	}
	ln, err := net.Listen("tcp", pprofAddr)
	if err != nil {
		t.Fatal(err)
	}
	ps := &http.Server{Handler: http.DefaultServeMux}
	go ps.Serve(ln)
	defer ps.Close()

	ctx, cancel := context.WithTimeout(context.Background(), life)
	defer cancel()
	argv := append([]string{"tincan", "-addr", addr, "-db", db, "-turn=false"}, strings.Fields(os.Getenv("TINCAN_PROFILE_ARGS"))...)
	t.Logf("serving %v with pprof on http://%s/debug/pprof/ for %s", argv, pprofAddr, life)
	if err := run(ctx, argv, func(string) string { return "" }, os.Stdout, io.Discard); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}
