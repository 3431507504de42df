package main

// Every list in every JSON answer is a list: never null, never left out,
// even when it is empty (the first joiner's peers, a server that hands out
// no ICE server, a long-poll with nothing to deliver).

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
)

// TestAnswersHaveNoNull walks every JSON answer of the API, successes and
// problems, and fails on any null in it; the members that are lists must
// be arrays, empty ones included.
func TestAnswersHaveNoNull(t *testing.T) {
	for _, setup := range []struct {
		name  string
		flags []string
	}{
		{"no ICE server", nil},
		{"extra ICE servers", []string{"-ice-server", "stun:stun.example.com:3478", "-ice-server", "turn:turn.example.com:3478", "-turn-secret", "0123456789abcdef0123"}},
	} {
		t.Run(setup.name, func(t *testing.T) {
			srv := newTestServer(t, withFlags(setup.flags...))
			check := func(what string, body []byte, lists ...string) {
				t.Helper()
				var v any
				if err := json.Unmarshal(body, &v); err != nil {
					t.Fatalf("%s: %v: %s", what, err, body)
				}
				if path, ok := findNull(v, what); ok {
					t.Errorf("%s: null at %s: %s", what, path, body)
				}
				obj, _ := v.(map[string]any)
				for _, name := range lists {
					if _, ok := obj[name].([]any); !ok {
						t.Errorf("%s: %q is %#v, want a list: %s", what, name, obj[name], body)
					}
				}
			}

			first := srv.do(t, "POST", "/rooms/lists/join", "")
			if first.Status != 201 {
				t.Fatalf("first join: %d %s", first.Status, first.Body)
			}
			if !bytes.Contains(first.Body, []byte(`"peers":[]`)) {
				t.Errorf("the first joiner's peers are not []: %s", first.Body)
			}
			check("first join", first.Body, "peers", "ice_servers")
			var a client
			a.ep, a.Room = srv.endpoint, "lists"
			first.json(t, &a.joinAnswer)
			if setup.flags == nil && !bytes.Contains(first.Body, []byte(`"ice_servers":[]`)) {
				t.Errorf("no ICE server configured, but ice_servers is not []: %s", first.Body)
			}
			for _, s := range a.ICEServers {
				check("an ICE server of the join", s, "urls")
			}

			b := srv.join(t, "lists", 201)
			second := srv.do(t, "POST", "/rooms/lists/join", "", b.auth()...)
			check("a resume", second.Body, "peers", "ice_servers")
			if len(b.Peers) != 1 || b.Peers[0] != a.ClientID {
				t.Errorf("the second joiner's peers %v, want [%s]", b.Peers, a.ClientID)
			}

			check("room info", srv.do(t, "GET", "/rooms/lists", "").Body)
			check("room info of an empty room", srv.do(t, "GET", "/rooms/nobody", "").Body)
			ice := srv.do(t, "GET", "/ice-servers", "", a.auth()...)
			check("GET /ice-servers", ice.Body, "ice_servers")

			// a has b's peer-joined event to read; after it, nothing.
			full, err := a.longPoll(t.Context(), 0, "0")
			if err != nil || full.Status != 200 {
				t.Fatalf("poll: %v %d %s", err, full.Status, full.Body)
			}
			check("a poll with messages", full.Body, "messages")
			p, err := full.decodePoll()
			if err != nil || len(p.Messages) == 0 {
				t.Fatalf("poll answered %s: %v", full.Body, err)
			}
			empty, err := a.longPoll(t.Context(), p.Next, "0")
			if err != nil || empty.Status != 200 {
				t.Fatalf("empty poll: %v %d %s", err, empty.Status, empty.Body)
			}
			if !bytes.Contains(empty.Body, []byte(`"messages":[]`)) {
				t.Errorf("an empty poll's messages are not []: %s", empty.Body)
			}
			check("an empty poll", empty.Body, "messages")

			posted, err := b.tryPost(t.Context(), `{"type":"chat","text":"hi"}`)
			if err != nil || posted.Status != 201 {
				t.Fatalf("post: %v %d %s", err, posted.Status, posted.Body)
			}
			check("a post", posted.Body)
			batch, err := b.tryPost(t.Context(), `[{"type":"chat","text":"one"},{"type":"chat","text":"two"}]`)
			if err != nil || batch.Status != 201 {
				t.Fatalf("batch post: %v %d %s", err, batch.Status, batch.Body)
			}
			check("a batch post", batch.Body, "ids")

			s := a.events(t, "&since="+strconv.FormatUint(p.Next, 10))
			ready := s.next(t)
			check("the ready frame", []byte(ready.Data))
			check("a message frame", []byte(s.next(t).Data))

			check("GET /healthz", srv.do(t, "GET", "/healthz", "").Body)
			for _, refusal := range []answer{
				srv.do(t, "GET", "/rooms/lists/messages", ""),
				srv.do(t, "POST", "/rooms/bad%20name/join", ""),
				srv.do(t, "GET", "/nowhere", ""),
			} {
				refusal.problem(t)
				check("a problem", refusal.Body)
			}
		})
	}
}

// findNull returns the path of the first null in v (a decoded JSON value)
// below path.
func findNull(v any, path string) (string, bool) {
	switch x := v.(type) {
	case nil:
		return path, true
	case map[string]any:
		for k, e := range x {
			if p, ok := findNull(e, path+"."+k); ok {
				return p, true
			}
		}
	case []any:
		for i, e := range x {
			if p, ok := findNull(e, path+"["+strconv.Itoa(i)+"]"); ok {
				return p, true
			}
		}
	}
	return "", false
}
