package handlers

import (
	"net/http"
	"strings"
)

// Paths are matched as the client sent them, percent-encoding and all, so
// that tincan acts on the path a proxy, a filter or a log sees: a room
// name is a segment that must match the room pattern as it stands, and a
// %2F in it is part of the name (which it makes invalid), never a
// separator that would lead to another route. Dot segments are not
// resolved: "." and ".." are invalid room names too.

// asSent hands next the request with URL.Path set to the path as the
// client sent it, still percent-encoded (and URL.RawPath empty). Every
// handler after it routes, checks and logs that path.
func asSent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := sentPath(r); p != r.URL.Path {
			u := *r.URL
			u.Path, u.RawPath = p, ""
			sent := *r
			sent.URL = &u
			r = &sent
		}
		next.ServeHTTP(w, r)
	})
}

// sentPath is the path of r's request target as it came on the wire: the
// target up to its query, without the scheme and host of an absolute-form
// target. A request without a target of that shape ("*", or one made in
// this process) gives its URL's escaped path.
func sentPath(r *http.Request) string {
	p, _, _ := strings.Cut(r.RequestURI, "?")
	if !strings.HasPrefix(p, "/") {
		if _, rest, ok := strings.Cut(p, "://"); ok { // absolute form
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				return rest[i:]
			}
			return "/"
		}
		return r.URL.EscapedPath()
	}
	return p
}

// checkRoomSegment refuses, with 400 bad_room_name, a path under /rooms/ or
// /r/ whose next segment (as sent) is not a valid room name, whatever the
// method and whatever follows: such a path names no room on any route.
func checkRoomSegment(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if room, ok := roomSegment(r.URL.Path); ok && !validRoom(room) {
			fail(w, badRoomName(room))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// roomSegment is the segment of path where a room name stands: the one
// after /rooms/ or /r/.
func roomSegment(path string) (room string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/rooms/")
	if !ok {
		if rest, ok = strings.CutPrefix(path, "/r/"); !ok {
			return "", false
		}
	}
	room, _, _ = strings.Cut(rest, "/")
	return room, true
}

// badRoomName is the refusal of an invalid room name.
func badRoomName(room string) *apiError {
	return errorf(400, "bad_room_name", "room name %.80q must match ^[A-Za-z0-9_-]{1,64}$ as sent (no percent-encoding)", room)
}
