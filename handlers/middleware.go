package handlers

import (
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// middleware wraps every request: CORS, metrics and a log line (with tokens
// redacted). The line is an error for a 5xx answer and for a request whose
// handler recorded a cause (recordCause); it then gives the cause as "err".
// It is the only line logged for a failed request.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.cfg.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		if s.cors(rec, r) {
			next.ServeHTTP(rec, r)
		}
		s.metrics.request(rec.status)
		level := slog.LevelDebug
		if rec.status >= 500 || rec.cause != nil {
			level = slog.LevelError
		}
		if s.log.Enabled(r.Context(), level) { // redacting the query costs: only when logged
			attrs := []any{"method", r.Method, "path", r.URL.Path, "query", redactQuery(r.URL.RawQuery),
				"status", rec.status, "duration", time.Since(start), "remote", r.RemoteAddr}
			if rec.cause != nil {
				attrs = append(attrs, "err", rec.cause)
			}
			s.log.Log(r.Context(), level, "request", attrs...)
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

// statusRecorder remembers the status, and the cause of a failure, for the
// log. Its Unwrap lets http.ResponseController reach the writer's Flush
// (with its error) and deadlines; it has no Flush of its own, which would
// hide flush errors.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	cause       error // why the request failed, for the log; the first recorded
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// recordCause records why the request answered by w failed, for its log
// line: on the middleware's statusRecorder, found through the writers'
// Unwrap. The first cause recorded is kept; without a statusRecorder (a
// handler served on its own) nothing is recorded.
func recordCause(w http.ResponseWriter, err error) {
	for {
		switch x := w.(type) {
		case *statusRecorder:
			if x.cause == nil {
				x.cause = err
			}
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return
		}
	}
}
