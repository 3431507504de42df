package handlers

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tincan/tincan/store/boltstore"
)

// Drain ends an open event stream, then refuses new streams and joins with
// 503 shutting_down; the stream's place under the address's cap is freed.
func TestDrainEndsStreamsAndRefusesNewOnes(t *testing.T) {
	a := newTestAPI(t, Config{Heartbeat: time.Hour, MaxOpenPerIP: 1}, boltstore.Options{})
	a.join("drain")
	b := a.join("drain")
	stream := a.openEvents(b)

	within(t, "Drain", a.srv.Drain)
	within(t, "the stream to end", func() {
		if _, err := io.ReadAll(stream); err != nil {
			t.Errorf("reading the drained stream: %v", err)
		}
	})

	if ans := a.do("GET", "/rooms/drain/events", b.token, ""); ans.status != http.StatusServiceUnavailable || ans.problemCode() != "shutting_down" {
		t.Errorf("events after Drain: %d %s; want 503 shutting_down (a 429 would mean the old stream's place was kept)", ans.status, ans.body)
	}
	if ans := a.do("POST", "/rooms/drain/join", "", ""); ans.status != http.StatusServiceUnavailable || ans.problemCode() != "shutting_down" {
		t.Errorf("join after Drain: %d %s; want 503 shutting_down", ans.status, ans.body)
	}
	if got := a.srv.streams.list(); len(got) != 0 {
		t.Errorf("%d streams still listed after Drain", len(got))
	}
}

// An event stream whose first read fails in the store ends before its ready
// frame, and the failure is logged: it is not taken for a member that left.
func TestEventsStoreFailureIsLogged(t *testing.T) {
	var logs logBuffer
	a := newTestAPI(t, Config{Logger: logs.logger(), Heartbeat: time.Hour}, boltstore.Options{RecentBytes: -1})
	first := a.join("eventsfail")
	a.join("eventsfail") // first now has a peer-joined event to read
	a.corruptRecords("eventsfail")
	// Over one connection of its own: the stream may end before r3labs has
	// sent the head, and http.Client would then retry on a reused one.
	conn, err := net.Dial("tcp", strings.TrimPrefix(a.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /rooms/eventsfail/events?since=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", first.token)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 200") || strings.Contains(string(got), "event: ready") {
		t.Errorf("stream over a failing store: %q; want it to end before its ready frame", got)
	}
	lines := logs.errors(t)
	if len(lines) != 1 || lines[0]["msg"] != "read for stream" || lines[0]["client"] != first.ID ||
		!strings.Contains(fmt.Sprint(lines[0]["err"]), "corrupt message record") {
		t.Errorf("lines logged at level ERROR: %v; want one \"read for stream\" of client %s, corrupt message record", lines, first.ID)
	}
}

// The stream of a member that leaves ends, and nothing is logged as an
// error: a member that is gone is not a failure.
func TestEventsOfAMemberThatLeaves(t *testing.T) {
	var logs logBuffer
	a := newTestAPI(t, Config{Logger: logs.logger(), Heartbeat: time.Hour}, boltstore.Options{})
	a.join("eventsgone")
	m := a.join("eventsgone")
	stream := a.openEvents(m)
	if ans := a.do("POST", "/rooms/eventsgone/leave", m.token, ""); ans.status != http.StatusNoContent {
		t.Fatalf("leave: %d %s", ans.status, ans.body)
	}
	within(t, "the stream to end", func() { io.ReadAll(stream) })
	if lines := logs.errors(t); len(lines) != 0 {
		t.Errorf("logged as errors: %v", lines)
	}
}
