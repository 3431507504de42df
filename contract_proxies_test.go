package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/tincan/tincan/internal/tincantest"
)

// Tests of tincan behind real proxies, started by the tests on loopback:
// nginx as a reverse proxy (testdata/nginx/) and squid as a forward proxy
// (testdata/squid/). Both are set up as badly as they come by default:
// nginx buffers responses and both give up on a response that sends nothing
// for proxyReadTimeout. Through them, SSE events must still arrive at once,
// heartbeats must keep an idle stream open past that timeout, and long-poll
// must work (with waits below the timeout; a longer one gets the proxy's
// 504, which the page retries with a shorter wait).
//
// Without the proxy programs the tests skip, except under CI=true, where
// they fail: .ci/run installs them (apt-get install -y nginx squid).

const (
	proxyReadTimeout = 3 * time.Second
	proxyHeartbeat   = "1s"                   // -heartbeat of the server that must stay connected
	proxyPrompt      = 500 * time.Millisecond // "well under a second"
)

// TestNginxReverseProxy runs the checks through two nginx servers: one
// with nothing but proxy_pass (nginx's defaults: HTTP/1.0 to tincan,
// proxy_buffering on), one with the block the README recommends, both with
// the short read timeout.
func TestNginxReverseProxy(t *testing.T) {
	bin := proxyProgram(t, "nginx", "nginx")
	live := newTestServer(t, withFlags("-heartbeat", proxyHeartbeat)).addr()
	quiet := newTestServer(t, withFlags("-heartbeat", "1h")).addr()

	type server struct {
		Name     string
		Port     int
		Upstream string
		Readme   bool
	}
	var servers []server
	for _, readme := range []bool{false, true} {
		for _, up := range []string{live, quiet} {
			servers = append(servers, server{Upstream: up, Readme: readme})
		}
	}
	var dir string
	for attempt := 1; ; attempt++ {
		dir = t.TempDir()
		ports := freeLoopbackPorts(t, len(servers))
		for i := range servers {
			s := &servers[i]
			s.Port = ports[i]
			s.Name = map[bool]string{false: "defaults", true: "readme"}[s.Readme] + map[string]string{live: "/live", quiet: "/quiet"}[s.Upstream]
		}
		conf := renderTemplate(t, "testdata/nginx/nginx.conf.tmpl", filepath.Join(dir, "nginx.conf"), map[string]any{
			"Dir": dir, "ReadTimeout": fmt.Sprintf("%ds", int(proxyReadTimeout.Seconds())), "Servers": servers,
		})
		p := startProxyProgram(t, "nginx", []string{filepath.Join(dir, "error.log")}, bin, "-p", dir, "-c", conf)
		err := p.waitReady(func() error {
			for _, s := range servers {
				if err := newEndpoint(fmt.Sprintf("http://127.0.0.1:%d", s.Port), nil).healthz(); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			break
		}
		p.stop()
		if attempt == 3 || !strings.Contains(p.output(), "Address already in use") {
			t.Fatalf("nginx did not come up: %v\n%s", err, p.output())
		}
	}

	for _, readme := range []bool{false, true} {
		name := map[bool]string{false: "defaults", true: "readme-block"}[readme]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var liveURL, quietURL string
			for _, s := range servers {
				u := fmt.Sprintf("http://127.0.0.1:%d", s.Port)
				if s.Readme == readme && s.Upstream == live {
					liveURL = u
				} else if s.Readme == readme {
					quietURL = u
				}
			}
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			hc := &http.Client{Transport: tr}
			proxyScenario(t, "nginx-"+name, newEndpoint(liveURL, hc), newEndpoint(quietURL, hc))
		})
	}
}

// TestSquidForwardProxy runs the checks with the clients going through squid
// as their forward proxy (http.Transport.Proxy).
func TestSquidForwardProxy(t *testing.T) {
	bin := proxyProgram(t, "squid", "squid")
	live := newTestServer(t, withFlags("-heartbeat", proxyHeartbeat))
	quiet := newTestServer(t, withFlags("-heartbeat", "1h"))

	var proxyURL *url.URL
	for attempt := 1; ; attempt++ {
		// squid started as root switches to its own user (proxy), which
		// must be able to write its logs here.
		dir, err := os.MkdirTemp("", "tincan-squid-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		port := freeLoopbackPort(t)
		conf := renderTemplate(t, "testdata/squid/squid.conf.tmpl", filepath.Join(dir, "squid.conf"), map[string]any{
			"Dir": dir, "Port": port, "ReadTimeout": fmt.Sprintf("%d seconds", int(proxyReadTimeout.Seconds())),
		})
		proxyURL = &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
		p := startProxyProgram(t, "squid", []string{filepath.Join(dir, "cache.log"), filepath.Join(dir, "access.log")}, bin, "-N", "-d", "1", "-f", conf)
		tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
		err = p.waitReady(live.via(&http.Client{Transport: tr}).healthz)
		tr.CloseIdleConnections()
		if err == nil {
			break
		}
		p.stop()
		if attempt == 3 || !strings.Contains(p.output(), "in use") {
			t.Fatalf("squid did not come up: %v\n%s", err, p.output())
		}
	}
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL)}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	proxyScenario(t, "squid", live.via(hc), quiet.via(hc))
}

// proxyScenario runs the checks in room through the proxy: live reaches a
// server with a heartbeat below the proxy's read timeout, quiet one
// without.
func proxyScenario(t *testing.T, room string, live, quiet *endpoint) {
	a := live.join(t, room, 201)
	b := live.join(t, room, 201)
	began := time.Now()
	s := a.events(t, "") // a's stream on the live server, open for the whole scenario

	phase(t, "the stream opens at once: its ready frame, then b's peer-joined", func(t *testing.T) {
		if ct := s.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			t.Fatalf("event stream through the proxy has Content-Type %q", ct)
		}
		f, ok := s.nextWithin(2 * time.Second)
		if !ok || f.Event != "ready" {
			t.Fatalf("no ready frame within 2s of opening the stream (the proxy buffers it?): %+v", f)
		}
		f, ok = s.nextWithin(2 * time.Second)
		if m := decodeMessage(t, f.Data); !ok || m["type"] != "peer-joined" || m["peer"] != b.ClientID {
			t.Fatalf("second frame %+v, want b's peer-joined", f)
		}
		t.Logf("stream open with its first frames after %v", time.Since(began).Round(time.Millisecond))
	})
	phase(t, "each event arrives well under a second after its POST began", func(t *testing.T) {
		var worst time.Duration
		for i := range 5 {
			began := time.Now()
			id := b.post(t, fmt.Sprintf(`{"type":"chat","n":%d}`, i))
			f, ok := s.nextWithin(5 * time.Second)
			took := time.Since(began)
			if !ok {
				t.Fatalf("message %d (id %d) did not arrive within 5s of its POST", i, id)
			}
			if m := decodeMessage(t, f.Data); idOf(m) != id || f.ID != fmt.Sprint(id) {
				t.Fatalf("got frame %+v, want message %d", f, id)
			}
			worst = max(worst, took)
			time.Sleep(50 * time.Millisecond)
		}
		if worst > proxyPrompt {
			t.Fatalf("an SSE event took %v from its POST to the reader through the proxy, want < %v", worst, proxyPrompt)
		}
		t.Logf("SSE: POST to event at most %v", worst.Round(time.Millisecond))
	})

	// poll long-polls in a goroutine; the answer comes on the channel.
	type polled struct {
		p      pollAnswer
		status int
		took   time.Duration
		err    error
	}
	poll := func(c *client, since uint64, wait string) chan polled {
		ch := make(chan polled, 1)
		go func() {
			began := time.Now()
			a, err := c.longPoll(context.Background(), since, wait)
			r := polled{status: a.Status, took: time.Since(began), err: err}
			if err == nil && a.Status == 200 {
				r.p, r.err = a.decodePoll()
			}
			ch <- r
		}()
		return ch
	}
	var id uint64 // the message that answered the waiting long-poll
	phase(t, "a waiting long-poll is answered promptly when a message comes", func(t *testing.T) {
		waiting := poll(b, 0, "2")
		time.Sleep(300 * time.Millisecond)
		began := time.Now()
		id = a.post(t, `{"type":"chat","to-b":true}`)
		select {
		case r := <-waiting:
			if r.err != nil || r.status != 200 || len(r.p.Messages) != 1 || idOf(r.p.Messages[0]) != id || r.p.Next != id {
				t.Fatalf("woken long-poll through the proxy: %d %+v %v", r.status, r.p, r.err)
			}
			if took := time.Since(began); took > proxyPrompt {
				t.Fatalf("long-poll answered %v after the POST began, want < %v", took, proxyPrompt)
			}
			t.Logf("long-poll: answered %v after the POST began", time.Since(began).Round(time.Millisecond))
		case <-time.After(5 * time.Second):
			t.Fatal("the waiting long-poll was not answered through the proxy")
		}
	})
	phase(t, "a long-poll with nothing to answer ends by itself after its wait", func(t *testing.T) {
		r := <-poll(b, id, "1")
		if r.err != nil || r.status != 200 || len(r.p.Messages) != 0 || r.p.Next != id || r.took < 900*time.Millisecond || r.took > 2500*time.Millisecond {
			t.Fatalf("empty long-poll (wait=1) through the proxy: %d %+v %v after %v", r.status, r.p, r.err, r.took)
		}
	})

	// The proxy's read timeout: on the quiet server an idle stream is cut
	// and a long-poll waiting longer than it gets the proxy's 504, while on
	// the live server heartbeats keep the stream open well past it.
	c := quiet.join(t, room, 201)
	d := quiet.join(t, room, 201)
	qs := c.events(t, "")
	phase(t, "the stream of the server without heartbeats opens too", func(t *testing.T) {
		if f, ok := qs.nextWithin(2 * time.Second); !ok || f.Event != "ready" {
			t.Fatalf("quiet stream: no ready frame: %+v", f)
		}
	})
	cut := make(chan time.Duration, 1)
	go func() {
		began := time.Now()
		for range qs.frames {
		}
		cut <- time.Since(began)
	}()
	long := poll(d, 0, "6")

	phase(t, "heartbeats keep the idle stream open past the proxy's read timeout", func(t *testing.T) {
		hold := proxyReadTimeout + 2*time.Second
		comments := 0
		deadline := time.After(hold)
	wait:
		for {
			select {
			case f, ok := <-s.frames:
				if !ok {
					t.Fatalf("the live stream ended after %d heartbeats, within %v of idling (proxy read timeout %v)", comments, hold, proxyReadTimeout)
				}
				if !f.Comment {
					t.Fatalf("unexpected frame while idle: %+v", f)
				}
				comments++
			case <-deadline:
				break wait
			}
		}
		if comments < 3 {
			t.Fatalf("only %d heartbeat comments in %v with -heartbeat %s", comments, hold, proxyHeartbeat)
		}
		began := time.Now()
		id := b.post(t, `{"type":"chat","after":"idle"}`)
		if f, ok := s.nextWithin(5 * time.Second); !ok || f.ID != fmt.Sprint(id) {
			t.Fatalf("after idling %v the stream did not deliver message %d: %+v", hold, id, f)
		}
		if took := time.Since(began); took > proxyPrompt {
			t.Fatalf("after idling, an event took %v", took)
		}
		t.Logf("heartbeats: the stream idled %v (%d comments) past the proxy's %v read timeout and still delivers", hold, comments, proxyReadTimeout)
	})
	phase(t, "without heartbeats the proxy cuts the idle stream at its read timeout", func(t *testing.T) {
		select {
		case took := <-cut:
			if took < proxyReadTimeout-time.Second {
				t.Fatalf("the quiet stream ended after %v, before the proxy's read timeout %v", took, proxyReadTimeout)
			}
			t.Logf("control: without heartbeats the proxy cut the idle stream after %v", took.Round(100*time.Millisecond))
		case <-time.After(10 * time.Second):
			t.Fatalf("the quiet stream (heartbeat 1h) was not cut by the proxy's %v read timeout: is the timeout in effect?", proxyReadTimeout)
		}
	})
	phase(t, "a long-poll waiting longer than the read timeout gets the proxy's 504", func(t *testing.T) {
		select {
		case r := <-long:
			if r.err != nil || r.status != http.StatusGatewayTimeout {
				t.Fatalf("a long-poll with wait=6 behind a %v read timeout answered %d %+v %v after %v, want the proxy's 504", proxyReadTimeout, r.status, r.p, r.err, r.took)
			}
			t.Logf("control: a long-poll waiting 6s got the proxy's 504 after %v", r.took.Round(100*time.Millisecond))
		case <-time.After(15 * time.Second):
			t.Fatal("the long-poll with wait=6 got no answer")
		}
	})
}

// proxyProgram finds a proxy program. Without it the test fails under
// CI=true (CI installs it) and skips otherwise.
func proxyProgram(t *testing.T, name, pkg string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/local/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("%s is not installed (not in PATH nor /usr/sbin): apt-get install -y %s", name, pkg)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and %s; .ci/run must install it", msg)
	}
	t.Skip(msg)
	return ""
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	return freeLoopbackPorts(t, 1)[0]
}

// freeLoopbackPorts returns n distinct ports free on 127.0.0.1. It holds
// each listener until all are chosen: one closed at once may be handed out
// again by the next listen, and two servers of one nginx on the same port
// are not an error to nginx (it warns and serves one of them).
func freeLoopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// renderTemplate fills in a testdata template and writes it to path.
func renderTemplate(t *testing.T, tmpl, path string, data any) string {
	t.Helper()
	tm, err := template.ParseFiles(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tm.Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// proxyProcess is a proxy program started by a test, in its own process
// group so that it and any helper it forks end with the test.
type proxyProcess struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *tincantest.SyncBuffer
	logs []string
	done chan struct{}
	once sync.Once
}

func startProxyProgram(t *testing.T, name string, logs []string, bin string, args ...string) *proxyProcess {
	t.Helper()
	p := &proxyProcess{t: t, name: name, cmd: exec.Command(bin, args...), out: &tincantest.SyncBuffer{}, logs: logs, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.output())
		}
	})
	return p
}

// waitReady polls ready until it succeeds, the program exits, or 20s pass.
func (p *proxyProcess) waitReady(ready func() error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.name, p.cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 20s: %v", p.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the program (SIGTERM to its process group, SIGKILL after 5s).
func (p *proxyProcess) stop() {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		syscall.Kill(-pgid, syscall.SIGKILL) // helpers, if any are left
	})
}

// output is what the program printed, then its log files.
func (p *proxyProcess) output() string {
	var b strings.Builder
	b.WriteString(p.out.String())
	for _, l := range p.logs {
		data, _ := os.ReadFile(l)
		fmt.Fprintf(&b, "--- %s\n%s", l, data)
	}
	return b.String()
}
