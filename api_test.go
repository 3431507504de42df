package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of the API contract's Rooms section, through real HTTP against run
// with a real bbolt file.

func TestJoin(t *testing.T) {
	base := startServer(t)

	a := join(t, base, "abc", 201)
	if a.ClientID == "" || len(a.Token) < 22 || a.Initiator || len(a.Peers) != 0 || a.Capacity != 2 ||
		a.Events != "/rooms/abc/events" || a.Messages != "/rooms/abc/messages" || a.ICEServers == nil || a.Room != "abc" {
		t.Fatalf("first join answer %+v", a.joinAnswer)
	}
	b := join(t, base, "abc", 201)
	if !b.Initiator || !slices.Equal(b.Peers, []string{a.ClientID}) || b.ClientID == a.ClientID {
		t.Fatalf("second join answer %+v", b.joinAnswer)
	}

	t.Run("full", func(t *testing.T) {
		ans := do(t, "POST", base+"/rooms/abc/join", "")
		if ans.Status != 409 || ans.problem(t) != "room_full" || !strings.Contains(string(ans.Body), `is full (2 of 2)`) {
			t.Fatalf("third join: %d %s", ans.Status, ans.Body)
		}
	})
	t.Run("resume", func(t *testing.T) {
		s := b.events("")
		s.ready()
		r := join(t, base, "abc", 200, a.auth()...)
		if r.ClientID != a.ClientID || r.Token != a.Token || !r.Initiator || !slices.Equal(r.Peers, []string{b.ClientID}) {
			t.Fatalf("resume answer %+v", r.joinAnswer)
		}
		m := s.message()
		if m["type"] != "peer-joined" || m["peer"] != a.ClientID || m["resumed"] != true || m["from"] != nil {
			t.Fatalf("peer event %v", m)
		}
	})
	t.Run("token of another room is a new join", func(t *testing.T) {
		other := join(t, base, "other", 201, a.auth()...)
		if other.ClientID == a.ClientID || other.Token == a.Token {
			t.Fatal("token of another room resumed")
		}
		join(t, base, "fresh", 201, "Authorization", "Bearer not-a-token")
	})
	t.Run("room info", func(t *testing.T) {
		var info struct {
			Room                string
			Occupants, Capacity int
		}
		ans := do(t, "GET", base+"/rooms/abc", "")
		ans.json(t, &info)
		if ans.Status != 200 || info.Room != "abc" || info.Occupants != 2 || info.Capacity != 2 || ans.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("room info %d %+v", ans.Status, info)
		}
		do(t, "GET", base+"/rooms/nobody-here", "").json(t, &info)
		if info.Occupants != 0 || info.Capacity != 2 {
			t.Fatalf("unknown room info %+v", info)
		}
	})
}

func TestJoinRefusals(t *testing.T) {
	base := startServer(t)
	join(t, base, "locked", 201) // no password: any password is accepted later
	if ans := do(t, "POST", base+"/rooms/locked/join", `{"password":"anything"}`); ans.Status != 201 {
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
			a := do(t, method, base+tc.path, tc.body)
			if a.Status != tc.status || a.problem(t) != tc.code {
				t.Fatalf("%d %s, want %d %s", a.Status, a.Body, tc.status, tc.code)
			}
		})
	}
	if a := do(t, "GET", base+"/rooms/ok/nothing", ""); a.Status != 404 || a.problem(t) != "not_found" {
		t.Fatalf("unknown GET path: %d", a.Status)
	}
	var info struct{ Occupants int }
	do(t, "GET", base+"/rooms/ok", "").json(t, &info)
	if info.Occupants != 0 {
		t.Fatalf("refused joins left %d occupants", info.Occupants)
	}
}

func TestPassword(t *testing.T) {
	base := startServer(t)
	a := do(t, "POST", base+"/rooms/secret/join", `{"password":"hunter2"}`)
	if a.Status != 201 {
		t.Fatalf("first join %d", a.Status)
	}
	for _, body := range []string{"", "{}", `{"password":"wrong"}`} {
		if b := do(t, "POST", base+"/rooms/secret/join", body); b.Status != 403 || b.problem(t) != "bad_password" {
			t.Fatalf("join with %q: %d %s", body, b.Status, b.Body)
		}
	}
	if b := do(t, "POST", base+"/rooms/secret/join", `{"password":"hunter2"}`); b.Status != 201 {
		t.Fatalf("join with the password: %d %s", b.Status, b.Body)
	}
}

func TestCapacityFlag(t *testing.T) {
	base := startServer(t, "-room-capacity", "3")
	for range 3 {
		join(t, base, "mesh", 201)
	}
	if a := do(t, "POST", base+"/rooms/mesh/join", ""); a.Status != 409 || a.problem(t) != "room_full" {
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
	base := startServer(t)
	a := join(t, base, "room1", 201)
	join(t, base, "room1", 201)
	other := join(t, base, "room2", 201)
	url := base + "/rooms/room1/messages"
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
		{"events wrong token", "GET", base + "/rooms/room1/events?token=x", nil, 401, "unauthorized"},
		{"ice no token", "GET", base + "/ice-servers", nil, 401, "unauthorized"},
		{"leave wrong token", "POST", base + "/rooms/room1/leave?token=x", nil, 401, "unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ans := do(t, tc.method, tc.url, `{"type":"bye"}`, tc.header...)
			if ans.Status != tc.status || ans.problem(t) != tc.code {
				t.Fatalf("%d %s, want %d %s", ans.Status, ans.Body, tc.status, tc.code)
			}
		})
	}
	if ans := do(t, "GET", base+"/ice-servers", "", a.auth()...); ans.Status != 200 || !strings.Contains(string(ans.Body), `"ice_servers":[`) {
		t.Fatalf("ice-servers: %d %s", ans.Status, ans.Body)
	}
	if ans := do(t, "GET", url+"?wait=0&token="+a.Token, ""); ans.Status != 200 {
		t.Fatalf("poll with query token: %d", ans.Status)
	}
}

func TestLeave(t *testing.T) {
	base := startServer(t)
	a := join(t, base, "bye", 201)
	b := join(t, base, "bye", 201)
	s := a.events("")
	s.ready()
	s.message() // b joined
	b.post(`{"type":"hello"}`)
	s.message()
	if ans := do(t, "POST", base+"/rooms/bye/leave?token="+b.Token, ""); ans.Status != 204 {
		t.Fatalf("leave by query token: %d", ans.Status)
	}
	m := s.message()
	if m["type"] != "peer-left" || m["peer"] != b.ClientID || m["reason"] != "left" {
		t.Fatalf("peer-left %v", m)
	}
	if ans := do(t, "POST", base+"/rooms/bye/messages", `{"type":"x"}`, b.auth()...); ans.Status != 401 {
		t.Fatalf("token after leave: %d", ans.Status)
	}
	a.leave() // while its stream is open: the stream ends, a is not counted again
	waitFor(t, "the stream to close", func() bool { return metric(t, base, "tincan_streams_open") == 0 })
	if n := metric(t, base, "tincan_members"); n != 0 {
		t.Fatalf("%v members counted after everyone left", n)
	}
	var info struct{ Occupants int }
	do(t, "GET", base+"/rooms/bye", "").json(t, &info)
	if info.Occupants != 0 {
		t.Fatal("room not empty")
	}
	// The room and its messages are gone: a new member sees no backlog.
	c := join(t, base, "bye", 201)
	if p := c.poll(0, "0"); len(p.Messages) != 0 {
		t.Fatalf("new member of a deleted room got %v", p.Messages)
	}

	// A message kept for the next joiner goes with its room: the first
	// member of a room of the same name made again does not get it.
	lone := join(t, base, "held", 201)
	lone.post(`{"type":"offer","sdp":"v=0 held"}`)
	lone.leave()
	next := join(t, base, "held", 201)
	join(t, base, "held", 201) // were the offer still held, this joiner would get it
	if p := next.poll(0, "0"); len(p.Messages) != 1 || p.Messages[0]["type"] != "peer-joined" {
		t.Fatalf("first member of the new room got %v, want only the second member's peer-joined", p.Messages)
	}
}

func TestClientTimeout(t *testing.T) {
	base := startServer(t, "-client-timeout", "1s")
	a := join(t, base, "tick", 201)
	b := join(t, base, "tick", 201)
	s := a.events("")
	s.ready()
	s.message() // b joined
	start := time.Now()
	m := s.message() // b never listens: removed
	if m["type"] != "peer-left" || m["peer"] != b.ClientID || m["reason"] != "timeout" {
		t.Fatalf("want peer-left timeout, got %v", m)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("removed after %v, want within timeout + 5s", d)
	}
	if ans := do(t, "POST", base+"/rooms/tick/messages", `{"type":"x"}`, b.auth()...); ans.Status != 401 {
		t.Fatalf("token of a timed-out member: %d", ans.Status)
	}
	// a has kept its stream open for longer than the timeout: still a member.
	a.post(`{"type":"still-here"}`)
}

func TestCORS(t *testing.T) {
	base := startServer(t, "-allow-origin", "https://app.example")
	ans := do(t, "OPTIONS", base+"/rooms/x/messages", "", "Origin", "https://app.example", "Access-Control-Request-Method", "POST")
	if ans.Status != 204 || ans.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(ans.Header.Get("Access-Control-Allow-Headers"), "Idempotency-Key") {
		t.Fatalf("preflight %d %v", ans.Status, ans.Header)
	}
	ans = do(t, "GET", base+"/rooms/x", "", "Origin", "https://evil.example")
	if ans.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS allowed an unlisted origin")
	}
	ans = do(t, "GET", base+"/rooms/x", "", "Origin", "https://app.example")
	if ans.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatal("CORS refused a listed origin")
	}
}

func TestServicePages(t *testing.T) {
	base := startServer(t)
	if a := do(t, "GET", base+"/healthz", ""); a.Status != 200 {
		t.Fatalf("healthz %d", a.Status)
	}
	join(t, base, "metrics", 201)
	a := do(t, "GET", base+"/metrics", "")
	for _, name := range []string{"tincan_rooms 1", "tincan_members 1", "tincan_streams_open", "tincan_polls_waiting",
		"tincan_messages_stored_total", "tincan_commit_seconds_bucket"} {
		if !strings.Contains(string(a.Body), name) {
			t.Errorf("metrics lack %q", name)
		}
	}
	for _, path := range []string{"/", "/r/some-room"} {
		a := do(t, "GET", base+path, "")
		if a.Status != 200 || !strings.HasPrefix(a.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(a.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: %d %v", path, a.Status, a.Header)
		}
	}
	if a := do(t, "GET", base+"/r/bad.room", ""); a.Status != 400 {
		t.Errorf("page of a bad room name: %d", a.Status)
	}
	if a := do(t, "GET", base+"/static/tincan.js", ""); a.Status != 200 {
		t.Errorf("tincan.js: %d", a.Status)
	}
	if a := do(t, "GET", base+"/static/", ""); a.Status != 404 {
		t.Errorf("static dir listing: %d", a.Status)
	}
}

func TestEnvironmentTwins(t *testing.T) {
	env := map[string]string{"TINCAN_ROOM_CAPACITY": "5", "TINCAN_ALLOW_ORIGIN": "https://a.example, https://b.example"}
	cfg, err := parseFlags([]string{"tincan"}, func(k string) string { return env[k] }, nil)
	if err != nil || cfg.capacity != 5 || !slices.Equal(cfg.allowOrigins, stringList{"https://a.example", "https://b.example"}) {
		t.Fatalf("env twins: %v %+v", err, cfg)
	}
	cfg, err = parseFlags([]string{"tincan", "-room-capacity", "3"}, func(k string) string { return env[k] }, nil)
	if err != nil || cfg.capacity != 3 {
		t.Fatalf("flag beats env: %v %d", err, cfg.capacity)
	}
	if _, err := parseFlags([]string{"tincan"}, func(k string) string {
		return map[string]string{"TINCAN_CLIENT_TIMEOUT": "soon"}[k]
	}, nil); err == nil {
		t.Fatal("bad env value accepted")
	}
}

func TestTokensNeverLogged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	out := &lineWriter{lines: make(chan string, 4)}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"tincan", "-addr", "127.0.0.1:0", "-db", t.TempDir() + "/log.db", "-turn=false", "-debug"},
			func(string) string { return "" }, out, logs)
	}()
	base := strings.TrimPrefix(<-out.lines, "tincan listening on ")
	waitHealthy(t, http.DefaultClient, base)
	a := join(t, base, "logs", 201)
	join(t, base, "logs", 200, a.auth()...) // a resume sends the token in a header
	b := join(t, base, "logs", 201)
	var locked struct{ Token string }
	do(t, "POST", base+"/rooms/vault/join", `{"password":"sesame"}`).json(t, &locked)
	b.poll(0, "0")
	do(t, "GET", base+"/rooms/logs/messages?wait=0&token="+a.Token, "")
	s := b.events("") // the token in the query, as EventSource sends it
	s.ready()
	a.post(`{"type":"x"}`)
	s.message()
	a.leave()
	if ans := do(t, "POST", base+"/rooms/logs/leave?token="+b.Token, ""); ans.Status != 204 {
		t.Fatalf("leave by query token: %d", ans.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	text := logs.String()
	if !strings.Contains(text, "token=REDACTED") || !strings.Contains(text, "/rooms/logs/messages") {
		t.Fatalf("request log lines missing:\n%s", text)
	}
	if locked.Token == "" || a.Token == b.Token {
		t.Fatalf("setup: tokens %q %q %q", a.Token, b.Token, locked.Token)
	}
	for _, secret := range []string{a.Token, b.Token, locked.Token, "sesame"} {
		if strings.Contains(text, secret) {
			t.Fatalf("secret %q in the logs:\n%s", secret, text)
		}
	}
}
