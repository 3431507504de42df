package main

import (
	"slices"
	"strings"
	"testing"
)

// Tests of what the server offers besides the rooms: CORS, its service
// pages (health, metrics, the web page, static files), its configuration
// from the environment, and its logs.

func TestCORS(t *testing.T) {
	srv := newTestServer(t, withFlags("-allow-origin", "https://app.example"))
	ans := srv.do(t, "OPTIONS", "/rooms/x/messages", "", "Origin", "https://app.example", "Access-Control-Request-Method", "POST")
	if ans.Status != 204 || ans.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(ans.Header.Get("Access-Control-Allow-Headers"), "Idempotency-Key") {
		t.Fatalf("preflight %d %v", ans.Status, ans.Header)
	}
	ans = srv.do(t, "GET", "/rooms/x", "", "Origin", "https://evil.example")
	if ans.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS allowed an unlisted origin")
	}
	ans = srv.do(t, "GET", "/rooms/x", "", "Origin", "https://app.example")
	if ans.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatal("CORS refused a listed origin")
	}
}

func TestServicePages(t *testing.T) {
	srv := newTestServer(t)
	if a := srv.do(t, "GET", "/healthz", ""); a.Status != 200 {
		t.Fatalf("healthz %d", a.Status)
	}
	srv.join(t, "metrics", 201)
	a := srv.do(t, "GET", "/metrics", "")
	for _, name := range []string{"tincan_rooms 1", "tincan_members 1", "tincan_streams_open", "tincan_polls_waiting",
		"tincan_messages_stored_total", "tincan_commit_seconds_bucket"} {
		if !strings.Contains(string(a.Body), name) {
			t.Errorf("metrics lack %q", name)
		}
	}
	for _, path := range []string{"/", "/r/some-room"} {
		a := srv.do(t, "GET", path, "")
		if a.Status != 200 || !strings.HasPrefix(a.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(a.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: %d %v", path, a.Status, a.Header)
		}
	}
	if a := srv.do(t, "GET", "/r/bad.room", ""); a.Status != 400 {
		t.Errorf("page of a bad room name: %d", a.Status)
	}
	if a := srv.do(t, "GET", "/static/tincan.js", ""); a.Status != 200 {
		t.Errorf("tincan.js: %d", a.Status)
	}
	if a := srv.do(t, "GET", "/static/", ""); a.Status != 404 {
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

	// run takes them from the environment it is given.
	srv := newTestServer(t, withEnv("TINCAN_ROOM_CAPACITY", "3"))
	for range 3 {
		srv.join(t, "mesh", 201)
	}
	if a := srv.do(t, "POST", "/rooms/mesh/join", ""); a.Status != 409 || a.problem(t) != "room_full" {
		t.Fatalf("fourth join with TINCAN_ROOM_CAPACITY=3: %d %s", a.Status, a.Body)
	}
	if info := srv.roomInfo(t, "mesh"); info.Capacity != 3 {
		t.Fatalf("room info with TINCAN_ROOM_CAPACITY=3: %+v", info)
	}
}

func TestTokensNeverLogged(t *testing.T) {
	// -debug logs every request; the rate limit keeps its default, as in
	// production.
	srv := newTestServer(t, withFlags("-debug", "-rate-limit", "50"))
	var a, b *client
	var locked struct{ Token string }

	phase(t, "tokens and a password travel in every place a client puts them", func(t *testing.T) {
		a = srv.join(t, "logs", 201)
		a.resume(t) // a resume sends the token in a header
		b = srv.join(t, "logs", 201)
		srv.do(t, "POST", "/rooms/vault/join", `{"password":"sesame"}`).json(t, &locked)
		b.poll(t, 0, "0")
		srv.do(t, "GET", "/rooms/logs/messages?wait=0&token="+a.Token, "")
		s := b.events(t, "") // the token in the query, as EventSource sends it
		s.ready(t)
		a.post(t, `{"type":"x"}`)
		s.message(t)
		a.leave(t)
		if ans := srv.do(t, "POST", "/rooms/logs/leave?token="+b.Token, ""); ans.Status != 204 {
			t.Fatalf("leave by query token: %d", ans.Status)
		}
		if locked.Token == "" || a.Token == b.Token {
			t.Fatalf("setup: tokens %q %q %q", a.Token, b.Token, locked.Token)
		}
	})
	phase(t, "the log has the request lines, with no token and no password", func(t *testing.T) {
		srv.stop()
		text := srv.logs()
		if !strings.Contains(text, "token=REDACTED") || !strings.Contains(text, "/rooms/logs/messages") {
			t.Fatalf("request log lines missing:\n%s", text)
		}
		for _, secret := range []string{a.Token, b.Token, locked.Token, "sesame"} {
			if strings.Contains(text, secret) {
				t.Fatalf("secret %q in the logs:\n%s", secret, text)
			}
		}
	})
}
