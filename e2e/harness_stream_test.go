package e2e

// Raw event streams, for the tests that check the frames themselves (the
// ready frame a stream begins with, how it ends at a shutdown): parsed by
// the Go client's EventReader.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/tincan/tincan/client"
)

// frame is one SSE frame, copied out of the EventReader.
type frame struct {
	ID, Event, Data, Retry string
	Comment                bool
}

// stream is an open event stream read into frames as they come; err is
// how it ended (nil: the clean end of the response), valid once frames is
// closed.
type stream struct {
	frames chan frame
	err    error
	close  context.CancelFunc
}

// openEvents opens m's event stream at e, resuming after lastEventID when
// it is not 0, with room for 64 Ki frames not taken yet. A status other
// than 200 is an error. It ends when ctx is done or close is called.
func (e endpoint) openEvents(ctx context.Context, m *client.Member, lastEventID uint64) (*stream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, "GET", e.url()+"/rooms/"+m.Room+"/events", nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+m.Token)
	if lastEventID > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatUint(lastEventID, 10))
	}
	resp, err := e.hc.Do(req)
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
	s := &stream{frames: make(chan frame, 1<<16), close: cancel}
	go func() {
		defer close(s.frames)
		defer resp.Body.Close()
		r := client.NewEventReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					s.err = err
				}
				return
			}
			s.frames <- frame{ID: string(ev.ID), Event: string(ev.Name), Data: string(ev.Data), Retry: string(ev.Retry), Comment: ev.Comment && !ev.HasData && len(ev.Name) == 0}
		}
	}()
	return s, nil
}

// events is openEvents failing t, closed at the end of t.
func (e endpoint) events(t testing.TB, m *client.Member, lastEventID uint64) *stream {
	t.Helper()
	s, err := e.openEvents(context.Background(), m, lastEventID)
	if err != nil {
		t.Fatalf("events of %s at %s: %v", m.ClientID, e.url(), err)
	}
	t.Cleanup(s.close)
	return s
}

// next returns the next frame that is not a comment, failing t when the
// stream ends or none comes within 30 s.
func (s *stream) next(t testing.TB) frame {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				t.Fatalf("the stream ended (%v)", s.err)
			}
			if !f.Comment {
				return f
			}
		case <-timeout:
			t.Fatal("no frame within 30s")
		}
	}
}

// ready reads the ready frame (with a retry field, its id the cursor of
// its data) and returns its cursor.
func (s *stream) ready(t testing.TB) uint64 {
	t.Helper()
	f := s.next(t)
	var r struct{ Next uint64 }
	if f.Event != "ready" || f.Retry == "" || json.Unmarshal([]byte(f.Data), &r) != nil || strconv.FormatUint(r.Next, 10) != f.ID {
		t.Fatalf("first frame %+v, want event ready with retry and its cursor as id", f)
	}
	return r.Next
}

// message reads the next frame as a message frame: no event name, its id
// the message's.
func (s *stream) message(t testing.TB) map[string]any {
	t.Helper()
	m, err := frameMessage(s.next(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func frameMessage(f frame) (map[string]any, error) {
	var m map[string]any
	if f.Event != "" {
		return nil, fmt.Errorf("message frame with event %q: %+v", f.Event, f)
	}
	if err := decodeNumbers([]byte(f.Data), &m); err != nil {
		return nil, fmt.Errorf("frame %+v: %v", f, err)
	}
	if fmt.Sprint(m["id"]) != f.ID {
		return nil, fmt.Errorf("frame id %s, message id %v", f.ID, m["id"])
	}
	return m, nil
}

// quiet fails t if a frame other than a comment arrives within d.
func (s *stream) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				return
			}
			if !f.Comment {
				t.Fatalf("unexpected frame %+v", f)
			}
		case <-timeout:
			return
		}
	}
}

// rest returns the frames until the stream ends, without comments,
// failing t if it does not end within 30 s.
func (s *stream) rest(t testing.TB) []frame {
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
