package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/r3labs/sse/v2"

	"github.com/tincan/tincan/store"
)

// The event stream. r3labs/sse only formats and flushes frames here (see
// ../shared/notes/r3labs-sse.md): every connection gets its own r3labs
// stream, so a slow reader can block only its own stream.
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

// retryMillis is the reconnect delay the ready frame asks for.
const retryMillis = "2000"

func newEventServer(subs *subscriptions) *sse.Server {
	srv := sse.NewWithCallback(func(id string, _ *sse.Subscriber) { subs.ready(id) }, nil)
	srv.AutoReplay = false // replay is ours, from the store
	srv.AutoStream = false
	srv.SplitData = true
	srv.BufferSize = 32
	srv.Headers = map[string]string{
		"Cache-Control":     "no-cache, no-transform",
		"X-Accel-Buffering": "no",
	}
	return srv
}

// subscriptions tells a stream when r3labs has registered its connection:
// events published to a stream before that are dropped.
type subscriptions struct{ m sync.Map } // stream id -> chan struct{}

func (s *subscriptions) expect(id string) <-chan struct{} {
	ch := make(chan struct{})
	s.m.Store(id, ch)
	return ch
}

func (s *subscriptions) ready(id string) {
	if ch, ok := s.m.LoadAndDelete(id); ok {
		close(ch.(chan struct{}))
	}
}

func (s *subscriptions) forget(id string) { s.m.Delete(id) }

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
			raw = r.URL.Query().Get("since")
		}
		cursor, err := parseCursor(raw)
		if err != nil {
			fail(w, err)
			return
		}
		release, ok := s.openListener(w, r)
		if !ok {
			return
		}
		if !s.admitStream() {
			release()
			fail(w, errorf(503, "shutting_down", "server is shutting down"))
			return
		}
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			// The head is written by rawResponse; the CORS headers set so
			// far go with it.
			st := s.newEventStream(context.Background(), m, cursor, release, conn, &rawResponse{conn: conn, proto: r.Proto, header: w.Header().Clone()})
			st.unwatch = s.hangups.watch(conn, st.end)
			go st.serve()
			return
		}
		s.newEventStream(r.Context(), m, cursor, release, nil, w).serve()
	})
}

// eventStream is one open event stream.
type eventStream struct {
	s           *Server
	id          string // its r3labs stream
	m           store.Member
	ctx         context.Context
	cancel      context.CancelFunc
	w           *deadlineWriter
	conn        net.Conn // the hijacked connection; nil over HTTP/2
	unwatch     func()   // stops watching conn for a hang-up
	subscribed  <-chan struct{}
	lifetime    *time.Timer
	closed      func() // undoes the bookkeeping of the open stream
	unsubscribe func() // ends the store's notifications

	// Kicks not yet served. The delivery goroutine runs while it is above
	// zero, so there is at most one, and it reads again if a kick came
	// while it read.
	pending atomic.Int64
	// Owned by the delivery goroutine of the moment (pending orders them).
	last  uint64 // the last id sent, or where reading starts
	ready bool   // the ready frame is out

	mu         sync.Mutex
	ending     bool
	deliveries sync.WaitGroup
}

// newEventStream registers a stream for m, admitted by admitStream, that
// starts after cursor; the caller then runs serve. release is called when
// the stream ends.
func (s *Server) newEventStream(parent context.Context, m store.Member, cursor uint64, release func(), conn net.Conn, w http.ResponseWriter) *eventStream {
	st := &eventStream{s: s, m: m, conn: conn, last: cursor}
	st.id = strconv.FormatUint(s.streamN.Add(1), 10)
	st.ctx, st.cancel = context.WithCancel(parent)
	st.w = &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.cfg.StallTimeout, failed: func(stalled bool) {
		if stalled {
			s.metrics.evicted.Inc()
			s.log.Info("evicted stalled stream", "room", m.Room, "client", m.ID, "stream", st.id)
		}
		st.end()
	}}
	st.subscribed = s.subs.expect(st.id)
	s.events.CreateStream(st.id)
	presenceClosed := s.store.Hold(m)
	s.metrics.streams.Inc()
	st.closed = func() {
		s.metrics.streams.Dec()
		presenceClosed()
		release()
	}
	if s.cfg.MaxStreamLife > 0 {
		// Randomized so that streams opened together do not all reconnect together.
		life := time.Duration(float64(s.cfg.MaxStreamLife) * (0.75 + 0.5*rand.Float64()))
		st.lifetime = time.AfterFunc(life, st.end)
	}

	s.streamsMu.Lock()
	s.streams[st] = struct{}{}
	s.streamsMu.Unlock()
	st.unsubscribe = s.store.Subscribe(m, func(uint64) { st.kick() })
	st.kick() // the ready frame and the backlog
	return st
}

// admitStream counts a new stream in, unless the server is draining. Drain
// waits for the streams counted in.
func (s *Server) admitStream() bool {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.isDraining() {
		return false
	}
	s.streamsWG.Add(1)
	return true
}

// serve runs r3labs' handler until the stream ends, then cleans up.
func (st *eventStream) serve() {
	s := st.s
	// r3labs takes the stream name from ?stream= and would answer a
	// Last-Event-ID itself: hand it a request with neither of ours.
	req := (&http.Request{Method: http.MethodGet, URL: &url.URL{RawQuery: "stream=" + st.id}, Header: http.Header{}}).WithContext(st.ctx)
	s.events.ServeHTTP(st.w, req)

	st.end()
	st.mu.Lock()
	st.ending = true // no more deliveries
	st.mu.Unlock()
	st.deliveries.Wait()
	st.unsubscribe()
	if st.lifetime != nil {
		st.lifetime.Stop()
	}
	s.subs.forget(st.id)
	s.events.RemoveStream(st.id) // only now: see the notes on the goroutine leak
	if st.conn != nil {
		st.unwatch()
		st.conn.Close()
	}
	st.closed()
	s.streamsMu.Lock()
	delete(s.streams, st)
	s.streamsMu.Unlock()
	s.streamsWG.Done()
}

// end stops the stream: r3labs' handler returns, and a write blocked on a
// full TCP buffer fails at once. The reader resumes from its last id.
func (st *eventStream) end() {
	st.cancel()
	st.w.evict()
}

// kick makes the stream read the store again.
func (st *eventStream) kick() {
	if st.pending.Add(1) != 1 {
		return // the delivery goroutine will read again
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ending {
		return
	}
	st.deliveries.Add(1)
	go st.run()
}

// run is the delivery goroutine: it serves kicks until none is left.
func (st *eventStream) run() {
	defer st.deliveries.Done()
	select {
	case <-st.subscribed:
	case <-st.ctx.Done():
		return
	}
	for {
		kicks := st.pending.Load()
		if !st.deliver() {
			st.end()
			return
		}
		if st.pending.CompareAndSwap(kicks, 0) {
			return
		}
	}
}

// deliver publishes the ready frame (the first time) and everything the
// store holds for the member after the last id sent. It reports false when
// the stream must end: the member is gone, or the reader stalled.
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
		// The first read acknowledges the cursor the client resumed from.
		msgs, start, err := s.store.Read(st.ctx, st.m, store.ReadRequest{After: st.last, Limit: readBatch, Acknowledge: first})
		if err != nil {
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

// publish hands one frame to the stream's r3labs stream. A reader that has
// not made room for it within StallTimeout is evicted: the write deadline
// unblocks a write stuck on a full TCP buffer.
func (st *eventStream) publish(ev *sse.Event) bool {
	deadline := time.Now().Add(st.s.cfg.StallTimeout)
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 100*time.Millisecond) {
		if st.s.events.TryPublish(st.id, ev) {
			return true
		}
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
	for _, st := range s.openStreams() {
		s.events.TryPublish(st.id, &sse.Event{Comment: []byte("keepalive")})
	}
}

func (s *Server) openStreams() []*eventStream {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	list := make([]*eventStream, 0, len(s.streams))
	for st := range s.streams {
		list = append(list, st)
	}
	return list
}

// deadlineWriter gives every write to the network a deadline, so that no
// write blocks for longer than the stall timeout, and can evict the reader:
// then every write fails at once.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	evicted atomic.Bool
	armed   bool // a deadline is set for the frame being written
	once    sync.Once
	failed  func(stalled bool) // called once, at the first failed write
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if d.evicted.Load() {
		return 0, errEvicted
	}
	d.arm()
	n, err := d.ResponseWriter.Write(p)
	d.check(err)
	return n, err
}

// Flush sends the frame and then lifts the deadline: an idle stream must not
// be cut for having sent nothing (HTTP/2 resets a stream when its deadline
// passes, write or not).
func (d *deadlineWriter) Flush() {
	if d.evicted.Load() {
		return
	}
	d.arm()
	err := d.rc.Flush()
	d.check(err)
	if err == nil && !d.evicted.Load() {
		d.rc.SetWriteDeadline(time.Time{})
		d.armed = false
	}
}

// arm sets the deadline once per frame (r3labs writes a frame in several
// pieces). Only the stream's writing goroutine calls it.
func (d *deadlineWriter) arm() {
	if !d.armed {
		d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
		d.armed = true
	}
}

// check ends the stream at the first failed write: net/http keeps the error,
// so every later frame would be lost.
func (d *deadlineWriter) check(err error) {
	if err != nil {
		d.fail(errors.Is(err, os.ErrDeadlineExceeded))
	}
}

// fail marks the writer failed and reports it, once.
func (d *deadlineWriter) fail(stalled bool) {
	d.evicted.Store(true)
	d.once.Do(func() { d.failed(stalled) })
}

// evict unblocks a write stuck on a full TCP buffer and fails later ones.
func (d *deadlineWriter) evict() {
	d.evicted.Store(true)
	d.rc.SetWriteDeadline(time.Now())
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

var errEvicted = errors.New("reader evicted")

// rawResponse is the http.ResponseWriter of a hijacked HTTP/1.x connection.
// It buffers what r3labs writes and sends it on Flush, the head first. The
// body ends when the connection closes (Connection: close), so it needs no
// chunked encoding.
type rawResponse struct {
	conn   net.Conn
	proto  string // the request's: an HTTP/1.0 client gets an HTTP/1.0 answer
	header http.Header
	status int
	buf    []byte
}

func (r *rawResponse) Header() http.Header { return r.header }

func (r *rawResponse) WriteHeader(code int) {
	if r.status != 0 {
		return
	}
	r.status = code
	r.header.Set("Connection", "close")
	r.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	var head bytes.Buffer
	fmt.Fprintf(&head, "%s %03d %s\r\n", r.proto, code, http.StatusText(code))
	r.header.Write(&head)
	head.WriteString("\r\n")
	r.buf = append(r.buf, head.Bytes()...)
	r.header = http.Header{} // sent: later changes go nowhere, as in net/http
}

func (r *rawResponse) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	r.buf = append(r.buf, p...)
	return len(p), nil
}

// FlushError sends what is buffered. http.ResponseController calls it.
func (r *rawResponse) FlushError() error {
	r.WriteHeader(http.StatusOK)
	_, err := r.conn.Write(r.buf)
	r.buf = r.buf[:0]
	if cap(r.buf) > 1024 { // do not hold a large frame's buffer while idle
		r.buf = nil
	}
	return err
}

func (r *rawResponse) Flush() { r.FlushError() }

// SetWriteDeadline is for http.ResponseController.
func (r *rawResponse) SetWriteDeadline(t time.Time) error { return r.conn.SetWriteDeadline(t) }
