package main

// The webhook receiver of the contract tests: an HTTP server on loopback
// that checks each delivery with the Go client's VerifyWebhook (Standard
// Webhooks) and keeps the events in the order they first arrived.

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	tincan "github.com/tincan/tincan/client"
)

const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hookEvent is a delivered event.
type hookEvent = tincan.WebhookEvent

// receiver is a webhook endpoint that answers 204 to what verifies with
// testWebhookSecret, 400 to the rest.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	seen   map[string]bool // webhook-ids
	events []hookEvent     // first arrivals, in order
	bad    []string        // what failed verification
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{seen: map[string]bool{}}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url() string { return r.srv.URL + "/hooks" }

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	ev, err := tincan.VerifyWebhook(testWebhookSecret, req.Header, body, time.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if !r.seen[ev.ID] {
		r.seen[ev.ID] = true
		r.events = append(r.events, ev)
	}
	w.WriteHeader(http.StatusNoContent)
}

// count is how many events arrived so far (first arrivals).
func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// await waits until an event from the after-th on matches, failing t
// after 30 s, or at once on a delivery that failed verification.
func (r *receiver) await(t testing.TB, what string, after int, match func(hookEvent) bool) hookEvent {
	t.Helper()
	var found hookEvent
	waitFor(t, "the webhook event: "+what, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.bad) > 0 {
			t.Fatalf("bad deliveries: %q", slices.Clone(r.bad))
		}
		for _, ev := range r.events[min(after, len(r.events)):] {
			if match(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// verifyStandardWebhook checks a delivery as Standard Webhooks has it, with
// the Go client's VerifyWebhook (the name the README's tests call).
func verifyStandardWebhook(secret string, h http.Header, body []byte) error {
	_, err := tincan.VerifyWebhook(secret, h, body, time.Now())
	return err
}
