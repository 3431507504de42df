package client_test

// The client against the real server: the tincan binary built and run by
// internal/tincantest, on bbolt and on etcd (in-process, etcdtest), with
// real HTTP proxies in front where a test needs answers lost or a stream
// held back.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/internal/tincantest"
	"github.com/tincan/tincan/store/etcdstore/etcdtest"
)

// exampleURL is the server of the examples, started by TestMain.
var exampleURL string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var main tincantest.Main
		defer main.Close()
		srv := tincantest.Start(&main, tincantest.Build(&main), nil)
		exampleURL = srv.URL()
		return m.Run()
	}())
}

// engine starts a server on one store; flags are added to the defaults,
// env holds its TINCAN_* variables. fixedPort: the server keeps its port
// across restarts, so that a client's base URL stays valid.
type engine struct {
	name  string
	start func(t *testing.T, env []string, flags ...string) *tincantest.Server
}

var engines = []engine{
	{"bbolt", func(t *testing.T, env []string, flags ...string) *tincantest.Server {
		return tincantest.Start(t, tincantest.Build(t), env, append([]string{"-addr", freeAddr(t)}, flags...)...)
	}},
	{"etcd", func(t *testing.T, env []string, flags ...string) *tincantest.Server {
		etcd := etcdtest.Start(t, etcdtest.Config{Members: 1})
		return tincantest.Start(t, tincantest.Build(t), env, append([]string{"-addr", freeAddr(t),
			"-etcd", strings.Join(etcd.Endpoints(), ","), "-etcd-prefix", "/client-test/"}, flags...)...)
	}},
}

// freeAddr is a loopback address with a port free now.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func join(t *testing.T, c *client.Client, room string, opts client.JoinOptions) *client.Member {
	t.Helper()
	m, err := c.Join(context.Background(), room, opts)
	if err != nil {
		t.Fatalf("join %s: %v", room, err)
	}
	return m
}

// received is what a Receive delivered, collected by a goroutine.
type received struct {
	mu   sync.Mutex
	msgs []client.Message
	err  error
	done chan struct{}
	more chan struct{} // a message arrived
}

// collect runs m.Receive(ctx, opts) until it ends.
func collect(ctx context.Context, m *client.Member, opts *client.ReceiveOptions) *received {
	r := &received{done: make(chan struct{}), more: make(chan struct{}, 1)}
	go func() {
		defer close(r.done)
		for msg, err := range m.Receive(ctx, opts) {
			r.mu.Lock()
			if err != nil {
				r.err = err
			} else {
				r.msgs = append(r.msgs, msg)
			}
			r.mu.Unlock()
			select {
			case r.more <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

// waitFor waits up to 60 s until ok holds of the messages so far.
func (r *received) waitFor(t *testing.T, what string, ok func([]client.Message) bool) []client.Message {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		r.mu.Lock()
		msgs, done := append([]client.Message(nil), r.msgs...), r.err != nil
		r.mu.Unlock()
		if ok(msgs) {
			return msgs
		}
		if done {
			t.Fatalf("waiting for %s: the receive ended with %v after %d messages", what, r.err, len(msgs))
		}
		select {
		case <-r.more:
		case <-r.done:
		case <-timeout:
			t.Fatalf("waiting for %s: %d messages within 60s", what, len(msgs))
		}
	}
}

// end waits until the Receive ended and returns its error.
func (r *received) end(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the receive did not end within 30s")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func ofType(typ string) func(client.Message) bool {
	return func(m client.Message) bool { return m.Type() == typ }
}

func count(msgs []client.Message, keep func(client.Message) bool) (n int) {
	for _, m := range msgs {
		if keep(m) {
			n++
		}
	}
	return n
}

// Every message acknowledged by Send arrives once, in order, whatever
// happens to the server in the middle: a kill -9 and a restart while one
// member sends and the other receives, on both engines and both
// transports. Send retries with its Idempotency-Key, Receive resumes from
// its cursor.
func TestExactlyOnceThroughKill(t *testing.T) {
	const total, killAt = 120, 40
	for _, e := range engines {
		for _, tr := range []client.Transport{client.EventStream, client.LongPoll} {
			t.Run(e.name+"/"+tr.String(), func(t *testing.T) {
				srv := e.start(t, nil)
				c := newClient(t, srv.URL(), client.WithRetries(20, 100*time.Millisecond))
				a := join(t, c, "kill", client.JoinOptions{})
				b := join(t, c, "kill", client.JoinOptions{})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var connects atomic.Int32
				got := collect(ctx, a, &client.ReceiveOptions{Transport: tr, Wait: 2 * time.Second,
					Hooks: client.Hooks{OnConnect: func(client.Transport, uint64) { connects.Add(1) }}})
				// The sender goes on while the server is killed and restarted:
				// a post may be in flight at the kill.
				sent := make([]uint64, total)
				sendErr := make(chan error, 1)
				progress := make(chan int, total)
				go func() {
					for i := range total {
						id, err := b.Send(ctx, map[string]any{"type": "chat", "n": i}, nil)
						if err != nil {
							sendErr <- fmt.Errorf("send %d: %w", i, err)
							return
						}
						sent[i] = id
						progress <- i
					}
					sendErr <- nil
				}()
				for i := range progress {
					if i+1 == killAt {
						break
					}
				}
				srv.Kill(t)
				srv.Restart(t)
				if err := <-sendErr; err != nil {
					t.Fatal(err)
				}
				msgs := got.waitFor(t, "every chat", func(m []client.Message) bool { return count(m, ofType("chat")) >= total })
				var chats []client.Message
				for _, m := range msgs {
					if m.Type() == "chat" {
						chats = append(chats, m)
					}
				}
				if len(chats) != total {
					t.Fatalf("%d chats, want %d", len(chats), total)
				}
				for i, m := range chats {
					var body struct{ N int }
					if err := m.Decode(&body); err != nil || body.N != i || m.ID != sent[i] || m.From() != b.ClientID {
						t.Fatalf("chat %d: id %d (sent as %d), %s, from %q", i, m.ID, sent[i], m.Data, m.From())
					}
				}
				if connects.Load() < 2 {
					t.Errorf("the receive connected %d times: it did not reconnect after the kill", connects.Load())
				}
				if err := b.Leave(ctx); err != nil {
					t.Fatal(err)
				}
				got.waitFor(t, "peer-left", func(m []client.Message) bool { return count(m, ofType("peer-left")) == 1 })
				if err := a.Leave(ctx); err != nil {
					t.Fatal(err)
				}
				if err := got.end(t); err != nil {
					t.Errorf("the receive of a member that left ended with %v, want nothing", err)
				}
			})
		}
	}
}

// Refusals come back as *client.Error that errors.Is matches with the
// sentinels, carrying the status, the code and, for a batch, the index.
func TestErrors(t *testing.T) {
	srv := engines[0].start(t, nil, "-room-capacity", "2")
	c := newClient(t, srv.URL())
	ctx := context.Background()
	a := join(t, c, "locked", client.JoinOptions{Password: "sesame"})
	b := join(t, c, "locked", client.JoinOptions{Password: "sesame"})
	_, errFull := c.Join(ctx, "locked", client.JoinOptions{Password: "sesame"})
	_, errNoPassword := c.Join(ctx, "locked", client.JoinOptions{})
	_, errPassword := c.Join(ctx, "locked", client.JoinOptions{Password: "open"})
	_, errPeer := a.Send(ctx, map[string]any{"type": "chat", "to": "nobody"}, nil)
	_, errBatch := a.SendBatch(ctx, []any{map[string]any{"type": "chat"}, map[string]any{"type": "offer"}}, nil)
	_, errRoom := c.Join(ctx, "no/such", client.JoinOptions{})
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	_, errLeft := b.Send(ctx, map[string]any{"type": "chat"}, nil)
	for _, tc := range []struct {
		name   string
		err    error
		want   error
		status int
		index  int
	}{
		{"full room", errFull, client.ErrRoomFull, 409, -1},
		{"no password", errNoPassword, client.ErrPasswordRequired, 403, -1},
		{"wrong password", errPassword, client.ErrBadPassword, 403, -1},
		{"unknown peer", errPeer, client.ErrUnknownPeer, 404, -1},
		{"bad element of a batch", errBatch, client.ErrBadMessage, 400, 1},
		{"bad room name (not sent)", errRoom, client.ErrBadRoomName, 0, -1},
		{"after leave", errLeft, client.ErrUnauthorized, 401, -1},
	} {
		var e *client.Error
		if !errors.Is(tc.err, tc.want) || !errors.As(tc.err, &e) || e.Status != tc.status || e.Index != tc.index {
			t.Errorf("%s: %v (%#v), want %v with status %d, index %d", tc.name, tc.err, e, tc.want, tc.status, tc.index)
		}
		if errors.Is(tc.err, client.ErrNotFound) {
			t.Errorf("%s: %v matches ErrNotFound too", tc.name, tc.err)
		}
	}
	// Resuming with the token keeps the seat; the resumed member's sends work.
	again, err := c.Join(ctx, "locked", client.JoinOptions{Token: a.Token})
	if err != nil || !again.Resumed || again.ClientID != a.ClientID {
		t.Fatalf("resume: %+v, %v", again, err)
	}
}

// lossyProxy is a real reverse proxy in front of the server that, for the
// first lose requests matching path, forwards the request and then answers
// the client 502: the server did the work, the client never hears of it.
// Before that it answers the first busy requests 429 with Retry-After: 1
// without forwarding them.
type lossyProxy struct {
	srv         *httptest.Server
	lose, busy  atomic.Int32
	lost, waits atomic.Int32
}

func newLossyProxy(t *testing.T, upstream, path string, lose, busy int32) *lossyProxy {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{}
	p.lose.Store(lose)
	p.busy.Store(busy)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, path) || r.Method != "POST" {
			rp.ServeHTTP(w, r)
			return
		}
		if p.busy.Add(-1) >= 0 {
			p.waits.Add(1)
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"code":"rate_limited"}`, http.StatusTooManyRequests)
			return
		}
		if p.lose.Add(-1) >= 0 {
			p.lost.Add(1)
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// A post whose answer is lost is retried with the same Idempotency-Key:
// the server stores it once and answers the retry with the first id. A
// 429 is waited out for its Retry-After.
func TestRetriesKeepOneMessage(t *testing.T) {
	srv := engines[0].start(t, nil)
	direct := newClient(t, srv.URL())
	proxy := newLossyProxy(t, srv.URL(), "/messages", 2, 1)
	viaProxy := newClient(t, proxy.srv.URL, client.WithRetries(5, 50*time.Millisecond))
	a := join(t, direct, "lossy", client.JoinOptions{})
	b := join(t, viaProxy, "lossy", client.JoinOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := collect(ctx, a, nil)
	began := time.Now()
	id, err := b.Send(ctx, map[string]any{"type": "chat", "text": "once"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(began); proxy.waits.Load() != 1 || proxy.lost.Load() != 2 || waited < time.Second {
		t.Fatalf("429s %d, lost answers %d, waited %v: want 1, 2 and at least the Retry-After of 1s", proxy.waits.Load(), proxy.lost.Load(), waited)
	}
	// One more message behind it: when it arrives, the first was delivered
	// as often as it will be.
	if _, err := b.Send(ctx, map[string]any{"type": "chat", "text": "after"}, nil); err != nil {
		t.Fatal(err)
	}
	msgs := got.waitFor(t, "both chats", func(m []client.Message) bool { return count(m, ofType("chat")) >= 2 })
	if n := count(msgs, func(m client.Message) bool { return bytes.Contains(m.Data, []byte(`"once"`)) }); n != 1 {
		t.Fatalf("the message whose answer was lost twice arrived %d times: %v", n, msgs)
	}
	for _, m := range msgs {
		if bytes.Contains(m.Data, []byte(`"once"`)) && m.ID != id {
			t.Fatalf("Send answered id %d, the message has %d", id, m.ID)
		}
	}
	// A key of the caller's own makes a repeated call a no-op too.
	opts := &client.SendOptions{IdempotencyKey: "order-17"}
	id1, err1 := b.Send(ctx, map[string]any{"type": "chat"}, opts)
	id2, err2 := b.Send(ctx, map[string]any{"type": "chat"}, opts)
	if err1 != nil || err2 != nil || id1 != id2 {
		t.Fatalf("the same key twice: %d %v, %d %v", id1, err1, id2, err2)
	}
}

// bufferingProxy holds every event stream back until it ends, as some
// corporate proxies do; everything else passes.
func bufferingProxy(t *testing.T, upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/events") {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r) // until the stream ends
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		io.Copy(w, rec.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// Behind a proxy that buffers event streams, Auto waits ReadyTimeout for
// the ready frame, then receives by long-poll.
func TestAutoFallsBackToLongPoll(t *testing.T) {
	srv := engines[0].start(t, nil)
	c := newClient(t, bufferingProxy(t, srv.URL()))
	a := join(t, c, "buffered", client.JoinOptions{})
	b := join(t, c, "buffered", client.JoinOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var connected []client.Transport
	got := collect(ctx, a, &client.ReceiveOptions{ReadyTimeout: 300 * time.Millisecond,
		Hooks: client.Hooks{OnConnect: func(tr client.Transport, _ uint64) { mu.Lock(); connected = append(connected, tr); mu.Unlock() }}})
	if _, err := b.Send(ctx, map[string]any{"type": "chat"}, nil); err != nil {
		t.Fatal(err)
	}
	got.waitFor(t, "the chat", func(m []client.Message) bool { return count(m, ofType("chat")) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(connected) == 0 || connected[0] != client.LongPoll {
		t.Fatalf("connected over %v, want long-poll first (the stream never showed its ready frame)", connected)
	}
}

// A JWT-admitted member's name reaches the others; the admin API lists,
// sends, kicks and closes; a kicked member's Receive ends with ErrKicked,
// the others' with ErrRoomClosed when the room closes; every change is a
// webhook that VerifyWebhook accepts, and a forged one it refuses.
func TestAppsInControl(t *testing.T) {
	const (
		jwtSecret     = "a-secret-of-at-least-32-bytes-for-hs256!"
		adminKey      = "admin-key-for-the-tests"
		webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	)
	hooks := make(chan client.WebhookEvent, 64)
	bad := make(chan error, 64)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ev, err := client.VerifyWebhook(webhookSecret, r.Header, body, time.Now())
		if err != nil {
			bad <- err
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		hooks <- ev
		// A forged copy: the same headers, another body.
		if _, err := client.VerifyWebhook(webhookSecret, r.Header, append(body, ' '), time.Now()); !errors.Is(err, client.ErrBadWebhook) {
			bad <- fmt.Errorf("a changed body verified: %v", err)
		}
		if _, err := client.VerifyWebhook(webhookSecret, r.Header, body, time.Now().Add(time.Hour)); !errors.Is(err, client.ErrBadWebhook) {
			bad <- fmt.Errorf("an hour-old request verified: %v", err)
		}
	}))
	defer receiver.Close()
	srv := engines[0].start(t, []string{"TINCAN_AUTH=jwt", "TINCAN_JWT_SECRET=" + jwtSecret, "TINCAN_ADMIN_KEY=" + adminKey,
		"TINCAN_WEBHOOK_URL=" + receiver.URL, "TINCAN_WEBHOOK_SECRET=" + webhookSecret})
	c := newClient(t, srv.URL())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	token := func(sub, name string) string {
		tok, err := client.MintJoinToken([]byte(jwtSecret), "HS256", client.JoinClaims{Subject: sub, Room: "standup", TTL: time.Minute, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if _, err := c.Join(ctx, "standup", client.JoinOptions{}); !errors.Is(err, client.ErrJWTRequired) {
		t.Fatalf("join without a token: %v", err)
	}
	forged, _ := client.MintJoinToken([]byte("another-secret-of-at-least-32-bytes!!"), "HS256", client.JoinClaims{Subject: "eve", Room: "standup", TTL: time.Minute})
	if _, err := c.Join(ctx, "standup", client.JoinOptions{JoinToken: forged}); !errors.Is(err, client.ErrBadJWT) {
		t.Fatalf("join with a token of another key: %v", err)
	}
	alice := join(t, c, "standup", client.JoinOptions{JoinToken: token("alice", "Alice")})
	aliceGot := collect(ctx, alice, nil)
	bob := join(t, c, "standup", client.JoinOptions{JoinToken: token("bob", "Bob")})
	bobGot := collect(ctx, bob, nil)
	if alice.Identity != "alice" || alice.Name != "Alice" || len(bob.Members) != 1 || bob.Members[0].Name != "Alice" {
		t.Fatalf("identities: alice %+v, bob's members %+v", alice, bob.Members)
	}
	joined := aliceGot.waitFor(t, "bob's peer-joined", func(m []client.Message) bool { return count(m, ofType("peer-joined")) == 1 })
	var pj struct{ Peer, Identity, Name string }
	if err := joined[0].Decode(&pj); err != nil || pj.Peer != bob.ClientID || pj.Name != "Bob" || pj.Identity != "bob" {
		t.Fatalf("peer-joined %s", joined[0].Data)
	}

	admin := c.Admin(adminKey)
	if _, _, err := c.Admin("wrong-key-wrong-key").Rooms(ctx, "", 0); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("a wrong admin key: %v", err)
	}
	var names []string
	for r, err := range admin.AllRooms(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, r.Name)
	}
	room, err := admin.Room(ctx, "standup")
	if err != nil || len(names) != 1 || names[0] != "standup" || room.Occupants != 2 || len(room.Members) != 2 || room.Members[1].Identity != "bob" {
		t.Fatalf("rooms %v; room %+v, %v", names, room, err)
	}
	id, err := admin.Send(ctx, "standup", map[string]any{"type": "notice", "text": "five minutes"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []*received{aliceGot, bobGot} {
		msgs := got.waitFor(t, "the notice", func(m []client.Message) bool { return count(m, ofType("notice")) == 1 })
		if n := msgs[len(msgs)-1]; n.ID != id || n.From() != "server" {
			t.Fatalf("notice %d from %q: %s", n.ID, n.From(), n.Data)
		}
	}
	if err := admin.Kick(ctx, "standup", bob.ClientID); err != nil {
		t.Fatal(err)
	}
	if err := bobGot.end(t); !errors.Is(err, client.ErrKicked) {
		t.Fatalf("bob's receive ended with %v, want ErrKicked", err)
	}
	if _, err := bob.Send(ctx, map[string]any{"type": "chat"}, nil); !errors.Is(err, client.ErrKicked) {
		t.Fatalf("bob's send after the kick: %v", err)
	}
	aliceGot.waitFor(t, "peer-left kicked", func(m []client.Message) bool {
		return count(m, func(m client.Message) bool { return bytes.Contains(m.Data, []byte(`"reason":"kicked"`)) }) == 1
	})
	if err := admin.CloseRoom(ctx, "standup"); err != nil {
		t.Fatal(err)
	}
	if err := aliceGot.end(t); !errors.Is(err, client.ErrRoomClosed) {
		t.Fatalf("alice's receive ended with %v, want ErrRoomClosed", err)
	}
	if err := admin.CloseRoom(ctx, "standup"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("closing a closed room: %v", err)
	}

	want := []string{"room.created", "member.joined alice", "member.joined bob", "member.left bob kicked", "room.closed closed"}
	var got []string
	for len(got) < len(want) {
		select {
		case ev := <-hooks:
			s := strings.TrimSpace(strings.Join([]string{ev.Type, ev.Data.Identity, ev.Data.Reason}, " "))
			got = append(got, strings.Join(strings.Fields(s), " "))
		case err := <-bad:
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatalf("webhooks %v within 30s, want %v", got, want)
		}
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("webhooks %v, want %v", got, want)
	}
	select {
	case err := <-bad:
		t.Fatal(err)
	default:
	}
}
