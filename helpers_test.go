package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startServer runs the real server (run) on 127.0.0.1 with a bbolt file in a
// temp dir, the embedded TURN and the rate limit off unless args say
// otherwise, waits until /healthz answers, and returns the base URL. The
// server stops at the end of the test. Later args override earlier ones.
func startServer(t testing.TB, args ...string) string {
	t.Helper()
	url, _ := startServerDB(t, filepath.Join(t.TempDir(), "tincan.db"), args...)
	return url
}

// startServerDB is startServer on a given bbolt file; stop ends the server
// (as SIGTERM would) and waits for run to return.
func startServerDB(t testing.TB, db string, args ...string) (url string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lineWriter{lines: make(chan string, 16)}
	argv := append([]string{"tincan", "-addr", "127.0.0.1:0", "-db", db, "-turn=false", "-rate-limit", "0"}, args...)
	done := make(chan error, 1)
	go func() { done <- run(ctx, argv, func(string) string { return "" }, out, io.Discard) }()
	select {
	case line := <-out.lines:
		url = strings.TrimPrefix(line, "tincan listening on ")
	case err := <-done:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	waitHealthy(t, url)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run returned %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return url, stop
}

func waitHealthy(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s/healthz never answered 200", url)
}

// lineWriter passes whole lines written to it to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines chan string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadString('\n')
		if err != nil {
			w.buf.WriteString(line)
			return len(p), nil
		}
		select {
		case w.lines <- strings.TrimSpace(line):
		default:
		}
	}
}

// client is a test client of the API.
type client struct {
	t    testing.TB
	base string
	Room string
	joinAnswer
}

type joinAnswer struct {
	Room       string            `json:"room"`
	ClientID   string            `json:"client_id"`
	Token      string            `json:"token"`
	Initiator  bool              `json:"initiator"`
	Peers      []string          `json:"peers"`
	Capacity   int               `json:"capacity"`
	ICEServers []json.RawMessage `json:"ice_servers"`
	Events     string            `json:"events"`
	Messages   string            `json:"messages"`
}

// answer is a decoded HTTP answer.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a answer) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Body, v); err != nil {
		t.Fatalf("decode %s: %v", a.Body, err)
	}
}

// problem decodes a problem+json answer and checks its shape.
func (a answer) problem(t testing.TB) (code string) {
	t.Helper()
	if ct := a.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d Content-Type %q, want application/problem+json; body %s", a.Status, ct, a.Body)
	}
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	a.json(t, &p)
	if p.Status != a.Status || p.Type != "about:blank" || p.Title != http.StatusText(a.Status) || p.Code == "" {
		t.Fatalf("malformed problem for status %d: %s", a.Status, a.Body)
	}
	return p.Code
}

func do(t testing.TB, method, url string, body string, header ...string) answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// join joins room and fails the test unless the answer is want.
func join(t testing.TB, base, room string, wantStatus int, header ...string) *client {
	t.Helper()
	a := do(t, "POST", base+"/rooms/"+room+"/join", "", header...)
	if a.Status != wantStatus {
		t.Fatalf("join %s: status %d, want %d: %s", room, a.Status, wantStatus, a.Body)
	}
	c := &client{t: t, base: base, Room: room}
	a.json(t, &c.joinAnswer)
	return c
}

func (c *client) auth() []string { return []string{"Authorization", "Bearer " + c.Token} }

// post posts a message and returns its id, failing unless 201.
func (c *client) post(body string, header ...string) uint64 {
	c.t.Helper()
	a := do(c.t, "POST", c.base+"/rooms/"+c.Room+"/messages", body, append(c.auth(), header...)...)
	if a.Status != 201 {
		c.t.Fatalf("post %s: status %d: %s", body, a.Status, a.Body)
	}
	var r struct{ ID uint64 }
	a.json(c.t, &r)
	if r.ID == 0 {
		c.t.Fatalf("post answered %s", a.Body)
	}
	return r.ID
}

type pollAnswer struct {
	Messages []map[string]any `json:"messages"`
	Next     uint64           `json:"next"`
}

func (c *client) poll(since uint64, wait string) pollAnswer {
	c.t.Helper()
	a := do(c.t, "GET", fmt.Sprintf("%s/rooms/%s/messages?since=%d&wait=%s", c.base, c.Room, since, wait), "", c.auth()...)
	if a.Status != 200 {
		c.t.Fatalf("poll: status %d: %s", a.Status, a.Body)
	}
	if a.Header.Get("Cache-Control") != "no-store" {
		c.t.Errorf("poll Cache-Control %q", a.Header.Get("Cache-Control"))
	}
	var p pollAnswer
	d := json.NewDecoder(bytes.NewReader(a.Body))
	d.UseNumber()
	if err := d.Decode(&p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *client) leave() {
	c.t.Helper()
	if a := do(c.t, "POST", c.base+"/rooms/"+c.Room+"/leave", "", c.auth()...); a.Status != 204 {
		c.t.Fatalf("leave: %d %s", a.Status, a.Body)
	}
}

// frame is one SSE frame.
type frame struct {
	ID, Event, Data, Retry string
	Comment                bool
}

// stream is an open SSE connection.
type stream struct {
	t      testing.TB
	resp   *http.Response
	frames chan frame
	cancel context.CancelFunc
}

// events opens the event stream with extra query and headers.
func (c *client) events(query string, header ...string) *stream {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/rooms/"+c.Room+"/events?token="+c.Token+query, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		c.t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		cancel()
		c.t.Fatalf("events: status %d: %s", resp.StatusCode, body)
	}
	s := &stream{t: c.t, resp: resp, frames: make(chan frame, 1024), cancel: cancel}
	go s.read()
	c.t.Cleanup(s.close)
	return s
}

func (s *stream) close() { s.cancel(); s.resp.Body.Close() }

func (s *stream) read() {
	defer close(s.frames)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var f frame
	var data []string
	empty := true
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if !empty {
				f.Data = strings.Join(data, "\n")
				s.frames <- f
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
}

// next returns the next non-comment frame.
func (s *stream) next() frame {
	s.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				s.t.Fatal("stream ended")
			}
			if !f.Comment {
				return f
			}
		case <-timeout:
			s.t.Fatal("no frame within 30s")
		}
	}
}

// message returns the next frame's data as a message, checking that the
// frame is a plain message frame whose id equals the message id.
func (s *stream) message() map[string]any {
	s.t.Helper()
	f := s.next()
	if f.Event != "" {
		s.t.Fatalf("message frame has event %q: %+v", f.Event, f)
	}
	m := decodeMessage(s.t, f.Data)
	if fmt.Sprint(m["id"]) != f.ID {
		s.t.Fatalf("frame id %s, message id %v", f.ID, m["id"])
	}
	return m
}

// ready reads the ready frame and returns its cursor.
func (s *stream) ready() uint64 {
	s.t.Helper()
	f := s.next()
	if f.Event != "ready" || f.Retry == "" {
		s.t.Fatalf("first frame %+v, want event ready with retry", f)
	}
	var r struct{ Next uint64 }
	if err := json.Unmarshal([]byte(f.Data), &r); err != nil || strconv.FormatUint(r.Next, 10) != f.ID {
		s.t.Fatalf("ready frame %+v", f)
	}
	return r.Next
}

// quiet fails if a message frame arrives within d.
func (s *stream) quiet(d time.Duration) {
	s.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case f, ok := <-s.frames:
			if ok && !f.Comment {
				s.t.Fatalf("unexpected frame %+v", f)
			}
			if !ok {
				return
			}
		case <-timeout:
			return
		}
	}
}

func decodeMessage(t testing.TB, data string) map[string]any {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(data))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("message %q: %v", data, err)
	}
	return m
}

func idOf(m map[string]any) uint64 {
	n, _ := strconv.ParseUint(fmt.Sprint(m["id"]), 10, 64)
	return n
}
