package handlers

import (
	"context"
	"net/http"
	"time"
)

// handleHealthz answers 200 while the store can make a change durable
// within 5 s, else 503 unhealthy.
func (s *Server) handleHealthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			fail(w, errorf(503, "unhealthy", "store is not writable").because(err))
			return
		}
		encode(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}
