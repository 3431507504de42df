package handlers

import (
	"errors"
	"net"
	"net/http"
	"os"
	"time"
)

// limitBodyTime gives a request that has a body BodyTimeout, from the end
// of its header (net/http's ReadHeaderTimeout bounds that), to send all of
// it: a read deadline on its connection, so that a client that stalls or
// trickles its body cannot hold a connection and a goroutine for as long
// as it likes. Every read of the body is bounded by it: the handler's own
// (readBody answers 408 request_timeout when it passes and closes the
// connection) and the one net/http makes after a handler that answered
// without reading, to find the next request. A request without a body (the
// event streams and long-polls) gets no deadline and may wait as long as
// its wait.
func (s *Server) limitBodyTime(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// -1: a length not announced (chunked), or an HTTP/2 stream left open.
		if r.ContentLength != 0 {
			// A writer without deadlines (one served on its own, in a
			// test) goes without.
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// bodyTimedOut reports whether a failed read of a request body failed
// because limitBodyTime's deadline passed.
func bodyTimedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
