package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// Webhooks through crashes and a receiver that fails: every membership
// change the clients saw acknowledged reaches a real receiver at least
// once, per room in order, with a stable webhook-id and a signature that
// client.VerifyWebhook (Standard Webhooks) accepts; no event arrives for a
// refused join.

const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestVerifyWebhookVector(t *testing.T) {
	// The specification's test vector: accepted at its time, refused as
	// too old now.
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	body := []byte(`{"test": 2432232314}`)
	if _, err := client.VerifyWebhook(testWebhookSecret, h, body, time.Unix(1614265330, 0)); err != nil {
		t.Fatalf("the vector at its time: %v", err)
	}
	if _, err := client.VerifyWebhook(testWebhookSecret, h, body, time.Now()); !errors.Is(err, client.ErrBadWebhook) {
		t.Fatalf("the vector's old timestamp now: %v", err)
	}
}

// receiver is a webhook endpoint on a fixed loopback port that can answer
// 2xx, answer 500, or be down (its listener closed: connection refused).
type receiver struct {
	t    testing.TB
	addr string

	mu       sync.Mutex
	mode     string // "ok", "500", "down"
	srv      *http.Server
	bodies   map[string][]byte // webhook-id -> body
	arrivals map[string][]uint64
	events   []client.WebhookEvent // first arrivals, in order
	bad      []string              // what failed verification
	attempts int
}

func newReceiver(t testing.TB) *receiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{t: t, addr: ln.Addr().String(), mode: "ok", bodies: map[string][]byte{}, arrivals: map[string][]uint64{}}
	r.serve(ln)
	t.Cleanup(func() { r.setMode("down") })
	return r
}

func (r *receiver) url() string { return "http://" + r.addr + "/hooks" }

func (r *receiver) serve(ln net.Listener) {
	r.srv = &http.Server{Handler: r}
	go r.srv.Serve(ln)
}

// setMode switches the receiver; "down" closes its listener, and leaving
// "down" listens on the same port again.
func (r *receiver) setMode(mode string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == mode {
		return
	}
	if mode == "down" {
		r.srv.Close()
	} else if r.mode == "down" {
		var ln net.Listener
		var err error
		for range 100 { // the port was ours a moment ago
			if ln, err = net.Listen("tcp", r.addr); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			r.t.Errorf("the receiver cannot listen again on %s: %v", r.addr, err)
			return
		}
		r.serve(ln)
	}
	r.mode = mode
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	if err != nil {
		return
	}
	ev, err := client.VerifyWebhook(testWebhookSecret, req.Header, body, time.Now())
	if err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(400)
		return
	}
	id := ev.ID
	if old, seen := r.bodies[id]; seen && string(old) != string(body) {
		r.bad = append(r.bad, fmt.Sprintf("webhook-id %s with two bodies: %s and %s", id, old, body))
	}
	if r.mode == "500" {
		w.WriteHeader(500)
		return
	}
	if id == "" || ev.Data.Room == "" || ev.Data.Seq == 0 {
		r.bad = append(r.bad, fmt.Sprintf("webhook-id %q, body %s", id, body))
	}
	if _, seen := r.bodies[id]; !seen {
		r.bodies[id] = body
		r.events = append(r.events, ev)
		r.arrivals[ev.Data.Room] = append(r.arrivals[ev.Data.Room], ev.Data.Seq)
	}
	w.WriteHeader(204)
}

// change is a membership change a client saw acknowledged.
type change struct{ typ, room, client, reason string }

// webhookLoad joins, posts and leaves in rooms of its own until ctx ends,
// retrying through restarts; it records what was acknowledged.
type webhookLoad struct {
	mu    sync.Mutex
	acked []change
}

func (l *webhookLoad) add(c change) {
	l.mu.Lock()
	l.acked = append(l.acked, c)
	l.mu.Unlock()
}

// retryAnswer calls f until it answers (any status but 5xx) or ctx ends.
func retryAnswer(ctx context.Context, f func(ctx context.Context) (answer, error)) (answer, bool) {
	for ctx.Err() == nil {
		a, err := f(ctx)
		if err == nil && a.Status < 500 {
			return a, true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return answer{}, false
}

// run joins and posts through the Go client (a join retried after 429 and
// 503, a post with its Idempotency-Key after anything that can be waited
// out) and leaves with a raw request retried until it is answered: only a
// 204 says that the member left, which the client's Leave does not tell
// apart from a member already gone.
func (l *webhookLoad) run(ctx context.Context, t testing.TB, e endpoint, worker int) {
	api := e.api(t, client.WithRetries(50, 100*time.Millisecond))
	for round := 0; ctx.Err() == nil; round++ {
		room := fmt.Sprintf("wh%d-%d", worker, round)
		var members []*client.Member
		for range 2 {
			m, err := api.Join(ctx, room, client.JoinOptions{})
			if err != nil || m.Resumed {
				continue // a join whose answer was lost may have happened: not asserted
			}
			members = append(members, m)
			l.add(change{"member.joined", room, m.ClientID, ""})
		}
		for _, m := range members {
			m.Send(ctx, map[string]string{"type": "note"}, &client.SendOptions{IdempotencyKey: room + m.ClientID})
		}
		for _, m := range members {
			a, ok := retryAnswer(ctx, func(ctx context.Context) (answer, error) {
				return e.request(ctx, "POST", "/rooms/"+room+"/leave", "", bearer(m)...)
			})
			if ok && a.Status == 204 {
				l.add(change{"member.left", room, m.ClientID, "left"})
			}
		}
	}
}

// checkWebhooks waits until every acknowledged change arrived, then checks
// the order within each room and that the full room saw no refused join.
func checkWebhooks(t *testing.T, r *receiver, load *webhookLoad, fullRoom string, within time.Duration) {
	t.Helper()
	type key struct{ typ, room, client string }
	deadline := time.Now().Add(within)
	var missing []change
	for {
		r.mu.Lock()
		got := map[key]string{}
		for _, ev := range r.events {
			got[key{ev.Type, ev.Data.Room, ev.Data.ClientID}] = ev.Data.Reason
		}
		r.mu.Unlock()
		missing = missing[:0]
		load.mu.Lock()
		for _, c := range load.acked {
			reason, ok := got[key{c.typ, c.room, c.client}]
			if !ok || c.reason != "" && reason != c.reason {
				missing = append(missing, c)
			}
		}
		load.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Logf("%d changes acknowledged, %d events delivered (%d attempts, %d ids)", len(load.acked), len(r.events), r.attempts, len(r.bodies))
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged changes never arrived, e.g. %+v", len(missing), missing[:min(5, len(missing))])
	}
	if len(r.bad) > 0 {
		t.Fatalf("%d bad deliveries, e.g. %q", len(r.bad), r.bad[:min(3, len(r.bad))])
	}
	for room, seqs := range r.arrivals {
		if !slices.IsSorted(seqs) {
			t.Fatalf("room %s: events arrived in the order %v", room, seqs)
		}
	}
	// The full room's members stop listening when the load ends and time
	// out: what it may hold after its two joins is their leaving.
	var joins []string
	for _, ev := range r.events {
		if ev.Data.Room == fullRoom && ev.Type == "member.joined" {
			joins = append(joins, ev.Data.ClientID)
		}
	}
	if len(joins) != 2 {
		t.Fatalf("the full room had %d member.joined events (%v), want its 2 members' (none for a refused join)", len(joins), joins)
	}
}

// hammerFullRoom makes joins into a full room, every one refused, until
// ctx ends.
func hammerFullRoom(ctx context.Context, t *testing.T, e endpoint, room string) {
	for ctx.Err() == nil {
		a, err := e.request(ctx, "POST", "/rooms/"+room+"/join", "")
		if err == nil && a.Status != 409 && a.Status != 503 && a.Status < 500 {
			t.Errorf("a join into the full room: %d %s", a.Status, a.Body)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// webhookScenario runs the load against e while crash kills and restarts
// instances three times, then the receiver answers 500 for a while and is
// down for 20 s; it checks the deliveries.
func webhookScenario(t *testing.T, e endpoint, r *receiver, crash func(t *testing.T, i int)) {
	const fullRoom = "wh-full"
	// Its members stay: they listen by long-poll all along (Member.Receive,
	// which waits out the crashes).
	load := &webhookLoad{}
	full := []*client.Member{e.join(t, fullRoom, client.WithRetries(1, 20*time.Millisecond)), e.join(t, fullRoom, client.WithRetries(1, 20*time.Millisecond))}
	for _, m := range full {
		load.add(change{"member.joined", fullRoom, m.ClientID, ""})
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range full {
		wg.Go(func() {
			for range m.Receive(ctx, &client.ReceiveOptions{Transport: client.LongPoll, Wait: 2 * time.Second}) {
			}
		})
	}
	for w := range 4 {
		wg.Go(func() { load.run(ctx, t, e, w) })
	}
	wg.Go(func() { hammerFullRoom(ctx, t, e, fullRoom) })

	phase(t, "3 x kill -9 under load", func(t *testing.T) {
		for i := range 3 {
			time.Sleep(1500 * time.Millisecond)
			crash(t, i)
		}
	})
	phase(t, "the receiver answers 500, then is down for 20 s", func(t *testing.T) {
		r.setMode("500")
		time.Sleep(4 * time.Second)
		r.setMode("down")
		time.Sleep(20 * time.Second)
		r.setMode("ok")
	})
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()
	phase(t, "every acknowledged change arrives", func(t *testing.T) {
		checkWebhooks(t, r, load, fullRoom, 90*time.Second)
	})
}

func TestWebhooksThroughCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: kills the server under load for about a minute")
	}
	t.Run("bbolt", func(t *testing.T) {
		r := newReceiver(t)
		srv, ep := startServer(t, nil, []string{"TINCAN_WEBHOOK_URL=" + r.url(), "TINCAN_WEBHOOK_SECRET=" + testWebhookSecret},
			"-webhook-max-backoff", "1s", "-client-timeout", "3s")
		webhookScenario(t, ep, r, func(t *testing.T, _ int) {
			srv.Kill(t)
			srv.Restart(t)
		})
	})
	t.Run("etcd", func(t *testing.T) {
		r := newReceiver(t)
		etcd := etcdtest.Start(t, etcdtest.Config{Members: 1})
		hc := &http.Client{Timeout: 30 * time.Second}
		c := startTincanCluster(t, etcd, 2, hc, "-webhook-url", r.url(), "-webhook-secret", testWebhookSecret,
			"-webhook-max-backoff", "1s", "-client-timeout", "3s")
		webhookScenario(t, c.proxy, r, func(t *testing.T, i int) {
			// Each instance in turn: whichever holds the outbox's claim
			// dies once at least.
			s := c.instances[i%len(c.instances)]
			s.Kill(t)
			s.Restart(t)
		})
	})
}
