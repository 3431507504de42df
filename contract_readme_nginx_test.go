package main

// The nginx block of docs/deployment.md (the README's deployment page),
// run as written: the test puts it in an nginx
// of its own in front of a test server, listening on a loopback port and
// with the upstream's address in place of 127.0.0.1:8080, and checks that
// the API works through it and /metrics does not.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deploymentDoc is the page with the single-server nginx block and the
// systemd unit.
const deploymentDoc = "docs/deployment.md"

// readmeNginxBlock is the first ```nginx fenced block of deploymentDoc.
func readmeNginxBlock(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(deploymentDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(data), "\n```nginx\n")
	block, _, closed := strings.Cut(rest, "\n```\n")
	if !ok || !closed {
		t.Fatal(deploymentDoc + " has no ```nginx block")
	}
	return block
}

// TestReadmeNginxBlock runs the nginx block of docs/deployment.md in front of a test
// server: a call's requests and its event stream get through, /metrics
// does not (tincan serves it to anyone who reaches it).
func TestReadmeNginxBlock(t *testing.T) {
	bin := proxyProgram(t, "nginx", "nginx")
	block := readmeNginxBlock(t)
	const upstream = "http://127.0.0.1:8080"
	if !strings.Contains(block, "proxy_pass "+upstream+";") || !strings.Contains(block, "server {") {
		t.Fatalf("the documented nginx block has no server { … proxy_pass %s; }: the test cannot point it at a test server:\n%s", upstream, block)
	}
	srv := newTestServer(t)
	direct := srv.do(t, "GET", "/metrics", "")
	if direct.Status != 200 || !strings.Contains(string(direct.Body), "tincan_http_requests_total") {
		t.Fatalf("GET /metrics from tincan itself: %d", direct.Status)
	}

	var proxy *endpoint
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		port := freeLoopbackPort(t)
		server := strings.ReplaceAll(block, upstream, "http://"+srv.addr())
		server = strings.Replace(server, "server {", fmt.Sprintf("server {\n    listen 127.0.0.1:%d;", port), 1)
		path := writeNginxConf(t, dir, server)
		p := startProxyProgram(t, "nginx", []string{filepath.Join(dir, "error.log")}, bin, "-p", dir, "-c", path)
		proxy = newEndpoint(fmt.Sprintf("http://127.0.0.1:%d", port), nil)
		err := p.waitReady(proxy.healthz)
		if err == nil {
			break
		}
		p.stop()
		if attempt == 3 || !strings.Contains(p.output(), "Address already in use") {
			t.Fatalf("nginx with the documented block did not come up: %v\n%s\n%s", err, server, p.output())
		}
	}

	for _, path := range []string{"/metrics", "/metrics?format=text", "//metrics", "/%6detrics"} {
		if a := proxy.do(t, "GET", path, ""); a.Status == 200 || strings.Contains(string(a.Body), "tincan_") {
			t.Errorf("GET %s through the documented nginx: %d, serving the metrics", path, a.Status)
		}
	}

	alice := proxy.join(t, "behind-nginx", 201)
	stream := alice.events(t, "")
	stream.ready(t)
	bob := proxy.join(t, "behind-nginx", 201)
	bob.post(t, `{"type":"offer","sdp":"v=0 through nginx"}`)
	for _, want := range []string{"peer-joined", "offer"} {
		if m := stream.message(t); m["type"] != want {
			t.Fatalf("alice's stream through nginx brought %v, want a %s", m, want)
		}
	}
}

// writeNginxConf writes into dir an nginx.conf that runs the server block
// (a documented block, with its listen line) in the foreground, one worker,
// every file it writes under dir; it returns the file's path.
func writeNginxConf(t testing.TB, dir, server string) string {
	t.Helper()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, server)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
