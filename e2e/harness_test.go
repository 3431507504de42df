package e2e

// The harness of the end-to-end tests: a server (the binary, started by
// internal/tincantest) reached through an endpoint that follows it to its
// port across restarts, with the Go client for what a test does as an
// application would, and raw HTTP for the answers it inspects.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/internal/tincantest"
)

// endpoint is how a test reaches a server: url says where it is now (it
// changes when the binary restarts on another port), hc gets there.
type endpoint struct {
	url func() string
	hc  *http.Client
}

// startServer builds the binary (once per test process) and runs it with
// tincantest's default flags and flags, env as its only TINCAN_* variables.
// hc (nil: a client of its own) is the endpoint's HTTP client.
func startServer(t testing.TB, hc *http.Client, env []string, flags ...string) (*tincantest.Server, endpoint) {
	t.Helper()
	srv := tincantest.Start(t, tincantest.Build(t), env, flags...)
	return srv, newEndpoint(t, srv.URL, hc)
}

func newEndpoint(t testing.TB, url func() string, hc *http.Client) endpoint {
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{}}
	}
	t.Cleanup(hc.CloseIdleConnections)
	return endpoint{url: url, hc: hc}
}

// addr is the host:port of the endpoint, for raw connections.
func (e endpoint) addr() string {
	_, hostPort, _ := strings.Cut(e.url(), "://")
	return hostPort
}

// api is a Go client of the endpoint, wherever the server is now: its
// requests go through e's HTTP client (or wrap's, which gets the
// endpoint's transport to wrap), to the current URL.
func (e endpoint) api(t testing.TB, opts ...client.Option) *client.Client {
	t.Helper()
	hc := &http.Client{Transport: follow{e.url, e.hc.Transport}}
	c, err := client.New(e.url(), append([]client.Option{client.WithHTTPClient(hc)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// follow sends each request to where the server is now.
type follow struct {
	url  func() string
	next http.RoundTripper // nil: http.DefaultTransport
}

func (f follow) RoundTrip(req *http.Request) (*http.Response, error) {
	u, err := url.Parse(f.url())
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host, req.Host = u.Scheme, u.Host, ""
	next := f.next
	if next == nil {
		next = http.DefaultTransport
	}
	return next.RoundTrip(req)
}

// join joins room as a new member through the Go client (one try: a
// refusal fails t); opts configure the client the member then uses.
func (e endpoint) join(t testing.TB, room string, opts ...client.Option) *client.Member {
	t.Helper()
	m, err := e.api(t, append([]client.Option{client.WithRetries(1, 0)}, opts...)...).Join(context.Background(), room, client.JoinOptions{})
	if err != nil {
		t.Fatalf("join %s at %s: %v", room, e.url(), err)
	}
	if m.Resumed {
		t.Fatalf("join %s at %s: answered 200 (a resume), want 201", room, e.url())
	}
	return m
}

// rejoin resumes m at e with its token (one try), failing t unless the
// answer is 200, the same member.
func (e endpoint) rejoin(t testing.TB, m *client.Member) *client.Member {
	t.Helper()
	r, err := e.api(t, client.WithRetries(1, 0)).Join(context.Background(), m.Room, client.JoinOptions{Token: m.Token})
	if err != nil {
		t.Fatalf("resume of %s at %s: %v", m.ClientID, e.url(), err)
	}
	if !r.Resumed {
		t.Fatalf("resume of %s at %s: answered 201 (a new member), want 200", m.ClientID, e.url())
	}
	return r
}

// roomInfo is GET /rooms/{room}, failing t on an error.
func (e endpoint) roomInfo(t testing.TB, room string) client.Occupancy {
	t.Helper()
	o, err := e.api(t, client.WithRetries(1, 0)).Occupancy(context.Background(), room)
	if err != nil {
		t.Fatalf("GET /rooms/%s at %s: %v", room, e.url(), err)
	}
	return o
}

// answer is a whole HTTP answer, for the tests that inspect it.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// request makes one raw request to path (below the URL) and reads the
// whole answer; header holds names and values in turn.
func (e endpoint) request(ctx context.Context, method, path, body string, header ...string) (answer, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.url()+path, r)
	if err != nil {
		return answer{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, data}, err
}

// do is request failing t on an error.
func (e endpoint) do(t testing.TB, method, path, body string, header ...string) answer {
	t.Helper()
	a, err := e.request(context.Background(), method, path, body, header...)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, e.url(), path, err)
	}
	return a
}

// bearer is the Authorization header of m's requests.
func bearer(m *client.Member) []string { return []string{"Authorization", "Bearer " + m.Token} }

// healthy says whether /healthz answers 200.
func (e endpoint) healthy() bool {
	a, err := e.request(context.Background(), "GET", "/healthz", "")
	return err == nil && a.Status == 200
}

// metric reads one sample of /metrics.
func (e endpoint) metric(t testing.TB, name string) float64 {
	t.Helper()
	a := e.do(t, "GET", "/metrics", "")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(a.Body)
	if m == nil {
		t.Fatalf("metric %s not found", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// problem is the code of a problem+json answer, whose shape it checks.
func (a answer) problem(t testing.TB) string {
	t.Helper()
	var p struct {
		Type, Title, Code string
		Status            int
	}
	if ct := a.Header.Get("Content-Type"); ct != "application/problem+json" || json.Unmarshal(a.Body, &p) != nil {
		t.Fatalf("status %d Content-Type %q, want application/problem+json; body %s", a.Status, ct, a.Body)
	}
	if p.Status != a.Status || p.Type != "about:blank" || p.Title != http.StatusText(a.Status) || p.Code == "" {
		t.Fatalf("malformed problem for status %d: %s", a.Status, a.Body)
	}
	return p.Code
}

// post posts body from m through e with a raw request (header: names and
// values in turn), failing t unless it is answered 201 with an id.
func (e endpoint) post(t testing.TB, m *client.Member, body string, header ...string) uint64 {
	t.Helper()
	a := e.do(t, "POST", "/rooms/"+m.Room+"/messages", body, append(bearer(m), header...)...)
	var r struct{ ID uint64 }
	if a.Status != 201 || json.Unmarshal(a.Body, &r) != nil || r.ID == 0 {
		t.Fatalf("post %s at %s: %d %s", body, e.url(), a.Status, a.Body)
	}
	return r.ID
}

// polled is the answer to a long-poll.
type polled struct {
	Messages []map[string]any `json:"messages"`
	Next     uint64           `json:"next"`
}

// longPoll is one raw long-poll of m's messages after since, through e.
func (e endpoint) longPoll(ctx context.Context, m *client.Member, since uint64, wait string) (answer, polled, error) {
	a, err := e.request(ctx, "GET", fmt.Sprintf("/rooms/%s/messages?since=%d&wait=%s", m.Room, since, wait), "", bearer(m)...)
	var p polled
	if err == nil && a.Status == 200 {
		err = decodeNumbers(a.Body, &p)
	}
	return a, p, err
}

// poll is longPoll failing t unless it is answered 200.
func (e endpoint) poll(t testing.TB, m *client.Member, since uint64, wait string) polled {
	t.Helper()
	a, p, err := e.longPoll(context.Background(), m, since, wait)
	if err != nil || a.Status != 200 {
		t.Fatalf("poll of %s since %d at %s: %v %d %s", m.ClientID, since, e.url(), err, a.Status, a.Body)
	}
	return p
}

// decodeNumbers decodes one JSON value, numbers kept as json.Number.
func decodeNumbers(data []byte, v any) error {
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

// phase runs one named step of a scenario; the steps after it build on it,
// so a phase that fails ends the scenario.
func phase(t *testing.T, name string, step func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, step) {
		t.FailNow()
	}
}

// waitFor polls cond every 20 ms until it holds, failing t after 30 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
