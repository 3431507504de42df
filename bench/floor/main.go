// Command floor is the least a server speaking tincan's HTTP API costs:
// the part of the API that `tincan bench -workload pingpong` uses (join,
// the event stream, posts, the long-poll that acknowledges, leave), over
// net/http and httprouter as tincan is, with nothing else: no store, no
// fsync, no limits, no validation of the messages, no replay. It is a
// yardstick for BENCHMARKS (issue 20), never a server to deploy.
//
//	go run ./bench/floor -addr 127.0.0.1:18490 -frames direct
//	tincan bench -url http://127.0.0.1:18490 -rooms 100 -transport sse
//
// -frames says who writes a stream's frames: "direct", the goroutine of
// the post that carries the message, under the stream's lock (no goroutine
// hop: what an in-memory relay such as Collider does), or "r3labs", an
// r3labs/sse stream per connection fed with TryPublish, as tincan does
// (two goroutine hops per frame). The difference between the two is what
// the frame writer the design names costs; what tincan spends above the
// r3labs figure is its own (store, fsync, limits, checks).
//
// It keeps each member's messages in memory until a long-poll acknowledges
// them, replays nothing to a stream, and trusts every token it issued.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/r3labs/sse/v2"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18490", "address to serve on (keep it on loopback)")
	frames := flag.String("frames", "direct", `who writes frames: "direct" (the posting goroutine) or "r3labs" (an r3labs stream per connection)`)
	flag.Parse()
	if *frames != "direct" && *frames != "r3labs" {
		log.Fatalf("-frames %q: want direct or r3labs", *frames)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("floor serving on http://%s (-frames %s)", ln.Addr(), *frames)
	if err := run(ctx, ln, *frames == "r3labs"); err != nil {
		log.Fatal(err)
	}
}

// run serves on ln until ctx ends.
func run(ctx context.Context, ln net.Listener, viaR3labs bool) error {
	f := &floor{rooms: map[string]*room{}, tokens: map[string]*member{}}
	if viaR3labs {
		// A stream's ready frame is published once r3labs has registered
		// its connection: what is published before reaches nobody.
		f.r3 = sse.NewWithCallback(func(token string, _ *sse.Subscriber) {
			f.r3.TryPublish(token, &sse.Event{Event: []byte("ready"), Data: []byte(`{"next":0}`)})
		}, nil)
		f.r3.AutoReplay, f.r3.AutoStream, f.r3.BufferSize = false, false, 32
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	r := httprouter.New()
	r.HandlerFunc("POST", "/rooms/:room/join", f.join)
	r.HandlerFunc("POST", "/rooms/:room/leave", f.leave)
	r.HandlerFunc("POST", "/rooms/:room/messages", f.post)
	r.HandlerFunc("GET", "/rooms/:room/messages", f.poll)
	r.HandlerFunc("GET", "/rooms/:room/events", f.events)
	r.HandlerFunc("GET", "/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	r.Handler("GET", "/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	srv := &http.Server{Handler: r, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type floor struct {
	r3     *sse.Server // nil: frames are written directly
	mu     sync.Mutex
	rooms  map[string]*room
	tokens map[string]*member
}

type room struct {
	name    string
	members []*member
	nextID  uint64
}

type member struct {
	id, token string
	room      *room

	mu     sync.Mutex // guards what follows; held while a frame is written directly
	w      io.Writer  // the open stream (direct frames); nil when none
	flush  func()
	queue  []queued      // what a long-poll has not acknowledged, in id order
	arrive chan struct{} // made by a waiting long-poll, closed when a message is queued
}

type queued struct {
	id  uint64
	msg []byte
}

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func answer(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

func (f *floor) join(w http.ResponseWriter, r *http.Request) {
	name := httprouter.ParamsFromContext(r.Context()).ByName("room")
	m := &member{id: randomString(12), token: randomString(24)}
	f.mu.Lock()
	rm := f.rooms[name]
	if rm == nil {
		rm = &room{name: name}
		f.rooms[name] = rm
	}
	peers := []string{}
	for _, p := range rm.members {
		peers = append(peers, p.id)
	}
	m.room = rm
	rm.members = append(rm.members, m)
	f.tokens[m.token] = m
	f.mu.Unlock()
	if f.r3 != nil {
		f.r3.CreateStream(m.token)
	}
	body, _ := json.Marshal(map[string]any{
		"room": name, "client_id": m.id, "token": m.token, "initiator": len(peers) == 0,
		"peers": peers, "members": []any{}, "capacity": 2, "ice_servers": []any{},
	})
	answer(w, http.StatusCreated, body)
}

// memberOf is the member whose token r carries, or nil.
func (f *floor) memberOf(r *http.Request) *member {
	_, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokens[token]
}

func (f *floor) leave(w http.ResponseWriter, r *http.Request) {
	m := f.memberOf(r)
	if m == nil {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	delete(f.tokens, m.token)
	rm := m.room
	for i, p := range rm.members {
		if p == m {
			rm.members = append(rm.members[:i:i], rm.members[i+1:]...)
			break
		}
	}
	if len(rm.members) == 0 {
		delete(f.rooms, rm.name)
	}
	f.mu.Unlock()
	if f.r3 != nil {
		f.r3.RemoveStream(m.token)
	}
	w.WriteHeader(http.StatusNoContent)
}

// post relays the body to the sender's peers as {"id":N,"from":"…",…body}.
func (f *floor) post(w http.ResponseWriter, r *http.Request) {
	m := f.memberOf(r)
	if m == nil {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil || len(body) < 2 || body[0] != '{' {
		http.Error(w, "want a JSON object", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	m.room.nextID++
	id := m.room.nextID
	peers := append([]*member(nil), m.room.members...)
	f.mu.Unlock()

	msg := strconv.AppendUint([]byte(`{"id":`), id, 10)
	msg = append(append(append(msg, `,"from":"`...), m.id...), `",`...)
	msg = append(msg, body[1:]...)
	for _, p := range peers {
		if p != m {
			f.deliver(p, id, msg)
		}
	}
	answer(w, http.StatusCreated, append(strconv.AppendUint([]byte(`{"id":`), id, 10), '}'))
}

// deliver queues msg for p's long-polls and writes it to p's stream.
func (f *floor) deliver(p *member, id uint64, msg []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.queue = append(p.queue, queued{id, msg})
	if p.arrive != nil {
		close(p.arrive)
		p.arrive = nil
	}
	if f.r3 != nil {
		f.r3.TryPublish(p.token, &sse.Event{ID: strconv.AppendUint(nil, id, 10), Data: msg})
		return
	}
	if p.w == nil {
		return
	}
	frame := strconv.AppendUint([]byte("id: "), id, 10)
	frame = append(append(append(frame, "\ndata: "...), msg...), "\n\n"...)
	p.w.Write(frame)
	p.flush()
}

// poll answers with the messages after since, waiting up to wait seconds
// for one; since acknowledges (drops) what came before it.
func (f *floor) poll(w http.ResponseWriter, r *http.Request) {
	m := f.memberOf(r)
	if m == nil {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	since, _ := strconv.ParseUint(q.Get("since"), 10, 64)
	wait, _ := strconv.ParseFloat(q.Get("wait"), 64)
	timer := time.NewTimer(time.Duration(wait * float64(time.Second)))
	defer timer.Stop()
	for {
		m.mu.Lock()
		i := 0
		for i < len(m.queue) && m.queue[i].id <= since {
			i++
		}
		m.queue = m.queue[i:]
		msgs := m.queue
		if len(msgs) == 0 && wait > 0 && m.arrive == nil {
			m.arrive = make(chan struct{})
		}
		arrive := m.arrive
		m.mu.Unlock()
		if len(msgs) > 0 || wait <= 0 {
			b := []byte(`{"messages":[`)
			next := since
			for i, x := range msgs {
				if i > 0 {
					b = append(b, ',')
				}
				b, next = append(b, x.msg...), x.id
			}
			answer(w, http.StatusOK, fmt.Appendf(b, `],"next":%d}`, next))
			return
		}
		select {
		case <-arrive:
		case <-timer.C:
			wait = 0
		case <-r.Context().Done():
			return
		}
	}
}

func (f *floor) events(w http.ResponseWriter, r *http.Request) {
	m := f.memberOf(r)
	if m == nil {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	if f.r3 != nil {
		// r3labs takes the stream's name from ?stream= only.
		q := r.URL.Query()
		q.Set("stream", m.token)
		r2 := r.Clone(r.Context())
		r2.URL.RawQuery, r2.Header = q.Encode(), http.Header{}
		f.r3.ServeHTTP(w, r2)
		return
	}
	flusher := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	m.mu.Lock()
	io.WriteString(w, "event: ready\ndata: {\"next\":0}\n\n")
	flusher.Flush()
	m.w, m.flush = w, flusher.Flush
	m.mu.Unlock()
	<-r.Context().Done()
	m.mu.Lock()
	m.w, m.flush = nil, nil
	m.mu.Unlock()
}
