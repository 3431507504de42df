package main

// HTTP/2 without TLS (h2c, with prior knowledge), as reverse proxies speak
// it to their upstreams, with -h2c: every call works over it, event
// streams included, which cannot be hijacked there and stay in their
// handler; many of them share one connection; a reader that cancels its
// stream frees it; a shutdown ends them. Without -h2c, HTTP/1 only.

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// h2cClient speaks only HTTP/2 without TLS, and counts its connections.
func h2cClient(t *testing.T) (*http.Client, *atomic.Int64) {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	dials := new(atomic.Int64)
	var d net.Dialer
	tr := &http.Transport{
		Protocols: &protocols,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, dials
}

func TestH2C(t *testing.T) {
	srv := newTestServer(t, withFlags("-h2c", "-heartbeat", "1s"))
	hc, dials := h2cClient(t)
	ep := srv.via(hc)
	var a, b *client
	var s *stream

	phase(t, "plain calls are HTTP/2", func(t *testing.T) {
		resp, err := hc.Get(srv.URL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Fatalf("healthz over h2c: %s %s", resp.Proto, resp.Status)
		}
		a = ep.join(t, "h2c", 201)
		b = ep.join(t, "h2c", 201)
	})
	s = a.events(t, "") // outlives the phases
	phase(t, "an event stream delivers over HTTP/2, with its heartbeat", func(t *testing.T) {
		if s.resp.ProtoMajor != 2 {
			t.Fatalf("the stream came over %s", s.resp.Proto)
		}
		s.ready(t)
		if m := s.message(t); m["type"] != "peer-joined" || m["peer"] != b.ClientID {
			t.Fatalf("first message %v, want b's peer-joined", m)
		}
		id := b.post(t, `{"type":"chat","text":"over h2c"}`)
		if m := s.message(t); idOf(m) != id || m["text"] != "over h2c" {
			t.Fatalf("got %v, want message %d", m, id)
		}
		deadline := time.After(30 * time.Second)
		for comment := false; !comment; {
			select {
			case f, ok := <-s.frames:
				if !ok {
					t.Fatalf("the stream ended: %v", s.err)
				}
				comment = f.Comment
			case <-deadline:
				t.Fatal("no heartbeat within 30 s (it is 1 s)")
			}
		}
	})
	phase(t, "a long-poll waits and is answered over HTTP/2", func(t *testing.T) {
		got := make(chan pollAnswer, 1)
		go func() {
			ans, err := b.longPoll(context.Background(), 0, "30")
			if err != nil || ans.Status != 200 {
				t.Errorf("poll: %v %d %s", err, ans.Status, ans.Body)
				got <- pollAnswer{}
				return
			}
			p, _ := ans.decodePoll()
			got <- p
		}()
		waitFor(t, "the poll to wait", func() bool { return srv.metric(t, "tincan_polls_waiting") == 1 })
		id := a.post(t, `{"type":"chat","text":"to the poll"}`)
		if p := <-got; len(p.Messages) != 1 || idOf(p.Messages[0]) != id {
			t.Fatalf("the poll answered %+v, want message %d", p, id)
		}
	})
	phase(t, "streams share one connection, and a cancelled one is freed", func(t *testing.T) {
		for range 10 {
			c := ep.join(t, "h2c-many", 201)
			c.events(t, "").ready(t) // open until the test ends
			c.leave(t)               // its seat, for the next one; the stream ends with it
		}
		if n := dials.Load(); n != 1 {
			t.Fatalf("%d connections for every call and stream, want 1", n)
		}
		waitFor(t, "the streams of the members who left to end", func() bool { return srv.metric(t, "tincan_streams_open") == 1 })
		c := ep.join(t, "h2c-cancel", 201)
		m := c.events(t, "")
		m.ready(t)
		waitFor(t, "the stream to count", func() bool { return srv.metric(t, "tincan_streams_open") == 2 })
		m.close() // RST_STREAM: the handler's context ends
		waitFor(t, "the cancelled stream to be freed", func() bool { return srv.metric(t, "tincan_streams_open") == 1 })
	})
	phase(t, "a shutdown ends the stream", func(t *testing.T) {
		srv.stop() // fails the test if run returns an error
		s.drain(t)
	})
}

// Off by default: with h2c on, net/http waits for the first 14 bytes of a
// connection to tell its preface from HTTP/1, so that a shorter request
// waits for more until the header timeout.
func TestH2COffByDefault(t *testing.T) {
	srv := newTestServer(t)
	hc, _ := h2cClient(t)
	resp, err := hc.Get(srv.URL() + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.ProtoMajor == 2 {
			t.Fatalf("without -h2c the server answered over %s", resp.Proto)
		}
	}
	if a := srv.do(t, "GET", "/healthz", ""); a.Status != 200 {
		t.Fatalf("HTTP/1.1 without -h2c: %d", a.Status)
	}
}
