package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
// stream, fed by a goroutine of ours that reads the store, so replay and
// resume come from disk, a slow reader can block only its own stream, and a
// reader that takes no frame for StallTimeout is evicted (it reconnects and
// resumes from its last id).

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

// subscriptions tells a feeder when r3labs has registered its connection:
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
		if s.isDraining() {
			fail(w, errorf(503, "shutting_down", "server is shutting down"))
			return
		}
		release, ok := s.openListener(w, r)
		if !ok {
			return
		}
		defer release()
		defer s.presence.open(m)()
		s.metrics.streams.Inc()
		defer s.metrics.streams.Dec()

		id := fmt.Sprintf("%s-%d", m.ID, s.streamN.Add(1))
		subscribed := s.subs.expect(id)
		s.events.CreateStream(id)
		ctx, end := context.WithCancel(r.Context())
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.cfg.StallTimeout, failed: func(stalled bool) {
			if stalled {
				s.metrics.evicted.Inc()
				s.log.Info("evicted stalled stream", "stream", id)
			}
			end()
		}}
		fed := make(chan struct{})
		go func() {
			defer close(fed)
			defer end()
			s.feed(ctx, dw, m, cursor, id, subscribed)
		}()

		// r3labs takes the stream name from ?stream= and would answer a
		// Last-Event-ID itself: hand it a request with neither of ours.
		req := r.WithContext(ctx)
		u := *r.URL
		u.RawQuery = "stream=" + url.QueryEscape(id)
		req.URL = &u
		req.Header = r.Header.Clone()
		req.Header.Del("Last-Event-ID")
		s.events.ServeHTTP(dw, req)

		end()
		<-fed
		s.subs.forget(id)
		s.events.RemoveStream(id) // only now: see the notes on the goroutine leak
	})
}

// feed sends the ready frame, the backlog after cursor, then every new
// message for m, and heartbeats, until ctx ends, the server drains, the
// member is gone, the stream reaches its lifetime, or the reader stalls.
func (s *Server) feed(ctx context.Context, w *deadlineWriter, m store.Member, cursor uint64, id string, subscribed <-chan struct{}) {
	select {
	case <-subscribed:
	case <-ctx.Done():
		return
	}
	var lifetime <-chan time.Time
	if s.cfg.MaxStreamLife > 0 {
		// Randomized so that streams opened together do not all reconnect together.
		life := time.Duration(float64(s.cfg.MaxStreamLife) * (0.75 + 0.5*rand.Float64()))
		t := time.NewTimer(life)
		defer t.Stop()
		lifetime = t.C
	}

	if s.cfg.SSEPadding > 0 {
		// Some middleboxes hold a response until a few KiB have passed.
		if !s.publish(ctx, w, id, &sse.Event{Comment: bytes.Repeat([]byte(" "), s.cfg.SSEPadding)}) {
			return
		}
	}
	woken := s.hub.wait(m)
	msgs, start, err := s.store.Read(m, cursor, readBatch, true)
	if err != nil {
		return
	}
	next := strconv.FormatUint(start, 10)
	ready := &sse.Event{ID: []byte(next), Event: []byte("ready"), Retry: []byte(retryMillis), Data: []byte(`{"next":` + next + `}`)}
	if !s.publish(ctx, w, id, ready) {
		return
	}
	last := start
	beat := s.beat.wait()
	for {
		for _, msg := range msgs {
			if !s.publish(ctx, w, id, &sse.Event{ID: strconv.AppendUint(nil, msg.ID, 10), Data: msg.Data}) {
				return
			}
			last = msg.ID
		}
		s.metrics.deliveredSSE.Add(float64(len(msgs)))
		for len(msgs) < readBatch { // else: more backlog, read on at once
			select {
			case <-woken:
			case <-beat:
				beat = s.beat.wait()
				if !s.publish(ctx, w, id, &sse.Event{Comment: []byte("keepalive")}) {
					return
				}
				continue
			case <-ctx.Done():
				return
			case <-s.draining:
				return
			case <-lifetime:
				return
			}
			break
		}
		woken = s.hub.wait(m)
		if msgs, _, err = s.store.Read(m, last, readBatch, false); err != nil {
			return // the member left or was removed
		}
	}
}

// deadlineWriter gives every write to the network a deadline, so that no
// write blocks for longer than the stall timeout, and can evict the reader:
// then every write fails at once.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	evicted atomic.Bool
	once    sync.Once
	failed  func(stalled bool) // called once, at the first failed write
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if d.evicted.Load() {
		return 0, errEvicted
	}
	d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	n, err := d.ResponseWriter.Write(p)
	d.check(err)
	return n, err
}

func (d *deadlineWriter) Flush() {
	if d.evicted.Load() {
		return
	}
	d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	d.check(d.rc.Flush())
}

// check ends the stream at the first failed write: net/http keeps the error,
// so every later frame would be lost.
func (d *deadlineWriter) check(err error) {
	if err != nil {
		d.evicted.Store(true)
		d.once.Do(func() { d.failed(errors.Is(err, os.ErrDeadlineExceeded)) })
	}
}

// evict unblocks a write stuck on a full TCP buffer and fails later ones.
func (d *deadlineWriter) evict() {
	d.evicted.Store(true)
	d.rc.SetWriteDeadline(time.Now())
}

func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

var errEvicted = errors.New("reader evicted")

// publish hands one frame to the connection's r3labs stream. A reader that
// has not made room for it within StallTimeout is evicted: the write
// deadline unblocks a write stuck on a full TCP buffer.
func (s *Server) publish(ctx context.Context, w *deadlineWriter, id string, ev *sse.Event) bool {
	deadline := time.Now().Add(s.cfg.StallTimeout)
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 100*time.Millisecond) {
		if s.events.TryPublish(id, ev) {
			return true
		}
		if time.Now().After(deadline) {
			w.evict()
			w.once.Do(func() { w.failed(true) })
			return false
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return false
		}
	}
}
