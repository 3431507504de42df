package handlers

import (
	"fmt"
	"net/http"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// routes is the whole API surface, matched on the path as sent (asSent).
func (s *Server) routes() http.Handler {
	r := httprouter.New()
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false

	r.Handler("POST", "/rooms/:room/join", s.handleJoin())
	r.Handler("POST", "/rooms/:room/leave", s.handleLeave())
	r.Handler("GET", "/rooms/:room", s.handleRoom())
	r.Handler("POST", "/rooms/:room/messages", s.handlePost())
	r.Handler("GET", "/rooms/:room/messages", s.handlePoll())
	r.Handler("GET", "/rooms/:room/events", s.handleEvents())
	r.Handler("GET", "/ice-servers", s.handleICEServers())

	s.adminRoutes(r)

	r.Handler("GET", "/healthz", s.handleHealthz())
	r.Handler("HEAD", "/healthz", s.handleHealthz())
	if !s.cfg.MetricsElsewhere {
		r.Handler("GET", "/metrics", answerWithin(answerTimeout, promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})))
	}

	r.Handler("GET", "/", answerWithin(answerTimeout, s.handlePage("index.html")))
	r.Handler("GET", "/r/:room", answerWithin(answerTimeout, s.handlePage("room.html")))
	r.Handler("GET", "/static/*file", answerWithin(answerTimeout, s.handleStatic()))

	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail(w, errorf(http.StatusNotFound, "not_found", "no such resource: %s %.100s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail(w, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %.100s", r.Method, r.URL.Path))
	})
	r.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		// The panic is the cause the request's log line gives, even when
		// the answer had begun and stays what it was.
		fail(w, fmt.Errorf("panic: %v", v))
	}
	return s.roomPageErrors(checkRoomSegment(r))
}
