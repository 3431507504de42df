package e2e

// The cluster of the end-to-end tests: several tincan binaries on one etcd
// cluster (etcdtest, in this process, on loopback) and one prefix, each a
// tincantest.Server that can be killed and restarted, and a round-robin
// balancer in front of them that sends each request to the next instance.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/internal/tincantest"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// tincanCluster is n instances of the binary on etcd under one prefix.
// proxy reaches them through the balancer, instance i directly through
// at[i].
type tincanCluster struct {
	etcd      *etcdtest.Cluster
	instances []*tincantest.Server
	at        []endpoint
	balancer  *roundRobin
	proxy     endpoint
}

// startTincanCluster starts n instances of bin on etcd, each with -etcd
// naming every etcd member and the same fresh -etcd-prefix, and the
// flags; hc is the client of every endpoint. It waits until each answers
// /healthz, and checks that none wrote its -db file.
func startTincanCluster(t testing.TB, etcd *etcdtest.Cluster, n int, hc *http.Client, flags ...string) *tincanCluster {
	t.Helper()
	prefix := fmt.Sprintf("/e2e/%s-%d/", strings.ReplaceAll(t.Name(), "/", "."), time.Now().UnixNano())
	c := &tincanCluster{etcd: etcd}
	var dbs []string
	for i := range n {
		db := filepath.Join(t.TempDir(), fmt.Sprintf("instance%d.db", i))
		args := append([]string{"-db", db, "-etcd", strings.Join(etcd.Endpoints(), ","), "-etcd-prefix", prefix}, flags...)
		s, ep := startServer(t, hc, nil, args...)
		c.instances, c.at, dbs = append(c.instances, s), append(c.at, ep), append(dbs, db)
	}
	for i, db := range dbs {
		if _, err := os.Stat(db); !os.IsNotExist(err) {
			t.Fatalf("instance %d with -etcd touched its -db file %s: %v", i, db, err)
		}
	}
	c.balancer = newRoundRobin(t, c.instances)
	c.proxy = newEndpoint(t, func() string { return c.balancer.url }, hc)
	return c
}

// terminateAll stops every instance with SIGTERM and expects each to exit
// with status 0 within limit.
func (c *tincanCluster) terminateAll(t testing.TB, limit time.Duration) {
	t.Helper()
	for _, s := range c.instances {
		s.Terminate(t, limit)
	}
}

// roundRobin is a plain balancer, as nginx's default upstream is: no
// sticky sessions, each request goes to the next instance in turn
// (wherever that instance listens now), streams are passed on as they
// come (FlushInterval -1). An instance that cannot be reached, or that
// dies before it has answered, makes the balancer answer 503, as a
// balancer whose upstream is down does (without Retry-After, like
// nginx's 502: the next try goes to the next instance); a stream cut
// midway is cut for the client too.
type roundRobin struct {
	url       string
	instances []*tincantest.Server
	next      atomic.Uint64
	sent      []atomic.Int64 // requests passed to each instance
	streams   []atomic.Int64 // event streams open on each instance now
	failed    atomic.Int64   // requests the balancer answered itself
}

func newRoundRobin(t testing.TB, instances []*tincantest.Server) *roundRobin {
	rr := &roundRobin{instances: instances, sent: make([]atomic.Int64, len(instances)), streams: make([]atomic.Int64, len(instances))}
	transport := &http.Transport{MaxIdleConnsPerHost: 64, ResponseHeaderTimeout: time.Minute}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			i := int((rr.next.Add(1) - 1) % uint64(len(rr.instances)))
			rr.sent[i].Add(1)
			u, _ := url.Parse(rr.instances[i].URL())
			r.SetURL(u)
			r.Out = r.Out.WithContext(context.WithValue(r.Out.Context(), instanceKey{}, i))
		},
		Transport:     streamCounter{transport, rr},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			rr.failed.Add(1)
			http.Error(w, "balancer: the instance did not answer: "+err.Error(), http.StatusServiceUnavailable)
		},
		ErrorLog: log.New(io.Discard, "", 0), // the counts say it
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		transport.CloseIdleConnections()
	})
	rr.url = srv.URL
	return rr
}

// instanceKey is the context key of the instance a request is passed to.
type instanceKey struct{}

// streamCounter counts the event streams open on each instance, from the
// answer's header to the end of its body.
type streamCounter struct {
	http.RoundTripper
	rr *roundRobin
}

func (sc streamCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := sc.RoundTripper.RoundTrip(req)
	if err != nil || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp, err
	}
	open := &sc.rr.streams[req.Context().Value(instanceKey{}).(int)]
	open.Add(1)
	resp.Body = &countedBody{ReadCloser: resp.Body, open: open}
	return resp, nil
}

type countedBody struct {
	io.ReadCloser
	open *atomic.Int64
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(func() { b.open.Add(-1) })
	return b.ReadCloser.Close()
}

// busiest is the instance with the most event streams open now, and how
// many.
func (rr *roundRobin) busiest() (instance int, streams int64) {
	for i := range rr.streams {
		if n := rr.streams[i].Load(); n > streams {
			instance, streams = i, n
		}
	}
	return instance, streams
}

// spread says how many requests went to each instance, and how many the
// balancer answered itself.
func (rr *roundRobin) spread() string {
	var parts []string
	for i := range rr.sent {
		parts = append(parts, fmt.Sprintf("instance %d: %d", i, rr.sent[i].Load()))
	}
	return fmt.Sprintf("%s; answered by the balancer (instance down): %d", strings.Join(parts, ", "), rr.failed.Load())
}

// retries counts what posters met before a 201, by kind: "connection"
// (no answer), "balancer" (the balancer's own 503: an instance down), or
// the status and problem code of an instance's answer ("503 unavailable").
type retries struct {
	mu      sync.Mutex
	byKind  map[string]int
	longest time.Duration // from a post's first attempt to its 201
}

func (r *retries) add(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byKind == nil {
		r.byKind = map[string]int{}
	}
	r.byKind[kind]++
}

// count is how many retries of kind there were.
func (r *retries) count(kind string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byKind[kind]
}

func (r *retries) acked(took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.longest = max(r.longest, took)
}

func (r *retries) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	kinds := slices.Sorted(maps.Keys(r.byKind))
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s: %d", k, r.byKind[k]))
	}
	if len(parts) == 0 {
		parts = []string{"none"}
	}
	return fmt.Sprintf("retries %s; the longest wait for a 201 %v", strings.Join(parts, ", "), r.longest.Round(time.Millisecond))
}

// counted is a transport that counts in r what the posts (POST
// …/messages) through it met before their 201: "connection" (no answer),
// "balancer" (the balancer's own 503: an instance down), or the status and
// problem code of an instance's answer ("503 unavailable").
type counted struct {
	next http.RoundTripper
	r    *retries
}

func (c counted) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if req.Method != "POST" || !strings.HasSuffix(req.URL.Path, "/messages") {
		return resp, err
	}
	if err != nil {
		c.r.add("connection")
		return resp, err
	}
	if resp.StatusCode != http.StatusCreated {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		c.r.add(answerKind(resp.StatusCode, body))
	}
	return resp, nil
}

// poster joins room at e as a member whose posts are retried with their
// Idempotency-Key (from 10 ms on, while the post's context lasts) after a
// connection error, a 5xx or a 429, counted in r.
func poster(t testing.TB, e endpoint, room string, r *retries) *client.Member {
	t.Helper()
	next := e.hc.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	counting := endpoint{url: e.url, hc: &http.Client{Transport: counted{next, r}}}
	return counting.join(t, room, client.WithRetries(1<<30, 10*time.Millisecond))
}

// sendRetrying sends body with Idempotency-Key key from m (a poster),
// and records how long it took to its 201 in r.
func sendRetrying(ctx context.Context, m *client.Member, key string, body any, r *retries) (uint64, error) {
	began := time.Now()
	id, err := m.Send(ctx, body, &client.SendOptions{IdempotencyKey: key})
	if err == nil {
		r.acked(time.Since(began))
	}
	return id, err
}

// answerKind names a refusal: the balancer's own, or the instance's status
// and problem code.
func answerKind(status int, body []byte) string {
	if strings.HasPrefix(string(body), "balancer:") {
		return "balancer"
	}
	var p struct{ Code string }
	if json.Unmarshal(body, &p) != nil || p.Code == "" {
		return fmt.Sprintf("%d (not problem+json)", status)
	}
	return fmt.Sprintf("%d %s", status, p.Code)
}
