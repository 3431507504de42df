package handlers

// Benchmarks of the HTTP API's hot paths: posting a message, and
// writing and delivering event-stream frames. Run with
//
//	go test -run '^$' -bench . ./handlers/
//
// BENCHMARKS.md has the numbers and what they mean.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/r3labs/sse/v2"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
)

type benchMember struct {
	store.Member
	token string
}

func benchAPI(b *testing.B) (*Server, *boltstore.Store) {
	b.Helper()
	st, err := boltstore.Open(filepath.Join(b.TempDir(), "bench.db"), boltstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	s := New(Config{}, st)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	b.Cleanup(func() {
		s.Drain()
		cancel()
		<-ran
		st.Close()
	})
	return s, st
}

// benchJoin joins a member through the handler.
func benchJoin(b *testing.B, s *Server, room string) benchMember {
	b.Helper()
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("POST", "/rooms/"+room+"/join", nil))
	if rec.Code != 201 {
		b.Fatalf("join: %d %s", rec.Code, rec.Body)
	}
	var a struct {
		ClientID string `json:"client_id"`
		Token    string `json:"token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		b.Fatal(err)
	}
	return benchMember{store.Member{Room: room, ID: a.ClientID}, a.Token}
}

var benchBody = `{"type":"ping","seq":1,"pad":"` + strings.Repeat("x", 160) + `"}`

// BenchmarkPost is a POST /rooms/{room}/messages through the whole handler
// stack (middleware, auth, validation, group commit, wake-up), without the
// network, from many clients at once so that commits are shared.
func BenchmarkPost(b *testing.B) {
	s, st := benchAPI(b)
	const clients = 128
	members := make([]benchMember, clients)
	for i := range members {
		members[i] = benchJoin(b, s, fmt.Sprintf("post-%d", i))
		benchJoin(b, s, fmt.Sprintf("post-%d", i))
	}
	c0, w0 := st.Stats()
	var next, who atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := members[who.Add(1)-1]
			for next.Add(1) <= int64(b.N) {
				req := httptest.NewRequest("POST", "/rooms/"+m.Room+"/messages", strings.NewReader(benchBody))
				req.Header.Set("Authorization", "Bearer "+m.token)
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				if rec.Code != 201 {
					b.Errorf("post: %d %s", rec.Code, rec.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	c1, w1 := st.Stats()
	b.ReportMetric(float64(w1-w0)/float64(c1-c0), "writes/commit")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "posts/s")
}

// flushCounter is a ResponseWriter that discards what is written and counts
// flushes (r3labs flushes once per frame).
type flushCounter struct {
	h       http.Header
	flushes atomic.Int64
	target  atomic.Int64
	done    chan struct{}
}

func (f *flushCounter) Header() http.Header         { return f.h }
func (f *flushCounter) Write(p []byte) (int, error) { return len(p), nil }
func (f *flushCounter) WriteHeader(int)             {}
func (f *flushCounter) Flush() {
	if f.flushes.Add(1) == f.target.Load() {
		close(f.done)
	}
}

var benchData = []byte(`{"id":123456,"from":"AAAAAAAAAAAAAAAA","type":"ping","seq":1,"pad":"` + strings.Repeat("x", 140) + `"}`)

// BenchmarkSSEFrameR3labs: one ~200-byte message frame through r3labs/sse
// as the server uses it (TryPublish -> stream goroutine -> subscriber channel
// -> handler goroutine -> fmt.Fprintf -> Flush), to a writer that discards.
func BenchmarkSSEFrameR3labs(b *testing.B) {
	var subs subscriptions
	srv := newEventServer(&subs)
	defer srv.Close()
	const id = "bench"
	ready := subs.expect(id)
	srv.CreateStream(id)
	w := &flushCounter{h: http.Header{}, done: make(chan struct{})}
	w.target.Store(int64(b.N) + 1) // + the flush of the headers
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.ServeHTTP(w, httptest.NewRequestWithContext(ctx, "GET", "/?stream="+id, nil))
	}()
	<-ready
	b.ResetTimer()
	for i := range b.N {
		ev := &sse.Event{ID: strconv.AppendUint(nil, uint64(i), 10), Data: benchData}
		for !srv.TryPublish(id, ev) {
			time.Sleep(10 * time.Microsecond) // as publish does, but shorter
		}
	}
	<-w.done
	b.StopTimer()
	cancel()
	<-served
	srv.RemoveStream(id)
}

// BenchmarkSSEFrameDirect: the same frame written by the feeding goroutine
// itself into the connection's buffer, then flushed: what delivery costs
// without the library's goroutines and channels (for comparison).
func BenchmarkSSEFrameDirect(b *testing.B) {
	w := &flushCounter{h: http.Header{}, done: make(chan struct{})}
	bw := bufio.NewWriterSize(io.Discard, 4096)
	var buf []byte
	for i := 0; b.Loop(); i++ {
		buf = append(buf[:0], "id: "...)
		buf = strconv.AppendUint(buf, uint64(i), 10)
		buf = append(buf, "\ndata: "...)
		buf = append(buf, benchData...)
		buf = append(buf, "\n\n"...)
		bw.Write(buf)
		bw.Flush()
		w.Flush()
	}
}

// streamReader reads message frames of an event stream and returns their ids.
type streamReader struct {
	resp *http.Response
	br   *bufio.Reader
}

func openStream(b *testing.B, url string, m benchMember, since uint64) *streamReader {
	b.Helper()
	req, _ := http.NewRequest("GET", url+"/rooms/"+m.Room+"/events?since="+strconv.FormatUint(since, 10), nil)
	req.Header.Set("Authorization", "Bearer "+m.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b.Fatalf("events: %s", resp.Status)
	}
	b.Cleanup(func() { resp.Body.Close() })
	return &streamReader{resp: resp, br: bufio.NewReaderSize(resp.Body, 64<<10)}
}

// next returns the id of the next message frame (skipping ready and comments).
func (r *streamReader) next(b *testing.B) uint64 {
	var id []byte
	data, ready := false, false
	for {
		line, err := r.br.ReadSlice('\n')
		if err != nil {
			b.Fatalf("stream: %v", err)
		}
		switch {
		case len(line) == 1: // end of frame
			if data && !ready {
				n, _ := strconv.ParseUint(string(id), 10, 64)
				return n
			}
			data, ready = false, false
		case bytes.HasPrefix(line, []byte("id: ")):
			id = append(id[:0], bytes.TrimSpace(line[4:])...)
		case bytes.HasPrefix(line, []byte("data: ")):
			data = true
		case bytes.HasPrefix(line, []byte("event: ready")):
			ready = true
		}
	}
}

// BenchmarkSSEDelivery is the delivery path over real HTTP on loopback:
//
//   - live: a message is committed (Append) and its room woken, then read
//     from the recipient's stream; one at a time, so it includes one commit
//     (fsync) per message.
//   - replay: a stream opens on a backlog and reads it (store reads in
//     batches, frames through r3labs); ns/op is per message.
func BenchmarkSSEDelivery(b *testing.B) {
	b.Run("live", func(b *testing.B) {
		s, st := benchAPI(b)
		ts := httptest.NewServer(s)
		defer ts.Close()
		a, r := benchJoin(b, s, "live"), benchJoin(b, s, "live")
		stream := openStream(b, ts.URL, r, st.LastID())
		for b.Loop() {
			posted, err := st.Append(context.Background(), store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(benchBody[1 : len(benchBody)-1])}}})
			if err != nil {
				b.Fatal(err)
			}
			if got := stream.next(b); got != posted.ID {
				b.Fatalf("got id %d, want %d", got, posted.ID)
			}
		}
		ts.CloseClientConnections()
	})
	b.Run("replay", func(b *testing.B) {
		s, st := benchAPI(b)
		ts := httptest.NewServer(s)
		defer ts.Close()
		a, r := benchJoin(b, s, "replay"), benchJoin(b, s, "replay")
		since := st.LastID()
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					if _, err := st.Append(context.Background(), store.Post{From: a.Member, Messages: []store.Draft{{Fields: []byte(benchBody[1 : len(benchBody)-1])}}}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		last := st.LastID()
		b.ResetTimer()
		stream := openStream(b, ts.URL, r, since)
		for n := 0; n < b.N; n++ {
			if id := stream.next(b); id == last {
				break
			}
		}
		b.StopTimer()
		ts.CloseClientConnections()
	})
}
