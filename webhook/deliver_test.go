package webhook_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
	"github.com/tincan/tincan/webhook"
)

const (
	secondSecret = "whsec_c2Vjb25kIHNlY3JldCBvZiAyNCBieXRlcyEhISE="
	deadline     = 60 * time.Second // generous: nothing here measures speed
)

// request is one request the receiver got, verified.
type request struct {
	id     string
	ts     int64
	body   []byte
	room   string
	typ    string
	seq    uint64
	status int // the receiver's answer
}

// receiver is a webhook receiver on 127.0.0.1 that checks every request
// with the test's own Standard Webhooks verifier, against every one of its
// secrets, and checks the in-order rule: a room's event comes only after
// the 2xx of every earlier event of that room that the test expects.
type receiver struct {
	t       *testing.T
	secrets []string
	srv     *httptest.Server
	answer  atomic.Pointer[func(r request, n int) int] // n: the request's number, from 1
	drops   bool                                       // events may be dropped: no order check

	mu       sync.Mutex
	reqs     []request
	acked    map[uint64]bool     // seqs answered 2xx
	expected map[string][]uint64 // room: the seqs the test made, in order
}

func newReceiver(t *testing.T, secrets ...string) *receiver {
	r := &receiver{t: t, secrets: secrets, acked: map[uint64]bool{}, expected: map[string][]uint64{}}
	r.setAnswer(func(request, int) int { return http.StatusNoContent })
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(r.serve))
	return r
}

func (r *receiver) start() *receiver {
	r.srv.Start()
	r.t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/hooks/tincan" }

func (r *receiver) setAnswer(f func(req request, n int) int) { r.answer.Store(&f) }

func (r *receiver) expect(events []store.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		r.expected[e.Room] = append(r.expected[e.Room], e.Seq)
	}
}

func (r *receiver) serve(w http.ResponseWriter, hr *http.Request) {
	t := r.t
	body, err := io.ReadAll(hr.Body)
	if err != nil {
		t.Errorf("receiver: reading the body: %v", err)
		return
	}
	fail := func(format string, args ...any) {
		t.Errorf("receiver: "+format, args...)
		http.Error(w, "bad request", http.StatusBadRequest)
	}
	if hr.Method != http.MethodPost || hr.URL.Path != "/hooks/tincan" {
		fail("%s %s", hr.Method, hr.URL.Path)
		return
	}
	if ct := hr.Header.Get("Content-Type"); ct != "application/json" {
		fail("Content-Type %q", ct)
		return
	}
	id, tsText, sigs := hr.Header.Get("webhook-id"), hr.Header.Get("webhook-timestamp"), hr.Header.Get("webhook-signature")
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil || id == "" {
		fail("webhook-id %q, webhook-timestamp %q", id, tsText)
		return
	}
	if d := time.Since(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		fail("webhook-timestamp %d is %v from now", ts, d)
		return
	}
	if n := len(strings.Fields(sigs)); n != len(r.secrets) {
		fail("webhook-signature %q: %d entries, want %d", sigs, n, len(r.secrets))
		return
	}
	for i, s := range r.secrets {
		if !verifyHeader(t, s, id, tsText, body, sigs) {
			fail("id %s: no signature verifies with secret %d: %q", id, i, sigs)
			return
		}
	}
	var ev struct {
		Type string `json:"type"`
		Data struct {
			Room string `json:"room"`
			Seq  uint64 `json:"seq"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		fail("body %q: %v", body, err)
		return
	}
	if want := "_" + strconv.FormatUint(ev.Data.Seq, 10); !strings.HasPrefix(id, "msg_") || !strings.HasSuffix(id, want) {
		fail("webhook-id %q for seq %d", id, ev.Data.Seq)
		return
	}
	req := request{id: id, ts: ts, body: body, room: ev.Data.Room, typ: ev.Type, seq: ev.Data.Seq}

	r.mu.Lock()
	for _, s := range r.expected[req.room] {
		if r.drops {
			break
		}
		if s < req.seq && !r.acked[s] {
			t.Errorf("receiver: room %s: seq %d came before the 2xx of seq %d", req.room, req.seq, s)
		}
	}
	for _, p := range r.reqs {
		if !r.drops && p.room == req.room && p.seq < req.seq && !r.acked[p.seq] {
			t.Errorf("receiver: room %s: seq %d came before the 2xx of seq %d", req.room, req.seq, p.seq)
		}
	}
	n := len(r.reqs) + 1
	r.mu.Unlock()

	req.status = (*r.answer.Load())(req, n)

	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	if req.status >= 200 && req.status < 300 || req.status == http.StatusGone {
		r.acked[req.seq] = true // done with: the next may come
	}
	r.mu.Unlock()
	w.WriteHeader(req.status)
}

func (r *receiver) requests() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (r *receiver) ackedAll(events []store.Event) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if !r.acked[e.Seq] {
			return false
		}
	}
	return true
}

// checkDelivered checks that every event got a 2xx, each room's 2xx in seq
// order, and that every attempt of an event had its id and body.
func checkDelivered(t *testing.T, r *receiver, events []store.Event, prefix string) {
	t.Helper()
	want := map[uint64]store.Event{}
	for _, e := range events {
		want[e.Seq] = e
	}
	lastAcked := map[string]uint64{}
	for _, q := range r.requests() {
		e, ok := want[q.seq]
		if !ok {
			t.Errorf("a request for seq %d, an event the test did not make", q.seq)
			continue
		}
		if q.id != fmt.Sprintf("msg_%s%d", prefix, e.Seq) {
			t.Errorf("seq %d: webhook-id %q", e.Seq, q.id)
		}
		if !bytes.Equal(q.body, e.Body) || q.room != e.Room || q.typ != e.Type {
			t.Errorf("seq %d: body %s, want the outbox's %s", e.Seq, q.body, e.Body)
		}
		if q.status >= 200 && q.status < 300 {
			if q.seq <= lastAcked[q.room] {
				t.Errorf("room %s: seq %d acknowledged after seq %d", q.room, q.seq, lastAcked[q.room])
			}
			lastAcked[q.room] = q.seq
		}
	}
	if !r.ackedAll(events) {
		t.Errorf("not every event got a 2xx")
	}
}

func openStore(t *testing.T) *boltstore.Store {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "tincan.db"), boltstore.Options{Options: store.Options{Webhooks: true, Capacity: 8}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// churn makes events in each room: members join, then all leave (the room
// is created and closed), rounds times. It returns the outbox's new events;
// no deliverer may run (see churnLive).
func churn(t *testing.T, st store.Store, rooms []string, members, rounds int) []store.Event {
	t.Helper()
	ctx := context.Background()
	before, err := st.Outbox(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	churnLive(t, st, rooms, members, rounds)
	after, err := st.Outbox(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	old := map[uint64]bool{}
	for _, e := range before {
		old[e.Seq] = true
	}
	var out []store.Event
	for _, e := range after {
		if !old[e.Seq] {
			out = append(out, e)
		}
	}
	if want := len(rooms) * rounds * (2 + 2*members); len(out) != want {
		t.Fatalf("%d events in the outbox, want %d", len(out), want)
	}
	return out
}

// churnLive is churn while a deliverer may run: it returns how many events
// it made.
func churnLive(t *testing.T, st store.Store, rooms []string, members, rounds int) int {
	t.Helper()
	ctx := context.Background()
	for range rounds {
		for _, room := range rooms {
			var ms []store.Member
			for range members {
				j, err := st.Join(ctx, store.JoinRequest{Room: room})
				if err != nil {
					t.Fatalf("join %s: %v", room, err)
				}
				ms = append(ms, j.Member)
			}
			for _, m := range ms {
				if _, err := st.Leave(ctx, m, store.ReasonLeft); err != nil {
					t.Fatalf("leave: %v", err)
				}
			}
		}
	}
	return len(rooms) * rounds * (2 + 2*members)
}

// recording is the real store, recording every event the deliverer read
// from the outbox: the expected events of changes made while it runs.
type recording struct {
	store.Store
	mu   sync.Mutex
	seen map[uint64]store.Event
}

func (r *recording) Outbox(ctx context.Context, limit int) ([]store.Event, error) {
	evs, err := r.Store.Outbox(ctx, limit)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[uint64]store.Event{}
	}
	for _, e := range evs {
		r.seen[e.Seq] = e
	}
	return evs, err
}

// inRooms is what it saw of rooms.
func (r *recording) inRooms(rooms []string) []store.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []store.Event
	for _, e := range r.seen {
		if slices.Contains(rooms, e.Room) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b store.Event) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

func roomNames(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%02d", prefix, i))
	}
	return out
}

// syncBuffer is a log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type env struct {
	cfg  webhook.Config
	reg  *prometheus.Registry
	logs *syncBuffer
}

func newEnv(t *testing.T, url string) *env {
	e := &env{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	e.cfg = webhook.Config{
		URL:        url,
		Secrets:    []string{vectorSecret},
		MaxBackoff: 200 * time.Millisecond,
		IDPrefix:   "t1_",
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry:   e.reg,
	}
	return e
}

// run starts a Deliverer; the returned stop cancels it and waits for Run.
func run(t *testing.T, cfg webhook.Config, ob webhook.Outbox) (stop func()) {
	t.Helper()
	d, err := webhook.New(cfg, ob)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(deadline):
				t.Errorf("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("waited %v for %s", deadline, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func outboxLen(t *testing.T, st store.Store) int {
	t.Helper()
	evs, err := st.Outbox(context.Background(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return len(evs)
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func TestDeliversEveryRoomInOrder(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, vectorSecret).start()
	// Slow answers, so that rooms overlap.
	rcv.setAnswer(func(request, int) int { time.Sleep(2 * time.Millisecond); return http.StatusOK })
	events := churn(t, st, roomNames("order", 12), 3, 2)
	rcv.expect(events)
	e := newEnv(t, rcv.url())
	rec := &recording{Store: st}
	run(t, e.cfg, rec)
	// Events made while it runs arrive too (OutboxChanged, or the poll).
	later := roomNames("later", 3)
	n := churnLive(t, st, later, 2, 1)
	waitFor(t, "every event's 2xx", func() bool {
		more := rec.inRooms(later)
		return rcv.ackedAll(events) && len(more) == n && rcv.ackedAll(more)
	})
	events = append(events, rec.inRooms(later)...)
	waitFor(t, "an empty outbox", func() bool { return outboxLen(t, st) == 0 })
	checkDelivered(t, rcv, events, "t1_")
	// The metrics follow Delivered: wait for them.
	waitFor(t, "delivered_total", func() bool { return int(metric(t, e.reg, "tincan_webhook_delivered_total")) >= len(events) })
	waitFor(t, "delivery_seconds", func() bool { return int(metric(t, e.reg, "tincan_webhook_delivery_seconds")) >= len(events) })
	waitFor(t, "events_pending 0", func() bool { return metric(t, e.reg, "tincan_webhook_events_pending") == 0 })
	if got := metric(t, e.reg, "tincan_webhook_dropped_total"); got != 0 {
		t.Errorf("dropped_total %v", got)
	}
}

func TestTwoSecretsBothSign(t *testing.T) {
	st := openStore(t)
	// The receiver requires both entries, each verifying with its secret.
	rcv := newReceiver(t, vectorSecret, secondSecret).start()
	events := churn(t, st, roomNames("two", 2), 1, 1)
	rcv.expect(events)
	e := newEnv(t, rcv.url())
	e.cfg.Secrets = []string{vectorSecret, secondSecret}
	run(t, e.cfg, st)
	waitFor(t, "every event's 2xx", func() bool { return rcv.ackedAll(events) })
	// serve refused any request without two entries, each verifying
	// with its own secret.
	checkDelivered(t, rcv, events, "t1_")
}

func TestServerErrorsThenRecovery(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, vectorSecret).start()
	var recovered atomic.Bool
	rcv.setAnswer(func(_ request, n int) int {
		if n > 15 {
			recovered.Store(true)
			return http.StatusOK
		}
		return http.StatusInternalServerError
	})
	events := churn(t, st, roomNames("flaky", 5), 2, 1)
	rcv.expect(events)
	e := newEnv(t, rcv.url())
	run(t, e.cfg, st)
	waitFor(t, "every event's 2xx", func() bool { return rcv.ackedAll(events) })
	waitFor(t, "an empty outbox", func() bool { return outboxLen(t, st) == 0 })
	checkDelivered(t, rcv, events, "t1_")
	if got := metric(t, e.reg, "tincan_webhook_retries_total"); got < 15 {
		t.Errorf("retries_total %v after 15 answers of 500", got)
	}
	// Every attempt of one event: the same id and body (checkDelivered),
	// a timestamp of its own time, never going back.
	last := map[string]int64{}
	for _, q := range rcv.requests() {
		if q.ts < last[q.id] {
			t.Errorf("%s: webhook-timestamp went back from %d to %d", q.id, last[q.id], q.ts)
		}
		last[q.id] = q.ts
	}
	if !strings.Contains(e.logs.String(), "status=500") {
		t.Errorf("no log of the 500s:\n%s", e.logs)
	}
}

// countingTransport counts attempts and how many are in flight at once.
type countingTransport struct {
	inner       http.RoundTripper
	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	attempts    int
	failures    int
	rooms       []string // the room of each attempt
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var ev struct {
		Data struct {
			Room string `json:"room"`
		} `json:"data"`
	}
	if req.GetBody != nil {
		if b, err := req.GetBody(); err == nil {
			json.NewDecoder(b).Decode(&ev)
		}
	}
	c.mu.Lock()
	c.inFlight++
	c.attempts++
	c.maxInFlight = max(c.maxInFlight, c.inFlight)
	c.rooms = append(c.rooms, ev.Data.Room)
	c.mu.Unlock()
	resp, err := c.inner.RoundTrip(req)
	c.mu.Lock()
	c.inFlight--
	if err != nil || resp.StatusCode >= 300 {
		c.failures++
	}
	c.mu.Unlock()
	return resp, err
}

func (c *countingTransport) snapshot() (attempts, failures, maxInFlight int, rooms []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attempts, c.failures, c.maxInFlight, slices.Clone(c.rooms)
}

func (c *countingTransport) resetMax() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxInFlight = c.inFlight
}

func TestReceiverDownIsProbedThenDrains(t *testing.T) {
	st := openStore(t)
	// An address with nothing listening: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	events := churn(t, st, roomNames("down", 12), 1, 1)
	rcv := newReceiver(t, vectorSecret)
	rcv.expect(events)
	ct := &countingTransport{inner: &http.Transport{}}
	e := newEnv(t, "http://"+addr+"/hooks/tincan")
	e.cfg.HTTPClient = &http.Client{Transport: ct}
	e.cfg.MaxBackoff = 500 * time.Millisecond
	run(t, e.cfg, st)

	waitFor(t, "8 refused attempts", func() bool { _, f, _, _ := ct.snapshot(); return f >= 8 })
	attempts, failures, maxInFlight, rooms := ct.snapshot()
	if maxInFlight != 1 {
		t.Errorf("%d attempts in flight at once while the receiver was down; want 1 (probing)", maxInFlight)
	}
	if attempts != failures {
		t.Errorf("%d attempts, %d failures", attempts, failures)
	}
	// The probes take turns over the rooms.
	if probed := len(slices.Compact(slices.Sorted(slices.Values(rooms)))); probed < 8 {
		t.Errorf("8 probes went to %d rooms, want 8 (turns): %v", probed, rooms)
	}
	if got := outboxLen(t, st); got != len(events) {
		t.Errorf("outbox %d events while the receiver was down, want %d", got, len(events))
	}

	// The receiver comes back at the same address.
	var back net.Listener
	waitFor(t, "listening again on "+addr, func() bool {
		back, err = net.Listen("tcp", addr)
		return err == nil
	})
	rcv.srv.Listener = back
	rcv.start()
	ct.resetMax()
	waitFor(t, "every event's 2xx", func() bool { return rcv.ackedAll(events) })
	waitFor(t, "an empty outbox", func() bool { return outboxLen(t, st) == 0 })
	checkDelivered(t, rcv, events, "t1_")
	// Once one attempt succeeded, no more failures: the backlog went out.
	for _, q := range rcv.requests() {
		if q.status != http.StatusNoContent {
			t.Errorf("after the receiver came back: %+v", q)
		}
	}
	if got := metric(t, e.reg, "tincan_webhook_retries_total"); got < 8 {
		t.Errorf("retries_total %v", got)
	}
	if !strings.Contains(e.logs.String(), "receiver answers again") {
		t.Errorf("no log of the recovery:\n%s", e.logs)
	}
}

func TestMaxAgeDropsWithLogAndMetric(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, vectorSecret).start()
	rcv.setAnswer(func(request, int) int { return http.StatusServiceUnavailable })
	rcv.drops = true // a dropped event's successor comes without a 2xx before it
	events := churn(t, st, roomNames("old", 2), 1, 1)
	e := newEnv(t, rcv.url())
	e.cfg.MaxAge = 700 * time.Millisecond
	e.cfg.MaxBackoff = 100 * time.Millisecond
	run(t, e.cfg, st)
	waitFor(t, "an empty outbox", func() bool { return outboxLen(t, st) == 0 })
	waitFor(t, "dropped_total", func() bool { return int(metric(t, e.reg, "tincan_webhook_dropped_total")) == len(events) })
	if len(rcv.requests()) == 0 {
		t.Errorf("no attempt before the drop")
	}
	if got := metric(t, e.reg, "tincan_webhook_delivered_total"); got != 0 {
		t.Errorf("delivered_total %v", got)
	}
	logs := e.logs.String()
	for _, ev := range events {
		line := fmt.Sprintf(`level=ERROR msg="webhook: event dropped" room=%s seq=%d type=%s`, ev.Room, ev.Seq, ev.Type)
		if !strings.Contains(logs, line) {
			t.Errorf("no log line %q in:\n%s", line, logs)
		}
	}
}

func TestFailingRoomDoesNotHoldOthers(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, vectorSecret).start()
	rcv.setAnswer(func(q request, _ int) int {
		if q.room == "bad" {
			return http.StatusBadRequest
		}
		return http.StatusOK
	})
	bad := churn(t, st, []string{"bad"}, 1, 1) // the oldest events
	good := churn(t, st, roomNames("good", 6), 2, 2)
	rcv.expect(bad)
	rcv.expect(good)
	e := newEnv(t, rcv.url())
	run(t, e.cfg, st)
	waitFor(t, "the other rooms' 2xx", func() bool { return rcv.ackedAll(good) })
	// (A 2xx comes before Delivered: wait for the last one's.)
	waitFor(t, "only the failing room's events in the outbox", func() bool { return outboxLen(t, st) == len(bad) })
	for _, q := range rcv.requests() {
		if q.room == "bad" && q.seq != bad[0].Seq {
			t.Errorf("the failing room's seq %d was sent before its seq %d got a 2xx", q.seq, bad[0].Seq)
		}
	}
}

func TestGoneDropsTheEvent(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, vectorSecret).start()
	rcv.setAnswer(func(q request, _ int) int {
		if q.typ == store.EventMemberJoined {
			return http.StatusGone
		}
		return http.StatusOK
	})
	events := churn(t, st, []string{"g"}, 2, 1)
	rcv.expect(events)
	e := newEnv(t, rcv.url())
	run(t, e.cfg, st)
	waitFor(t, "an empty outbox", func() bool { return outboxLen(t, st) == 0 })
	waitFor(t, "dropped_total 2 (the member.joined answered 410)", func() bool { return metric(t, e.reg, "tincan_webhook_dropped_total") == 2 })
	if got := len(rcv.requests()); got != len(events) {
		t.Errorf("%d requests for %d events: a 410 is not retried", got, len(events))
	}
}

func TestIDsStableAcrossRestarts(t *testing.T) {
	st := openStore(t)
	rcv := newReceiver(t, vectorSecret).start()
	rcv.setAnswer(func(request, int) int { return http.StatusInternalServerError })
	events := churn(t, st, []string{"restart"}, 1, 1)
	rcv.expect(events)
	e := newEnv(t, rcv.url())
	stop := run(t, e.cfg, st)
	waitFor(t, "three failed attempts", func() bool { return len(rcv.requests()) >= 3 })
	stop()
	firstRun := rcv.requests()

	rcv.setAnswer(func(request, int) int { return http.StatusOK })
	e2 := newEnv(t, rcv.url())
	run(t, e2.cfg, st)
	waitFor(t, "every event's 2xx", func() bool { return rcv.ackedAll(events) })
	checkDelivered(t, rcv, events, "t1_") // one id and body per event, both runs
	if firstRun[0].id != "msg_t1_"+strconv.FormatUint(events[0].Seq, 10) {
		t.Errorf("first id %q", firstRun[0].id)
	}
}

// lossyClaim is the real store, with a claim the test can take away.
type lossyClaim struct {
	recording
	mu     sync.Mutex
	claims int
	lost   chan struct{}
}

func (l *lossyClaim) ClaimOutbox(ctx context.Context) (<-chan struct{}, func(), error) {
	if _, _, err := l.recording.ClaimOutbox(ctx); err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.claims++
	l.lost = make(chan struct{})
	return l.lost, func() {}, nil
}

func (l *lossyClaim) take() {
	l.mu.Lock()
	defer l.mu.Unlock()
	close(l.lost)
}

func (l *lossyClaim) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.claims
}

func TestReclaimsAfterLosingTheClaim(t *testing.T) {
	st := &lossyClaim{recording: recording{Store: openStore(t)}}
	rcv := newReceiver(t, vectorSecret).start()
	first := churn(t, st, []string{"a"}, 1, 1)
	rcv.expect(first)
	e := newEnv(t, rcv.url())
	run(t, e.cfg, st)
	waitFor(t, "the first events' 2xx", func() bool { return rcv.ackedAll(first) })
	st.take()
	waitFor(t, "a second claim", func() bool { return st.count() == 2 })
	n := churnLive(t, st, []string{"b"}, 1, 1)
	waitFor(t, "the second events' 2xx", func() bool {
		second := st.inRooms([]string{"b"})
		return len(second) == n && rcv.ackedAll(second)
	})
	checkDelivered(t, rcv, append(first, st.inRooms([]string{"b"})...), "t1_")
	if !strings.Contains(e.logs.String(), "claim was lost") {
		t.Errorf("no log of the lost claim:\n%s", e.logs)
	}
}

func TestRunTwiceAndStops(t *testing.T) {
	st := &lossyClaim{recording: recording{Store: openStore(t)}}
	d, err := webhook.New(webhook.Config{URL: "http://127.0.0.1:1/", Secrets: []string{vectorSecret}}, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(t, "the claim", func() bool { return st.count() == 1 })
	if err := d.Run(ctx); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("a second Run at once: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	st := openStore(t)
	ok := webhook.Config{URL: "https://example.com/hook", Secrets: []string{vectorSecret}}
	for _, c := range []struct {
		name string
		edit func(*webhook.Config)
		want string
	}{
		{"no URL", func(c *webhook.Config) { c.URL = "" }, "no URL"},
		{"ftp", func(c *webhook.Config) { c.URL = "ftp://x/" }, "http or https"},
		{"no secret", func(c *webhook.Config) { c.Secrets = nil }, "no secret"},
		{"bad secret", func(c *webhook.Config) { c.Secrets = []string{vectorSecret, "hunter2"} }, "secret 2 of 2"},
		{"negative", func(c *webhook.Config) { c.MaxAge = -time.Second }, "MaxAge"},
		{"prefix", func(c *webhook.Config) { c.IDPrefix = "a.b" }, "IDPrefix"},
	} {
		cfg := ok
		c.edit(&cfg)
		if _, err := webhook.New(cfg, st); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	reg := prometheus.NewRegistry()
	cfg := ok
	cfg.Registry = reg
	if _, err := webhook.New(cfg, st); err != nil {
		t.Fatal(err)
	}
	if _, err := webhook.New(cfg, st); err == nil {
		t.Error("a second Deliverer registered the same metrics")
	}
	if _, err := webhook.New(ok, nil); err == nil {
		t.Error("no outbox: no error")
	}
}

func TestRunEndsWhenTheStoreCloses(t *testing.T) {
	st := openStore(t)
	d, err := webhook.New(webhook.Config{URL: "http://127.0.0.1:1/", Secrets: []string{vectorSecret}}, st)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	st.Close()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("Run: %v, want store.ErrClosed", err)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return after the store closed")
	}
}
