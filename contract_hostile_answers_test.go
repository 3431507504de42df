package main

// Clients that ask and then do not read the answer: a long-poll answer (up
// to 256 messages of up to 64 KiB) must be taken a piece at a time within
// the stall timeout, or the connection is closed and the handler, its
// goroutine and the answer are freed.

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
)

func TestStalledPollReader(t *testing.T) {
	srv := newTestServer(t, withFlags("-stall-timeout", "1s"))
	slow := srv.join(t, "slow-poll", 201)
	sender := srv.join(t, "slow-poll", 201)
	payload := strings.Repeat("x", 60000)
	var last uint64
	for range 250 { // an answer of about 15 MB, far more than the socket buffers hold
		last = sender.post(t, `{"type":"bulk","p":"`+payload+`"}`)
	}

	goroutines := runtime.NumGoroutine()
	// A long-poll on a raw connection with a tiny receive buffer that
	// never reads its answer.
	conn, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /rooms/slow-poll/messages?since=0&wait=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", slow.Token)
	// The handler is stuck writing for at least the stall timeout ...
	waitFor(t, "the long-poll to be answering", func() bool { return srv.metric(t, "tincan_polls_waiting") == 1 })
	// ... and then gives up.
	waitFor(t, "the stalled long-poll to end", func() bool { return srv.metric(t, "tincan_polls_waiting") == 0 })

	// And its connection is closed: the goroutine that served it is gone.
	waitFor(t, "the stalled reader's connection to be closed", func() bool {
		runtime.GC()
		return runtime.NumGoroutine() <= goroutines
	})

	// The member itself is unharmed: its next poll, read, has everything.
	p := slow.poll(t, 0, "0")
	if n := len(p.Messages); n == 0 || idOf(p.Messages[n-1]) != last {
		t.Fatalf("the poll after the stall: %d messages, next %d; want them all, up to %d", n, p.Next, last)
	}
}
