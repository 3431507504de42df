package handlers

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSentPath(t *testing.T) {
	for target, want := range map[string]string{
		"/rooms/a%2Fb/join?token=x":                "/rooms/a%2Fb/join",
		"/rooms/../join":                           "/rooms/../join",
		"/rooms/%2e%2e/join":                       "/rooms/%2e%2e/join",
		"/static/tincan%2Ejs":                      "/static/tincan%2Ejs",
		"http://tincan.example/rooms/a%2fb/events": "/rooms/a%2fb/events",
		"https://tincan.example?x=1":               "/",
		"*":                                        "*",
	} {
		if got := sentPath(httptest.NewRequest("GET", target, nil)); got != want {
			t.Errorf("target %q: path %q, want %q", target, got, want)
		}
	}
	// A request made in this process has no target: its URL's escaped path.
	r, err := http.NewRequest("GET", "http://tincan.example/rooms/a%2Fb/join", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := sentPath(r); got != "/rooms/a%2Fb/join" {
		t.Errorf("request made in process: path %q", got)
	}
}

func TestRoomSegment(t *testing.T) {
	for path, want := range map[string]string{
		"/rooms/abc/join":   "abc",
		"/rooms/abc":        "abc",
		"/rooms/":           "",
		"/rooms/a%2Fb/join": "a%2Fb",
		"/rooms/../rooms/x": "..",
		"/r/..%2frooms":     "..%2frooms",
		"/r/x/y":            "x",
	} {
		if got, ok := roomSegment(path); !ok || got != want {
			t.Errorf("%q: %q %v, want %q", path, got, ok, want)
		}
	}
	for _, path := range []string{"/", "/rooms", "/r", "/ROOMS/x", "/static/r/x", "/ice-servers", "//rooms/x"} {
		if got, ok := roomSegment(path); ok {
			t.Errorf("%q: room segment %q, want none", path, got)
		}
	}
}
