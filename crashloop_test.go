package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestCrashLoop kills the real binary with SIGKILL 20 times at random
// moments while three posters load a room (each post with an
// Idempotency-Key, retried with the same key until answered 201, as a
// client would) and two members receive: one over SSE, resuming with
// Last-Event-ID after each crash, one by long-poll. Some more kills land
// while the server is starting. After every restart the db must reopen with
// the room intact; at the end both receivers must have had every
// acknowledged message exactly once, in id order, with the id its POST was
// answered, and no id may have been answered twice.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the crash loop builds the binary and kills it 20 times")
	}
	const (
		kills   = 20
		posters = 3
		room    = "loop"
	)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>32))
	t.Logf("random seed %d", seed)

	bin := tincanBinary(t)
	db := filepath.Join(t.TempDir(), "loop.db")
	srv := startBinServer(t, bin, db, "-room-capacity", "3")
	var base atomic.Value // the current server URL
	base.Store(srv.url)

	sender := join(t, srv.url, room, 201)
	sseR := join(t, srv.url, room, 201)
	pollR := join(t, srv.url, room, 201)

	var (
		mu    sync.Mutex
		acked = map[string]uint64{} // idempotency key -> id of its 201
		bad   []string
		nAck  atomic.Int64
	)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(bad) < 20 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	// The posters: a key is retried until it is answered 201.
	var stopPosting atomic.Bool
	var posting sync.WaitGroup
	for g := range posters {
		posting.Add(1)
		go func() {
			defer posting.Done()
			var prev uint64
			for i := 0; !stopPosting.Load(); i++ {
				key := fmt.Sprintf("p%d-%d", g, i)
				id, err := postUntilAcked(ctx, hc, &base, sender, key, fmt.Sprintf(`{"type":"load","k":%q}`, key))
				if err != nil {
					problem("%s: %v", key, err)
					return
				}
				if id <= prev {
					problem("%s: id %d after %d of the same poster", key, id, prev)
				}
				prev = id
				mu.Lock()
				acked[key] = id
				mu.Unlock()
				nAck.Add(1)
			}
		}()
	}

	// The receivers, until they see the end message.
	var receiving sync.WaitGroup
	var gotSSE, gotPoll []map[string]any
	var sseStreams atomic.Int64
	receiving.Add(2)
	go func() {
		defer receiving.Done()
		gotSSE = receiveSSE(ctx, hc, &base, sseR, 0, &sseStreams, problem)
	}()
	go func() {
		defer receiving.Done()
		gotPoll = receivePolls(ctx, hc, &base, pollR, 0, problem)
	}()

	// The kills.
	began := time.Now()
	startupKills := 0
	for k := range kills {
		// Under load: wait for a few acknowledgements from this server,
		// then a random moment.
		for n := nAck.Load(); nAck.Load() < n+3; {
			if time.Since(began) > 60*time.Second {
				t.Fatalf("kill %d: no progress (problems: %v)", k, bad)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(300 * time.Millisecond))))
		srv.kill(t)
		if rng.IntN(4) == 0 { // and now and then once more while it starts
			p := spawnBinServer(t, bin, db, "-room-capacity", "3")
			time.Sleep(time.Duration(rng.Int64N(int64(40 * time.Millisecond))))
			p.kill(t)
			startupKills++
		}
		srv = startBinServer(t, bin, db, "-room-capacity", "3")
		base.Store(srv.url)
		var info struct{ Occupants int }
		if a := do(t, "GET", srv.url+"/rooms/"+room, ""); a.Status != 200 {
			t.Fatalf("after kill %d: GET room: %d %s", k+1, a.Status, a.Body)
		} else if a.json(t, &info); info.Occupants != 3 {
			t.Fatalf("after kill %d the room has %d occupants, want 3", k+1, info.Occupants)
		}
	}
	loop := time.Since(began)

	// Let the posters finish what they have in flight, then end.
	stopPosting.Store(true)
	posting.Wait()
	end, err := postUntilAcked(ctx, hc, &base, sender, "end", `{"type":"end"}`)
	if err != nil {
		t.Fatalf("the end message: %v", err)
	}
	receiving.Wait()
	if len(bad) > 0 {
		t.Fatalf("problems during the crash loop:\n%s", strings.Join(bad, "\n"))
	}
	t.Logf("%d SIGKILLs under load (+%d during start) in %v; %d messages acknowledged; the SSE receiver reconnected %d times",
		kills, startupKills, loop.Round(time.Millisecond), len(acked), sseStreams.Load()-1)

	byID := map[uint64]string{end: "end"}
	for k, id := range acked {
		if other, dup := byID[id]; dup {
			t.Fatalf("id %d was answered for both %s and %s", id, other, k)
		}
		byID[id] = k
	}
	checkExactlyOnce(t, "the SSE receiver", gotSSE, sender.ClientID, acked, end)
	checkExactlyOnce(t, "the long-poll receiver", gotPoll, sender.ClientID, acked, end)
	srv.terminate(t, 10*time.Second)
}

// postUntilAcked posts body with Idempotency-Key key to whatever server is
// current, retrying the same key until it is answered 201.
func postUntilAcked(ctx context.Context, hc *http.Client, base *atomic.Value, c *client, key, body string) (uint64, error) {
	var last string
	for {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("never acknowledged (last: %s)", last)
		}
		url := base.Load().(string) + "/rooms/" + c.Room + "/messages"
		a, err := doVia(hc, "POST", url, body, "Authorization", "Bearer "+c.Token, "Idempotency-Key", key)
		switch {
		case err != nil:
			last = err.Error()
		case a.Status == 201:
			var r struct{ ID uint64 }
			if err := json.Unmarshal(a.Body, &r); err != nil || r.ID == 0 {
				return 0, fmt.Errorf("201 with %s", a.Body)
			}
			return r.ID, nil
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
// EventSource does, until the end message. Each stream must resume right
// after the last id.
func receiveSSE(ctx context.Context, hc *http.Client, base *atomic.Value, c *client, last uint64, streams *atomic.Int64, problem func(string, ...any)) []map[string]any {
	var got []map[string]any
	for ctx.Err() == nil {
		header := []string{}
		if last > 0 {
			header = []string{"Last-Event-ID", fmt.Sprint(last)}
		}
		conn, err := openSSE(ctx, hc, base.Load().(string)+"/rooms/"+c.Room+"/events?token="+c.Token, header...)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		streams.Add(1)
		first := true
		for f := range conn.frames {
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
			m, err := frameJSON(f)
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
				conn.cancel()
				return got
			}
		}
		conn.cancel()
	}
	problem("SSE: no end message before the deadline (last id %d)", last)
	return got
}

// receivePolls long-polls c's messages after since from whatever server is
// current until the end message.
func receivePolls(ctx context.Context, hc *http.Client, base *atomic.Value, c *client, since uint64, problem func(string, ...any)) []map[string]any {
	var got []map[string]any
	for ctx.Err() == nil {
		a, err := doVia(hc, "GET", fmt.Sprintf("%s/rooms/%s/messages?since=%d&wait=1", base.Load().(string), c.Room, since), "", "Authorization", "Bearer "+c.Token)
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

// checkExactlyOnce: got holds every acknowledged message of sender exactly
// once with the id of its 201, and the end message, and (besides the
// server's peer events) nothing else.
func checkExactlyOnce(t *testing.T, who string, got []map[string]any, sender string, acked map[string]uint64, end uint64) {
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

// sseConn is an open event stream read into frames; err is how it ended
// (nil: a clean end of the response), valid once frames is closed.
type sseConn struct {
	frames chan frame
	err    error
	cancel context.CancelFunc
}

func openSSE(ctx context.Context, hc *http.Client, url string, header ...string) (*sseConn, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("events: %d %s", resp.StatusCode, body)
	}
	c := &sseConn{frames: make(chan frame, 1<<16), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		c.err = readFrames(resp.Body, c.frames)
		close(c.frames)
	}()
	return c, nil
}

// readFrames parses SSE frames from r into out until r ends; it returns
// the read error (nil for a clean end).
func readFrames(r io.Reader, out chan<- frame) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var f frame
	var data []string
	empty := true
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if !empty {
				f.Data = strings.Join(data, "\n")
				out <- f
			}
			f, data, empty = frame{}, nil, true
			continue
		}
		empty = false
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			f.Comment = true
		case "id":
			f.ID = value
		case "event":
			f.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			f.Retry = value
		}
	}
	return sc.Err()
}

// frameJSON decodes a message frame, checking that its id: is the message's.
func frameJSON(f frame) (map[string]any, error) {
	var m map[string]any
	if f.Event != "" {
		return nil, fmt.Errorf("message frame with event %q: %+v", f.Event, f)
	}
	if err := jsonNumbers([]byte(f.Data), &m); err != nil {
		return nil, fmt.Errorf("frame %+v: %v", f, err)
	}
	if fmt.Sprint(m["id"]) != f.ID {
		return nil, fmt.Errorf("frame id %s, message id %v", f.ID, m["id"])
	}
	return m, nil
}

// tincanBinary builds the server into a temp dir (the build cache makes
// every build after the first quick).
func tincanBinary(t *testing.T) string {
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
	url    string
	lines  *lineWriter
	stderr *syncBuffer
	done   chan struct{} // closed once it exited
}

// spawnBinServer starts bin on db without waiting for it; the rate and
// per-address limits are off (all the test's clients share 127.0.0.1).
func spawnBinServer(t *testing.T, bin, db string, args ...string) *binServer {
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

// startBinServer starts bin on db and waits until /healthz answers 200.
func startBinServer(t *testing.T, bin, db string, args ...string) *binServer {
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
	waitHealthy(t, p.url)
	return p
}

// kill sends SIGKILL and waits until the process is gone; it must not have
// ended before.
func (p *binServer) kill(t *testing.T) {
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
func (p *binServer) terminate(t *testing.T, limit time.Duration) time.Duration {
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
