package handlers

import (
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

// bearer returns the request's token: the Authorization header, or, where
// allowQuery (GET, leave), the token= query parameter.
func bearer(r *http.Request, allowQuery bool) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, _ := strings.Cut(h, " ")
		if strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
		return ""
	}
	if allowQuery {
		return r.URL.Query().Get("token")
	}
	return ""
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

// authenticate finds the member whose token the request carries, and
// counts the request as a sign of life.
func (s *Server) authenticate(r *http.Request, allowQuery bool) (store.Member, error) {
	token := bearer(r, allowQuery)
	if token == "" {
		return store.Member{}, errorf(401, "unauthorized", "this call needs the member's token (Authorization: Bearer …)")
	}
	m, err := s.store.Authenticate(r.Context(), token)
	if err != nil {
		return store.Member{}, err
	}
	s.store.Touch(m)
	return m, nil
}
