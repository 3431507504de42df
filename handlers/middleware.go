package handlers

import (
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// middleware wraps every request: CORS, metrics and a log line (with tokens
// redacted).
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.cfg.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		if s.cors(rec, r) {
			next.ServeHTTP(rec, r)
		}
		s.metrics.request(rec.status)
		level := slog.LevelDebug
		if rec.status >= 500 {
			level = slog.LevelError
		}
		if s.log.Enabled(r.Context(), level) { // redacting the query costs: only when logged
			s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "query", redactQuery(r.URL.RawQuery),
				"status", rec.status, "duration", time.Since(start), "remote", r.RemoteAddr)
		}
	})
}

// cors applies the -allow-origin policy. It answers preflights itself and
// reports whether the request goes on to the routes.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || !(slices.Contains(s.cfg.AllowOrigins, origin) || slices.Contains(s.cfg.AllowOrigins, "*")) {
		return true // same origin, or a browser will refuse the answer itself
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}

// redactQuery hides secrets that clients put in URLs (EventSource cannot set
// headers, so tokens travel as ?token=).
func redactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "(unparsable)"
	}
	for _, k := range []string{"token", "password"} {
		if q.Has(k) {
			q.Set(k, "REDACTED")
		}
	}
	return q.Encode()
}

// statusRecorder remembers the status for the log. Its Unwrap lets
// http.ResponseController reach the writer's Flush (with its error) and
// deadlines; it has no Flush of its own, which would hide flush errors.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
