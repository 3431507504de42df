package main

// What the server tells its operator at start and stop: a warning for each
// setting that cannot work as meant, none for a setup that can, where the
// TURN secret came from (never the secret), a URL to open, "stopped" last;
// and its version, printed and exported as tincan_build_info.

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/internal/tincantest"
	"github.com/tincan/tincan/turn"
)

// logLines are the lines of a server's log at level (INFO, WARN, ERROR)
// that contain every one of parts.
func logLines(log, level string, parts ...string) []string {
	var found []string
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "level="+level+" ") {
			continue
		}
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			found = append(found, line)
		}
	}
	return found
}

func TestStartupWarnings(t *testing.T) {
	t.Run("a setup that works warns of nothing", func(t *testing.T) {
		srv := newTestServer(t, withEnv("TINCAN_CLIENT_TIMEOUT", "30s"),
			withFlags("-ice-server", "stun:stun.example.com:3478", "-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", "127.0.0.1"))
		if w := logLines(srv.logs(), "WARN"); len(w) > 0 {
			t.Fatalf("warnings for a setup that works:\n%s", strings.Join(w, "\n"))
		}
	})

	t.Run("an unknown TINCAN_ variable", func(t *testing.T) {
		srv := newTestServer(t, withEnv("TINCAN_ROOM_CAPASITY", "3"), withEnv("TINCAN_QUUX", "1"), withEnv("TINCAN_VERSION", "1"),
			withEnv("TINCAN_CLIENT_TIMEOUT", "30s"))
		log := srv.logs()
		if len(logLines(log, "WARN", "variable=TINCAN_ROOM_CAPASITY", "did_you_mean=TINCAN_ROOM_CAPACITY", "flag=-room-capacity")) != 1 {
			t.Errorf("no warning naming TINCAN_ROOM_CAPASITY and what it likely meant:\n%s", log)
		}
		if w := logLines(log, "WARN", "variable=TINCAN_QUUX"); len(w) != 1 || strings.Contains(w[0], "did_you_mean") {
			t.Errorf("TINCAN_QUUX: %q, want one warning with no suggestion (nothing is close)", w)
		}
		// -version has no twin: the variable serves no version print.
		if len(logLines(log, "WARN", "variable=TINCAN_VERSION")) != 1 {
			t.Errorf("no warning of TINCAN_VERSION:\n%s", log)
		}
		if w := logLines(log, "WARN", "TINCAN_CLIENT_TIMEOUT"); len(w) > 0 {
			t.Errorf("a real twin warned of: %q", w)
		}
		if info := srv.roomInfo(t, "any"); info.Capacity != 2 {
			t.Errorf("the misspelt variable took effect: capacity %d", info.Capacity)
		}
	})

	t.Run("TURN on loopback that hands out another address", func(t *testing.T) {
		srv := newTestServer(t, withFlags("-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", "192.0.2.10"))
		if len(logLines(srv.logs(), "WARN", "listens on loopback", "turn_addr=127.0.0.1:0", "public_ip=192.0.2.10")) != 1 {
			t.Fatalf("no warning of the unreachable TURN server:\n%s", srv.logs())
		}
	})

	t.Run("a TURN relay address the internet cannot reach", func(t *testing.T) {
		const unreachable = "relay address handed to peers is"
		for _, ip := range []string{"10.1.2.3", "192.168.1.20", "172.16.0.9", "192.0.2.10", "198.51.100.7", "203.0.113.7"} { // 2001:db8::/32: TestUnreachableRelay (a v6 relay needs a v6 listener)
			srv := newTestServer(t, withFlags("-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", ip))
			w := logLines(srv.logs(), "WARN", unreachable, "public_ip="+ip, "-turn-public-ip")
			if len(w) != 1 || !strings.Contains(w[0], "chosen_by=-turn-public-ip") {
				t.Errorf("-turn-public-ip %s: %q, want one warning that says to set -turn-public-ip:\n%s", ip, w, srv.logs())
			}
		}
		srv := newTestServer(t, withEnv("TINCAN_TURN_PUBLIC_IP", "10.9.8.7"), withFlags("-turn", "-turn-addr", "127.0.0.1:0"))
		if len(logLines(srv.logs(), "WARN", unreachable, "public_ip=10.9.8.7", "chosen_by=TINCAN_TURN_PUBLIC_IP")) != 1 {
			t.Errorf("TINCAN_TURN_PUBLIC_IP=10.9.8.7: no warning naming the variable:\n%s", srv.logs())
		}
		// A public address: no such warning (the one of the loopback listener stays).
		srv = newTestServer(t, withFlags("-turn", "-turn-addr", "127.0.0.1:0", "-turn-public-ip", "8.8.8.8"))
		if w := logLines(srv.logs(), "WARN", unreachable); len(w) > 0 {
			t.Errorf("-turn-public-ip 8.8.8.8: %q", w)
		}
	})

	t.Run("an external TURN server without the shared secret", func(t *testing.T) {
		const ext = "turn:turn.example.com:3478"
		srv := newTestServer(t, withFlags("-ice-server", ext)) // the harness runs no embedded TURN
		if len(logLines(srv.logs(), "WARN", "-turn-secret", "ice_server="+ext)) != 1 {
			t.Fatalf("no warning of credentials the external server cannot check:\n%s", srv.logs())
		}
		for _, tc := range []struct {
			name string
			opts []serverOption
		}{
			{"with -turn-secret", []serverOption{withFlags("-ice-server", ext, "-turn-secret", "0123456789abcdef0123")}},
			{"with TINCAN_TURN_SECRET", []serverOption{withFlags("-ice-server", ext), withEnv("TINCAN_TURN_SECRET", "0123456789abcdef0123")}},
			{"with stun: servers alone", []serverOption{withFlags("-ice-server", "stun:stun.example.com:3478")}},
		} {
			if w := logLines(newTestServer(t, tc.opts...).logs(), "WARN"); len(w) > 0 {
				t.Errorf("%s: %q", tc.name, w)
			}
		}
	})

	t.Run("where the TURN secret came from, never the secret", func(t *testing.T) {
		const secret = "s3cret-for-the-log-test"
		for _, tc := range []struct {
			name string
			opt  serverOption
			from string
		}{
			{"flag", withFlags("-turn-secret", secret), `from="the -turn-secret flag"`},
			{"environment", withEnv("TINCAN_TURN_SECRET", secret), `from="the environment (TINCAN_TURN_SECRET)"`},
			{"db", withFlags(), `from="the db file `},
		} {
			srv := newTestServer(t, tc.opt)
			log := srv.logs()
			if len(logLines(log, "INFO", `msg="turn secret"`, tc.from)) != 1 {
				t.Errorf("%s: the log does not say %s:\n%s", tc.name, tc.from, log)
			}
			if strings.Contains(log, secret) {
				t.Errorf("%s: the secret is in the log", tc.name)
			}
		}
	})
}

// Listening on every address, the server prints a URL that a person can
// open, and logs "stopped" last when it stops.
func TestStartupURLAndStopped(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout := &tincantest.LineWriter{Lines: make(chan string, 16)}
	log := &tincantest.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"tincan", "-addr", ":0", "-db", t.TempDir() + "/tincan.db", "-turn=false"}, func(string) string { return "" }, stdout, log)
	}()
	var lines []string
	for len(lines) < 2 {
		select {
		case line := <-stdout.Lines:
			lines = append(lines, line)
		case err := <-done:
			t.Fatalf("run: %v\n%s", err, log)
		case <-time.After(30 * time.Second):
			t.Fatalf("the server printed %q within 30 s", lines)
		}
	}
	m := regexp.MustCompile(`^open (http://localhost:(\d+)/) in a browser$`).FindStringSubmatch(lines[1])
	if !strings.HasPrefix(lines[0], "tincan listening on http://") || m == nil {
		t.Fatalf("stdout %q, want the listener, then: open http://localhost:PORT/ in a browser", lines)
	}
	// The page is there (over loopback, which every address includes).
	resp, err := http.Get("http://127.0.0.1:" + m[2] + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("%s: %s %s", m[1], resp.Status, resp.Header.Get("Content-Type"))
	}
	if len(logLines(log.String(), "INFO", `msg=serving`, "url="+m[1])) != 1 {
		t.Errorf("the serving line does not give the URL:\n%s", log)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop within 30 s")
	}
	text := strings.TrimSpace(log.String())
	last := text[strings.LastIndex(text, "\n")+1:]
	if !strings.Contains(last, "level=INFO msg=stopped") {
		t.Fatalf("the last line logged is %q, want msg=stopped", last)
	}
}

func TestOpenURL(t *testing.T) {
	for _, tc := range []struct {
		addr, listening, tls string
		want                 string
	}{
		{":8080", "[::]:8080", "", "http://localhost:8080/"},
		{"0.0.0.0:8080", "0.0.0.0:8080", "", "http://localhost:8080/"},
		{"127.0.0.1:8080", "127.0.0.1:8080", "", "http://127.0.0.1:8080/"},
		{"[::1]:8080", "[::1]:8080", "", "http://[::1]:8080/"},
		{"localhost:8080", "127.0.0.1:8080", "", "http://localhost:8080/"},
		{"tincan.example.com:443", "203.0.113.7:443", "cert.pem", "https://tincan.example.com:443/"},
	} {
		cfg := config{addr: tc.addr, tlsCert: tc.tls}
		if got := openURL(cfg, fakeAddr(tc.listening)); got != tc.want {
			t.Errorf("-addr %s listening on %s: %s, want %s", tc.addr, tc.listening, got, tc.want)
		}
	}
}

// fakeAddr is a listener's address as its String gives it.
type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// TestVersion: `tincan -version` and `tincan version` print the module
// version and the VCS revision that runtime/debug reports, and /metrics
// exports them as tincan_build_info. A built binary names the commit it
// was built from.
func TestVersion(t *testing.T) {
	build := readBuildInfo()
	var want strings.Builder
	printVersion(&want, build)
	for _, args := range [][]string{{"tincan", "-version"}, {"tincan", "version"}} {
		var stdout strings.Builder
		if err := run(context.Background(), args, func(string) string { return "" }, &stdout, io.Discard); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if stdout.String() != want.String() || !strings.HasPrefix(stdout.String(), "tincan "+build.version+" revision "+build.revision) {
			t.Errorf("%q printed %q, want %q", args, stdout.String(), want.String())
		}
	}

	srv := newTestServer(t)
	sample := `tincan_build_info{revision="` + build.revision + `",version="` + build.version + `"} 1`
	if body := string(srv.do(t, "GET", "/metrics", "").Body); !strings.Contains(body, sample+"\n") {
		t.Errorf("/metrics lacks %s", sample)
	}
	if len(logLines(srv.logs(), "INFO", "msg=starting", "version="+build.version, "revision="+build.revision)) != 1 {
		t.Errorf("the start is not logged with the version:\n%s", srv.logs())
	}

	t.Run("a built binary names its commit", func(t *testing.T) {
		// GOFLAGS may say -buildvcs=false (it does here): the build says
		// what it wants. Without a .git directory here or above (outside
		// a checkout, or in a linked worktree, whose .git is a file) the
		// go command finds no VCS to read.
		inGit := false
		for dir, _ := filepath.Abs("."); !inGit; dir = filepath.Dir(dir) {
			fi, err := os.Stat(filepath.Join(dir, ".git"))
			inGit = err == nil && fi.IsDir()
			if dir == filepath.Dir(dir) {
				break
			}
		}
		vcs := "-buildvcs=auto"
		if inGit {
			vcs = "-buildvcs=true"
		}
		bin := filepath.Join(t.TempDir(), "tincan")
		if out, err := exec.Command("go", "build", vcs, "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", vcs, err, out)
		}
		for _, arg := range []string{"-version", "version"} {
			out, err := exec.Command(bin, arg).Output()
			if err != nil {
				t.Fatalf("tincan %s: %v", arg, err)
			}
			m := regexp.MustCompile(`^tincan (\S+) revision (\S+)( \(modified\))? go\S+\n$`).FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("tincan %s printed %q", arg, out)
			}
			version, revision := m[1], m[2]
			if !inGit {
				if revision != "unknown" {
					t.Fatalf("built outside a git checkout, revision %q", revision)
				}
				continue
			}
			if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(revision) || exec.Command("git", "cat-file", "-e", revision+"^{commit}").Run() != nil {
				t.Fatalf("tincan %s: revision %q is no commit of this checkout", arg, revision)
			}
			if !strings.HasPrefix(version, "v") || !strings.Contains(version, revision[:12]) {
				t.Fatalf("tincan %s: version %q, want the pseudo-version of %s", arg, version, revision[:12])
			}
		}
	})
}

func TestNearestTwin(t *testing.T) {
	twins := []string{"TINCAN_ADDR", "TINCAN_DB", "TINCAN_RATE_LIMIT", "TINCAN_ROOM_CAPACITY", "TINCAN_TURN", "TINCAN_TURN_SECRET"}
	for typo, want := range map[string]string{
		"TINCAN_ADR":           "TINCAN_ADDR",
		"TINCAN_RATELIMIT":     "TINCAN_RATE_LIMIT",
		"TINCAN_ROOM_CAPASITY": "TINCAN_ROOM_CAPACITY",
		"TINCAN_TURN_SECRETS":  "TINCAN_TURN_SECRET",
		"TINCAN_TRUN_SECRET":   "TINCAN_TURN_SECRET",
		"TINCAN_QUUX":          "",
		"TINCAN_X":             "",
		"TINCAN_SCREENSHOTS":   "",
	} {
		if got := nearest(typo, twins); got != want {
			t.Errorf("nearest(%s) = %q, want %q", typo, got, want)
		}
	}
}

// TestUnreachableRelay: which relay addresses warnUnreachableTURN warns
// of, what it says chose the address, and that a loopback address is no
// warning when the TURN server listens on loopback too (a local test).
func TestUnreachableRelay(t *testing.T) {
	for ip, want := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.0.0.1": true, "172.31.255.255": true, "192.168.0.1": true, "fd00::1": true,
		"169.254.1.1": true, "100.64.0.1": true, "192.0.2.1": true, "198.51.100.255": true, "203.0.113.0": true,
		"2001:db8::1": true, "2001:db8:ffff::1": true, "::ffff:10.0.0.1": true,
		"8.8.8.8": false, "172.32.0.1": false, "192.0.3.1": false, "203.0.114.1": false, "2001:db9::1": false, "2606:4700::1111": false,
	} {
		if got := unreachableRelay(netip.MustParseAddr(ip)) != ""; got != want {
			t.Errorf("%s: unreachable %v, want %v", ip, got, want)
		}
	}
	warned := func(cfg config, publicIP string) string {
		var buf bytes.Buffer
		warnUnreachableTURN(slog.New(slog.NewTextHandler(&buf, nil)), cfg, turn.EmbeddedURLs(publicIP, 3478))
		return buf.String()
	}
	if log := warned(config{turnAddr: ":3478"}, "10.0.0.5"); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "first non-loopback address") {
		t.Errorf("the host's first address, 10.0.0.5, unset -turn-public-ip: %q", log)
	}
	if log := warned(config{turnAddr: ":3478", turnPublicIP: "127.0.0.1"}, "127.0.0.1"); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "loopback") {
		t.Errorf("-turn-public-ip 127.0.0.1 on every address: %q", log)
	}
	if log := warned(config{turnAddr: "127.0.0.1:3478", turnPublicIP: "127.0.0.1"}, "127.0.0.1"); log != "" {
		t.Errorf("loopback listener handing out loopback (a local test): %q", log)
	}
	if log := warned(config{turnAddr: ":3478", turnPublicIP: "2001:db8::7"}, "2001:db8::7"); !strings.Contains(log, "public_ip=2001:db8::7") {
		t.Errorf("-turn-public-ip 2001:db8::7: %q", log)
	}
	if log := warned(config{turnAddr: ":3478", turnPublicIP: "8.8.8.8"}, "8.8.8.8"); log != "" {
		t.Errorf("a public address: %q", log)
	}
}
