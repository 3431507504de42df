package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// badRequest is one malformed request, written byte for byte on its own
// connection so that nothing on the client side cleans it up. In every
// field, {A} is alice's token, {Aid} her client id, {O} and {Oid} those of
// olga, a member of another room.
type badRequest struct {
	name   string
	method string
	target string   // the request target, as sent
	header []string // name, value, …
	body   string
	raw    string // the whole request instead of the fields above
	// halfClose closes the write side after the request, so that the
	// server sees the end of a body shorter than announced.
	halfClose bool

	status int    // the answer wanted; 0: any 4xx
	code   string // the problem's code wanted; "" any
	// plain: the answer comes from net/http itself, before tincan sees the
	// request: a text/plain 4xx, not problem+json.
	plain bool
}

func badRequests() []badRequest {
	valid := `{"type":"chat","text":"should never be stored"}`
	post := func(name, body string, status int, code string, header ...string) badRequest {
		return badRequest{name: name, method: "POST", target: "/rooms/victim/messages",
			header: append([]string{"Authorization", "Bearer {A}"}, header...), body: body, status: status, code: code}
	}
	as := func(name, method, target string, status int, code string, header ...string) badRequest {
		return badRequest{name: name, method: method, target: target, header: header, status: status, code: code}
	}
	// anon posts a valid message with the given headers only.
	anon := func(name string, status int, code string, header ...string) badRequest {
		return badRequest{name: name, method: "POST", target: "/rooms/victim/messages", header: header, body: valid, status: status, code: code}
	}
	joinBody := func(name, body string, status int, code string) badRequest {
		return badRequest{name: name, method: "POST", target: "/rooms/victim/join", body: body, status: status, code: code}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"type":"chat","text":"compressed"}`))
	zw.Close()
	bearerA := []string{"Authorization", "Bearer {A}"}

	return []badRequest{
		// Wrong methods.
		as("GET join", "GET", "/rooms/victim/join", 405, "method_not_allowed"),
		as("PUT messages", "PUT", "/rooms/victim/messages", 405, "method_not_allowed", bearerA...),
		as("DELETE room", "DELETE", "/rooms/victim", 405, "method_not_allowed", bearerA...),
		as("PATCH leave", "PATCH", "/rooms/victim/leave", 405, "method_not_allowed", bearerA...),
		as("GET leave with token", "GET", "/rooms/victim/leave?token={A}", 405, "method_not_allowed"),
		as("POST events", "POST", "/rooms/victim/events", 405, "method_not_allowed", bearerA...),
		as("POST room", "POST", "/rooms/victim", 405, "method_not_allowed", bearerA...),
		as("POST healthz", "POST", "/healthz", 405, "method_not_allowed"),
		as("DELETE ice-servers", "DELETE", "/ice-servers", 405, "method_not_allowed", bearerA...),
		as("POST metrics", "POST", "/metrics", 405, "method_not_allowed"),
		as("POST page", "POST", "/r/victim", 405, "method_not_allowed"),
		as("made-up method", "FROB", "/rooms/victim/messages", 405, "method_not_allowed", bearerA...),
		as("lower-case method", "get", "/rooms/victim", 405, "method_not_allowed"),
		as("TRACE", "TRACE", "/rooms/victim", 405, "method_not_allowed"),

		// Path tricks. Paths are matched as sent: under /rooms/ and /r/ a
		// dot segment or an encoded separator is a bad room name.
		as("dot-dot segment", "GET", "/rooms/../rooms/victim", 400, "bad_room_name"),
		as("dot-dot to a join", "POST", "/rooms/../x", 400, "bad_room_name"),
		as("encoded dot-dot room", "POST", "/rooms/%2e%2e/join", 400, "bad_room_name"),
		as("encoded dot-dot slash", "POST", "/rooms/%2e%2e%2fvictim/join", 400, "bad_room_name"),
		as("double slash in front", "POST", "//rooms/victim/join", 404, "not_found"),
		as("empty room segment", "POST", "/rooms//join", 0, ""),
		as("trailing slash", "POST", "/rooms/victim/join/", 404, "not_found"),
		{name: "trailing slash on a post", method: "POST", target: "/rooms/victim/messages/", header: bearerA, body: valid, status: 404, code: "not_found"},
		as("matrix parameter", "GET", "/rooms/victim/messages;since=0?token={A}", 404, "not_found"),
		as("static dot-dot", "GET", "/static/../../../etc/passwd", 404, "not_found"),
		as("static encoded dot-dot", "GET", "/static/%2e%2e/%2e%2e/go.mod", 404, "not_found"),
		as("static encoded slash", "GET", "/static/..%2f..%2fmain.go", 404, "not_found"),
		as("page room dot-dot", "GET", "/r/..%2frooms", 400, "bad_room_name"),
		as("NUL in room", "POST", "/rooms/victim%00/join", 400, "bad_room_name"),
		as("non-ASCII room", "POST", "/rooms/%C3%A9t%C3%A9/join", 400, "bad_room_name"),
		as("invalid UTF-8 room", "POST", "/rooms/%ff/join", 400, "bad_room_name"),
		as("room name of 65", "POST", "/rooms/"+strings.Repeat("a", 65)+"/join", 400, "bad_room_name"),
		as("dot in room", "POST", "/rooms/a.b/join", 400, "bad_room_name"),
		as("upper-case path", "POST", "/ROOMS/victim/join", 404, "not_found"),
		as("upper-case events", "GET", "/rooms/victim/EVENTS?token={A}", 404, "not_found"),
		as("scanner: .env", "GET", "/.env", 404, "not_found"),
		as("scanner: wp-login", "GET", "/wp-login.php", 404, "not_found"),

		// Bodies that are neither one JSON object nor an array of 1 to 64.
		post("empty body", "", 400, "bad_json"),
		post("not JSON", "hello", 400, "bad_json"),
		post("empty batch", "[]", 400, "bad_message"),
		post("batch of non-objects", "[1,2]", 400, "bad_message"),
		post("null", "null", 400, "bad_json"),
		post("truncated", `{"type":"x"`, 400, "bad_json"),
		post("garbage after", `{"type":"x"}garbage`, 400, "bad_json"),
		post("second object", `{"type":"x"} {}`, 400, "bad_json"),
		post("duplicate member", `{"type":"x","type":"y"}`, 400, "bad_json"),
		post("single quotes", `{'type':'x'}`, 400, "bad_json"),
		post("trailing comma", `{"type":"x",}`, 400, "bad_json"),
		post("NaN", `{"type":"x","n":NaN}`, 400, "bad_json"),
		post("comment", `{"type":"x"} /* hi */`, 400, "bad_json"),
		post("byte order mark", "\xef\xbb\xbf{\"type\":\"x\"}", 400, "bad_json"),
		post("invalid UTF-8 value", "{\"type\":\"x\",\"t\":\"\xff\xfe\"}", 400, "bad_json"),
		post("invalid UTF-8 key", "{\"\xc3\x28\":1,\"type\":\"x\"}", 400, "bad_json"),
		post("UTF-16", "\xff\xfe{\x00\"\x00t\x00y\x00p\x00e\x00\"\x00:\x00\"\x00x\x00\"\x00}\x00", 400, "bad_json"),
		post("nesting bomb", `{"type":"x","a":`+strings.Repeat("[", 20000), 400, "bad_json"),
		post("form encoded", "type=offer&sdp=v%3D0", 400, "bad_json", "Content-Type", "application/x-www-form-urlencoded"),
		post("multipart", "--b\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nx\r\n--b--\r\n", 400, "bad_json", "Content-Type", "multipart/form-data; boundary=b"),
		post("gzip body", gz.String(), 400, "bad_json", "Content-Encoding", "gzip", "Content-Type", "application/json"),
		post("text/plain JSON-ish", "type: chat", 400, "bad_json", "Content-Type", "text/plain"),

		// JSON objects that are not messages.
		post("no type", `{}`, 400, "bad_message"),
		post("empty type", `{"type":""}`, 400, "bad_message"),
		post("upper-case type", `{"type":"X"}`, 400, "bad_message"),
		post("space in type", `{"type":"a b"}`, 400, "bad_message"),
		post("type of 33", `{"type":"`+strings.Repeat("a", 33)+`"}`, 400, "bad_message"),
		post("type array", `{"type":["x"]}`, 400, "bad_message"),
		post("offer with v=1", `{"type":"offer","sdp":"v=1"}`, 400, "bad_message"),
		post("offer sdp null", `{"type":"offer","sdp":null}`, 400, "bad_message"),
		post("candidate object", `{"type":"candidate","candidate":{}}`, 400, "bad_message"),
		post("to empty", `{"type":"x","to":""}`, 400, "bad_message"),
		post("to object", `{"type":"x","to":{}}`, 400, "bad_message"),
		post("to nobody", `{"type":"x","to":"nobody"}`, 404, "unknown_peer"),
		post("to self", `{"type":"x","to":"{Aid}"}`, 404, "unknown_peer"),
		post("to another room's member", `{"type":"x","to":"{Oid}"}`, 404, "unknown_peer"),
		post("body over 64 KiB", `{"type":"x","pad":"`+strings.Repeat("p", 70000)+`"}`, 413, "too_large"),
		post("body of 65537", `{"type":"x","pad":"`+strings.Repeat("p", 65537-len(`{"type":"x","pad":""}`))+`"}`, 413, "too_large"),
		post("Idempotency-Key of 65", valid, 400, "bad_request", "Idempotency-Key", strings.Repeat("k", 65)),
		post("Idempotency-Key of 8000", valid, 400, "bad_request", "Idempotency-Key", strings.Repeat("k", 8000)),
		{name: "truncated body", method: "POST", target: "/rooms/victim/messages", halfClose: true,
			header: append([]string{"Content-Length", "100"}, bearerA...), body: `{"type":"chat"}`, status: 400, code: "bad_request"},
		{name: "bad chunked body", raw: "POST /rooms/victim/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {A}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
			status: 400, code: "bad_request"},

		// Tokens.
		anon("no token", 401, "unauthorized"),
		anon("two Authorization headers, a wrong one first", 401, "unauthorized", "Authorization", "Bearer wrong", "Authorization", "Bearer {A}"),
		anon("wrong token", 401, "unauthorized", "Authorization", "Bearer not-a-token"),
		anon("Bearer without token", 401, "unauthorized", "Authorization", "Bearer"),
		anon("Basic credentials", 401, "unauthorized", "Authorization", "Basic dXNlcjpwYXNz"),
		anon("token with a byte more", 401, "unauthorized", "Authorization", "Bearer {A}x"),
		anon("token of 8000", 401, "unauthorized", "Authorization", "Bearer "+strings.Repeat("t", 8000)),
		anon("tab after Bearer", 401, "unauthorized", "Authorization", "Bearer\t{A}"),
		anon("another room's token", 403, "not_member", "Authorization", "Bearer {O}"),
		{name: "token in the query of a POST", method: "POST", target: "/rooms/victim/messages?token={A}", body: valid, status: 401, code: "unauthorized"},
		{name: "token in a cookie", method: "POST", target: "/rooms/victim/messages", header: []string{"Cookie", "token={A}"}, body: valid, status: 401, code: "unauthorized"},
		as("events with a wrong token", "GET", "/rooms/victim/events?token=wrong", 401, "unauthorized"),
		as("events without a token", "GET", "/rooms/victim/events", 401, "unauthorized"),
		as("poll with another room's token", "GET", "/rooms/victim/messages?wait=0&token={O}", 403, "not_member"),
		as("leave with garbage", "POST", "/rooms/victim/leave?token=garbage", 401, "unauthorized"),
		as("leave with another room's token", "POST", "/rooms/victim/leave", 403, "not_member", "Authorization", "Bearer {O}"),
		as("ice-servers with a wrong token", "GET", "/ice-servers", 401, "unauthorized", "Authorization", "Bearer nope"),
		as("ice-servers without a token", "GET", "/ice-servers", 401, "unauthorized"),

		// Cursors and waits.
		as("since negative", "GET", "/rooms/victim/events?token={A}&since=-1", 400, "bad_request"),
		as("since letters", "GET", "/rooms/victim/events?token={A}&since=abc", 400, "bad_request"),
		as("since of 20 digits", "GET", "/rooms/victim/events?token={A}&since=99999999999999999999", 400, "bad_request"),
		as("Last-Event-ID letters", "GET", "/rooms/victim/events?token={A}", 400, "bad_request", "Last-Event-ID", "abc"),
		as("Last-Event-ID exponent", "GET", "/rooms/victim/events?token={A}", 400, "bad_request", "Last-Event-ID", "1e3"),
		as("Last-Event-ID hex", "GET", "/rooms/victim/events?token={A}&since=0", 400, "bad_request", "Last-Event-ID", "0x10"),
		as("poll since fraction", "GET", "/rooms/victim/messages?since=1.5&wait=0", 400, "bad_request", bearerA...),
		as("poll since invalid UTF-8", "GET", "/rooms/victim/messages?since=%ff&wait=0", 400, "bad_request", bearerA...),
		as("poll since over 63 bits", "GET", "/rooms/victim/messages?since=9223372036854775808&wait=0", 400, "bad_request", bearerA...),
		as("poll since with plus", "GET", "/rooms/victim/messages?since=%2B1&wait=0", 400, "bad_request", bearerA...),
		as("poll since with NUL", "GET", "/rooms/victim/messages?since=1%00&wait=0", 400, "bad_request", bearerA...),
		as("poll wait letters", "GET", "/rooms/victim/messages?wait=abc", 400, "bad_request", bearerA...),
		as("poll wait negative", "GET", "/rooms/victim/messages?wait=-1", 400, "bad_request", bearerA...),
		as("poll wait NaN", "GET", "/rooms/victim/messages?wait=NaN", 400, "bad_request", bearerA...),
		as("poll wait overflow", "GET", "/rooms/victim/messages?wait=1e400", 400, "bad_request", bearerA...),

		// Joins.
		joinBody("join truncated JSON", "{", 400, "bad_json"),
		joinBody("join password number", `{"password":5}`, 400, "bad_json"),
		joinBody("join array", `[]`, 400, "bad_json"),
		joinBody("join trailing data", `{"password":"x"}{}`, 400, "bad_json"),
		joinBody("join password of 73", `{"password":"`+strings.Repeat("p", 73)+`"}`, 400, "bad_request"),
		joinBody("join body over 4 KiB", `{"password":"`+strings.Repeat("p", 5000)+`"}`, 413, "too_large"),
		{name: "join with alice's token and bad JSON", method: "POST", target: "/rooms/victim/join", header: bearerA, body: "{", status: 400, code: "bad_json"},

		// Broken HTTP: answered by net/http before tincan sees it.
		{name: "header over 16 KiB", method: "GET", target: "/rooms/victim", header: []string{"X-Big", strings.Repeat("h", 32<<10)}, status: 431, plain: true},
		{name: "3000 headers", method: "GET", target: "/rooms/victim", header: manyHeaders(3000), status: 431, plain: true},
		{name: "no Host", raw: "GET /rooms/victim HTTP/1.1\r\n\r\n", status: 400, plain: true},
		{name: "space in header name", raw: "GET /rooms/victim HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", status: 400, plain: true},
		{name: "NUL in header value", raw: "GET /rooms/victim HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", status: 400, plain: true},
		{name: "garbage request line", raw: "GARBAGE\r\n\r\n", status: 400, plain: true},
		{name: "bad escape in path", raw: "POST /rooms/%zz/join HTTP/1.1\r\nHost: x\r\n\r\n", status: 400, plain: true},
		{name: "negative Content-Length", raw: "POST /rooms/victim/join HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", status: 400, plain: true},
		{name: "two Content-Lengths", raw: "POST /rooms/victim/join HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", status: 400, plain: true},
		{name: "unknown Expect", raw: "POST /rooms/victim/join HTTP/1.1\r\nHost: x\r\nExpect: 100-continue-please\r\nContent-Length: 2\r\n\r\n{}", status: 417, plain: true},
	}
}

func manyHeaders(n int) []string {
	var h []string
	for i := range n {
		h = append(h, fmt.Sprintf("X-H%d", i), "vvvvvvvv")
	}
	return h
}

// TestBadInput sends each malformed request of badRequests to a room in use.
// Every one must be refused with a 4xx (problem+json unless net/http itself
// answers), none may cost a 5xx or a dropped connection, and afterwards the
// room is exactly as before: the same occupants and the same messages for
// each member.
func TestBadInput(t *testing.T) {
	srv := newTestServer(t)
	addr := srv.addr()
	alice := srv.join(t, "victim", 201)
	bob := srv.join(t, "victim", 201)
	olga := srv.join(t, "other", 201)
	alice.post(t, `{"type":"offer","sdp":"v=0 before"}`)
	bob.post(t, `{"type":"answer","sdp":"v=0 before"}`)
	alice.post(t, `{"type":"chat","n":1.50}`)
	olga.post(t, `{"type":"chat","alone":true}`)

	type snapshot struct {
		Room              string
		Alice, Bob, Other string
	}
	take := func(t *testing.T) snapshot {
		t.Helper()
		room := srv.do(t, "GET", "/rooms/victim", "")
		msgs := func(c *client) string {
			a := srv.do(t, "GET", fmt.Sprintf("/rooms/%s/messages?since=0&wait=0", c.Room), "", c.auth()...)
			if a.Status != 200 {
				t.Fatalf("poll of %s: %d %s", c.ClientID, a.Status, a.Body)
			}
			return string(a.Body)
		}
		return snapshot{Room: string(room.Body), Alice: msgs(alice), Bob: msgs(bob), Other: msgs(olga)}
	}
	before := take(t)
	if !strings.Contains(before.Room, `"occupants":2`) || !strings.Contains(before.Bob, "v=0 before") {
		t.Fatalf("unexpected state before: %+v", before)
	}

	// The three checks do not build on one another: each runs whatever
	// the others found.
	t.Run("each malformed request is refused with a 4xx", func(t *testing.T) {
		subst := strings.NewReplacer("{Aid}", alice.ClientID, "{Oid}", olga.ClientID, "{A}", alice.Token, "{O}", olga.Token)
		cases := badRequests()
		if len(cases) < 50 {
			t.Fatalf("only %d bad requests", len(cases))
		}
		var plain []string
		for _, bc := range cases { // each on its own: one refused wrongly does not stop the others
			t.Run(bc.name, func(t *testing.T) {
				resp, body := sendRaw(t, addr, bc, subst)
				ct := resp.Header.Get("Content-Type")
				if resp.StatusCode >= 500 || resp.StatusCode < 400 {
					t.Fatalf("%d (%s) %q, want a 4xx", resp.StatusCode, ct, clipBody(body))
				}
				if bc.status != 0 && resp.StatusCode != bc.status {
					t.Errorf("status %d, want %d: %q", resp.StatusCode, bc.status, clipBody(body))
				}
				if bc.plain {
					plain = append(plain, fmt.Sprintf("%s: %d %s %q", bc.name, resp.StatusCode, ct, clipBody(body)))
					return
				}
				a := answer{Status: resp.StatusCode, Header: resp.Header, Body: body}
				code := a.problem(t)
				if bc.code != "" && code != bc.code {
					t.Errorf("code %q, want %q: %s", code, bc.code, body)
				}
				if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q on a problem answer", cc)
				}
			})
		}
		for _, p := range plain {
			t.Logf("answered by net/http, not problem+json: %s", p)
		}
	})
	t.Run("the rooms are exactly as before", func(t *testing.T) {
		if after := take(t); after != before {
			t.Fatalf("the bad requests changed the rooms:\nbefore %+v\nafter  %+v", before, after)
		}
	})
	t.Run("the server still works", func(t *testing.T) {
		id := alice.post(t, `{"type":"chat","text":"after"}`)
		if p := bob.poll(t, 0, "0"); len(p.Messages) == 0 || idOf(p.Messages[len(p.Messages)-1]) != id {
			t.Fatalf("after the bad requests bob's poll: %+v", p)
		}
	})
}

// TestBadInputNetHTTP5xx pins down the two malformed requests that net/http
// itself answers with a 5xx, as RFC 9112 asks: an unknown transfer coding
// (501) and an unknown HTTP version (505). They never reach tincan; the test
// shows that they stay harmless.
func TestBadInputNetHTTP5xx(t *testing.T) {
	srv := newTestServer(t)
	addr := srv.addr()
	for _, bc := range []badRequest{
		{name: "Transfer-Encoding gzip", raw: "POST /rooms/victim/join HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", status: 501},
		{name: "HTTP/9.9", raw: "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", status: 505},
	} {
		resp, body := sendRaw(t, addr, bc, strings.NewReplacer())
		if resp.StatusCode != bc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: %d %s %q, want net/http's plain %d", bc.name, resp.StatusCode, resp.Header.Get("Content-Type"), body, bc.status)
		}
	}
	if a := srv.do(t, "GET", "/rooms/victim", ""); a.Status != 200 || !strings.Contains(string(a.Body), `"occupants":0`) {
		t.Fatalf("after: %d %s", a.Status, a.Body)
	}
}

// sendRaw writes one request on a new connection and reads the answer.
func sendRaw(t *testing.T, addr string, bc badRequest, subst *strings.Replacer) (*http.Response, []byte) {
	t.Helper()
	var req bytes.Buffer
	if bc.raw != "" {
		req.WriteString(subst.Replace(bc.raw))
	} else {
		fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", bc.method, subst.Replace(bc.target), addr)
		hasLength := false
		for i := 0; i+1 < len(bc.header); i += 2 {
			fmt.Fprintf(&req, "%s: %s\r\n", bc.header[i], subst.Replace(bc.header[i+1]))
			hasLength = hasLength || bc.header[i] == "Content-Length"
		}
		body := subst.Replace(bc.body)
		if !hasLength && (body != "" || bc.method == "POST" || bc.method == "PUT") {
			fmt.Fprintf(&req, "Content-Length: %d\r\n", len(body))
		}
		req.WriteString("\r\n")
		req.WriteString(body)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// Write and read at once: net/http may answer (431) before it has read
	// the whole request.
	written := make(chan error, 1)
	go func() {
		_, err := conn.Write(req.Bytes())
		if err == nil && bc.halfClose {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		written <- err
	}()
	method := bc.method
	if method == "" {
		method = "GET"
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("no answer (the server dropped the connection?): %v; write: %v", err, <-written)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil && !isConnReset(err) {
		t.Fatalf("reading the answer: %v", err)
	}
	conn.Close()
	<-written
	return resp, body
}

func isConnReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

func clipBody(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}
