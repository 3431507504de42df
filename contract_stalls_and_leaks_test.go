package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// A reader that never reads its stream must not hold up anyone else, and is
// evicted; on reconnect it catches up from the store.
func TestStalledReader(t *testing.T) {
	srv := newTestServer(t, withFlags("-stall-timeout", "1s"))
	slow := srv.join(t, "slow", 201)
	sender := srv.join(t, "slow", 201)
	// A raw connection with a tiny receive buffer that sends the request
	// and then never reads.
	conn, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	var sent []uint64

	phase(t, "the reader that never reads gets its stream, and its buffers fill", func(t *testing.T) {
		fmt.Fprintf(conn, "GET /rooms/slow/events?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", slow.Token)
		waitFor(t, "the stalled stream to open", func() bool { return srv.metric(t, "tincan_streams_open") == 1 })
		payload := strings.Repeat("x", 60000)
		for range 200 {
			sent = append(sent, sender.post(t, `{"type":"bulk","p":"`+payload+`"}`))
		}
	})

	a := srv.join(t, "fast", 201)
	b := srv.join(t, "fast", 201)
	s := b.events(t, "") // open until the end of the test
	phase(t, "another room meanwhile works as usual", func(t *testing.T) {
		s.ready(t)
		for i := range 20 {
			id := a.post(t, fmt.Sprintf(`{"type":"ping","i":%d}`, i))
			if m := s.message(t); idOf(m) != id {
				t.Fatalf("other room: want %d, got %v", id, m)
			}
		}
	})
	phase(t, "the stalled reader is evicted, and its stream closed", func(t *testing.T) {
		waitFor(t, "the stalled reader to be evicted", func() bool { return srv.metric(t, "tincan_streams_evicted_total") >= 1 })
		waitFor(t, "the stalled stream to close", func() bool { return srv.metric(t, "tincan_streams_open") == 1 }) // b's only
	})
	phase(t, "reconnecting, it gets every post once, in order", func(t *testing.T) {
		// The 200 posts exactly, none lost to the eviction.
		rs := slow.events(t, "")
		rs.ready(t)
		rs.message(t) // sender joined
		for i, want := range sent {
			if got := idOf(rs.message(t)); got != want {
				t.Fatalf("message %d of %d after the eviction: id %d, want %d", i+1, len(sent), got, want)
			}
		}
	})
}

// Streams and long-polls leave no goroutine behind once they end.
func TestNoGoroutineLeak(t *testing.T) {
	srv := newTestServer(t, withFlags("-heartbeat", "50ms"))
	a := srv.join(t, "leak", 201)
	b := srv.join(t, "leak", 201)
	tr := &http.Transport{}
	httpc := &http.Client{Transport: tr}
	ignore := goleak.IgnoreCurrent()

	for range 5 {
		resp, err := httpc.Get(srv.URL() + "/rooms/leak/events?token=" + a.Token)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(resp.Body)
		b.post(t, `{"type":"x"}`)
		for { // read until the message frame
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "data: {\"id\"") {
				break
			}
		}
		resp.Body.Close()
		resp, err = httpc.Get(srv.URL() + "/rooms/leak/messages?wait=0.1&token=" + b.Token)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	tr.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	waitFor(t, "streams to close", func() bool { return srv.metric(t, "tincan_streams_open") == 0 })
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	if err := goleak.Find(ignore); err != nil {
		t.Fatal(err)
	}
}
