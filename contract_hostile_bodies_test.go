package main

// Clients that send a request header and then stall their body: each is
// answered 408 and disconnected at the body deadline, while everybody else
// is served, and what they held is given back.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stalledBody is a connection that sent a request header and part of its
// body, then nothing more (or, trickling, a byte now and then).
type stalledBody struct {
	kind string
	conn net.Conn
	sent time.Time // when the header went out
}

// openStalledBody dials addr and sends a request whose body never arrives
// whole: kind join (a declared length), post (a member's message), chunked
// (a join in chunked encoding) or trickle (a join whose body comes a byte
// every 500 ms, for ever).
func openStalledBody(t *testing.T, addr, kind, token string) *stalledBody {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var req string
	switch kind {
	case "join":
		req = "POST /rooms/stalled/join HTTP/1.1\r\nHost: tincan\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"pass"
	case "post":
		req = "POST /rooms/stalled/messages HTTP/1.1\r\nHost: tincan\r\nAuthorization: Bearer " + token +
			"\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"type\":\"chat\",\"te"
	case "chunked":
		req = "POST /rooms/stalled/join HTTP/1.1\r\nHost: tincan\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n{\"pass"
	case "trickle":
		req = "POST /rooms/stalled/join HTTP/1.1\r\nHost: tincan\r\nContent-Length: 1000\r\n\r\n{"
	}
	s := &stalledBody{kind: kind, conn: conn, sent: time.Now()}
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	if kind == "trickle" {
		go func() {
			for {
				time.Sleep(500 * time.Millisecond)
				if _, err := conn.Write([]byte(" ")); err != nil {
					return // closed by the server, or by the test
				}
			}
		}()
	}
	return s
}

// answer reads the answer to the stalled request and then the end of the
// connection, within a generous time. closed reports whether the server
// closed the connection after the answer (a reset counts: the trickling
// client's bytes reach a socket the server has closed).
func (s *stalledBody) answer() (resp *http.Response, body []byte, after time.Duration, closed bool, err error) {
	s.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	r := bufio.NewReader(s.conn)
	resp, err = http.ReadResponse(r, nil)
	if err != nil {
		return nil, nil, 0, false, err
	}
	after = time.Since(s.sent)
	if body, err = io.ReadAll(resp.Body); err != nil {
		return nil, nil, 0, false, err
	}
	_, err = r.ReadByte()
	closed = errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
	return resp, body, after, closed, nil
}

// settledUsage is this process's goroutines and live heap once the garbage
// is collected.
func settledUsage() (goroutines int, heap uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

func TestStalledBodies(t *testing.T) {
	const (
		bodyTimeout = 3 * time.Second
		stalled     = 300
	)
	// Set through the flag's environment twin, which works like the flag.
	srv := newTestServer(t, withEnv("TINCAN_BODY_TIMEOUT", bodyTimeout.String()))
	alice := srv.join(t, "stalled", 201)
	bob := srv.join(t, "stalled", 201)
	bobEvents := bob.events(t, "")
	bobEvents.ready(t)
	warmUp := alice.post(t, `{"type":"chat","text":"warm-up"}`)
	bobEvents.message(t)

	goroutines0, heap0 := settledUsage()
	kinds := []string{"join", "post", "chunked", "trickle"}
	conns := make([]*stalledBody, stalled)
	for i := range conns {
		conns[i] = openStalledBody(t, srv.addr(), kinds[i%len(kinds)], alice.Token)
	}
	setUp := time.Now()
	// Each held connection is a goroutine of the server (in this process).
	waitFor(t, "the server to hold every stalled connection", func() bool {
		return runtime.NumGoroutine() >= goroutines0+stalled
	})
	goroutinesHeld, heapHeld := settledUsage()

	// Meanwhile a long-poll waits its whole wait, longer than the body
	// deadline: it has no body.
	pollWait := bodyTimeout + time.Second
	type pollResult struct {
		a       answer
		err     error
		elapsed time.Duration
	}
	polled := make(chan pollResult, 1)
	go func() {
		start := time.Now()
		a, err := bob.longPoll(context.Background(), warmUp, fmt.Sprint(pollWait.Seconds()))
		polled <- pollResult{a, err, time.Since(start)}
	}()

	// A normal client is served while the stalled ones are held.
	carol := srv.join(t, "stalled-too", 201)
	dave := srv.join(t, "stalled-too", 201)
	id := carol.post(t, `{"type":"chat","text":"served meanwhile"}`)
	if p := dave.poll(t, 0, "5"); len(p.Messages) == 0 || idOf(p.Messages[len(p.Messages)-1]) != id {
		t.Fatalf("dave's poll during the stall: %+v", p)
	}
	servedIn := time.Since(setUp)
	if servedIn >= bodyTimeout {
		t.Fatalf("the normal client took %v, past the body deadline of %v: it was not served while the stalled ones were held", servedIn, bodyTimeout)
	}

	// Each stalled request is answered 408 request_timeout at its deadline,
	// not before, and its connection closed.
	var wg sync.WaitGroup
	problems := make(chan string, stalled)
	for i, s := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, after, closed, err := s.answer()
			var p struct{ Code string }
			switch {
			case err != nil:
				problems <- fmt.Sprintf("#%d (%s): %v", i, s.kind, err)
			case resp.StatusCode != 408 || resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(body, &p) != nil || p.Code != "request_timeout":
				problems <- fmt.Sprintf("#%d (%s): %d %s %s", i, s.kind, resp.StatusCode, resp.Header.Get("Content-Type"), body)
			case after < bodyTimeout:
				problems <- fmt.Sprintf("#%d (%s): answered after %v, before the deadline of %v", i, s.kind, after, bodyTimeout)
			case !closed:
				problems <- fmt.Sprintf("#%d (%s): the connection stayed open after the 408", i, s.kind)
			}
		}()
	}
	wg.Wait()
	close(problems)
	var all []string
	for p := range problems {
		all = append(all, p)
	}
	if len(all) > 0 {
		t.Fatalf("%d of %d stalled requests were not answered 408 and closed:\n%s", len(all), stalled, strings.Join(all, "\n"))
	}

	r := <-polled
	if r.err != nil || r.a.Status != 200 {
		t.Fatalf("the long-poll during the stall: %v %d %s", r.err, r.a.Status, r.a.Body)
	}
	if p, err := r.a.decodePoll(); err != nil || len(p.Messages) != 0 || r.elapsed < pollWait {
		t.Fatalf("the long-poll answered %s after %v, want nothing after its whole wait of %v", r.a.Body, r.elapsed, pollWait)
	}
	// And the event stream, open through it all, still delivers.
	id = alice.post(t, `{"type":"chat","text":"after the stall"}`)
	if m := bobEvents.message(t); idOf(m) != id {
		t.Fatalf("bob's stream after the stall: %v, want id %d", m, id)
	}

	for _, s := range conns {
		s.conn.Close()
	}
	// What the stalled connections held is given back.
	var goroutines int
	var heap uint64
	waitFor(t, "goroutines and heap to return to their level before the stall", func() bool {
		goroutines, heap = settledUsage()
		return goroutines <= goroutines0+10 && heap <= heap0+2<<20
	})
	t.Logf("goroutines %d before, %d with %d stalled bodies, %d after; heap %d KiB, %d KiB, %d KiB",
		goroutines0, goroutinesHeld, stalled, goroutines, heap0>>10, heapHeld>>10, heap>>10)
}
