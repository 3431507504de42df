package main

// The event stream as the tests read it: opening one, parsing its SSE
// frames as they come, and the checks on them.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	tincan "github.com/tincan/tincan/client"
)

// frame is one SSE frame.
type frame struct {
	ID, Event, Data, Retry string
	Comment                bool
}

// stream is an open SSE connection, read into frames as it comes. err is how
// the response ended (nil: a clean end), valid once frames is closed.
type stream struct {
	resp   *http.Response
	frames chan frame
	err    error
	cancel context.CancelFunc
}

// events opens c's event stream with extra query (such as "&since=3") and
// request headers; it fails t unless the answer is 200, and closes at the
// end of t. Up to 1024 frames that the test has not taken yet are read at
// once, as a browser would.
func (c *client) events(t testing.TB, query string, header ...string) *stream {
	t.Helper()
	s, err := c.openEvents(context.Background(), 1024, query, header...)
	if err != nil {
		t.Fatalf("events of %s at %s: %v", c.Room, c.ep.URL(), err)
	}
	t.Cleanup(s.close)
	return s
}

// openEvents is events with room for size frames not taken yet, ended when
// ctx is done; it returns errors rather than failing a test.
func (c *client) openEvents(ctx context.Context, size int, query string, header ...string) (*stream, error) {
	return c.ep.openStream(ctx, "/rooms/"+c.Room+"/events?token="+c.Token+query, size, header...)
}

// streamHeaderTimeout bounds the wait for an event stream's response header:
// a proxy that buffers the stream holds back even that.
const streamHeaderTimeout = 5 * time.Second

// openStream opens the event stream at path with the given request headers
// and reads it into frames, with room for size frames not taken yet, until
// the response ends or ctx is done or the stream is closed. A status other
// than 200 is an error.
func (e *endpoint) openStream(ctx context.Context, path string, size int, header ...string) (*stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, "GET", e.URL()+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	setHeader(req, header)
	headerTimer := time.AfterFunc(streamHeaderTimeout, cancel)
	resp, err := e.hc.Do(req)
	if !headerTimer.Stop() {
		cancel()
		if err == nil {
			resp.Body.Close()
		}
		return nil, fmt.Errorf("no response header within %v (does a proxy buffer the stream?)", streamHeaderTimeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	s := &stream{resp: resp, frames: make(chan frame, size), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		s.err = readFrames(ctx, resp.Body, s.frames)
		close(s.frames)
	}()
	return s, nil
}

func (s *stream) close() { s.cancel(); s.resp.Body.Close() }

// readFrames passes the SSE frames of r, parsed by the Go client's
// EventReader, to out until r ends or ctx is done; it returns the read
// error (nil for a clean end of r).
func readFrames(ctx context.Context, r io.Reader, out chan<- frame) error {
	er := tincan.NewEventReader(r)
	for {
		ev, err := er.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		f := frame{ID: string(ev.ID), Event: string(ev.Name), Data: string(ev.Data), Retry: string(ev.Retry), Comment: ev.Comment}
		select {
		case out <- f:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// nextWithin returns the next non-comment frame, or false when the stream
// ends or none comes within d.
func (s *stream) nextWithin(d time.Duration) (frame, bool) {
	timeout := time.After(d)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				return frame{}, false
			}
			if !f.Comment {
				return f, true
			}
		case <-timeout:
			return frame{}, false
		}
	}
}

// next returns the next non-comment frame, failing t when the stream ends
// or none comes within 30s.
func (s *stream) next(t testing.TB) frame {
	t.Helper()
	f, ok := s.nextWithin(30 * time.Second)
	if !ok {
		t.Fatal("the stream ended, or sent no frame within 30s")
	}
	return f
}

// message returns the next frame's data as a message, checking that the
// frame is a plain message frame whose id equals the message id.
func (s *stream) message(t testing.TB) map[string]any {
	t.Helper()
	m, err := frameMessage(s.next(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// frameMessage decodes a message frame, checking that it has no event and
// that its id is the message's.
func frameMessage(f frame) (map[string]any, error) {
	if f.Event != "" {
		return nil, fmt.Errorf("message frame with event %q: %+v", f.Event, f)
	}
	var m map[string]any
	if err := jsonNumbers([]byte(f.Data), &m); err != nil {
		return nil, fmt.Errorf("frame %+v: %v", f, err)
	}
	if fmt.Sprint(m["id"]) != f.ID {
		return nil, fmt.Errorf("frame id %s, message id %v", f.ID, m["id"])
	}
	return m, nil
}

// ready reads the ready frame and returns its cursor.
func (s *stream) ready(t testing.TB) uint64 {
	t.Helper()
	f := s.next(t)
	if f.Event != "ready" || f.Retry == "" {
		t.Fatalf("first frame %+v, want event ready with retry", f)
	}
	var r struct{ Next uint64 }
	if err := json.Unmarshal([]byte(f.Data), &r); err != nil || strconv.FormatUint(r.Next, 10) != f.ID {
		t.Fatalf("ready frame %+v", f)
	}
	return r.Next
}

// quiet fails t if a message frame arrives within d.
func (s *stream) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case f, ok := <-s.frames:
			if ok && !f.Comment {
				t.Fatalf("unexpected frame %+v", f)
			}
			if !ok {
				return
			}
		case <-timeout:
			return
		}
	}
}

// drain returns the frames of a stream whose server is gone, without
// comments, and fails t if it does not end within 30s.
func (s *stream) drain(t testing.TB) []frame {
	t.Helper()
	var frames []frame
	timeout := time.After(30 * time.Second)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				return frames
			}
			if !f.Comment {
				frames = append(frames, f)
			}
		case <-timeout:
			t.Fatal("the event stream did not end within 30s")
		}
	}
}
