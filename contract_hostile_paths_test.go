package main

// Paths are matched as sent: an encoded separator or a dot segment where a
// room name stands is refused with 400 bad_room_name on every route, so
// that tincan never acts on a path other than the one a proxy or a log
// sees.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sendAsIs writes one request byte for byte on its own connection, so that
// no client library cleans its target, and reads the answer (of an event
// stream only the header).
func sendAsIs(t *testing.T, addr, method, target, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: tincan\r\nConnection: close\r\n", method, target)
	for i := 0; i+1 < len(header); i += 2 {
		fmt.Fprintf(&req, "%s: %s\r\n", header[i], header[i+1])
	}
	fmt.Fprintf(&req, "Content-Length: %d\r\n\r\n%s", len(body), body)
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp, nil
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, target, err)
	}
	return resp, data
}

// roomRoute is a route with a room in its path: {room} stands for it, {T}
// for the token of a member of that room.
type roomRoute struct {
	method, target, body string
	bearer               bool
	ok                   int // the status with a valid room of its member
}

var roomRoutes = []roomRoute{
	{method: "POST", target: "/rooms/{room}/join", ok: 201},
	{method: "GET", target: "/rooms/{room}", ok: 200},
	{method: "POST", target: "/rooms/{room}/messages", body: `{"type":"chat","text":"must not be stored"}`, bearer: true, ok: 201},
	{method: "GET", target: "/rooms/{room}/messages?since=0&wait=0", bearer: true, ok: 200},
	{method: "GET", target: "/rooms/{room}/events?token={T}", ok: 200},
	{method: "GET", target: "/r/{room}", ok: 200},
	{method: "POST", target: "/rooms/{room}/leave", bearer: true, ok: 204}, // last: the control member leaves
}

// Room names with an encoded separator or a dot segment, each of which a
// proxy or a decoding router would read as another path. "victim" is a
// room with members: a name that decodes to a path through it must not
// reach it.
var separatorNames = []string{
	"a%2Fb", "a%2fb", "%2F", "%2f", "victim%2F", "%2Fvictim", "victim%2F..%2Fvictim",
	"victim%2Fjoin", "victim%2Fmessages", "victim%2Fleave", "victim%2Fevents",
	"victim%5Cjoin", "victim%252Fjoin",
	".", "..", "%2e", "%2E", "%2e%2e", ".%2E", "%2E.", "..%2f", "..%2Fvictim", "%2e%2e%2fvictim",
	"%76ictim", // an encoded letter: a room name needs no encoding, so none is taken
}

func TestRoomNamesAreMatchedAsSent(t *testing.T) {
	srv := newTestServer(t)
	alice := srv.join(t, "victim", 201)
	bob := srv.join(t, "victim", 201)
	before := srv.roomInfo(t, "victim")

	for _, route := range roomRoutes {
		for _, name := range separatorNames {
			target := strings.NewReplacer("{room}", name, "{T}", alice.Token).Replace(route.target)
			t.Run(route.method+" "+target, func(t *testing.T) {
				var header []string
				if route.bearer {
					header = alice.auth()
				}
				resp, body := sendAsIs(t, srv.addr(), route.method, target, route.body, header...)
				a := answer{Status: resp.StatusCode, Header: resp.Header, Body: body}
				if a.Status != 400 || a.problem(t) != "bad_room_name" {
					t.Fatalf("%d %s, want 400 bad_room_name", a.Status, body)
				}
			})
		}
	}

	// Where the encoded separator hides the rest of a route, the path has
	// the shape of another route (or of none): refused all the same.
	for _, hidden := range []struct{ method, target string }{
		{"POST", "/rooms/victim%2Fjoin"},
		{"POST", "/rooms/victim%2Fleave?token={T}"},
		{"POST", "/rooms/victim%2Fmessages"},
		{"GET", "/rooms/victim%2Fmessages?since=0&wait=0"},
		{"GET", "/rooms/victim%2fevents?token={T}"},
		{"GET", "/rooms/..%2Frooms%2Fvictim"},
		{"GET", "/rooms/../rooms/victim"},
		{"POST", "/rooms/./victim/join"},
		{"GET", "/r/..%2frooms"},
		{"GET", "/r/victim%2F"},
		{"GET", "/r/../r/victim"},
		{"POST", "http://tincan/rooms/victim%2Fjoin"}, // the absolute form a proxy is sent
	} {
		target := strings.ReplaceAll(hidden.target, "{T}", alice.Token)
		t.Run(hidden.method+" "+target, func(t *testing.T) {
			resp, body := sendAsIs(t, srv.addr(), hidden.method, target, `{"type":"chat","text":"must not be stored"}`, alice.auth()...)
			a := answer{Status: resp.StatusCode, Header: resp.Header, Body: body}
			if a.Status != 400 || a.problem(t) != "bad_room_name" {
				t.Fatalf("%d %s, want 400 bad_room_name", a.Status, body)
			}
		})
	}

	// Nothing reached the room: the same members, no message, and alice
	// did not leave.
	if after := srv.roomInfo(t, "victim"); after != before {
		t.Fatalf("room victim changed: %+v, was %+v", after, before)
	}
	if p := bob.poll(t, 0, "0"); len(p.Messages) != 0 {
		t.Fatalf("a message reached bob: %+v", p.Messages)
	}
	alice.poll(t, 0, "0") // she is still a member

	// Elsewhere too, nothing encoded is decoded into a path: a static file
	// or the page is found only under its name as it stands.
	for _, target := range []string{"/static/%2e%2e%2fmain.go", "/static/..%2Fmain.go", "/static/tincan%2Ejs", "/%72/victim", "/%2Fr%2Fvictim"} {
		t.Run("GET "+target, func(t *testing.T) {
			resp, body := sendAsIs(t, srv.addr(), "GET", target, "")
			a := answer{Status: resp.StatusCode, Header: resp.Header, Body: body}
			if a.Status != 404 || a.problem(t) != "not_found" {
				t.Fatalf("%d %s, want 404 not_found", a.Status, body)
			}
		})
	}

	// And every route of the table works with a plain room name, as sent
	// byte for byte the same way.
	carol := srv.join(t, "control", 201)
	for _, route := range roomRoutes {
		target := strings.NewReplacer("{room}", "control", "{T}", carol.Token).Replace(route.target)
		var header []string
		if route.bearer {
			header = carol.auth()
		}
		if resp, body := sendAsIs(t, srv.addr(), route.method, target, route.body, header...); resp.StatusCode != route.ok {
			t.Fatalf("%s %s: %d %s, want %d", route.method, target, resp.StatusCode, body, route.ok)
		}
	}
	if resp, body := sendAsIs(t, srv.addr(), "GET", "/static/tincan.js", ""); resp.StatusCode != 200 {
		t.Fatalf("GET /static/tincan.js: %d %s", resp.StatusCode, body)
	}
}
