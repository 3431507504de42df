package handlers

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tincan/tincan/store/boltstore"
)

// checkOneErrorLine checks that the one line logged at level ERROR is the
// request's, with its method, path and status, and a cause containing
// cause.
func checkOneErrorLine(t *testing.T, logs *logBuffer, method, path string, status int, cause string) {
	t.Helper()
	lines := logs.errors(t)
	if len(lines) != 1 {
		t.Fatalf("%d lines logged at level ERROR, want 1 (the request's): %v", len(lines), lines)
	}
	l := lines[0]
	if l["msg"] != "request" || l["method"] != method || l["path"] != path || l["status"] != float64(status) {
		t.Errorf("error line %v; want the request's, with method %s, path %s and status %d", l, method, path, status)
	}
	if err, _ := l["err"].(string); !strings.Contains(err, cause) {
		t.Errorf("error line gives the cause %q; want one containing %q", l["err"], cause)
	}
}

// A store that fails a read (a damaged record in its file) makes a 500
// internal that does not show the failure to the client; the request's log
// line, the one error logged, gives it.
func TestStoreFailureIsLoggedWithTheRequest(t *testing.T) {
	var logs logBuffer
	a := newTestAPI(t, Config{Logger: logs.logger()}, boltstore.Options{RecentBytes: -1})
	m := a.join("broken")
	a.join("broken") // m now has a peer-joined event to read
	a.corruptRecords("broken")
	ans := a.do("GET", "/rooms/broken/messages?wait=0", m.token, "")
	if ans.status != http.StatusInternalServerError || ans.problemCode() != "internal" {
		t.Fatalf("a poll over a damaged record: %d %s; want 500 internal", ans.status, ans.body)
	}
	if strings.Contains(string(ans.body), "record") {
		t.Errorf("the 500 shows the store's failure to the client: %s", ans.body)
	}
	checkOneErrorLine(t, &logs, "GET", "/rooms/broken/messages", 500, "corrupt message record")
}

// A closed store answers 503 shutting_down (a client retries), and the
// cause is logged with the request like every 5xx.
func TestClosedStoreIsShuttingDown(t *testing.T) {
	var logs logBuffer
	a := newTestAPI(t, Config{Logger: logs.logger()}, boltstore.Options{})
	a.join("closed")
	if err := a.st.Close(); err != nil {
		t.Fatal(err)
	}
	ans := a.do("GET", "/rooms/closed", "", "")
	if ans.status != http.StatusServiceUnavailable || ans.problemCode() != "shutting_down" {
		t.Fatalf("room info from a closed store: %d %s; want 503 shutting_down", ans.status, ans.body)
	}
	checkOneErrorLine(t, &logs, "GET", "/rooms/closed", 503, "store is closed")
}

// A failed health check answers 503 unhealthy and logs why once: on the
// request's line, not on a line of its own besides.
func TestUnhealthyIsLoggedOnce(t *testing.T) {
	var logs logBuffer
	a := newTestAPI(t, Config{Logger: logs.logger()}, boltstore.Options{})
	if err := a.st.Close(); err != nil {
		t.Fatal(err)
	}
	ans := a.do("GET", "/healthz", "", "")
	if ans.status != http.StatusServiceUnavailable || ans.problemCode() != "unhealthy" {
		t.Fatalf("healthz of a closed store: %d %s; want 503 unhealthy", ans.status, ans.body)
	}
	checkOneErrorLine(t, &logs, "GET", "/healthz", 503, "store is closed")
}
