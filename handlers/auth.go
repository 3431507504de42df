package handlers

import (
	"errors"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/tincan/tincan/store"
)

// roomParam reads and checks the {room} of the path (as sent: asSent).
func roomParam(r *http.Request) (string, error) {
	room := httprouter.ParamsFromContext(r.Context()).ByName("room")
	if !validRoom(room) {
		return "", badRoomName(room)
	}
	return room, nil
}

// bearer returns the request's token: a Bearer Authorization header, or,
// where allowQuery (GET, leave), the token= query parameter. An
// Authorization of another scheme (Basic credentials that a browser sends
// to a proxy on every request) is not a token, and there leaves the query
// to say it.
func bearer(r *http.Request, allowQuery bool) string {
	if scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " "); strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(token)
	}
	if allowQuery {
		return query(r, "token")
	}
	return ""
}

// tokenHint says where a call's token goes, for its 401: on the routes
// that take ?token= that form too, which an EventSource needs (it cannot
// send headers); on the others, that the query is not the place.
func tokenHint(r *http.Request, allowQuery bool) string {
	switch {
	case allowQuery:
		return "send it as Authorization: Bearer <token>, or as ?token=<token> in the URL (as EventSource must: it cannot send headers)"
	case r.URL.Query().Has("token"):
		return "send it as Authorization: Bearer <token>: ?token= is taken only by GET calls and leave"
	default:
		return "send it as Authorization: Bearer <token>"
	}
}

// member authenticates a member call on a room path.
func (s *Server) member(r *http.Request, allowQuery bool) (store.Member, error) {
	room, err := roomParam(r)
	if err != nil {
		return store.Member{}, err
	}
	m, err := s.authenticate(r, allowQuery)
	if err == nil && m.Room != room {
		return store.Member{}, errorf(403, "not_member", "the token belongs to another room, not %q", room)
	}
	return m, err
}

// authenticate finds the member whose token the request carries, counts
// the request as a sign of life and against the member's rate limit (429
// rate_limited). A missing or unknown token is 401 unauthorized, whose
// detail says where the token goes (tokenHint), and counts against the
// address's rate limit instead, so that nobody guesses tokens at will.
func (s *Server) authenticate(r *http.Request, allowQuery bool) (store.Member, error) {
	token := bearer(r, allowQuery)
	if token == "" {
		if err := s.limitAddress(r); err != nil {
			return store.Member{}, err
		}
		return store.Member{}, errorf(401, "unauthorized", "this call needs the member's token: %s", tokenHint(r, allowQuery))
	}
	m, err := s.store.Authenticate(r.Context(), token)
	if errors.Is(err, store.ErrUnauthorized) {
		if err := s.limitAddress(r); err != nil {
			return store.Member{}, err
		}
		return store.Member{}, errorf(401, "unauthorized", "unknown or expired token (join the room again for a new one); %s", tokenHint(r, allowQuery))
	}
	if errors.Is(err, store.ErrKicked) || errors.Is(err, store.ErrRoomClosed) {
		// 401 with the store's code: the application removed the member.
		if err := s.limitAddress(r); err != nil {
			return store.Member{}, err
		}
		return store.Member{}, err
	}
	if err != nil {
		return store.Member{}, err
	}
	s.store.Touch(m)
	if err := s.limitMember(m); err != nil {
		return store.Member{}, err
	}
	return m, nil
}
