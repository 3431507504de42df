package handlers

import (
	"io"
	"net/http"
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
