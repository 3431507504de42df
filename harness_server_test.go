package main

// The tests of tincan's server come in two tiers:
//
//   - here, package main's contract_*_test.go drive run (main.go) in this
//     process, on a real listener with a real bbolt file (testServer,
//     below), and hold the server to its API contract, alone or behind
//     real proxies, TLS, pion peers or Chromium;
//   - e2e/ (package e2e) builds the binary and runs it
//     (internal/tincantest), to kill it with SIGKILL, stop it with SIGTERM
//     and start it again on the same file, or to run several of it on etcd,
//     and speaks to it through the Go client (client/).
//
// The contract tests reach the server through an endpoint (below) and its
// members (harness_client_test.go): raw requests whose answers they
// inspect, and event streams parsed by the Go client's EventReader
// (harness_stream_test.go); webhooks arrive at a receiver that checks them
// with client.VerifyWebhook (harness_webhook_test.go); a long test runs in
// named phases (harness_scenario_test.go).
//
// This file: the server of the contract tests, started with options, and
// the endpoint through which a test reaches a server wherever it runs.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/internal/tincantest"
)

// serverConfig is what the options of a test server set.
type serverConfig struct {
	flags  []string          // after the harness's own, so they win
	env    map[string]string // the server's environment: nothing else is set
	client *http.Client      // checks /healthz; the endpoint's client (withTLS)
}

// serverOption changes how a test server (newTestServer) starts.
type serverOption func(*serverConfig)

// withFlags adds command-line flags; a flag given again overrides the
// earlier value and the harness's default.
func withFlags(flags ...string) serverOption {
	return func(c *serverConfig) { c.flags = append(c.flags, flags...) }
}

// withEnv sets a variable of the server's environment (a TINCAN_* twin of
// a flag). The server sees no other variable: the TINCAN_* settings of
// whoever runs the tests do not reach it.
func withEnv(name, value string) serverOption {
	return func(c *serverConfig) {
		if c.env == nil {
			c.env = map[string]string{}
		}
		c.env[name] = value
	}
}

func (c *serverConfig) apply(opts []serverOption) {
	for _, o := range opts {
		o(c)
	}
}

// testServer is run serving in this process on 127.0.0.1 with a bbolt file
// in a temp dir, the embedded TURN and the rate limits (per address and per
// member) off unless the flags say otherwise. Its endpoint reaches it, on
// whatever port it listens now; its log is kept and shown when the test
// fails. It stops at the end of the test that started it.
type testServer struct {
	*endpoint
	t    testing.TB // the test that started it, which owns its cleanups
	argv []string
	env  map[string]string
	log  *tincantest.SyncBuffer
	halt func() // ends the current run and waits for it
}

// newTestServer starts a test server and waits until its /healthz answers.
func newTestServer(t testing.TB, opts ...serverOption) *testServer {
	t.Helper()
	var cfg serverConfig
	cfg.apply(opts)
	db := filepath.Join(t.TempDir(), "tincan.db")
	s := &testServer{
		endpoint: newEndpoint("", cfg.client),
		t:        t,
		argv:     append([]string{"tincan", "-addr", "127.0.0.1:0", "-db", db, "-turn=false", "-rate-limit", "0", "-member-rate-limit", "0"}, cfg.flags...),
		env:      cfg.env,
		log:      &tincantest.SyncBuffer{},
	}
	t.Cleanup(func() { // runs after the server stopped
		if cfg.client != nil {
			cfg.client.CloseIdleConnections()
		}
		if t.Failed() {
			t.Logf("server log:\n%s", tincantest.LastBytes(s.log.String(), 4000))
		}
	})
	s.start(t)
	return s
}

// start runs the server on its db and waits for /healthz; t is failed if
// it does not come up.
func (s *testServer) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &tincantest.LineWriter{Lines: make(chan string, 16)}
	done := make(chan error, 1)
	getenv := func(name string) string { return s.env[name] }
	var environ []string // where run looks for TINCAN_* variables that are no flag's twin
	for name, value := range s.env {
		environ = append(environ, name+"="+value)
	}
	go func() { done <- run(ctx, s.argv, getenv, out, s.log, environ...) }()
	var url string
	select {
	case line := <-out.Lines:
		var ok bool
		if url, ok = strings.CutPrefix(line, "tincan listening on "); !ok {
			cancel()
			t.Fatalf("first line on stdout: %q", line)
		}
	case err := <-done:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	var once sync.Once
	s.halt = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				s.t.Errorf("run returned %v", err)
			}
		})
	}
	s.t.Cleanup(s.halt)
	s.setURL(url)
	waitHealthy(t, s.endpoint)
}

// stop ends the server as SIGTERM would (its context is done) and waits
// until run returned, which must be without an error.
func (s *testServer) stop() { s.halt() }

// restart stops the server and runs it again on the same db with the same
// flags; the endpoint (and every client of it) follows it to its new port.
func (s *testServer) restart(t testing.TB) {
	t.Helper()
	s.stop()
	s.start(t)
}

// logs is what the server logged so far.
func (s *testServer) logs() string { return s.log.String() }

// endpoint is how a test reaches a tincan server: its base URL and the HTTP
// client that gets there (directly, over TLS, through a proxy). The URL
// follows a server that restarts on another port. Methods that take a t
// fail it; the others return errors, for goroutines and for servers that
// may be gone.
type endpoint struct {
	url atomic.Pointer[string]
	hc  *http.Client
}

// newEndpoint reaches url through hc (nil: http.DefaultClient).
func newEndpoint(url string, hc *http.Client) *endpoint {
	if hc == nil {
		hc = http.DefaultClient
	}
	e := &endpoint{hc: hc}
	e.setURL(url)
	return e
}

// URL is the base URL, such as http://127.0.0.1:41234.
func (e *endpoint) URL() string { return *e.url.Load() }

func (e *endpoint) setURL(url string) { e.url.Store(&url) }

// addr is the host:port of the URL, for raw connections.
func (e *endpoint) addr() string {
	_, hostPort, _ := strings.Cut(e.URL(), "://")
	return hostPort
}

// via is the server at its current URL reached through hc instead: a
// proxy, a client that records what it does.
func (e *endpoint) via(hc *http.Client) *endpoint { return newEndpoint(e.URL(), hc) }

// request makes one request to path (below the base URL) and reads the
// whole answer; header holds names and values in turn. An error means no
// complete answer.
func (e *endpoint) request(ctx context.Context, method, path, body string, header ...string) (answer, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.URL()+path, r)
	if err != nil {
		return answer{}, err
	}
	setHeader(req, header)
	resp, err := e.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		err = fmt.Errorf("reading body: %w", err)
	}
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: data}, err
}

// do is request failing t on an error.
func (e *endpoint) do(t testing.TB, method, path, body string, header ...string) answer {
	t.Helper()
	a, err := e.request(context.Background(), method, path, body, header...)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, e.URL(), path, err)
	}
	return a
}

// healthz is nil once /healthz answers 200.
func (e *endpoint) healthz() error {
	a, err := e.request(context.Background(), "GET", "/healthz", "")
	if err != nil {
		return err
	}
	if a.Status != 200 {
		return fmt.Errorf("GET %s/healthz: %d %s", e.URL(), a.Status, a.Body)
	}
	return nil
}

// waitHealthy waits up to 30s for e's /healthz to answer 200.
func waitHealthy(t testing.TB, e *endpoint) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.healthz()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz never answered 200: %v", e.URL(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// roomInfo is the answer to GET /rooms/{room}.
type roomInfo struct {
	Room                string
	Occupants, Capacity int
}

// roomInfo reads GET /rooms/{room}, failing t unless it answers 200.
func (e *endpoint) roomInfo(t testing.TB, room string) roomInfo {
	t.Helper()
	a := e.do(t, "GET", "/rooms/"+room, "")
	if a.Status != 200 {
		t.Fatalf("GET /rooms/%s: %d %s", room, a.Status, a.Body)
	}
	var info roomInfo
	a.json(t, &info)
	return info
}

// metric reads one sample of the server's /metrics.
func (e *endpoint) metric(t testing.TB, name string) float64 {
	t.Helper()
	a := e.do(t, "GET", "/metrics", "")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(a.Body)
	if m == nil {
		t.Fatalf("metric %s not found", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}
