package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tincan/tincan/store"
)

// A store that cannot reach a quorum of its storage (the etcd engine
// wraps store.ErrUnavailable around etcd's own error) is answered 503
// unavailable problem+json with Retry-After: the client retries, with the
// same Idempotency-Key for a post. The cause is not shown to the client.
func TestUnavailableStoreIs503(t *testing.T) {
	err := fmt.Errorf("%w: append: %w", store.ErrUnavailable, fmt.Errorf("etcdserver: no leader"))
	w := httptest.NewRecorder()
	fail(w, err)
	var p problem
	if jerr := json.Unmarshal(w.Body.Bytes(), &p); jerr != nil {
		t.Fatalf("body %q: %v", w.Body, jerr)
	}
	if w.Code != http.StatusServiceUnavailable || p.Status != http.StatusServiceUnavailable || p.Code != "unavailable" ||
		w.Header().Get("Content-Type") != "application/problem+json" || w.Header().Get("Retry-After") == "" {
		t.Fatalf("answer %d %v %s; want 503 unavailable problem+json with Retry-After", w.Code, w.Header(), w.Body)
	}
	if strings.Contains(w.Body.String(), "leader") {
		t.Errorf("the answer shows the store's cause: %s", w.Body)
	}
}
