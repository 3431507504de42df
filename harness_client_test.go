package main

// The API client of the tests: a member of a room, what the server
// answers, and reading those answers (problems, posted ids, long-polls,
// messages with their numbers intact, metrics).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
)

// client is a member of a room as its join answer made it; its requests go
// to its endpoint, and follow the server there across restarts.
type client struct {
	ep   *endpoint
	Room string // the room the test joined (the answer's is joinAnswer.Room)
	joinAnswer
}

type joinAnswer struct {
	Room       string            `json:"room"`
	ClientID   string            `json:"client_id"`
	Token      string            `json:"token"`
	Initiator  bool              `json:"initiator"`
	Peers      []string          `json:"peers"`
	Capacity   int               `json:"capacity"`
	ICEServers []json.RawMessage `json:"ice_servers"`
	Events     string            `json:"events"`
	Messages   string            `json:"messages"`
}

// join joins room and fails t unless the answer's status is wantStatus;
// header holds names and values in turn (a token: a resume).
func (e *endpoint) join(t testing.TB, room string, wantStatus int, header ...string) *client {
	t.Helper()
	a := e.do(t, "POST", "/rooms/"+room+"/join", "", header...)
	if a.Status != wantStatus {
		t.Fatalf("join %s at %s: status %d, want %d: %s", room, e.URL(), a.Status, wantStatus, a.Body)
	}
	c := &client{ep: e, Room: room}
	a.json(t, &c.joinAnswer)
	return c
}

// resume joins c's room again with c's token, failing t unless it is
// answered 200 (the same member, resumed), and returns that answer.
func (c *client) resume(t testing.TB) *client {
	t.Helper()
	return c.ep.join(t, c.Room, 200, c.auth()...)
}

func (c *client) auth() []string { return []string{"Authorization", "Bearer " + c.Token} }

// post posts a message and returns its id, failing t unless 201.
func (c *client) post(t testing.TB, body string, header ...string) uint64 {
	t.Helper()
	a, err := c.tryPost(context.Background(), body, header...)
	if err != nil {
		t.Fatalf("post %s to %s: %v", body, c.ep.URL(), err)
	}
	if a.Status != 201 {
		t.Fatalf("post %s to %s: status %d: %s", body, c.ep.URL(), a.Status, a.Body)
	}
	id, err := a.postedID()
	if err != nil {
		t.Fatalf("post answered %s: %v", a.Body, err)
	}
	return id
}

// tryPost posts a message once. An error means no complete answer: the
// message may or may not have been stored.
func (c *client) tryPost(ctx context.Context, body string, header ...string) (answer, error) {
	return c.ep.request(ctx, "POST", "/rooms/"+c.Room+"/messages", body, append(c.auth(), header...)...)
}

type pollAnswer struct {
	Messages []map[string]any `json:"messages"`
	Next     uint64           `json:"next"`
}

// poll long-polls c's messages after since, waiting up to wait seconds; it
// fails t unless the answer is 200, and checks that it is not cached.
func (c *client) poll(t testing.TB, since uint64, wait string) pollAnswer {
	t.Helper()
	a, err := c.longPoll(context.Background(), since, wait)
	if err != nil {
		t.Fatalf("poll since %d at %s: %v", since, c.ep.URL(), err)
	}
	if a.Status != 200 {
		t.Fatalf("poll: status %d: %s", a.Status, a.Body)
	}
	if a.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("poll Cache-Control %q", a.Header.Get("Cache-Control"))
	}
	p, err := a.decodePoll()
	if err != nil {
		t.Fatalf("poll answered %s: %v", a.Body, err)
	}
	return p
}

// longPoll makes one long-poll request; decodePoll reads a 200 answer.
func (c *client) longPoll(ctx context.Context, since uint64, wait string) (answer, error) {
	return c.ep.request(ctx, "GET", fmt.Sprintf("/rooms/%s/messages?since=%d&wait=%s", c.Room, since, wait), "", c.auth()...)
}

// leave leaves the room, failing t unless 204.
func (c *client) leave(t testing.TB) {
	t.Helper()
	if a := c.ep.do(t, "POST", "/rooms/"+c.Room+"/leave", "", c.auth()...); a.Status != 204 {
		t.Fatalf("leave: %d %s", a.Status, a.Body)
	}
}

// answer is a decoded HTTP answer.
type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a answer) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(a.Body, v); err != nil {
		t.Fatalf("decode %s: %v", a.Body, err)
	}
}

// problem decodes a problem+json answer and checks its shape.
func (a answer) problem(t testing.TB) (code string) {
	t.Helper()
	if ct := a.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d Content-Type %q, want application/problem+json; body %s", a.Status, ct, a.Body)
	}
	var p struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	a.json(t, &p)
	if p.Status != a.Status || p.Type != "about:blank" || p.Title != http.StatusText(a.Status) || p.Code == "" {
		t.Fatalf("malformed problem for status %d: %s", a.Status, a.Body)
	}
	return p.Code
}

// postedID is the message id of a 201 answer to a post; a body without
// one is an error.
func (a answer) postedID() (uint64, error) {
	var r struct{ ID uint64 }
	if err := json.Unmarshal(a.Body, &r); err != nil || r.ID == 0 {
		return 0, fmt.Errorf("201 with body %s", a.Body)
	}
	return r.ID, nil
}

// decodePoll decodes the answer to a long-poll, keeping the numbers of the
// messages as json.Number.
func (a answer) decodePoll() (pollAnswer, error) {
	var p pollAnswer
	err := jsonNumbers(a.Body, &p)
	return p, err
}

// setHeader sets the names and values, in turn, of header on req.
func setHeader(req *http.Request, header []string) {
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
}

// decodeMessage decodes a message, keeping its numbers as json.Number.
func decodeMessage(t testing.TB, data string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := jsonNumbers([]byte(data), &m); err != nil {
		t.Fatalf("message %q: %v", data, err)
	}
	return m
}

// jsonNumbers decodes data, one JSON value and nothing after it, into v
// keeping numbers as json.Number.
func jsonNumbers(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// idOf is a decoded message's id (0 if it has none).
func idOf(m map[string]any) uint64 {
	n, _ := strconv.ParseUint(fmt.Sprint(m["id"]), 10, 64)
	return n
}
