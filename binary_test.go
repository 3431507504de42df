package main

// Helpers of the tests that run the real binary and kill or stop it
// (crash_test.go, crashloop_test.go, shutdown_test.go): building it, running
// it, and checking that what a client was told survives its restarts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tincanBinary builds the server into a temp dir (the build cache makes
// every build after the first quick).
func tincanBinary(t testing.TB) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "tincan")
	began := time.Now()
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built the binary in %v", time.Since(began).Round(time.Millisecond))
	return bin
}

// binServer is the server binary running on a loopback port.
type binServer struct {
	cmd    *exec.Cmd
	url    string      // set by startBinServer
	lines  *lineWriter // stdout
	stderr *syncBuffer
	done   chan struct{} // closed once it exited
}

// spawnBinServer starts bin on db without waiting for it; the rate and
// per-address limits are off (all the test's clients share 127.0.0.1), the
// embedded TURN too, and TINCAN_* variables are not passed on. It is killed
// at the end of the test, and its log shown if the test failed.
func spawnBinServer(t testing.TB, bin, db string, args ...string) *binServer {
	t.Helper()
	argv := append([]string{"-addr", "127.0.0.1:0", "-db", db, "-turn=false", "-rate-limit", "0", "-max-streams-per-ip", "0"}, args...)
	p := &binServer{cmd: exec.Command(bin, argv...), lines: &lineWriter{lines: make(chan string, 16)}, stderr: &syncBuffer{}, done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TINCAN_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Stdout, p.cmd.Stderr = p.lines, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			log := p.stderr.String()
			if len(log) > 4000 {
				log = "…" + log[len(log)-4000:]
			}
			t.Logf("server (pid %d, %v) log:\n%s", p.cmd.Process.Pid, p.cmd.ProcessState, log)
		}
	})
	return p
}

// startBinServer is spawnBinServer that waits until the server listens and
// its /healthz answers 200.
func startBinServer(t testing.TB, bin, db string, args ...string) *binServer {
	t.Helper()
	p := spawnBinServer(t, bin, db, args...)
	select {
	case line := <-p.lines.lines:
		var ok bool
		if p.url, ok = strings.CutPrefix(line, "tincan listening on "); !ok {
			t.Fatalf("first line on stdout: %q", line)
		}
	case <-p.done:
		t.Fatalf("the server exited at start (%v): did the db not reopen?\n%s", p.cmd.ProcessState, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start within 30s")
	}
	waitHealthy(t, http.DefaultClient, p.url)
	return p
}

// kill sends SIGKILL and waits until the process is gone; it must not have
// ended before.
func (p *binServer) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatal(err)
	}
	<-p.done
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the server ended with %v before it was killed:\n%s", p.cmd.ProcessState, p.stderr)
	}
}

// terminate sends SIGTERM and expects exit status 0 within limit; it
// returns how long the exit took.
func (p *binServer) terminate(t testing.TB, limit time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if !p.cmd.ProcessState.Success() {
			t.Errorf("after SIGTERM the server exited with %v", p.cmd.ProcessState)
		}
	case <-time.After(limit):
		t.Errorf("the server did not exit within %v of SIGTERM", limit)
	}
	return time.Since(began)
}

// postKeyed posts the message body of c to the server at base through hc,
// with Idempotency-Key key, once. An error means no complete answer: the
// message may or may not have been stored.
func postKeyed(hc *http.Client, base string, c *client, key, body string) (answer, error) {
	return request(hc, "POST", base+"/rooms/"+c.Room+"/messages", body, append(c.auth(), "Idempotency-Key", key)...)
}

// postedID is the message id of a 201 answer to a post.
func postedID(a answer) (uint64, error) {
	var r struct{ ID uint64 }
	if err := json.Unmarshal(a.Body, &r); err != nil || r.ID == 0 {
		return 0, fmt.Errorf("201 with body %s", a.Body)
	}
	return r.ID, nil
}

// postUntilAcked posts body with Idempotency-Key key to whatever server is
// current, retrying the same key until it is answered 201, while ctx lasts.
// A 503 (a server shutting down) is retried too; another status is an error.
func postUntilAcked(ctx context.Context, hc *http.Client, base *atomic.Value, c *client, key, body string) (uint64, error) {
	var last string
	for {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("never acknowledged (last: %s)", last)
		}
		a, err := postKeyed(hc, base.Load().(string), c, key, body)
		switch {
		case err != nil:
			last = err.Error()
		case a.Status == 201:
			return postedID(a)
		case a.Status == 503:
			last = "503 " + string(a.Body)
		default:
			return 0, fmt.Errorf("answered %d %s", a.Status, a.Body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receiveSSE reads c's event stream after id last (0: from the start) from
// whatever server is current, reconnecting with Last-Event-ID as
// EventSource does, until the end message; streams counts the connections.
// Each stream must resume right after the last id; what is wrong goes to
// problem, as this runs in a goroutine.
func receiveSSE(ctx context.Context, hc *http.Client, base *atomic.Value, c *client, last uint64, streams *atomic.Int64, problem func(string, ...any)) []map[string]any {
	var got []map[string]any
	for ctx.Err() == nil {
		header := []string{}
		if last > 0 {
			header = []string{"Last-Event-ID", fmt.Sprint(last)}
		}
		s, err := openStream(ctx, hc, base.Load().(string)+"/rooms/"+c.Room+"/events?token="+c.Token, 1<<16, header...)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		streams.Add(1)
		first := true
		for f := range s.frames {
			if f.Comment {
				continue
			}
			if first {
				first = false
				if f.Event != "ready" || f.ID != fmt.Sprint(last) {
					problem("SSE: a stream resumed after %d began with %+v", last, f)
				}
				continue
			}
			m, err := frameMessage(f)
			if err != nil {
				problem("SSE: %v", err)
				continue
			}
			if idOf(m) <= last {
				problem("SSE: id %d after %d (a duplicate or out of order)", idOf(m), last)
			}
			last = idOf(m)
			got = append(got, m)
			if m["type"] == "end" {
				s.close()
				return got
			}
		}
		s.close()
	}
	problem("SSE: no end message before the deadline (last id %d)", last)
	return got
}

// receivePolls long-polls c's messages after since from whatever server is
// current until the end message; what is wrong goes to problem.
func receivePolls(ctx context.Context, hc *http.Client, base *atomic.Value, c *client, since uint64, problem func(string, ...any)) []map[string]any {
	var got []map[string]any
	for ctx.Err() == nil {
		a, err := request(hc, "GET", fmt.Sprintf("%s/rooms/%s/messages?since=%d&wait=1", base.Load().(string), c.Room, since), "", c.auth()...)
		if err != nil || a.Status == 503 {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		var p pollAnswer
		if a.Status != 200 || jsonNumbers(a.Body, &p) != nil {
			problem("poll since %d: %d %s", since, a.Status, a.Body)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for _, m := range p.Messages {
			if idOf(m) <= since {
				problem("poll: id %d after %d (a duplicate or out of order)", idOf(m), since)
			}
			since = idOf(m)
			got = append(got, m)
			if m["type"] == "end" {
				return got
			}
		}
		if p.Next != since {
			problem("poll answered next %d after id %d", p.Next, since)
		}
	}
	problem("poll: no end message before the deadline (since %d)", since)
	return got
}

// checkExactlyOnce: got (in delivery order) holds every acknowledged
// message of sender ({"type":"load","k":key}, acked maps key to the id its
// POST was answered) exactly once with that id, and the end message once
// with the id end, and besides the server's peer events nothing else.
func checkExactlyOnce(t testing.TB, who string, got []map[string]any, sender string, acked map[string]uint64, end uint64) {
	t.Helper()
	delivered := map[string]uint64{}
	ends := 0
	for _, m := range got {
		switch {
		case m["from"] == nil && (m["type"] == "peer-joined" || m["type"] == "peer-left"):
		case m["from"] != sender:
			t.Fatalf("%s received %v", who, m)
		case m["type"] == "end":
			ends++
			if idOf(m) != end {
				t.Fatalf("%s: the end message came as id %d, its POST was answered %d", who, idOf(m), end)
			}
		case m["type"] == "load":
			k, _ := m["k"].(string)
			if prev, dup := delivered[k]; dup {
				t.Fatalf("%s received %s twice: ids %d and %d", who, k, prev, idOf(m))
			}
			delivered[k] = idOf(m)
			if want, ok := acked[k]; !ok || want != idOf(m) {
				t.Fatalf("%s received %s as id %d; its POST was answered %d (acknowledged: %v)", who, k, idOf(m), want, ok)
			}
		default:
			t.Fatalf("%s received %v", who, m)
		}
	}
	if ends != 1 {
		t.Fatalf("%s received the end message %d times", who, ends)
	}
	var missing []string
	for k, id := range acked {
		if _, ok := delivered[k]; !ok {
			missing = append(missing, fmt.Sprintf("%s=%d", k, id))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		t.Fatalf("%s never received %d acknowledged messages: %v", who, len(missing), missing[:min(len(missing), 50)])
	}
}
