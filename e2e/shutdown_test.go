package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
)

// TestGracefulShutdown sends SIGTERM to the real binary while three posters
// load a room in which one member reads three event streams and two others
// long-poll, and in another, idle room a stream and two long-polls wait.
// The server must exit with status 0 within 5 s; every open stream must end
// cleanly (the end of the response, not a reset: EventSource reconnects)
// and the waiting long-polls must be answered (200, nothing), all before
// the process is gone. After a restart on the same db, every message whose POST
// was answered 201 is there: each receiver, resuming where it was, and a
// member that never read, walking from 0, get each exactly once.
func TestGracefulShutdown(t *testing.T) {
	const (
		posters  = 3
		streams  = 3
		polls    = 2
		room     = "term"
		minAcked = 200
	)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	srv, ep := startServer(t, hc, nil, "-room-capacity", "5", "-heartbeat", "1s")
	// One try a post: what is refused or cut is retried after the restart.
	sender := ep.join(t, room)
	sseR := ep.join(t, room)
	var pollers []*client.Member
	for range polls {
		pollers = append(pollers, ep.join(t, room, client.WithRetries(1, 20*time.Millisecond)))
	}
	walker := ep.join(t, room) // reads nothing until after the restart

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	type streamEnd struct {
		frames []frame
		err    error
		at     time.Time
	}
	// sseR's streams, read from the start: raw, to see how each ends.
	var conns []*stream
	for range streams {
		c, err := ep.openEvents(ctx, sseR, 0)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	ended := make([]chan streamEnd, streams)
	for i, c := range conns {
		ended[i] = make(chan streamEnd, 1)
		go func() {
			var fs []frame
			for f := range c.frames {
				if !f.Comment {
					fs = append(fs, f)
				}
			}
			ended[i] <- streamEnd{fs, c.err, time.Now()}
		}()
	}

	// In another room where nothing happens, a stream and two long-polls
	// are waiting when the SIGTERM comes.
	idle := []*client.Member{ep.join(t, "idle"), ep.join(t, "idle")}
	idleStream, err := ep.openEvents(ctx, idle[1], 0)
	if err != nil {
		t.Fatal(err)
	}
	idleStreamEnd := make(chan streamEnd, 1)
	go func() {
		var fs []frame
		for f := range idleStream.frames {
			fs = append(fs, f)
		}
		idleStreamEnd <- streamEnd{fs, idleStream.err, time.Now()}
	}()
	type idleEnd struct {
		a   answer
		p   polled
		err error
		at  time.Time
	}
	idleEnds := make(chan idleEnd, len(idle))
	for _, c := range idle {
		since := ep.poll(t, c, 0, "0").Next // where its long-poll waits: after what is there already
		go func() {
			a, p, err := ep.longPoll(context.Background(), c, since, "30")
			idleEnds <- idleEnd{a, p, err, time.Now()}
		}()
	}
	phase(t, "in an idle room a stream is open and two long-polls wait", func(t *testing.T) {
		waitFor(t, "the idle long-polls to wait", func() bool { return ep.metric(t, "tincan_polls_waiting") == float64(len(idle)) })
	})

	// The pollers receive the load by long-poll (Member.Receive), each
	// from where it is, until its first poll fails.
	type pollEnd struct {
		who   int
		got   []map[string]any
		since uint64
		bad   []string
	}
	pollEnds := make(chan pollEnd, polls)
	for i, pollR := range pollers {
		go func() {
			r := pollEnd{who: i}
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			opts := &client.ReceiveOptions{Transport: client.LongPoll, Wait: 30 * time.Second, Hooks: client.Hooks{
				OnDisconnect: func(client.Transport, error) { stop() },
				OnStale: func(id, cursor uint64) {
					r.bad = append(r.bad, fmt.Sprintf("poller %d: id %d after %d", i, id, cursor))
				},
			}}
			for msg, err := range pollR.Receive(ctx, opts) {
				var m map[string]any
				if err == nil {
					err = decodeNumbers(msg.Data, &m)
				}
				if err != nil {
					r.bad = append(r.bad, fmt.Sprintf("poller %d: %v", i, err))
					break
				}
				r.got = append(r.got, m)
				r.since = msg.ID
			}
			pollEnds <- r
		}()
	}

	// The load.
	var (
		mu      sync.Mutex
		acked   = map[string]uint64{}
		pending []string // keys without a 201: retried after the restart
		why     []string
		bad     []string
		nAck    atomic.Int64
		posting sync.WaitGroup
	)
	for g := range posters {
		posting.Add(1)
		go func() {
			defer posting.Done()
			for i := 0; ; i++ {
				key := fmt.Sprintf("p%d-%d", g, i)
				id, err := sender.Send(context.Background(), map[string]string{"type": "load", "k": key}, &client.SendOptions{IdempotencyKey: key})
				var refused *client.Error
				mu.Lock()
				switch {
				case noAnswer(err) || errors.As(err, &refused) && refused.Status == 503: // refused or cut: not acknowledged
					pending = append(pending, key)
					why = append(why, fmt.Sprintf("%s: %v", key, err))
				case err == nil && id != 0:
					acked[key] = id
				default:
					bad = append(bad, fmt.Sprintf("%s: id %d, %v", key, id, err))
				}
				mu.Unlock()
				if err != nil {
					return
				}
				nAck.Add(1)
			}
		}()
	}
	phase(t, "the load is acknowledged, and no idle long-poll is answered yet", func(t *testing.T) {
		waitFor(t, fmt.Sprintf("%d acknowledged posts", minAcked), func() bool { return nAck.Load() >= minAcked })
		select {
		case e := <-idleEnds:
			t.Fatalf("an idle long-poll was answered before the SIGTERM: %d %s %v", e.a.Status, e.a.Body, e.err)
		default:
		}
	})

	// A stream that ends with the end of its response (the last chunk),
	// not a cut connection, and a long-poll answered 200 were ended by the
	// server before it exited: the kernel closing the sockets of a dead
	// process would not write those.
	var term time.Time // when the SIGTERM was sent
	phase(t, "SIGTERM under load: the server exits with status 0 within 5 s", func(t *testing.T) {
		term = time.Now()
		took := srv.Terminate(t, 5*time.Second)
		t.Logf("exited %v after SIGTERM with %v, %d posts acknowledged by then", took.Round(time.Millisecond), srv.Current().Cmd.ProcessState, nAck.Load())
	})
	var seenSSE []frame // what the first of sseR's streams got after its ready frame
	phase(t, "every open stream ended cleanly, after its ready frame", func(t *testing.T) {
		for i := range streams {
			select {
			case e := <-ended[i]:
				if e.err != nil {
					t.Errorf("stream %d ended with %v, want a clean end of the response", i, e.err)
				}
				if len(e.frames) == 0 || e.frames[0].Event != "ready" {
					t.Fatalf("stream %d: no ready frame", i)
				}
				t.Logf("stream %d ended %v after SIGTERM, cleanly: %v", i, e.at.Sub(term).Round(time.Millisecond), e.err == nil)
				if i == 0 {
					seenSSE = e.frames[1:]
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("stream %d did not end within 5s of the server's exit", i)
			}
		}
		select {
		case e := <-idleStreamEnd:
			if e.err != nil || len(e.frames) == 0 || e.frames[0].Event != "ready" {
				t.Errorf("the idle stream ended with %v %v after SIGTERM; frames %+v", e.err, e.at.Sub(term), e.frames)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the idle stream did not end")
		}
	})
	phase(t, "every waiting long-poll was answered 200 with nothing", func(t *testing.T) {
		for range idle {
			select {
			case e := <-idleEnds:
				if e.err != nil || e.a.Status != 200 || len(e.p.Messages) != 0 {
					t.Errorf("an idle long-poll waiting at SIGTERM ended with %v %d %s, want 200 and no messages", e.err, e.a.Status, e.a.Body)
				} else {
					t.Logf("an idle long-poll was answered %v after SIGTERM: %d %s", e.at.Sub(term).Round(time.Millisecond), e.a.Status, strings.TrimSpace(string(e.a.Body)))
				}
			case <-time.After(5 * time.Second):
				t.Fatal("an idle long-poll was not answered")
			}
		}
	})
	polled := make([]pollEnd, polls) // where each long-poll receiver stopped
	phase(t, "the receivers and the posters stopped, with no unexpected answer", func(t *testing.T) {
		for range polls {
			select {
			case r := <-pollEnds:
				polled[r.who] = r
				mu.Lock()
				bad = append(bad, r.bad...)
				mu.Unlock()
			case <-time.After(5 * time.Second):
				t.Fatal("a long-poll receiver did not stop")
			}
		}
		posting.Wait()
		if len(bad) > 0 {
			t.Fatalf("unexpected answers during the shutdown:\n%s", strings.Join(bad, "\n"))
		}
		t.Logf("posts not acknowledged at the shutdown: %s", strings.Join(why, "; "))
	})

	var end uint64 // the id of the end message
	phase(t, "after a restart, the posts not acknowledged are retried with their keys", func(t *testing.T) {
		var maxBefore uint64
		for _, id := range acked {
			maxBefore = max(maxBefore, id)
		}
		srv.Restart(t)
		retrying := ep.api(t, client.WithRetries(1<<30, 10*time.Millisecond)) // a post until it is answered 201
		sender, err := retrying.Join(ctx, room, client.JoinOptions{Token: sender.Token})
		if err != nil || !sender.Resumed {
			t.Fatalf("the sender's resume: %v", err)
		}
		for _, key := range pending {
			id, err := sender.Send(ctx, map[string]string{"type": "load", "k": key}, &client.SendOptions{IdempotencyKey: key})
			if err != nil {
				t.Fatalf("retry of %s after the restart: %v", key, err)
			}
			if id <= maxBefore {
				t.Logf("%s had been stored before the shutdown (id %d) but its answer was lost", key, id)
			}
			acked[key] = id
		}
		if end, err = sender.Send(ctx, map[string]string{"type": "end"}, &client.SendOptions{IdempotencyKey: "end"}); err != nil {
			t.Fatal(err)
		}
	})
	// problems collects what the receivers find wrong after the restart.
	var problems []string
	var problemsMu sync.Mutex
	problem := func(format string, args ...any) {
		problemsMu.Lock()
		defer problemsMu.Unlock()
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	checkProblems := func(t *testing.T) {
		t.Helper()
		if len(problems) > 0 {
			t.Fatalf("after the restart:\n%s", strings.Join(problems, "\n"))
		}
	}
	phase(t, "the SSE receiver, resuming with Last-Event-ID, got every acknowledged message once", func(t *testing.T) {
		// sseR resumes from the last id of its first stream.
		var got []map[string]any
		var last uint64
		for _, f := range seenSSE {
			m, err := frameMessage(f)
			if err != nil {
				t.Fatal(err)
			}
			if idOf(m) <= last {
				t.Fatalf("stream 0 delivered id %d after %d", idOf(m), last)
			}
			last = idOf(m)
			got = append(got, m)
		}
		var n atomic.Int64
		resumed := receiveUntilEnd(ctx, sseR, client.EventStream, last, &n, problem)
		checkProblems(t)
		checkExactlyOnce(t, "the SSE receiver (resumed with Last-Event-ID)", append(got, resumed...), sender.ClientID, acked, end)
	})
	phase(t, "the long-poll receivers, resuming where they were, got every acknowledged message once", func(t *testing.T) {
		for i, r := range polled {
			var n atomic.Int64
			got := append(r.got, receiveUntilEnd(ctx, pollers[i], client.LongPoll, r.since, &n, problem)...)
			checkProblems(t)
			checkExactlyOnce(t, fmt.Sprintf("long-poll receiver %d (resumed after %d)", i, r.since), got, sender.ClientID, acked, end)
		}
	})
	phase(t, "a member that never read gets every acknowledged message once from 0", func(t *testing.T) {
		var n atomic.Int64
		got := receiveUntilEnd(ctx, walker, client.LongPoll, 0, &n, problem)
		checkProblems(t)
		checkExactlyOnce(t, "a member that never read (from 0)", got, sender.ClientID, acked, end)
		t.Logf("%d messages acknowledged (%d of them retried after the restart), each delivered once to each receiver", len(acked), len(pending))
	})
	phase(t, "SIGTERM after the restart: the server exits with status 0 within 5 s", func(t *testing.T) {
		srv.Terminate(t, 5*time.Second)
	})
}

// TestShutdownSlowClients: clients that hold their connections open
// without finishing a request (half a header block, half a body) or
// without reading (a stalled event stream) must not keep a SIGTERM from
// ending the server within 5 s: run gives the requests in flight 4 s, then
// closes the connections. Nothing acknowledged before is lost.
func TestShutdownSlowClients(t *testing.T) {
	srv, ep := startServer(t, nil, nil)
	addr := ep.addr()
	a := ep.join(t, "slow")
	b := ep.join(t, "slow")
	dial := func() net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// Half a header block.
	fmt.Fprintf(dial(), "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	// Half a body.
	fmt.Fprintf(dial(), "POST /rooms/slow/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n{\"type\":", b.Token)
	// An event stream that is never read, its buffers full.
	stalled := dial()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(stalled, "GET /rooms/slow/events?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", a.Token)
	var id uint64 // the last message acknowledged before the SIGTERM

	phase(t, "the stalled stream is open and its buffers fill", func(t *testing.T) {
		waitFor(t, "the stalled stream", func() bool { return ep.metric(t, "tincan_streams_open") == 1 })
		pad := strings.Repeat("x", 60000)
		for range 20 {
			if _, err := b.Send(context.Background(), map[string]string{"type": "x", "pad": pad}, nil); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if id, err = b.Send(context.Background(), map[string]string{"type": "last"}, nil); err != nil {
			t.Fatal(err)
		}
	})
	phase(t, "SIGTERM: the server exits with status 0 within 5 s despite the slow clients", func(t *testing.T) {
		took := srv.Terminate(t, 5*time.Second)
		t.Logf("exited %v after SIGTERM with %v", took.Round(time.Millisecond), srv.Current().Cmd.ProcessState)
	})
	phase(t, "after a restart nothing acknowledged is lost", func(t *testing.T) {
		srv.Restart(t) // the endpoint follows it to its new port
		if p := ep.poll(t, a, 0, "0"); len(p.Messages) != 22 || idOf(p.Messages[21]) != id {
			t.Fatalf("after the restart alice has %d messages (%v), want 22 ending with %d", len(p.Messages), p.Messages, id)
		}
	})
	phase(t, "SIGTERM after the restart: the server exits with status 0 within 5 s", func(t *testing.T) {
		srv.Terminate(t, 5*time.Second)
	})
}
