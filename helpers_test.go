package main

// Helpers of the tests that talk to the server over HTTP: the server run in
// this process, the API client, the event-stream reader, and small checks.
// The helpers of the tests that run the real binary (building, starting,
// killing it, and what must survive that) are in binary_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
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
	return startServerVia(t, http.DefaultClient, db, args...)
}

// startServerVia is startServerDB with the /healthz check made through hc:
// for a server with -tls-cert, a client that trusts its certificate.
func startServerVia(t testing.TB, hc *http.Client, db string, args ...string) (url string, stop func()) {
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
	waitHealthy(t, hc, url)
	return url, stop
}

// waitHealthy waits up to 30s for url's /healthz to answer 200 through hc.
func waitHealthy(t testing.TB, hc *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := getOK(hc, url+"/healthz")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz never answered 200: %v", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getOK GETs url through hc and reads the answer: an error unless it is 200.
func getOK(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
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

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads: the
// output of a process, the server's log.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// client is a test client of the API: a member of a room, whose requests go
// through hc and fail t.
type client struct {
	t    testing.TB
	hc   *http.Client
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

// request makes one request through hc and reads the whole answer; header
// holds names and values in turn. It returns errors rather than failing a
// test, for goroutines and for requests that may meet a server that is gone.
func request(hc *http.Client, method, url, body string, header ...string) (answer, error) {
	return requestWithContext(context.Background(), hc, method, url, body, header...)
}

// requestWithContext is request ended early when ctx is done.
func requestWithContext(ctx context.Context, hc *http.Client, method, url, body string, header ...string) (answer, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return answer{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
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

// do is request through http.DefaultClient, failing the test on an error.
func do(t testing.TB, method, url, body string, header ...string) answer {
	t.Helper()
	return doVia(t, http.DefaultClient, method, url, body, header...)
}

// doVia is request through hc, failing the test on an error.
func doVia(t testing.TB, hc *http.Client, method, url, body string, header ...string) answer {
	t.Helper()
	a, err := request(hc, method, url, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return a
}

// join joins room through http.DefaultClient and fails the test unless the
// answer's status is wantStatus.
func join(t testing.TB, base, room string, wantStatus int, header ...string) *client {
	t.Helper()
	return joinVia(t, http.DefaultClient, base, room, wantStatus, header...)
}

// joinVia is join through hc; the client's requests go through hc after it
// too (a proxy, a TLS client).
func joinVia(t testing.TB, hc *http.Client, base, room string, wantStatus int, header ...string) *client {
	t.Helper()
	a := doVia(t, hc, "POST", base+"/rooms/"+room+"/join", "", header...)
	if a.Status != wantStatus {
		t.Fatalf("join %s at %s: status %d, want %d: %s", room, base, a.Status, wantStatus, a.Body)
	}
	c := &client{t: t, hc: hc, base: base, Room: room}
	a.json(t, &c.joinAnswer)
	return c
}

func (c *client) auth() []string { return []string{"Authorization", "Bearer " + c.Token} }

// post posts a message and returns its id, failing unless 201.
func (c *client) post(body string, header ...string) uint64 {
	c.t.Helper()
	a := doVia(c.t, c.hc, "POST", c.base+"/rooms/"+c.Room+"/messages", body, append(c.auth(), header...)...)
	if a.Status != 201 {
		c.t.Fatalf("post %s to %s: status %d: %s", body, c.base, a.Status, a.Body)
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
	a := doVia(c.t, c.hc, "GET", fmt.Sprintf("%s/rooms/%s/messages?since=%d&wait=%s", c.base, c.Room, since, wait), "", c.auth()...)
	if a.Status != 200 {
		c.t.Fatalf("poll: status %d: %s", a.Status, a.Body)
	}
	if a.Header.Get("Cache-Control") != "no-store" {
		c.t.Errorf("poll Cache-Control %q", a.Header.Get("Cache-Control"))
	}
	var p pollAnswer
	if err := jsonNumbers(a.Body, &p); err != nil {
		c.t.Fatalf("poll answered %s: %v", a.Body, err)
	}
	return p
}

func (c *client) leave() {
	c.t.Helper()
	if a := doVia(c.t, c.hc, "POST", c.base+"/rooms/"+c.Room+"/leave", "", c.auth()...); a.Status != 204 {
		c.t.Fatalf("leave: %d %s", a.Status, a.Body)
	}
}

// frame is one SSE frame.
type frame struct {
	ID, Event, Data, Retry string
	Comment                bool
}

// stream is an open SSE connection, read into frames as it comes. err is how
// the response ended (nil: a clean end), valid once frames is closed. t,
// which the methods that fail use, is set by events.
type stream struct {
	t      testing.TB
	resp   *http.Response
	frames chan frame
	err    error
	cancel context.CancelFunc
}

// events opens c's event stream with extra query and request headers; it
// fails the test unless the answer is 200, and closes at the end of it.
func (c *client) events(query string, header ...string) *stream {
	c.t.Helper()
	return c.eventsBuffered(1024, query, header...)
}

// eventsBuffered is events with room for size frames that the test has not
// taken yet: up to that the stream is read at once, as a browser would.
func (c *client) eventsBuffered(size int, query string, header ...string) *stream {
	c.t.Helper()
	s, err := openStream(context.Background(), c.hc, c.base+"/rooms/"+c.Room+"/events?token="+c.Token+query, size, header...)
	if err != nil {
		c.t.Fatalf("events of %s at %s: %v", c.Room, c.base, err)
	}
	s.t = c.t
	c.t.Cleanup(s.close)
	return s
}

// streamHeaderTimeout bounds the wait for an event stream's response header:
// a proxy that buffers the stream holds back even that.
const streamHeaderTimeout = 5 * time.Second

// openStream opens the event stream at url through hc with the given request
// headers and reads it into frames, with room for size frames not taken yet,
// until the response ends or ctx is done or the stream is closed. It returns
// errors rather than failing a test, for goroutines and servers that may be
// gone.
func openStream(ctx context.Context, hc *http.Client, url string, size int, header ...string) (*stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	headerTimer := time.AfterFunc(streamHeaderTimeout, cancel)
	resp, err := hc.Do(req)
	if !headerTimer.Stop() {
		cancel()
		if err == nil {
			resp.Body.Close()
		}
		return nil, fmt.Errorf("no response header within %v (does a proxy buffer the stream?)", streamHeaderTimeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	s := &stream{resp: resp, frames: make(chan frame, size), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		s.err = readFrames(ctx, resp.Body, s.frames)
		close(s.frames)
	}()
	return s, nil
}

func (s *stream) close() { s.cancel(); s.resp.Body.Close() }

// readFrames parses the SSE frames of r into out until r ends or ctx is
// done; it returns the read error (nil for a clean end of r).
func readFrames(ctx context.Context, r io.Reader, out chan<- frame) error {
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
				select {
				case out <- f:
				case <-ctx.Done():
					return ctx.Err()
				}
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

// nextWithin returns the next non-comment frame, or false when the stream
// ends or none comes within d.
func (s *stream) nextWithin(d time.Duration) (frame, bool) {
	timeout := time.After(d)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				return frame{}, false
			}
			if !f.Comment {
				return f, true
			}
		case <-timeout:
			return frame{}, false
		}
	}
}

// next returns the next non-comment frame, failing the test when the stream
// ends or none comes within 30s.
func (s *stream) next() frame {
	s.t.Helper()
	f, ok := s.nextWithin(30 * time.Second)
	if !ok {
		s.t.Fatal("the stream ended, or sent no frame within 30s")
	}
	return f
}

// message returns the next frame's data as a message, checking that the
// frame is a plain message frame whose id equals the message id.
func (s *stream) message() map[string]any {
	s.t.Helper()
	m, err := frameMessage(s.next())
	if err != nil {
		s.t.Fatal(err)
	}
	return m
}

// frameMessage decodes a message frame, checking that it has no event and
// that its id is the message's.
func frameMessage(f frame) (map[string]any, error) {
	if f.Event != "" {
		return nil, fmt.Errorf("message frame with event %q: %+v", f.Event, f)
	}
	var m map[string]any
	if err := jsonNumbers([]byte(f.Data), &m); err != nil {
		return nil, fmt.Errorf("frame %+v: %v", f, err)
	}
	if fmt.Sprint(m["id"]) != f.ID {
		return nil, fmt.Errorf("frame id %s, message id %v", f.ID, m["id"])
	}
	return m, nil
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

// decodeMessage decodes a message, keeping its numbers as json.Number.
func decodeMessage(t testing.TB, data string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := jsonNumbers([]byte(data), &m); err != nil {
		t.Fatalf("message %q: %v", data, err)
	}
	return m
}

// jsonNumbers decodes data, one JSON value and nothing after it, into v
// keeping numbers as json.Number.
func jsonNumbers(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// idOf is a decoded message's id (0 if it has none).
func idOf(m map[string]any) uint64 {
	n, _ := strconv.ParseUint(fmt.Sprint(m["id"]), 10, 64)
	return n
}

// metric reads one sample of the server's /metrics.
func metric(t testing.TB, base, name string) float64 {
	t.Helper()
	a := do(t, "GET", base+"/metrics", "")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(a.Body)
	if m == nil {
		t.Fatalf("metric %s not found", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
