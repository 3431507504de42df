package handlers

import (
	"net/http"
	"testing"

	"github.com/tincan/tincan/store/boltstore"
)

// A long-poll whose read fails in the store (a damaged record in its file;
// with no messages kept in memory every read goes to the file) answers a
// 500 internal whose cause is logged with the request: not the 401 of a
// member that left.
func TestPollStoreFailure(t *testing.T) {
	var logs logBuffer
	a := newTestAPI(t, Config{Logger: logs.logger()}, boltstore.Options{RecentBytes: -1})
	first := a.join("pollfail")
	a.join("pollfail") // first now has a peer-joined event to read
	a.corruptRecords("pollfail")
	ans := a.do("GET", "/rooms/pollfail/messages?since=0&wait=0", first.token, "")
	if ans.status != http.StatusInternalServerError || ans.problemCode() != "internal" {
		t.Fatalf("poll over a failing store: %d %s; want 500 internal", ans.status, ans.body)
	}
	checkOneErrorLine(t, &logs, "GET", "/rooms/pollfail/messages", 500, "corrupt message record")
}

// A member that leaves while its long-poll waits gets 401 unauthorized
// from that poll, as a poll made after leaving does; nothing is logged as
// an error.
func TestPollOfAMemberThatLeaves(t *testing.T) {
	var logs logBuffer
	a := newTestAPI(t, Config{Logger: logs.logger()}, boltstore.Options{})
	a.join("pollgone")
	m := a.join("pollgone")
	polled := make(chan answer, 1)
	go func() { polled <- a.do("GET", "/rooms/pollgone/messages?since=1000000&wait=60", m.token, "") }()
	waitFor(t, "the poll to wait", func() bool { return a.metric("tincan_polls_waiting") == 1 })
	if ans := a.do("POST", "/rooms/pollgone/leave", m.token, ""); ans.status != http.StatusNoContent {
		t.Fatalf("leave: %d %s", ans.status, ans.body)
	}
	var ans answer
	within(t, "the waiting poll's answer", func() { ans = <-polled })
	if ans.status != http.StatusUnauthorized || ans.problemCode() != "unauthorized" {
		t.Errorf("waiting poll of a member that left: %d %s; want 401 unauthorized", ans.status, ans.body)
	}
	if ans := a.do("GET", "/rooms/pollgone/messages?wait=0", m.token, ""); ans.status != http.StatusUnauthorized || ans.problemCode() != "unauthorized" {
		t.Errorf("poll after leaving: %d %s; want 401 unauthorized", ans.status, ans.body)
	}
	if lines := logs.errors(t); len(lines) != 0 {
		t.Errorf("logged as errors: %v", lines)
	}
}
