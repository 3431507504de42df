package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of the contract's Messages, SSE and long-poll sections.

func TestPostValidation(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "val", 201)
	b := srv.join(t, "val", 201)
	big := `{"type":"blob","x":"` + strings.Repeat("a", 65536) + `"}`

	// The three checks do not build on one another: each runs whatever
	// the others found.
	t.Run("malformed posts are refused with their problem codes", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
			header     []string
			status     int
			code       string
		}{
			{"not json", "hello", nil, 400, "bad_json"},
			{"batch of a non-object", "[1]", nil, 400, "bad_message"},
			{"trailing data", `{"type":"x"} {}`, nil, 400, "bad_json"},
			{"duplicate member", `{"type":"x","type":"y"}`, nil, 400, "bad_json"},
			{"invalid utf8", "{\"type\":\"x\",\"a\":\"\xff\"}", nil, 400, "bad_json"},
			{"no type", `{"sdp":"v=0"}`, nil, 400, "bad_message"},
			{"type not string", `{"type":1}`, nil, 400, "bad_message"},
			{"type uppercase", `{"type":"Offer"}`, nil, 400, "bad_message"},
			{"type too long", `{"type":"` + strings.Repeat("a", 33) + `"}`, nil, 400, "bad_message"},
			{"offer without sdp", `{"type":"offer"}`, nil, 400, "bad_message"},
			{"offer bad sdp", `{"type":"offer","sdp":"hello"}`, nil, 400, "bad_message"},
			{"answer sdp not string", `{"type":"answer","sdp":5}`, nil, 400, "bad_message"},
			{"candidate missing", `{"type":"candidate"}`, nil, 400, "bad_message"},
			{"candidate number", `{"type":"candidate","candidate":1}`, nil, 400, "bad_message"},
			{"to not string", `{"type":"x","to":1}`, nil, 400, "bad_message"},
			{"to unknown", `{"type":"x","to":"nobody"}`, nil, 404, "unknown_peer"},
			{"to self", fmt.Sprintf(`{"type":"x","to":%q}`, a.ClientID), nil, 404, "unknown_peer"},
			{"too large", big, nil, 413, "too_large"},
			{"idempotency key too long", `{"type":"x"}`, []string{"Idempotency-Key", strings.Repeat("k", 65)}, 400, "bad_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ans := srv.do(t, "POST", "/rooms/val/messages", tc.body, append(a.auth(), tc.header...)...)
				if ans.Status != tc.status || ans.problem(t) != tc.code {
					t.Fatalf("%d %s, want %d %s", ans.Status, ans.Body, tc.status, tc.code)
				}
			})
		}
	})
	t.Run("nothing refused was stored", func(t *testing.T) {
		if p := b.poll(t, 0, "0"); len(p.Messages) != 0 {
			t.Fatalf("refused posts were delivered: %v", p.Messages)
		}
	})
	t.Run("the accepted forms are stored and delivered", func(t *testing.T) {
		for _, body := range []string{
			`{"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}`,
			`{"type":"answer","sdp":"v=0"}`,
			`{"type":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host"}`,
			`{"type":"candidate","candidate":null}`,
			`{"type":"candidate","candidate":""}`,
			`{"type":"bye"}`,
			`{"type":"app.chat-v1_x","text":"hi"}`,
			fmt.Sprintf(`{"type":"x","to":%q}`, b.ClientID),
			`{"type":"x","to":null}`,
		} {
			a.post(t, body)
		}
		if p := b.poll(t, 0, "0"); len(p.Messages) != 9 {
			t.Fatalf("got %d of 9 messages", len(p.Messages))
		}
	})
}

func TestMessageDelivery(t *testing.T) {
	srv := newTestServer(t, withFlags("-room-capacity", "3"))
	a := srv.join(t, "d", 201)
	b := srv.join(t, "d", 201)
	c := srv.join(t, "d", 201)
	sa, sb, sc := a.events(t, ""), b.events(t, ""), c.events(t, "") // open for the whole test
	var id3 uint64

	phase(t, "peers are listed in join order", func(t *testing.T) {
		if !slices.Equal(c.Peers, []string{a.ClientID, b.ClientID}) {
			t.Fatalf("peers %v, want join order [%s %s]", c.Peers, a.ClientID, b.ClientID)
		}
	})
	phase(t, "values arrive unchanged (numbers keep their digits), id and from replaced", func(t *testing.T) {
		sb.ready(t)
		sc.ready(t)
		sb.message(t) // c joined
		id := a.post(t, `{"type":"x", "n": 1.500000000000000000001, "big": 123456789012345678901234567890, "id": "mine", "from": "me", "nested": {"a": [1, 2.0]}}`)
		for _, s := range []*stream{sb, sc} {
			m := s.message(t)
			if idOf(m) != id || m["from"] != a.ClientID || fmt.Sprint(m["n"]) != "1.500000000000000000001" ||
				fmt.Sprint(m["big"]) != "123456789012345678901234567890" || fmt.Sprint(m["nested"]) != "map[a:[1 2.0]]" {
				t.Fatalf("delivered %v", m)
			}
		}
	})
	phase(t, "a message addressed to one reaches only it; the sender never gets its own", func(t *testing.T) {
		sa.ready(t)
		sa.message(t) // b joined
		sa.message(t) // c joined
		id2 := a.post(t, fmt.Sprintf(`{"type":"private","to":%q}`, c.ClientID))
		if m := sc.message(t); idOf(m) != id2 || m["to"] != c.ClientID {
			t.Fatalf("addressed message %v", m)
		}
		id3 = b.post(t, `{"type":"public"}`)
		for _, s := range []*stream{sa, sc} {
			if m := s.message(t); idOf(m) != id3 {
				t.Fatalf("want %d, got %v", id3, m)
			}
		}
		sb.quiet(t, 300*time.Millisecond) // neither its own nor a's private message
	})
	phase(t, "ids increase strictly and messages arrive in their order", func(t *testing.T) {
		last := id3
		for i := range 20 {
			n := a.post(t, fmt.Sprintf(`{"type":"seq","i":%d}`, i))
			if n <= last {
				t.Fatalf("id %d after %d", n, last)
			}
			last = n
		}
		for i := range 20 {
			if m := sb.message(t); fmt.Sprint(m["i"]) != fmt.Sprint(i) {
				t.Fatalf("order: got %v at %d", m, i)
			}
		}
	})
}

func TestIdempotencyKey(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "idem", 201)
	b := srv.join(t, "idem", 201)
	id1 := a.post(t, `{"type":"x"}`, "Idempotency-Key", "k1")
	id2 := a.post(t, `{"type":"x"}`, "Idempotency-Key", "k1")
	id3 := a.post(t, `{"type":"x"}`, "Idempotency-Key", "k2")
	if id1 != id2 || id3 == id1 {
		t.Fatalf("ids %d %d %d", id1, id2, id3)
	}
	// The same key from another client is its own.
	if id4 := b.post(t, `{"type":"x"}`, "Idempotency-Key", "k1"); id4 == id1 {
		t.Fatal("key shared between clients")
	}
	if p := b.poll(t, 0, "0"); len(p.Messages) != 2 {
		t.Fatalf("stored %d messages, want 2", len(p.Messages))
	}
	// The repeat stored nothing, and is not counted as stored.
	if n := srv.metric(t, "tincan_messages_stored_total"); n != 3 {
		t.Fatalf("tincan_messages_stored_total %v after 3 posts and a repeat, want 3", n)
	}
}

func TestPendingForNextJoiner(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "early", 201)
	id := a.post(t, `{"type":"offer","sdp":"v=0 early"}`)
	b := srv.join(t, "early", 201)
	s := b.events(t, "")
	s.ready(t)
	if m := s.message(t); idOf(m) != id || m["sdp"] != "v=0 early" {
		t.Fatalf("pending offer: %v", m)
	}
}

func TestSSEResume(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "res", 201)
	b := srv.join(t, "res", 201)
	var ids []uint64
	for i := range 5 {
		ids = append(ids, a.post(t, fmt.Sprintf(`{"type":"n","i":%d}`, i)))
	}

	phase(t, "a new stream starts with ready at 0 and replays everything", func(t *testing.T) {
		s := b.events(t, "")
		if f := s.next(t); f.Event != "ready" || f.ID != "0" || f.Retry == "" || f.Data != `{"next":0}` {
			t.Fatalf("ready frame %+v", f)
		}
		for _, id := range ids {
			if m := s.message(t); idOf(m) != id {
				t.Fatalf("replay: want %d got %v", id, m)
			}
		}
		if s.resp.Header.Get("Content-Type") != "text/event-stream" || s.resp.Header.Get("Cache-Control") != "no-cache, no-transform" ||
			s.resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("stream headers %v", s.resp.Header)
		}
		s.close()
	})
	phase(t, "since=N resumes after N", func(t *testing.T) {
		s := b.events(t, fmt.Sprintf("&since=%d", ids[1]))
		if got := s.ready(t); got != ids[1] {
			t.Fatalf("ready next %d, want %d", got, ids[1])
		}
		if m := s.message(t); idOf(m) != ids[2] {
			t.Fatalf("since: got %v", m)
		}
		s.close()
	})
	phase(t, "Last-Event-ID wins over since", func(t *testing.T) {
		s := b.events(t, fmt.Sprintf("&since=%d", ids[1]), "Last-Event-ID", fmt.Sprint(ids[3]))
		if got := s.ready(t); got != ids[3] {
			t.Fatalf("ready next %d, want %d", got, ids[3])
		}
		if m := s.message(t); idOf(m) != ids[4] {
			t.Fatalf("Last-Event-ID: got %v", m)
		}
		s.close()
	})
	phase(t, "a cursor before an acknowledged id does not bring it back", func(t *testing.T) {
		// Resuming after ids[3] (the phase before) acknowledged it.
		s := b.events(t, "&since=0")
		if got := s.ready(t); got != ids[3] {
			t.Fatalf("after ack, ready next %d, want %d", got, ids[3])
		}
		if m := s.message(t); idOf(m) != ids[4] {
			t.Fatalf("after ack: got %v", m)
		}
	})
	phase(t, "malformed cursors are refused: bad_request", func(t *testing.T) {
		for _, bad := range []string{"&since=x", "&since=-1", "&since=99999999999999999999"} {
			ans := srv.do(t, "GET", "/rooms/res/events?token="+b.Token+bad, "")
			if ans.Status != 400 || ans.problem(t) != "bad_request" {
				t.Errorf("cursor %s: %d", bad, ans.Status)
			}
		}
	})
}

// A reader that hangs up ends its stream at once: its slot under
// -max-streams-per-ip and its place in tincan_streams_open are freed without
// waiting for a write to fail. The heartbeat is an hour, so no write comes.
func TestSSEHangUp(t *testing.T) {
	srv := newTestServer(t, withFlags("-heartbeat", "1h", "-max-streams-per-ip", "1"))
	srv.join(t, "hang", 201)
	b := srv.join(t, "hang", 201)
	for i := range 3 { // with one stream allowed per address, each needs the last one gone
		conn, err := net.Dial("tcp", srv.addr())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /rooms/hang/events?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", b.Token)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(conn)
		if status, _ := r.ReadString('\n'); !strings.HasPrefix(status, "HTTP/1.1 200") {
			t.Fatalf("stream %d: status line %q", i, status)
		}
		for line := ""; !strings.HasPrefix(line, "event: ready"); {
			if line, err = r.ReadString('\n'); err != nil {
				t.Fatalf("stream %d before its ready frame: %v", i, err)
			}
		}
		waitFor(t, "the stream to open", func() bool { return srv.metric(t, "tincan_streams_open") == 1 })
		conn.Close()
		waitFor(t, "the stream to close after its reader hung up", func() bool { return srv.metric(t, "tincan_streams_open") == 0 })
	}
}

// An HTTP/1.0 client (or proxy) gets the stream too, delimited by the
// connection: no chunked encoding, frames as they come.
func TestSSEHTTP10(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "old", 201)
	b := srv.join(t, "old", 201)
	conn, err := net.Dial("tcp", srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /rooms/old/events?token=%s HTTP/1.0\r\n\r\n", b.Token)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	status, _ := r.ReadString('\n')
	if !strings.HasPrefix(status, "HTTP/1.0 200") {
		t.Fatalf("status line %q", status)
	}
	for { // headers
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(strings.ToLower(line), "transfer-encoding") {
			t.Fatalf("HTTP/1.0 answer with %q", line)
		}
		if line == "\r\n" {
			break
		}
	}
	id := a.post(t, `{"type":"hello"}`)
	want := fmt.Sprintf(`data: {"id":%d,`, id)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before message %d: %v", id, err)
		}
		if strings.HasPrefix(line, want) {
			return
		}
	}
}

func TestSSEHeartbeat(t *testing.T) {
	srv := newTestServer(t, withFlags("-heartbeat", "100ms"))
	a := srv.join(t, "hb", 201)
	s := a.events(t, "")
	s.ready(t)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-s.frames:
			if f.Comment {
				return
			}
		case <-timeout:
			t.Fatal("no keepalive comment")
		}
	}
}

func TestLongPoll(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "lp", 201)
	b := srv.join(t, "lp", 201)
	var id2, id3 uint64

	phase(t, "a poll with nothing there answers at once, next 0", func(t *testing.T) {
		p := b.poll(t, 0, "0")
		if len(p.Messages) != 0 || p.Next != 0 {
			t.Fatalf("empty poll %+v", p)
		}
	})
	phase(t, "a poll gets what is there, in order, with next at the last id", func(t *testing.T) {
		id1 := a.post(t, `{"type":"one"}`)
		id2 = a.post(t, `{"type":"two"}`)
		p := b.poll(t, 0, "5")
		if len(p.Messages) != 2 || idOf(p.Messages[0]) != id1 || idOf(p.Messages[1]) != id2 || p.Next != id2 || p.Messages[0]["from"] != a.ClientID {
			t.Fatalf("poll %+v", p)
		}
	})
	phase(t, "a waiting poll is answered when a message comes", func(t *testing.T) {
		type polled struct {
			a   answer
			err error
		}
		got := make(chan polled, 1)
		go func() {
			a, err := b.longPoll(context.Background(), id2, "30")
			got <- polled{a, err}
		}()
		time.Sleep(200 * time.Millisecond)
		id3 = a.post(t, `{"type":"three"}`)
		select {
		case r := <-got:
			if r.err != nil || r.a.Status != 200 {
				t.Fatalf("waiting poll: %v %d %s", r.err, r.a.Status, r.a.Body)
			}
			if cc := r.a.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("poll Cache-Control %q", cc)
			}
			p, err := r.a.decodePoll()
			if err != nil || len(p.Messages) != 1 || idOf(p.Messages[0]) != id3 || p.Next != id3 {
				t.Fatalf("woken poll %+v (%v)", p, err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("waiting poll not woken")
		}
	})
	phase(t, "a fractional wait with nothing to answer ends with next = since", func(t *testing.T) {
		p := b.poll(t, id3, "0.2")
		if len(p.Messages) != 0 || p.Next != id3 {
			t.Fatalf("timed-out poll %+v", p)
		}
	})
	phase(t, "acknowledged messages never come back", func(t *testing.T) {
		if p := b.poll(t, 0, "0"); len(p.Messages) != 0 {
			t.Fatalf("acknowledged messages came back: %+v", p)
		}
	})
	phase(t, "malformed since and wait are refused: bad_request", func(t *testing.T) {
		for _, q := range []string{"since=abc", "wait=x", "wait=-1", "wait=NaN", "since=1.5"} {
			ans := srv.do(t, "GET", "/rooms/lp/messages?"+q, "", b.auth()...)
			if ans.Status != 400 || ans.problem(t) != "bad_request" {
				t.Errorf("%s: %d %s", q, ans.Status, ans.Body)
			}
		}
	})
}

func TestRestartKeepsState(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "keep", 201)
	b := srv.join(t, "keep", 201)
	id := a.post(t, `{"type":"offer","sdp":"v=0 before restart"}`)
	srv.restart(t) // a and b follow it to its new port

	phase(t, "a message stored before the restart is delivered after it", func(t *testing.T) {
		p := b.poll(t, 0, "0")
		if len(p.Messages) != 1 || idOf(p.Messages[0]) != id {
			t.Fatalf("after restart: %+v", p)
		}
	})
	phase(t, "ids do not repeat after the restart", func(t *testing.T) {
		if next := a.post(t, `{"type":"x"}`); next <= id {
			t.Fatalf("id %d repeats after restart (had %d)", next, id)
		}
	})
	phase(t, "tokens still resume their members", func(t *testing.T) {
		if r := b.resume(t); r.ClientID != b.ClientID {
			t.Fatal("membership lost in restart")
		}
	})
}

// The event stream takes its token from the Authorization header as well as
// from ?token=, and refuses another room's token (403 not_member) and a
// departed member's (401 unauthorized), like every other route.
func TestEventsAuth(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "evauth", 201)
	b := srv.join(t, "evauth", 201)
	other := srv.join(t, "elsewhere", 201)

	phase(t, "a token in the Authorization header opens the stream", func(t *testing.T) {
		s, err := srv.openStream(context.Background(), "/rooms/evauth/events", 16, b.auth()...)
		if err != nil {
			t.Fatalf("events with the token in a header: %v", err)
		}
		t.Cleanup(s.close)
		s.ready(t)
		id := a.post(t, `{"type":"hello"}`)
		if m := s.message(t); idOf(m) != id {
			t.Fatalf("header-authenticated stream got %v, want message %d", m, id)
		}
	})
	phase(t, "another room's token is refused: not_member", func(t *testing.T) {
		if ans := srv.do(t, "GET", "/rooms/evauth/events?token="+other.Token, ""); ans.Status != 403 || ans.problem(t) != "not_member" {
			t.Fatalf("events with another room's token: %d %s", ans.Status, ans.Body)
		}
	})
	phase(t, "a departed member's token is refused: unauthorized", func(t *testing.T) {
		a.leave(t)
		if ans := srv.do(t, "GET", "/rooms/evauth/events", "", a.auth()...); ans.Status != 401 || ans.problem(t) != "unauthorized" {
			t.Fatalf("events after leaving: %d %s", ans.Status, ans.Body)
		}
	})
}

// Who gets what: a message posted into an empty room goes to the first
// member that joins next and to nobody after it; messages and server events
// go only to the members present when they happen.
func TestDeliveryScope(t *testing.T) {
	srv := newTestServer(t, withFlags("-room-capacity", "4"))
	a := srv.join(t, "scope", 201)
	var b, c *client
	var held, toB uint64

	phase(t, "a message posted into an empty room goes to the first joiner", func(t *testing.T) {
		held = a.post(t, `{"type":"offer","sdp":"v=0 held"}`)
		b = srv.join(t, "scope", 201)
		if p := b.poll(t, 0, "0"); len(p.Messages) != 1 || idOf(p.Messages[0]) != held {
			t.Fatalf("first joiner got %v, want the held offer %d", p.Messages, held)
		}
	})
	phase(t, "a later joiner gets nothing from before it came", func(t *testing.T) {
		toB = a.post(t, `{"type":"note"}`)
		c = srv.join(t, "scope", 201)
		if p := c.poll(t, 0, "0"); len(p.Messages) != 0 {
			t.Fatalf("a later joiner got %v: nothing from before it came", p.Messages)
		}
	})
	phase(t, "a member present gets the messages and the server events", func(t *testing.T) {
		if p := b.poll(t, held, "0"); len(p.Messages) != 2 || idOf(p.Messages[0]) != toB || p.Messages[1]["type"] != "peer-joined" || p.Messages[1]["peer"] != c.ClientID {
			t.Fatalf("b got %v, want a's note %d and c's peer-joined", p.Messages, toB)
		}
	})
	phase(t, "the last joiner gets no server event from before it came", func(t *testing.T) {
		b.leave(t)
		d := srv.join(t, "scope", 201)
		if p := d.poll(t, 0, "0"); len(p.Messages) != 0 {
			t.Fatalf("the last joiner got %v: no peer-left or peer-joined from before it came", p.Messages)
		}
	})
}

// The limits are inclusive: a body of exactly 64 KiB and an Idempotency-Key
// of exactly 64 characters are taken. Every JSON answer says no-store.
func TestLimitsInclusive(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "edge", 201)
	srv.join(t, "edge", 201)
	body := `{"type":"x","pad":"` + strings.Repeat("p", 65536-len(`{"type":"x","pad":""}`)) + `"}`
	if len(body) != 65536 {
		t.Fatalf("setup: body of %d bytes", len(body))
	}
	ans := srv.do(t, "POST", "/rooms/edge/messages", body, append(a.auth(), "Idempotency-Key", strings.Repeat("k", 64))...)
	if ans.Status != 201 {
		t.Fatalf("a body of 65536 bytes with a key of 64: %d %s", ans.Status, ans.Body)
	}
	joined := srv.do(t, "POST", "/rooms/edge2/join", "")
	ice := srv.do(t, "GET", "/ice-servers", "", a.auth()...)
	for name, got := range map[string]answer{"post": ans, "join": joined, "ice-servers": ice} {
		if cc := got.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s answer: Cache-Control %q, want no-store", name, cc)
		}
	}
}
