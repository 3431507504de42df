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
	t   *testing.T
	srv *Server
	st  *boltstore.Store
	url string
}

// newTestAPI starts the API with cfg over a fresh store with opts; the
// test's cleanup drains and stops both.
func newTestAPI(t *testing.T, cfg Config, opts boltstore.Options) *testAPI {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "test.db"), opts)
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
	return &testAPI{t: t, srv: srv, st: st, url: ts.URL}
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
