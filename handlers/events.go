package handlers

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/r3labs/sse/v2"

	"github.com/tincan/tincan/store"
)

// The event stream. r3labs/sse only formats and flushes frames here, and
// every connection gets its own r3labs stream, so that a slow reader can
// block only its own stream (r3labs.go says what the library does).
//
// Nothing of ours waits while a stream is idle, because 10,000 idle streams
// must stay cheap. A commit that concerns the member kicks its streams, and a
// short-lived delivery goroutine reads the store after the last id sent and
// publishes what it finds; replay and resume therefore come from disk. The
// heartbeat is published to every stream by Run. A reader that takes no frame
// for StallTimeout is evicted (it reconnects and resumes from its last id).
//
// Over HTTP/1.x the handler hijacks the connection and returns, so that
// net/http's buffers and its goroutines for the connection are freed; the
// stream writes to the socket itself, learns of the reader's hang-up from
// hangups, and ends with the connection (Connection: close). Over HTTP/2,
// which cannot be hijacked, the stream stays in the handler.
//
// A stream's life: newEventStream, admission by the registry, open (which
// sets up everything the stream holds), serve (until the stream ends), then
// close, which undoes what was set up: each step registers its own undoing
// with onClose as it acquires something, and close runs them last first.

// retryMillis is the reconnect delay the ready frame asks for.
const retryMillis = "2000"

func (s *Server) handleEvents() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, err := s.member(r, true)
		if err != nil {
			fail(w, err)
			return
		}
		// EventSource reconnects with Last-Event-ID while its URL still
		// carries the first since, so the header wins.
		raw := r.Header.Get("Last-Event-ID")
		if raw == "" {
			raw = query(r, "since")
		}
		cursor, err := parseCursor(raw)
		if err != nil {
			fail(w, err)
			return
		}
		release, ok := s.openListener(w, r, m)
		if !ok {
			return
		}
		st := s.newEventStream(m, cursor)
		st.token = bearer(r, true)
		// Undone last: once the gauge has dropped, the stream is gone and
		// its place under the address's cap is free.
		s.metrics.streams.Inc()
		st.onClose(s.metrics.streams.Dec)
		st.onClose(release)
		if !s.streams.admit(st) {
			st.close()
			fail(w, errorf(503, "shutting_down", "server is shutting down"))
			return
		}
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			// The head is written by rawResponse; the CORS headers set so
			// far go with it.
			st.open(context.Background(), conn, &rawResponse{conn: conn, proto: r.Proto, header: w.Header().Clone()})
			go st.serve()
			return
		}
		st.open(r.Context(), nil, w)
		st.serve()
	})
}

// eventStream is one event stream of a member.
type eventStream struct {
	s        *Server
	id       string // its r3labs stream
	m        store.Member
	token    string   // the token the stream was opened with
	cleanups []func() // run by close, last first
	// recheck: the store said m was removed or got a new token; the next
	// delivery checks that st.token still authenticates m.
	recheck atomic.Bool

	// Set by open.
	ctx        context.Context
	cancel     context.CancelFunc
	w          *deadlineWriter
	subscribed <-chan struct{} // closed once r3labs has registered the connection

	// Kicks not yet served. The delivery goroutine runs while it is above
	// zero, so there is at most one, and it reads again if a kick came
	// while it read.
	pending    atomic.Int64
	deliveries sync.WaitGroup
	handover   chan struct{} // to a delivery goroutine that lingers (warmdelivery.go)
	// Owned by the delivery goroutine of the moment (pending orders them).
	last  uint64 // the last id sent, or where reading starts
	ready bool   // the ready frame is out
}

// newEventStream returns a stream for m that starts after cursor. Nothing
// is set up yet: admit it, then open and serve it, or close it.
func (s *Server) newEventStream(m store.Member, cursor uint64) *eventStream {
	return &eventStream{s: s, id: strconv.FormatUint(s.streamN.Add(1), 10), m: m, last: cursor, handover: make(chan struct{})}
}

// onClose registers f to be run by close, before everything registered
// earlier. Only the goroutine that sets the stream up calls it.
func (st *eventStream) onClose(f func()) { st.cleanups = append(st.cleanups, f) }

// close undoes everything set up for the stream, in reverse order.
func (st *eventStream) close() {
	for i := len(st.cleanups) - 1; i >= 0; i-- {
		st.cleanups[i]()
	}
	st.cleanups = nil
}

// open sets up an admitted stream to write to w, within parent; conn is
// the hijacked connection under w, nil over HTTP/2. It ends with the first
// kick, which sends the ready frame and the backlog.
func (st *eventStream) open(parent context.Context, conn net.Conn, w http.ResponseWriter) {
	s := st.s
	st.ctx, st.cancel = context.WithCancel(parent)
	st.w = &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.cfg.StallTimeout, failed: func(stalled bool) {
		if stalled {
			s.metrics.evicted.Inc()
			s.log.Info("evicted stalled stream", "room", st.m.Room, "client", st.m.ID, "stream", st.id)
		}
		st.end()
	}}
	st.onClose(st.w.release)
	if conn != nil {
		st.onClose(func() { conn.Close() })
		st.onClose(s.hangups.watch(conn, st.end))
	}

	st.subscribed = s.subs.expect(st.id)
	st.onClose(func() { s.subs.forget(st.id) })
	s.events.CreateStream(st.id)
	st.onClose(func() { s.events.RemoveStream(st.id) }) // only after ServeHTTP: see r3labs.go
	st.onClose(s.store.Hold(st.m))
	if s.cfg.MaxStreamLife > 0 {
		// Randomized so that streams opened together do not all reconnect together.
		life := time.Duration(float64(s.cfg.MaxStreamLife) * (0.75 + 0.5*rand.Float64()))
		lifetime := time.AfterFunc(life, st.end)
		st.onClose(func() { lifetime.Stop() })
	}
	s.streams.add(st)

	// Kicks come from the store's notifications and from here; close ends
	// the notifications first, so that no delivery starts after the wait.
	st.onClose(st.deliveries.Wait)
	st.onClose(s.store.Subscribe(st.m, func(upto uint64) {
		if upto == 0 {
			st.recheck.Store(true)
		}
		st.kick()
	}))
	st.kick() // the ready frame and the backlog
}

// serve runs r3labs' handler until the stream ends, then closes it.
func (st *eventStream) serve() {
	// r3labs takes the stream name from ?stream= and would answer a
	// Last-Event-ID itself: hand it a request with neither of ours.
	req := (&http.Request{Method: http.MethodGet, URL: &url.URL{RawQuery: "stream=" + st.id}, Header: http.Header{}}).WithContext(st.ctx)
	st.s.events.ServeHTTP(st.w, req)
	st.end()
	st.close()
}

// end stops an open stream: r3labs' handler returns, and a write blocked
// on a full TCP buffer fails at once. The reader resumes from its last id.
// Any goroutine may call it, any number of times.
func (st *eventStream) end() {
	st.cancel()
	st.w.evict()
}

// kick makes the stream read the store again.
func (st *eventStream) kick() {
	if st.pending.Add(1) != 1 {
		return // the delivery goroutine will read again
	}
	st.startDelivery()
}

// run is the delivery goroutine: it serves kicks until none is left, then
// lingers for the next one (warmdelivery.go).
func (st *eventStream) run() {
	defer st.deliveries.Done()
	select {
	case <-st.subscribed:
	case <-st.ctx.Done():
		return
	}
	t := time.NewTimer(deliveryLinger)
	defer t.Stop()
	for {
		kicks := st.pending.Load()
		if !st.deliver() {
			st.end()
			return
		}
		if st.pending.CompareAndSwap(kicks, 0) && !st.linger(t) {
			return
		}
	}
}

// deliver publishes the ready frame (the first time) and everything the
// store holds for the member after the last id sent. It reports false when
// the stream must end: the member is gone, the store failed (logged), or
// the reader stalled.
func (st *eventStream) deliver() bool {
	s := st.s
	first := !st.ready
	if first && s.cfg.SSEPadding > 0 {
		// Some middleboxes hold a response until a few KiB have passed.
		if !st.publish(&sse.Event{Comment: bytes.Repeat([]byte(" "), s.cfg.SSEPadding)}) {
			return false
		}
	}
	for {
		if st.recheck.Swap(false) {
			if err := s.stillMember(st.ctx, st.m, st.token); err != nil {
				st.farewell(err)
				return false
			}
		}
		// The first read acknowledges the cursor the client resumed from.
		msgs, start, err := s.store.Read(st.ctx, st.m, store.ReadRequest{After: st.last, Limit: readBatch, Acknowledge: first})
		if err != nil {
			st.farewell(err)
			// ErrUnauthorized: the member left or was removed; a cancelled
			// context: the stream is ending anyway.
			if !errors.Is(err, store.ErrUnauthorized) && st.ctx.Err() == nil {
				s.log.Error("read for stream", "room", st.m.Room, "client", st.m.ID, "stream", st.id, "err", err)
			}
			return false
		}
		if first {
			next := strconv.FormatUint(start, 10)
			ready := &sse.Event{ID: []byte(next), Event: []byte("ready"), Retry: []byte(retryMillis), Data: []byte(`{"next":` + next + `}`)}
			if !st.publish(ready) {
				return false
			}
			st.last, st.ready, first = start, true, false
		}
		for _, msg := range msgs {
			if !st.publish(&sse.Event{ID: strconv.AppendUint(nil, msg.ID, 10), Data: msg.Data}) {
				return false
			}
			st.last = msg.ID
		}
		s.metrics.deliveredSSE.Add(float64(len(msgs)))
		if len(msgs) < readBatch { // else: more backlog, read on at once
			return true
		}
	}
}

// farewell sends the last frame of a member the application removed
// (kicked, or its room closed: farewellOf); other ends get none.
func (st *eventStream) farewell(err error) {
	if data := farewellOf(err, st.m.Room); data != nil && st.publish(&sse.Event{Data: data}) {
		// The stream ends when deliver returns: first let r3labs write
		// the frame (it is rare; a short wait on the count is enough).
		deadline := time.Now().Add(st.s.cfg.StallTimeout)
		for !st.w.frames.flushed() && time.Now().Before(deadline) && st.ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// publish hands one frame to the stream's r3labs stream. A reader that has
// not made room for it within StallTimeout is evicted: the write deadline
// unblocks a write stuck on a full TCP buffer.
func (st *eventStream) publish(ev *sse.Event) bool {
	deadline := time.Now().Add(st.s.cfg.StallTimeout)
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 100*time.Millisecond) {
		st.w.frames.queued()
		if st.s.events.TryPublish(st.id, ev) {
			return true
		}
		st.w.frames.dropped()
		if time.Now().After(deadline) {
			st.w.evict()
			st.w.fail(true)
			return false
		}
		select {
		case <-time.After(backoff):
		case <-st.ctx.Done():
			return false
		}
	}
}

// heartbeat publishes a comment on every open stream. A stream whose buffer
// is full gets none: it has frames to send, and the write deadline evicts
// its reader if it stopped reading.
func (s *Server) heartbeat() {
	for _, st := range s.streams.list() {
		s.events.TryPublish(st.id, &sse.Event{Comment: []byte("keepalive")})
	}
}
