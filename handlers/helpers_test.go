package handlers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
)

// testAPI is the API over a real bbolt file, served by a real HTTP server
// on loopback.
type testAPI struct {
	t    *testing.T
	srv  *Server
	st   *boltstore.Store
	url  string
	file string // the bbolt file
}

// newTestAPI starts the API with cfg over a fresh store with opts; the
// test's cleanup drains and stops both.
func newTestAPI(t *testing.T, cfg Config, opts boltstore.Options) *testAPI {
	t.Helper()
	file := filepath.Join(t.TempDir(), "test.db")
	st, err := boltstore.Open(file, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(cfg, st)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx) }()
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Drain()
		ts.Close()
		cancel()
		<-ran
		st.Close() // a test may have closed it already
	})
	return &testAPI{t: t, srv: srv, st: st, url: ts.URL, file: file}
}

// corruptRecords damages, in the file under the open store, the stored
// messages of room with one recipient: their room name's length byte
// becomes 255, so that reading them fails as a disk error would make it.
// (The store reads the file through a shared mapping, which sees the write.)
// Open the store with RecentBytes -1, so that reads go to the file.
func (a *testAPI) corruptRecords(room string) {
	a.t.Helper()
	data, err := os.ReadFile(a.file)
	if err != nil {
		a.t.Fatal(err)
	}
	f, err := os.OpenFile(a.file, os.O_WRONLY, 0)
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	pattern := append(append([]byte{byte(len(room))}, room...), 1)
	n := 0
	for off := bytes.Index(data, pattern); off >= 0; {
		if _, err := f.WriteAt([]byte{255}, int64(off)); err != nil {
			a.t.Fatal(err)
		}
		n++
		next := bytes.Index(data[off+1:], pattern)
		if next < 0 {
			break
		}
		off += 1 + next
	}
	if n == 0 {
		a.t.Fatalf("no record of room %s in %s", room, a.file)
	}
}

// testMember is a member joined through the API.
type testMember struct {
	store.Member
	token string
}

// answer is a response read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// problemCode is the "code" of a problem+json answer ("" if none).
func (a answer) problemCode() string {
	var p struct{ Code string }
	json.Unmarshal(a.body, &p)
	return p.Code
}

// do sends a request with token as the bearer ("" for none) and reads the
// whole answer.
func (a *testAPI) do(method, path, token, body string) answer {
	a.t.Helper()
	req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// join joins room through the API and fails the test unless it succeeds.
func (a *testAPI) join(room string) testMember {
	a.t.Helper()
	ans := a.do("POST", "/rooms/"+room+"/join", "", "")
	if ans.status != http.StatusCreated {
		a.t.Fatalf("join %s: %d %s", room, ans.status, ans.body)
	}
	var j struct {
		ClientID string `json:"client_id"`
		Token    string `json:"token"`
	}
	if err := json.Unmarshal(ans.body, &j); err != nil {
		a.t.Fatalf("join %s: %v in %s", room, err, ans.body)
	}
	return testMember{store.Member{Room: room, ID: j.ClientID}, j.Token}
}

// openEvents opens m's event stream and reads up to its ready frame. The
// test's cleanup closes it.
func (a *testAPI) openEvents(m testMember) *bufio.Reader {
	a.t.Helper()
	req, err := http.NewRequest("GET", a.url+"/rooms/"+m.Room+"/events", nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+m.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("events: %s", resp.Status)
	}
	r := bufio.NewReader(resp.Body)
	for line := ""; !strings.HasPrefix(line, "event: ready"); {
		if line, err = r.ReadString('\n'); err != nil {
			a.t.Fatalf("events, before the ready frame: %v", err)
		}
	}
	return r
}

// within fails the test unless f returns within a generous time.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still waiting after 30s", what)
	}
}

// logBuffer collects the JSON lines of a slog.JSONHandler.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// logger is a logger that writes to b, every level.
func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// errors returns the lines logged at level ERROR, decoded.
func (b *logBuffer) errors(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []map[string]any
	for _, raw := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		if len(raw) == 0 {
			continue
		}
		var line map[string]any
		if err := json.Unmarshal(raw, &line); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		if line["level"] == "ERROR" {
			lines = append(lines, line)
		}
	}
	return lines
}

// metric is the value of an unlabelled metric on /metrics.
func (a *testAPI) metric(name string) float64 {
	a.t.Helper()
	ans := a.do("GET", "/metrics", "", "")
	for _, line := range strings.Split(string(ans.body), "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(value, 64)
			if err != nil {
				a.t.Fatalf("metric %s: %q", name, line)
			}
			return f
		}
	}
	a.t.Fatalf("no metric %s on /metrics", name)
	return 0
}

// waitFor polls cond until it holds, for a generous time.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still waiting after 30s", what)
		}
	}
}
