package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of the API contract's Rooms section, through real HTTP against run
// with a real bbolt file.

func TestJoin(t *testing.T) {
	srv := newTestServer(t)
	var a, b *client

	phase(t, "the first joiner is a new member, not the initiator", func(t *testing.T) {
		a = srv.join(t, "abc", 201)
		if a.ClientID == "" || len(a.Token) < 22 || a.Initiator || len(a.Peers) != 0 || a.Capacity != 2 ||
			a.Events != "/rooms/abc/events" || a.Messages != "/rooms/abc/messages" || a.ICEServers == nil || a.joinAnswer.Room != "abc" {
			t.Fatalf("first join answer %+v", a.joinAnswer)
		}
	})
	phase(t, "the second joiner is the initiator, with the first as its peer", func(t *testing.T) {
		b = srv.join(t, "abc", 201)
		if !b.Initiator || !slices.Equal(b.Peers, []string{a.ClientID}) || b.ClientID == a.ClientID {
			t.Fatalf("second join answer %+v", b.joinAnswer)
		}
	})
	phase(t, "a third join is refused: room_full", func(t *testing.T) {
		ans := srv.do(t, "POST", "/rooms/abc/join", "")
		if ans.Status != 409 || ans.problem(t) != "room_full" || !strings.Contains(string(ans.Body), `is full (2 of 2)`) {
			t.Fatalf("third join: %d %s", ans.Status, ans.Body)
		}
	})
	phase(t, "a token resumes its member, and the peer hears peer-joined resumed", func(t *testing.T) {
		s := b.events(t, "")
		s.ready(t)
		r := a.resume(t)
		if r.ClientID != a.ClientID || r.Token != a.Token || !r.Initiator || !slices.Equal(r.Peers, []string{b.ClientID}) {
			t.Fatalf("resume answer %+v", r.joinAnswer)
		}
		m := s.message(t)
		if m["type"] != "peer-joined" || m["peer"] != a.ClientID || m["resumed"] != true || m["from"] != nil {
			t.Fatalf("peer event %v", m)
		}
	})
	phase(t, "a token of another room, or no token, is a new join", func(t *testing.T) {
		other := srv.join(t, "other", 201, a.auth()...)
		if other.ClientID == a.ClientID || other.Token == a.Token {
			t.Fatal("token of another room resumed")
		}
		srv.join(t, "fresh", 201, "Authorization", "Bearer not-a-token")
	})
	phase(t, "room info counts the occupants and the capacity", func(t *testing.T) {
		var info roomInfo
		ans := srv.do(t, "GET", "/rooms/abc", "")
		ans.json(t, &info)
		if ans.Status != 200 || info.Room != "abc" || info.Occupants != 2 || info.Capacity != 2 || ans.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("room info %d %+v", ans.Status, info)
		}
		if info := srv.roomInfo(t, "nobody-here"); info.Occupants != 0 || info.Capacity != 2 {
			t.Fatalf("unknown room info %+v", info)
		}
	})
}

func TestJoinRefusals(t *testing.T) {
	srv := newTestServer(t)
	srv.join(t, "locked", 201) // no password: any password is accepted later
	if ans := srv.do(t, "POST", "/rooms/locked/join", `{"password":"anything"}`); ans.Status != 201 {
		t.Fatalf("join with a password into a room made without one: %d %s", ans.Status, ans.Body)
	}
	for _, tc := range []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"bad room char", "/rooms/a.b/join", "", 400, "bad_room_name"},
		{"room too long", "/rooms/" + strings.Repeat("x", 65) + "/join", "", 400, "bad_room_name"},
		{"bad json", "/rooms/ok/join", "{", 400, "bad_json"},
		{"password not string", "/rooms/ok/join", `{"password":1}`, 400, "bad_json"},
		{"password too long", "/rooms/ok/join", `{"password":"` + strings.Repeat("p", 73) + `"}`, 400, "bad_request"},
		{"body too large", "/rooms/ok/join", `{"password":"` + strings.Repeat("p", 5000) + `"}`, 413, "too_large"},
		{"wrong method", "/rooms/ok/join", "", 405, "method_not_allowed"},
		{"unknown path", "/nope", "", 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if tc.code == "method_not_allowed" || tc.code == "not_found" {
				method = "PUT"
			}
			a := srv.do(t, method, tc.path, tc.body)
			if a.Status != tc.status || a.problem(t) != tc.code {
				t.Fatalf("%d %s, want %d %s", a.Status, a.Body, tc.status, tc.code)
			}
		})
	}
	if a := srv.do(t, "GET", "/rooms/ok/nothing", ""); a.Status != 404 || a.problem(t) != "not_found" {
		t.Fatalf("unknown GET path: %d", a.Status)
	}
	if n := srv.roomInfo(t, "ok").Occupants; n != 0 {
		t.Fatalf("refused joins left %d occupants", n)
	}
}

func TestPassword(t *testing.T) {
	srv := newTestServer(t)
	a := srv.do(t, "POST", "/rooms/secret/join", `{"password":"hunter2"}`)
	if a.Status != 201 {
		t.Fatalf("first join %d", a.Status)
	}
	for _, tc := range []struct{ body, code string }{
		{"", "password_required"},
		{"{}", "password_required"},
		{`{"password":""}`, "password_required"},
		{`{"password":"wrong"}`, "bad_password"},
	} {
		if b := srv.do(t, "POST", "/rooms/secret/join", tc.body); b.Status != 403 || b.problem(t) != tc.code {
			t.Fatalf("join with %q: %d %s; want 403 %s", tc.body, b.Status, b.Body, tc.code)
		}
	}
	if b := srv.do(t, "POST", "/rooms/secret/join", `{"password":"hunter2"}`); b.Status != 201 {
		t.Fatalf("join with the password: %d %s", b.Status, b.Body)
	}
}

func TestCapacityFlag(t *testing.T) {
	srv := newTestServer(t, withFlags("-room-capacity", "3"))
	for range 3 {
		srv.join(t, "mesh", 201)
	}
	if a := srv.do(t, "POST", "/rooms/mesh/join", ""); a.Status != 409 || a.problem(t) != "room_full" {
		t.Fatalf("fourth join %d", a.Status)
	}
	for _, bad := range []string{"1", "17"} {
		err := run(t.Context(), []string{"tincan", "-room-capacity", bad, "-db", t.TempDir() + "/x.db"}, func(string) string { return "" }, nil, nil)
		if err == nil || !strings.Contains(err.Error(), "between 2 and 16") {
			t.Fatalf("capacity %s: %v", bad, err)
		}
	}
}

func TestAuth(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "room1", 201)
	srv.join(t, "room1", 201)
	other := srv.join(t, "room2", 201)
	url := "/rooms/room1/messages"
	for _, tc := range []struct {
		name, method, url string
		header            []string
		status            int
		code              string
	}{
		{"no token", "POST", url, nil, 401, "unauthorized"},
		{"wrong token", "POST", url, []string{"Authorization", "Bearer nope"}, 401, "unauthorized"},
		{"not bearer", "POST", url, []string{"Authorization", "Basic " + a.Token}, 401, "unauthorized"},
		{"other room", "POST", url, other.auth(), 403, "not_member"},
		{"query token on POST", "POST", url + "?token=" + a.Token, nil, 401, "unauthorized"},
		{"poll no token", "GET", url, nil, 401, "unauthorized"},
		{"poll other room", "GET", url + "?token=" + other.Token, nil, 403, "not_member"},
		{"events wrong token", "GET", "/rooms/room1/events?token=x", nil, 401, "unauthorized"},
		{"ice no token", "GET", "/ice-servers", nil, 401, "unauthorized"},
		{"leave wrong token", "POST", "/rooms/room1/leave?token=x", nil, 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := srv.do(t, tc.method, tc.url, `{"type":"bye"}`, tc.header...)
			if ans.Status != tc.status || ans.problem(t) != tc.code {
				t.Fatalf("%d %s, want %d %s", ans.Status, ans.Body, tc.status, tc.code)
			}
		})
	}
	if ans := srv.do(t, "GET", "/ice-servers", "", a.auth()...); ans.Status != 200 || !strings.Contains(string(ans.Body), `"ice_servers":[`) {
		t.Fatalf("ice-servers: %d %s", ans.Status, ans.Body)
	}
	if ans := srv.do(t, "GET", url+"?wait=0&token="+a.Token, ""); ans.Status != 200 {
		t.Fatalf("poll with query token: %d", ans.Status)
	}
}

func TestLeave(t *testing.T) {
	srv := newTestServer(t)
	a := srv.join(t, "bye", 201)
	b := srv.join(t, "bye", 201)
	s := a.events(t, "")
	s.ready(t)
	s.message(t) // b joined

	phase(t, "leave by query token: the peer hears peer-left, reason left", func(t *testing.T) {
		b.post(t, `{"type":"hello"}`)
		s.message(t)
		if ans := srv.do(t, "POST", "/rooms/bye/leave?token="+b.Token, ""); ans.Status != 204 {
			t.Fatalf("leave by query token: %d", ans.Status)
		}
		m := s.message(t)
		if m["type"] != "peer-left" || m["peer"] != b.ClientID || m["reason"] != "left" {
			t.Fatalf("peer-left %v", m)
		}
	})
	phase(t, "the token of a member that left is refused", func(t *testing.T) {
		if ans := srv.do(t, "POST", "/rooms/bye/messages", `{"type":"x"}`, b.auth()...); ans.Status != 401 {
			t.Fatalf("token after leave: %d", ans.Status)
		}
	})
	phase(t, "the last to leave ends its own stream and empties the room", func(t *testing.T) {
		a.leave(t) // while its stream is open: the stream ends, a is not counted again
		waitFor(t, "the stream to close", func() bool { return srv.metric(t, "tincan_streams_open") == 0 })
		if n := srv.metric(t, "tincan_members"); n != 0 {
			t.Fatalf("%v members counted after everyone left", n)
		}
		if srv.roomInfo(t, "bye").Occupants != 0 {
			t.Fatal("room not empty")
		}
	})
	phase(t, "a room made again has no backlog", func(t *testing.T) {
		// The room and its messages are gone: a new member sees no backlog.
		c := srv.join(t, "bye", 201)
		if p := c.poll(t, 0, "0"); len(p.Messages) != 0 {
			t.Fatalf("new member of a deleted room got %v", p.Messages)
		}
	})
	phase(t, "a message held for the next joiner goes with its room", func(t *testing.T) {
		// The first member of a room of the same name made again does not
		// get it.
		lone := srv.join(t, "held", 201)
		lone.post(t, `{"type":"offer","sdp":"v=0 held"}`)
		lone.leave(t)
		next := srv.join(t, "held", 201)
		srv.join(t, "held", 201) // were the offer still held, this joiner would get it
		if p := next.poll(t, 0, "0"); len(p.Messages) != 1 || p.Messages[0]["type"] != "peer-joined" {
			t.Fatalf("first member of the new room got %v, want only the second member's peer-joined", p.Messages)
		}
	})
}

func TestClientTimeout(t *testing.T) {
	srv := newTestServer(t, withFlags("-client-timeout", "1s"))
	a := srv.join(t, "tick", 201)
	b := srv.join(t, "tick", 201)
	s := a.events(t, "")
	s.ready(t)
	s.message(t) // b joined
	start := time.Now()
	m := s.message(t) // b never listens: removed
	if m["type"] != "peer-left" || m["peer"] != b.ClientID || m["reason"] != "timeout" {
		t.Fatalf("want peer-left timeout, got %v", m)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("removed after %v, want within timeout + 5s", d)
	}
	if ans := srv.do(t, "POST", "/rooms/tick/messages", `{"type":"x"}`, b.auth()...); ans.Status != 401 {
		t.Fatalf("token of a timed-out member: %d", ans.Status)
	}
	// a has kept its stream open for longer than the timeout: still a member.
	a.post(t, `{"type":"still-here"}`)
}
