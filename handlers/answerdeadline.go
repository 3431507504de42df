package handlers

import (
	"net/http"
	"time"
)

// Answers have write deadlines, so that a client that stops reading cannot
// hold a handler, its goroutine and its answer for as long as it likes
// (event streams have theirs in deadlineWriter). A small answer fits in the
// socket buffers and never blocks; these are for the ones that may not.

// answerTimeout is the longest a page, a static file or the metrics may
// take to reach the client.
const answerTimeout = 30 * time.Second

// writePiece is the size of the pieces in which writePaced writes, each of
// which the client must take within the stall timeout: the most an SSE
// frame holds, too.
const writePiece = 64 << 10

// answerWithin serves next with a write deadline d from now for its whole
// answer; when it passes, net/http closes the connection. (net/http lifts a
// write deadline once the request is done, so the next request on a
// kept-alive connection starts without one; an HTTP/2 deadline is the
// stream's.)
func answerWithin(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A writer without deadlines (one served on its own) goes without.
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
		next.ServeHTTP(w, r)
	})
}

// writePaced writes data, the whole body of an answer whose header (with
// its Content-Length, so that the pieces need no chunking) is set, in
// pieces of writePiece: a client that takes no piece within stall has its
// connection closed (by net/http, after the failed write).
func writePaced(w http.ResponseWriter, data []byte, stall time.Duration) {
	rc := http.NewResponseController(w)
	for len(data) > 0 {
		n := min(len(data), writePiece)
		rc.SetWriteDeadline(time.Now().Add(stall))
		if _, err := w.Write(data[:n]); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		data = data[n:]
	}
}
