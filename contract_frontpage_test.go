package main

// What an operator meets first: the usage line of `tincan -h`, the README
// as a front page (short, linking every page of docs/, naming no test
// function), the systemd unit of docs/deployment.md (behind nginx, so with
// -trust-proxy), the README's word on the tests that need coturn, and
// /metrics kept off the API's listener with -metrics-addr.

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestUsageLine: `tincan -h` starts with a usage line that names the
// subcommands and the environment twins, before the first flag.
func TestUsageLine(t *testing.T) {
	var stdout, usage bytes.Buffer
	if err := run(context.Background(), []string{"tincan", "-h"}, func(string) string { return "" }, &stdout, &usage); err != nil {
		t.Fatalf("-h: %v", err)
	}
	text := usage.String()
	if !strings.HasPrefix(text, "usage: tincan [flags]") {
		t.Fatalf("-h does not start with a usage line:\n%.300s", text)
	}
	firstFlag := regexp.MustCompile(`(?m)^  -[a-z]`).FindStringIndex(text)
	if firstFlag == nil {
		t.Fatalf("-h lists no flags:\n%s", text)
	}
	head := text[:firstFlag[0]]
	for _, want := range []string{"tincan bench", "tincan token", "tincan version", "-client-timeout", "TINCAN_CLIENT_TIMEOUT", "environment twin"} {
		if !strings.Contains(head, want) {
			t.Errorf("the usage before the flags does not mention %q:\n%s", want, head)
		}
	}
}

// readmeSystemdUnit is the ```ini block of deploymentDoc after "A systemd unit".
func readmeSystemdUnit(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(deploymentDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "A systemd unit (`/etc/systemd/system/tincan.service`)")
	_, rest, fenced := strings.Cut(rest, "\n```ini\n")
	block, _, closed := strings.Cut(rest, "\n```\n")
	if !ok || !fenced || !closed {
		t.Fatal(deploymentDoc + " has no systemd unit in an ```ini block after \"A systemd unit (`/etc/systemd/system/tincan.service`)\"")
	}
	return block
}

// TestReadmeSystemdUnit: the unit of docs/deployment.md, for tincan behind nginx, runs
// it on loopback and trusts nginx's X-Forwarded-For (else every client is
// 127.0.0.1 to the per-address limits). Its ExecStart and Environment=
// lines go through parseFlags as systemd would hand them over.
func TestReadmeSystemdUnit(t *testing.T) {
	unit := readmeSystemdUnit(t)
	var args []string
	env := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		if cmd, ok := strings.CutPrefix(line, "ExecStart="); ok {
			args = strings.Fields(cmd)
		}
		if kv, ok := strings.CutPrefix(line, "Environment="); ok {
			for _, f := range strings.Fields(kv) {
				name, value, _ := strings.Cut(strings.Trim(f, `"`), "=")
				env[name] = value
			}
		}
	}
	if len(args) == 0 || !strings.HasSuffix(args[0], "tincan") {
		t.Fatalf("the documented unit has no ExecStart=…/tincan:\n%s", unit)
	}
	cfg, err := parseFlags(args, func(name string) string { return env[name] }, io.Discard)
	if err != nil {
		t.Fatalf("the documented ExecStart %q: %v", args, err)
	}
	if !cfg.trustProxy {
		t.Errorf("the documented unit, for tincan behind nginx, does not set -trust-proxy (or TINCAN_TRUST_PROXY=true): every client would count as 127.0.0.1:\n%s", unit)
	}
	if ap, err := netip.ParseAddrPort(cfg.addr); err != nil || !ap.Addr().IsLoopback() {
		t.Errorf("the documented unit listens on %q, not on loopback behind nginx", cfg.addr)
	}
}

// TestReadmeCoturnTests: next to `go test ./...` the README says that the
// tests that drive Debian's coturn are skipped without it (and fail under
// CI=true), as turn/helpers_test.go's lookTool does, naming each program
// of coturn's that the tests in turn/coturn_test.go look up.
func TestReadmeCoturnTests(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Two commands\n")
	section, _, _ = strings.Cut(section, "\n## ")
	if !strings.Contains(section, "go test ./...") {
		t.Fatalf("the README's Two commands section has no go test ./...:\n%s", section)
	}
	helpers, err := os.ReadFile("turn/helpers_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(helpers), `os.Getenv("CI") == "true"`) || !strings.Contains(string(helpers), "t.Skip(msg)") {
		t.Fatal("turn/helpers_test.go's lookTool no longer skips without coturn and fails under CI=true: update the README and this test")
	}
	src, err := os.ReadFile("turn/coturn_test.go")
	if err != nil {
		t.Fatal(err)
	}
	// The programs the tests look up: lookTool(t, "turnserver").
	var tools []string
	for _, m := range regexp.MustCompile(`lookTool\(t, "([^"]+)"\)`).FindAllStringSubmatch(string(src), -1) {
		if !slices.Contains(tools, m[1]) {
			tools = append(tools, m[1])
		}
	}
	if len(tools) == 0 {
		t.Fatal("no test in turn/coturn_test.go calls lookTool(t, \"…\"): the pattern no longer matches")
	}
	for _, want := range append(tools, "turn/", "coturn", "skips", "CI=true") {
		if !strings.Contains(section, want) {
			t.Errorf("the README next to go test ./... does not mention %q", want)
		}
	}
}

// metricsListener is the address that a server started with -metrics-addr
// logged for its metrics listener.
func metricsListener(t *testing.T, srv *testServer) string {
	t.Helper()
	m := regexp.MustCompile(`msg="serving metrics" addr=(\S+)`).FindStringSubmatch(srv.logs())
	if m == nil {
		t.Fatalf("no \"serving metrics\" line in the log:\n%s", srv.logs())
	}
	return m[1]
}

// TestMetricsAddr: without -metrics-addr /metrics is on the API's
// listener, as it always was; with it (or TINCAN_METRICS_ADDR), only on
// its own listener, and the API answers 404.
func TestMetricsAddr(t *testing.T) {
	t.Run("unset: on the API's listener", func(t *testing.T) {
		srv := newTestServer(t)
		if a := srv.do(t, "GET", "/metrics", ""); a.Status != 200 || !strings.Contains(string(a.Body), "tincan_build_info") {
			t.Fatalf("GET /metrics: %d", a.Status)
		}
		if strings.Contains(srv.logs(), "serving metrics") {
			t.Errorf("a metrics listener without -metrics-addr:\n%s", srv.logs())
		}
	})
	for _, tc := range []struct {
		name string
		opt  serverOption
	}{
		{"-metrics-addr", withFlags("-metrics-addr", "127.0.0.1:0")},
		{"TINCAN_METRICS_ADDR", withEnv("TINCAN_METRICS_ADDR", "127.0.0.1:0")},
	} {
		t.Run(tc.name+": on its own listener only", func(t *testing.T) {
			srv := newTestServer(t, tc.opt)
			srv.join(t, "metrics-apart", 201) // something to count
			metrics := newEndpoint("http://"+metricsListener(t, srv), nil)
			a := metrics.do(t, "GET", "/metrics", "")
			if a.Status != 200 || !strings.Contains(string(a.Body), "tincan_build_info") || !strings.Contains(string(a.Body), "tincan_http_requests_total") {
				t.Fatalf("GET /metrics on the metrics listener: %d\n%.500s", a.Status, a.Body)
			}
			for _, path := range []string{"/metrics", "/metrics?format=text", "/metrics/"} {
				if a := srv.do(t, "GET", path, ""); a.Status != 404 || strings.Contains(string(a.Body), "tincan_") {
					t.Errorf("GET %s on the API's listener: %d, want 404", path, a.Status)
				}
			}
			for _, path := range []string{"/", "/healthz", "/rooms/metrics-apart"} {
				if a := metrics.do(t, "GET", path, ""); a.Status != 404 {
					t.Errorf("GET %s on the metrics listener: %d, want 404 (it serves /metrics alone)", path, a.Status)
				}
			}
			if a := srv.do(t, "GET", "/healthz", ""); a.Status != 200 {
				t.Errorf("GET /healthz on the API: %d", a.Status)
			}
		})
	}
}

// TestFrontPage: the README is a front page. It stays short, links every
// page of docs/ and BENCHMARKS.md and CHANGELOG.md, leaves the API's
// details to docs/api.md (no error table, no SSE frame example of its
// own), and names no test function in its prose.
func TestFrontPage(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	if n := strings.Count(readme, "\n"); n > 300 {
		t.Errorf("README.md has %d lines: a front page keeps to a screen or three and links docs/ for the rest", n)
	}
	linked := map[string]bool{}
	for _, l := range readMarkdown(t, ".", "README.md").links {
		target, _, _ := strings.Cut(l.Target, "#")
		linked[filepath.ToSlash(filepath.Clean(target))] = true
	}
	pages, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) < 8 {
		t.Fatalf("only %d pages in docs/: %v", len(pages), pages)
	}
	for _, want := range append(pages, "docs/openapi.yaml", "BENCHMARKS.md", "CHANGELOG.md") {
		if !linked[filepath.ToSlash(want)] {
			t.Errorf("README.md does not link %s", want)
		}
	}
	if m := regexp.MustCompile("(?m)^\\| [45]\\d\\d \\| `[a-z_]+` \\|").FindString(readme); m != "" {
		t.Errorf("README.md has an error table (%q…): the errors are in docs/api.md, link it", m)
	}
	if regexp.MustCompile("(?m)^```\n(id|event|data): ").MatchString(readme) {
		t.Errorf("README.md has an SSE frame example: the frames are in docs/api.md, link it")
	}
	if names := regexp.MustCompile(`\bTest[A-Z][A-Za-z0-9_]*`).FindAllString(readme, -1); len(names) > 0 {
		t.Errorf("README.md names test functions %v: say what is tested, not what the function is called", names)
	}
}
